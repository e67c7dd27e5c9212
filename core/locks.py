"""A lock for one process at a time per home: an flock, which the kernel releases when its
holder dies, however it dies. The holder writes its pid into the file, for messages. And
whether a process of this machine is still running (`process_alive`), for what records a
pid without holding a lock (a training's progress file, a crawler of the fleet's state)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.file = None

    def acquire(self, wait: bool, shared: bool = False) -> bool:
        """Take the lock: at once, or (with `wait`) when its holder lets go. False when it
        is held and `wait` is off. A `shared` lock is held by any number of processes at
        once, and keeps the exclusive one out."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) |
                        (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            file.close()
            return False
        if not shared:
            file.truncate(0)
            file.write(str(os.getpid()))
            file.flush()
        self.file = file
        return True

    def holder(self) -> str:
        """The pid the holder wrote, or '?'."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is running (another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    return True
