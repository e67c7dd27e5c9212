"""A training's live-progress file, for other processes to follow (the web application's
Training tab, the demo): written by the trainer's root rank, read by `read_progress`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.locks import process_alive
from engine.distributed import parse_worker_states


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
               that registered the model (pipeline/publish.py), which keeps the file

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


def read_progress(path: Path) -> dict:
    """What a live-progress file says of its training: status (running, finished, stopped,
    failed, killed, registered), the last step's figures, the loss per step and the
    evaluations."""
    train, evals, start, last, end, registered = [], [], {}, {}, None, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line the trainer is writing right now
            event = record.get("event")
            if event == "start":
                start, end = record, None
            elif event == "step":
                train.append([record["step"], record["loss"]])
                last = record
            elif event == "eval":
                evals.append([record["step"], record["train_loss"], record["val_loss"]])
            elif event == "end":
                end = record
            elif event == "registered":
                registered = record
    if registered is not None:
        status = "registered"
        message = "champion" if registered["promoted"] else "gate refused: champion stays"
    elif end is not None:
        status, message = end["status"], end.get("message", "")
    elif start and process_alive(start["pid"]):
        status, message = "running", ""
    else:
        status, message = "killed", "the trainer ended without a final record (killed?)"
    return {"version": registered["version"] if registered else None, "status": status,
            "message": message, "step": last.get("step", start.get("step", 0)),
            "steps": start.get("steps"), "workers": start.get("workers", 1),
            "tokens_per_s": last.get("tokens_per_s"),
            "eta_s": last.get("eta_s") if status == "running" else None,
            "comm": last.get("comm"), "worker_states": parse_worker_states(last.get("workers")),
            "updated": last.get("time", start.get("time")), "train": train, "evals": evals}
