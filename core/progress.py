"""Progress for long work: a bar on a terminal, periodic log events everywhere else."""

import sys
import time

import structlog
from tqdm import tqdm

log = structlog.get_logger()


class Progress:
    """`update(n, **fields)` advances by n; the fields (loss, tokens/s, ...) go on the bar
    or into an `event` log line at most every `log_every` seconds when not on a terminal."""

    def __init__(self, total: int, desc: str, event: str, initial: int = 0,
                 unit: str = "it", log_every: float = 10.0, enabled: bool = True):
        self.total, self.event, self.log_every = total, event, log_every
        self.enabled = enabled
        self.count = initial
        self.started = time.monotonic()
        self.last_log = self.started
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                            dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **fields) -> None:
        self.count += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_log >= self.log_every or self.count >= self.total:
            self.last_log = now
            log.info(self.event, done=self.count, total=self.total, **fields)

    def write(self, message: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        elif self.enabled:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
