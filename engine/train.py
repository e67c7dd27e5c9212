"""Training: where it starts (`init_from`), then the loop (`train`): random windows, AdamW,
evaluation, checkpoints.

`cllm train --data` (`train_files`) and every continuous-learning plan (pipeline/training.py)
start the same way and run the same loop; only their data differs. Both take a `world`
(engine/distributed.py): `Solo()` for one worker in-process, or one rank of an MPI job. Every rank runs the same loop on its own share of each step's windows; the
gradients are summed across ranks before the optimizer step, so all ranks keep identical
parameters; only the root logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import structlog
from threadpoolctl import threadpool_limits

from core.errors import UserError
from core.files import file_sha256
from core.progress import Progress
from engine.checkpoint import is_checkpoint, load_model, load_optimizer_state, save_checkpoint
from engine.config import GPTConfig, TrainConfig
from engine.data import (
    TokenCache,
    TokenData,
    batch_starts,
    concat,
    list_files,
    read_documents,
    windows,
)
from engine.distributed import Solo, Stopped, Topology, worker_times
from engine.model import init_params, loss_and_grads, loss_only, ops, parameter_shapes
from engine.optim import AdamW, Schedule, clip_grad_norm
from engine.progress import ProgressFile, progress_path
from engine.tokenizer import Tokenizer

log = structlog.get_logger()
EVAL_SEED = 0xE7A1  # evaluation windows differ from every training step's
# Tests only: "RANK:STEP" makes that rank raise an exception at that step, "RANK:STEP:hang"
# hang there.
FAULT_ENV = "CRYSTALLINE_TEST_FAULT"


@dataclass
class TrainResult:
    out: Path
    step: int
    tokens_seen: int
    train_loss: float
    val_loss: float
    history: list = field(default_factory=list)


@dataclass
class Start:
    """Where a training begins: the model, its optimizer and schedule, the step reached."""

    config: GPTConfig
    tokenizer: Tokenizer
    params: dict
    optimizer: AdamW
    schedule: Schedule
    state: dict  # step, tokens_seen (and the rest of a resumed checkpoint's state)
    metrics: dict  # a resumed run's loss history, to go on with


def init_from(source: str | Path, out: Path, cfg: TrainConfig, tokenizer: Tokenizer | None = None,
              model_config: GPTConfig | None = None, world: Topology | None = None) -> Start:
    """The one place a training chooses its start (nanoGPT's `init_from`):

    - "scratch": a new model of `model_config`'s shape for `tokenizer`, its context
      `cfg.seq_len`, initialised from `cfg.seed`; warm-up and decay over steps 0 to `cfg.steps`.
    - "resume": the checkpoint in `out`, a run that stopped before its end. The resume rule:
      weights, moments and step come from the checkpoint and so does the schedule's start,
      warm-up and learning rates; its decay ends at `cfg.steps`. Resumed with the steps it
      was started with, a run ends exactly where an uninterrupted one would; with more steps,
      its decay stretches to the new end.
    - a model directory: continue that model (a registered parent) on new data: its weights
      and moments, and a re-warmed schedule from its step to `cfg.steps` (Ibrahim et al.,
      2024: a fresh warm-up and decay for continual pre-training), its own stable phase and
      cooldown as `cfg.cooldown` says.
    """
    world = world or Solo()
    if source == "scratch":
        config = dataclasses.replace(model_config, block_size=cfg.seq_len,
                                     vocab_size=tokenizer.vocab_size)
        config.validate()
        params = init_params(config, seed=cfg.seed)
        schedule = Schedule.rewarm(0, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps,
                                   cfg.cooldown)
        return Start(config, tokenizer, params, make_optimizer(params, cfg), schedule,
                     {"step": 0, "tokens_seen": 0}, {})
    resuming = source == "resume"
    path = out if resuming else Path(source)
    with world.root_first():  # reading may finish a swap a kill interrupted: one rank does
        if resuming and not is_checkpoint(out):
            raise UserError(f"--resume: {out} holds no checkpoint to resume; drop --resume "
                            "to start a new model there")
        model = load_model(path)
    step = model.state["step"]
    if cfg.seq_len > model.config.block_size:
        raise UserError(f"--seq-len {cfg.seq_len} is longer than the model's context "
                        f"{model.config.block_size}")
    optimizer = make_optimizer(model.params, cfg)
    optimizer.load_state(load_optimizer_state(path), step)
    if resuming:
        schedule = dataclasses.replace(Schedule(**model.state["schedule"]), end=cfg.steps)
        state, metrics = model.state, model.metrics
    else:
        schedule = Schedule.rewarm(step, cfg.steps - step, cfg.lr, cfg.min_lr, cfg.warmup_steps,
                                   cfg.cooldown)
        state, metrics = {"step": step, "tokens_seen": model.state["tokens_seen"]}, {}
    return Start(model.config, model.tokenizer, model.params, optimizer, schedule, state, metrics)


def train_files(paths: list[Path], out: Path, model_config: GPTConfig, cfg: TrainConfig,
                cache: TokenCache, resume: bool = False,
                world: Topology | None = None) -> TrainResult:
    """`cllm train --data`: a new model on text files, folders or Parquet files into the
    model directory `out` (a tokenizer trained on them first), or, with `resume`, the one
    there continued. With several ranks, every rank reads the same paths (a shared
    filesystem across machines)."""
    world = world or Solo()
    cfg.validate()
    files = list_files(paths)
    if resume:
        start = init_from("resume", out, cfg, world=world)
    else:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} already exists and is not empty: pass --resume to continue "
                            "the model there, or choose a new --out")
        model_config.validate()
        documents = [doc for f in files for doc in read_documents(f)]
        if not documents:
            raise UserError(f"the data ({', '.join(map(str, paths))}) holds no text")
        # BPE training is slow and need not be deterministic: the root trains, the rest copy
        if world.is_root:
            log.info("tokenizer_train", documents=len(documents), vocab_size=cfg.vocab_size)
        tokenizer = Tokenizer.from_json(world.share_text(
            Tokenizer.train(documents, cfg.vocab_size).json_text if world.is_root else None))
        start = init_from("scratch", out, cfg, tokenizer, model_config)
    with world.root_first():  # the root writes the token cache, the others then find it
        entries = [cache.tokens(f, file_sha256(f), start.tokenizer, cfg.val_fraction)
                   for f in files]
        data = TokenData(concat([e.train for e in entries], start.tokenizer.dtype),
                         concat([e.val for e in entries], start.tokenizer.dtype))
        data.require(cfg.seq_len + cfg.batch_size + 1, "the data is",
                     "add text or lower --seq-len")
        cache.save(entries)
    if world.is_root:
        log.info("data", train_tokens=len(data.train), val_tokens=len(data.val),
                 files=len(files), cache=str(cache.root))
    return train(start, data, out, cfg, world)


def make_optimizer(params: dict, cfg: TrainConfig) -> AdamW:
    return AdamW(params, beta1=cfg.beta1, beta2=cfg.beta2, weight_decay=cfg.weight_decay)


def evaluate(params, config: GPTConfig, tokens: np.ndarray, cfg: TrainConfig) -> float:
    """Mean loss over a fixed set of windows (the same at every evaluation)."""
    losses = []
    for i in range(cfg.eval_batches):
        starts = batch_starts(len(tokens), cfg.seq_len, cfg.batch_size, seed=EVAL_SEED, step=i)
        x, y = windows(tokens, starts, cfg.seq_len)
        losses.append(loss_only(params, config, x, y))
    return float(np.mean(losses))


def inject_fault(world: Topology, step: int) -> None:
    """Tests only: raise (or, with `RANK:STEP:hang`, hang) in the rank and at the step named
    by $CRYSTALLINE_TEST_FAULT."""
    fault = os.environ.get(FAULT_ENV, "")
    if fault == f"{world.rank}:{step}":
        raise RuntimeError(f"fault injected by {FAULT_ENV} at step {step}")
    if fault == f"{world.rank}:{step}:hang":
        threading.Event().wait()


class StopFlag:
    """Ctrl-C or SIGTERM during training: finish the step, checkpoint, then stop."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def train(start: Start, data: TokenData, out: Path, cfg: TrainConfig,
          world: Topology | None = None) -> TrainResult:
    """The loop: train from `start` up to step `cfg.steps` on `data`, checkpointing into the
    model directory `out`."""
    world = world or Solo()
    config, tokenizer, params = start.config, start.tokenizer, start.params
    optimizer, schedule = start.optimizer, start.schedule
    step, tokens_seen = start.state["step"], start.state["tokens_seen"]
    history = start.metrics.get("history", [])
    step_losses = start.metrics.get("step_losses", [])
    last_saved = step if is_checkpoint(out) else None
    parts = cfg.data_parts or world.groups
    if world.size > 1 and parts != world.groups:
        raise UserError(f"data_parts={cfg.data_parts} differs from the {world.groups} groups of "
                        "workers: leave it at 0 with several workers")

    def checkpoint(train_loss=None, val_loss=None):
        nonlocal last_saved
        last_saved = step
        if not world.is_root:
            return
        new_state = {"step": step, "tokens_seen": tokens_seen, "schedule": schedule.to_dict(),
                     "train_config": asdict(cfg), "tokenizer_sha256": tokenizer.sha256}
        new_metrics = {"train_loss": train_loss, "val_loss": val_loss, "history": history,
                       "step_losses": step_losses}
        save_checkpoint(out, config, params, optimizer.state(), tokenizer, new_state, new_metrics)
        log.info("checkpoint", step=step, path=str(out))

    if world.is_root:
        log.info("train_start", out=str(out), start_step=step, steps=cfg.steps,
                 workers=world.size, groups=world.groups, **asdict(config))
    progress = Progress(total=cfg.steps, initial=step, desc="train", event="train_progress",
                        unit="step", enabled=world.is_root)
    live = ProgressFile(progress_path(out), resumed=last_saved is not None, enabled=world.is_root)
    live.write("start", pid=os.getpid(), step=step, steps=cfg.steps, workers=world.size,
               resumed=last_saved is not None)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    reduce = world.gradient_reduction(parameter_shapes(config), cfg.link_precision)
    # per rank, on the root: seconds computing, reducing, updating, and CPU seconds; without
    # the run's first step (compilation, first touch of memory), which says nothing of speed
    times, timed_steps = np.zeros((world.size, 4)), 0
    train_loss = val_loss = float("nan")
    started, started_step = time.monotonic(), step
    ops.set_threads(cfg.threads)  # the fused kernels' threads; BLAS's are limited below
    # overflow warnings would only repeat what the divergence check below reports
    with threadpool_limits(cfg.threads or None), StopFlag() as stop, \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while step < cfg.steps:
            began, cpu_began = time.perf_counter(), time.process_time()
            inject_fault(world, step)
            starts = batch_starts(len(data.train), cfg.seq_len, cfg.batch_size, cfg.seed, step,
                                  parts=parts)
            x, y = windows(data.train, world.my_windows(starts), cfg.seq_len)
            # normalised by the whole step's token count, so the ranks' gradients sum to the mean
            loss, grads = loss_and_grads(params, config, x, y, normalizer=tokens_per_step)
            computed = time.perf_counter()
            with world.reducing(step):
                grads, loss, stopping = reduce(grads, loss, stop.signal is not None)
            reduced = time.perf_counter()
            norm = clip_grad_norm(grads, cfg.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                progress.close()
                live.end("failed", step, f"loss {loss:.4g} at step {step}")
                kept = f"the last good checkpoint (step {last_saved}) is kept in {out}" \
                    if last_saved is not None else "no checkpoint was written"
                raise UserError(f"training diverged at step {step} (loss {loss:.4g}, gradient "
                                f"norm {norm:.4g}); {kept}; lower --lr or raise warmup_steps")
            optimizer.step(params, grads, schedule.lr(step))
            step_times = world.gather_row([computed - began, reduced - computed,
                                           time.perf_counter() - reduced,
                                           time.process_time() - cpu_began])
            step += 1
            tokens_seen += tokens_per_step
            step_losses.append(round(loss, 5))
            rate = (step - started_step) * tokens_per_step / (time.monotonic() - started)
            if world.is_root and step - started_step > 1:
                times, timed_steps = times + step_times, timed_steps + 1
            fields = worker_times(times) if world.size > 1 and timed_steps else {}
            progress.update(1, loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", **fields)
            live.write("step", step=step, loss=round(loss, 5), lr=schedule.lr(step - 1),
                       tokens_per_s=round(rate),
                       eta_s=round((cfg.steps - step) * tokens_per_step / rate, 1), **fields)

            final = step == cfg.steps
            if world.is_root and (step % cfg.eval_every == 0 or final):
                train_loss = evaluate(params, config, data.train, cfg)
                val_loss = evaluate(params, config, data.val, cfg)
                history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss})
                progress.write(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
                log.info("eval", step=step, train_loss=train_loss, val_loss=val_loss,
                         tokens_per_s=round(rate))
                live.write("eval", step=step, train_loss=train_loss, val_loss=val_loss)
            if step % cfg.checkpoint_every == 0 or final:
                checkpoint(train_loss if final else None, val_loss if final else None)
            if stopping:  # every rank saw the same request in the reduction, after this step
                progress.close()
                if last_saved != step:
                    checkpoint()
                live.end("stopped", step, stop.signal or "a stop request")
                raise Stopped(f"{stop.signal or 'a stop request'} at step {step}; "
                                        f"checkpoint in {out}: continue with --resume")
    progress.close()
    if last_saved != step:  # resumed at the end already
        checkpoint(train_loss, val_loss)
    if world.is_root and math.isnan(val_loss):
        train_loss = evaluate(params, config, data.train, cfg)
        val_loss = evaluate(params, config, data.val, cfg)
    checksums = world.checksums(params)
    if world.is_root:
        if timed_steps:
            rate = timed_steps * tokens_per_step / times[0, :3].sum()
            log.info("worker_time", steps=timed_steps, tokens_per_s=round(rate),
                     **worker_times(times, timed_steps))
        log.info("param_checksum", ranks=checksums, identical=len(set(checksums)) == 1)
        if len(set(checksums)) != 1:
            raise RuntimeError(f"the ranks' parameters differ after training: {checksums}")
        log.info("train_done", step=step, train_loss=train_loss, val_loss=val_loss, out=str(out))
    live.end("finished", step)
    return TrainResult(out=out, step=step, tokens_seen=tokens_seen, train_loss=train_loss,
                       val_loss=val_loss, history=history)
