"""The training loop: random windows, AdamW, evaluation, checkpoints, resume.

`train` is what `cllm train` runs: it reads the data, trains (or, with `resume`, loads) the
tokenizer, caches the token arrays and calls `run_training`, the loop itself, which the
continuous-learning update also calls to continue a registered model.

Both take a `world` (engine/distributed.py): `Solo()` for one worker in-process, or one rank
of an MPI job. Every rank runs the same loop on its own share of each step's windows; the
gradients are summed across ranks before the optimizer step, so all ranks keep identical
parameters; only the root logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

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

from engine.checkpoint import is_checkpoint, load_model, load_optimizer_state, save_checkpoint
from engine.data import (
    TokenData,
    batch_starts,
    build_token_cache,
    iter_documents,
    list_files,
    windows,
)
from engine.distributed import Solo, Stopped, Topology, inject_fault, worker_times
from engine.errors import UserError
from engine.config import GPTConfig, TrainConfig
from engine.model import init_params, loss_and_grads, loss_only, ops, parameter_shapes
from engine.optim import AdamW, Schedule, clip_grad_norm
from engine.progress import Progress, ProgressFile, progress_path
from engine.tokenizer import Tokenizer
from tokenizers import Tokenizer as HFTokenizer

log = structlog.get_logger()
EVAL_SEED = 0xE7A1  # evaluation windows differ from every training step's


@dataclass
class TrainResult:
    out: Path
    step: int
    tokens_seen: int
    train_loss: float
    val_loss: float
    history: list = field(default_factory=list)


def train(paths: list[Path], out: Path, model_config: GPTConfig, cfg: TrainConfig,
          cache_root: Path, resume: bool = False, world: Topology | None = None) -> TrainResult:
    """Train a new model on `paths` into the model directory `out`, or continue it.

    Token arrays are cached under `cache_root`, keyed by tokenizer and data. With several
    ranks, every rank reads the same paths (a shared filesystem across machines).
    """
    world = world or Solo()
    cfg.validate()
    files = list_files(paths)
    documents = list(iter_documents(files))
    if not documents:
        raise UserError(f"the data ({', '.join(map(str, paths))}) holds no text")
    if resume:
        with world.root_first():  # reading may finish a swap a kill interrupted: one rank does
            if not is_checkpoint(out):
                raise UserError(f"--resume: {out} holds no checkpoint to resume; drop --resume "
                                "to start a new model there")
            model = load_model(out)
        tokenizer, model_config = model.tokenizer, model.config
    else:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} already exists and is not empty: pass --resume to continue "
                            "the model there, or choose a new --out")
        model_config.block_size = cfg.seq_len
        model_config.validate()
        # BPE training is slow and need not be deterministic: the root trains, the rest copy
        if world.is_root:
            log.info("tokenizer_train", documents=len(documents), vocab_size=cfg.vocab_size)
        tokenizer_json = world.share_text(
            Tokenizer.train(documents, cfg.vocab_size).json_text if world.is_root else None)
        tokenizer = Tokenizer(HFTokenizer.from_str(tokenizer_json), tokenizer_json)
        model_config.vocab_size = tokenizer.vocab_size
    if cfg.seq_len > model_config.block_size:
        raise UserError(f"--seq-len {cfg.seq_len} is longer than the model's context "
                        f"{model_config.block_size}")
    with world.root_first():  # the root writes the token cache, the others then find it
        cache = build_token_cache(files, documents, tokenizer, cache_root,
                                  cfg.val_fraction, min_tokens=cfg.seq_len + 1)
    data = TokenData.open(cache)
    if world.is_root:
        log.info("data", train_tokens=len(data.train), val_tokens=len(data.val), cache=str(cache))

    if resume:
        params = model.params
        optimizer = make_optimizer(params, cfg)
        optimizer.load_state(load_optimizer_state(out), model.state["step"])
        schedule = Schedule(**model.state["schedule"])
        schedule.end = schedule.start + cfg.steps
        state, metrics = model.state, model.metrics
    else:
        params = init_params(model_config, seed=cfg.seed)
        optimizer = make_optimizer(params, cfg)
        schedule = Schedule.rewarm(0, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
        state, metrics = {"step": 0, "tokens_seen": 0}, {}
    return run_training(data, tokenizer, out, model_config, cfg, params, optimizer, schedule,
                        state, metrics, world)


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


def run_training(data: TokenData, tokenizer: Tokenizer, out: Path, config: GPTConfig,
                 cfg: TrainConfig, params: dict, optimizer: AdamW, schedule: Schedule,
                 state: dict, metrics: dict, world: Topology | None = None) -> TrainResult:
    world = world or Solo()
    step, tokens_seen = state["step"], state["tokens_seen"]
    history = metrics.get("history", [])
    step_losses = metrics.get("step_losses", [])
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
    reduce = world.gradient_reduction(parameter_shapes(config))
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
