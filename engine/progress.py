"""Progress for long work: a bar on a terminal, periodic log events everywhere else; and a
training's live-progress file for other processes to read."""

import json
import sys
import time
from pathlib import Path

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


def progress_path(out: Path) -> Path:
    """The live-progress file of a training into the model directory `out`: a sibling,
    `<out>.progress.jsonl`, since the directory itself is swapped whole at each checkpoint."""
    out = Path(out)
    return out.with_name(f"{out.name}.progress.jsonl")


class ProgressFile:
    """A training's progress for other processes (the web application's Training tab), one
    JSON object a line, appended and flushed (no fsync: losing the last lines in a power cut
    costs nothing). Records, each with `event` and `time` (Unix seconds):

        start  pid, step (the first), steps (the last), workers, resumed
        step   step, loss, lr, tokens_per_s, eta_s; with several workers, comm and workers
               (each rank's share of the step computing/waiting/reducing, as in the logs)
        eval   step, train_loss, val_loss
        end    step, status (finished, stopped, failed), message
        registered  version (name/number), promoted: added by the continuous-learning step
               that registered the model (pipeline/continual.py), which keeps the file

    A new model starts the file afresh; a resumed one appends to it. Only the root writes.
    """

    def __init__(self, path: Path, resumed: bool, enabled: bool = True):
        self.file = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a" if resumed else "w", encoding="utf-8")

    def write(self, event: str, **fields) -> None:
        if self.file is not None:
            self.file.write(json.dumps({"event": event, "time": round(time.time(), 3)} | fields)
                            + "\n")
            self.file.flush()

    def end(self, status: str, step: int, message: str = "") -> None:
        self.write("end", status=status, step=step, message=message)
        self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
