"""Continuous learning: new shards in the catalog become a new model version in the registry.

The steps, each a library function that the CLI, the tests and the Airflow DAG call the same
way (a `Plan` and an `Evaluation` are JSON-ready, `to_dict`/`from_dict`):

    plan(config)                    reconcile, then the increment: champion, new shards, replay pool
                                    (plan_from_scratch, plan_retrain: the other two kinds of plan)
    train(config, plan)             continue the parent (or start a model) in the plan's work folder
    evaluate(config, plan)          held-out loss on new and old shards, child and parent; the gate
    register(config, plan, ev)      an MLflow run and a model version with its lineage tags
    promote(config, version)        champion moves if the gate passed; then the shards are consumed

`update(config)`, `from_scratch(config)` and `retrain(config)` run them in order under the
update lock; the Airflow DAGs run them as tasks (pipeline/airflow_tasks.py).

Every step can be run again. The plan's id hashes its parent and shards, and its work folder
`$CLLM_HOME/work/<id>/` keeps the training checkpoint and the evaluation, so a rerun resumes
where a killed one stopped; `register` finds a version already registered for the same parent
and shards; the shards are marked consumed last, so a registered version whose shards are still
`new` is the trace of an interrupted run, which the next `plan` finishes (`reconcile`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import structlog

from engine.checkpoint import is_checkpoint, load_model, load_optimizer_state
from engine.data import SEGMENT, TokenData, read_parquet_texts, token_dtype
from engine.errors import UserError
from engine.model import init_params
from engine.optim import Schedule
from engine.progress import ProgressFile, progress_path
from engine.tokenizer import Tokenizer
from engine.config import TrainConfig
from engine.train import make_optimizer, run_training
from engine.train import evaluate as held_out_loss
from pipeline.catalog import Catalog
from pipeline.config import Config
from pipeline.registry import Registry
from pipeline.token_cache import concat, require_tokens, shard_problem, shard_tokens

log = structlog.get_logger()
KEPT_RUNS = 20  # progress files of finished trainings kept under $CLLM_HOME/training/


@dataclass
class Plan:
    """One of three kinds of training. "update": continue champion (`parent`) on the new
    shards plus a replay sample of the old. "scratch": a new tokenizer and model on all shards.
    "retrain": a new model on all shards with champion's tokenizer, so that it compares with
    champion through the same gate (the nightly consolidating retrain)."""

    id: str
    parent: str | None  # champion when planned; None: a model from scratch
    new: list[dict]  # {"path", "sha256"} of the shards not yet learned (relative to the home)
    old: list[dict] = field(default_factory=list)  # learned before: replay pool, old-data eval
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: left as they are
    kind: str = "update"

    @property
    def learned(self) -> list[dict]:
        """The shards the model trains on (none: nothing to do)."""
        return self.new + self.old if self.kind == "retrain" else self.new

    @property
    def shard_paths(self) -> list[str]:
        return [s["path"] for s in self.learned]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**data)


@dataclass
class Evaluation:
    val_loss_new: float | None  # the trained model on the new shards' held-out tokens (None:
    # a retrain with no new shards)
    val_loss_old: float | None  # ... on the older shards' (None: there are none)
    parent_val_loss_new: float | None  # the parent on the same tokens (None: no parent)
    parent_val_loss_old: float | None
    passed: bool  # the gate
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        return cls(**data)


@dataclass
class Outcome:
    plan: Plan
    evaluation: Evaluation | None = None
    version: str | None = None  # None: nothing to do
    promoted: bool = False


# --- locking, folders, the registry ----------------------------------------------------------


@contextmanager
def update_lock(config: Config, wait: bool = True):
    """One update (or from-scratch training) per home at a time. The lock is an flock, so the
    kernel releases it when its holder dies, however it dies."""
    config.home.mkdir(parents=True, exist_ok=True)
    path = config.home / "update.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise UserError(f"another update is running in {config.home} (it holds "
                                f"{path}): wait for it, or run without --no-wait to queue "
                                "behind it") from None
            log.info("update_waiting", lock=str(path),
                     message="another update is running; waiting for it to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def registry(config: Config) -> Registry:
    return Registry(config.home, config.model_name)


def work_folder(config: Config, plan: Plan) -> Path:
    return config.home / "work" / plan.id


def _plan_id(kind: str, parent: str | None, shards: list[dict]) -> str:
    key = json.dumps([parent, [(s["path"], s["sha256"]) for s in shards]])
    return f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _entry(config: Config, shard) -> dict:
    return {"path": shard.path.relative_to(config.home.resolve()).as_posix(),
            "sha256": shard.sha256}


def _new_paths(config: Config) -> set[str]:
    """The catalog's `new` shards, as plans and version tags name them."""
    with Catalog(config.home) as catalog:
        return {_entry(config, s)["path"] for s in catalog.list_shards(state="new")}


def _usable(config: Config, shards) -> tuple[list[dict], list[dict]]:
    """The shards that can be trained on, and the others with the reason (reported, left as
    they are)."""
    usable, skipped = [], []
    for shard in shards:
        entry = _entry(config, shard)
        problem = shard_problem(shard.path, shard.sha256)
        if problem:
            log.warning("shard_skipped", shard=entry["path"], reason=problem)
            skipped.append({"path": entry["path"], "reason": problem})
        else:
            usable.append(entry)
    return usable, skipped


def _save_plan(config: Config, plan: Plan) -> Plan:
    """Keep the plan in its work folder and drop the folders of the same kind of plan that
    are over (a nightly retrain and an update may be under way side by side)."""
    work = work_folder(config, plan)
    for other in work.parent.glob(f"{plan.kind}-*"):
        if other != work:
            shutil.rmtree(other, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2))
    return plan


def _check_current(config: Config, plan: Plan) -> None:
    """An update's or retrain's plan is stale once another run consumed its new shards or
    moved champion (a model from scratch depends on neither)."""
    if plan.kind == "scratch":
        return
    if registry(config).champion() != plan.parent:
        raise UserError(f"plan {plan.id} was made against version {plan.parent}, which is no "
                        "longer champion: plan again")
    new = _new_paths(config)
    gone = [s["path"] for s in plan.new if s["path"] not in new]
    if gone:
        raise UserError(f"plan {plan.id} is stale: shard {gone[0]} is no longer new: plan again")


# --- plan ------------------------------------------------------------------------------------


def plan(config: Config) -> Plan:
    """The next increment for champion: the usable `new` shards (none: nothing to do) and the
    consumed ones as the replay pool. Finishes an interrupted run first (`reconcile`)."""
    reconcile(config)
    parent = registry(config).champion()
    if parent is None:
        raise UserError(f"model {config.model_name} has no champion in the registry at "
                        f"{registry(config).uri}: train one with `cllm train --from-scratch`")
    with Catalog(config.home) as catalog:
        new, skipped = _usable(config, catalog.list_shards(state="new"))
        old = [_entry(config, s) for s in catalog.list_shards(state="consumed")]
    result = Plan(_plan_id("update", parent, new), parent, new, old, skipped, "update")
    return _save_plan(config, result) if new else result


def plan_from_scratch(config: Config) -> Plan:
    """Every usable shard of the catalog, new or consumed, for a new model and tokenizer."""
    reconcile(config)
    with Catalog(config.home) as catalog:
        shards, skipped = _usable(config, catalog.list_shards())
    if not shards:
        reason = f"; {len(skipped)} unusable" if skipped else ""
        raise UserError(f"the shard catalog {config.home / 'catalog.sqlite'} holds no usable "
                        f"shards{reason}: crawl some with `cllm crawl --seeds URL`")
    return _save_plan(config, Plan(_plan_id("scratch", None, shards), None, shards, [], skipped,
                                   "scratch"))


def plan_retrain(config: Config) -> Plan:
    """A new model on every usable shard with champion's tokenizer, evaluated against champion.
    Nothing to do (empty plan) when champion was itself trained from scratch or retrained on
    exactly these shards (a retrain already registered against champion: `registered_for`)."""
    reconcile(config)
    reg = registry(config)
    parent = reg.champion()
    if parent is None:
        raise UserError(f"model {config.model_name} has no champion in the registry at "
                        f"{reg.uri} to retrain against: train one with "
                        "`cllm train --from-scratch`")
    with Catalog(config.home) as catalog:
        new, skipped = _usable(config, catalog.list_shards(state="new"))
        old, skipped_old = _usable(config, catalog.list_shards(state="consumed"))
    result = Plan(_plan_id("retrain", parent, new + old), parent, new, old,
                  skipped + skipped_old, "retrain")
    champion = reg.resolve(f"{config.model_name}/{parent}")
    full = champion.tags.get("training") in ("scratch", "retrain")
    if full and sorted(champion.shards) == sorted(result.shard_paths):
        log.info("retrain_skipped", champion=parent, shards=len(result.shard_paths),
                 message="champion already covers every shard")
        return dataclasses.replace(result, new=[], old=[])
    return _save_plan(config, result)


def reconcile(config: Config) -> list[str]:
    """Finish the versions that were registered but whose shards are still `new` (the run was
    killed between registering and marking): promote them as their gate says, mark the shards."""
    new = _new_paths(config)
    if not new:
        return []
    finished = []
    for version in registry(config).versions():
        if new & set(version.shards):
            log.warning("reconcile", version=version.version, shards=len(version.shards),
                        message="registered version whose shards were not marked consumed")
            promote(config, version.version)
            new -= set(version.shards)
            finished.append(version.version)
    return finished


# --- train -----------------------------------------------------------------------------------


def train(config: Config, plan: Plan) -> Path:
    """Train the plan's model into `<work folder>/model`, resuming a checkpoint found there."""
    _check_current(config, plan)
    out = work_folder(config, plan) / "model"
    resuming = is_checkpoint(out)
    parent = None if resuming or plan.parent is None else \
        load_model(registry(config).pull(plan.parent))
    # the model to continue: the work folder's checkpoint, or champion for an update
    model = load_model(out) if resuming else parent if plan.kind == "update" else None
    known = model or parent  # a retrain keeps champion's tokenizer
    tokenizer = known.tokenizer if known else _train_tokenizer(config, plan)
    cfg = _train_config(config, plan, known, resuming)
    data = _training_data(config, plan, tokenizer, cfg)

    if model is None:  # a new model
        model_config = dataclasses.replace(config.model, block_size=cfg.seq_len,
                                           vocab_size=tokenizer.vocab_size)
        model_config.validate()
        params = init_params(model_config, seed=cfg.seed)
        optimizer = make_optimizer(params, cfg)
        schedule = Schedule.rewarm(0, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps)
        state, metrics = {"step": 0, "tokens_seen": 0}, {}
    else:
        model_config, params, step = model.config, model.params, model.state["step"]
        optimizer = make_optimizer(params, cfg)
        optimizer.load_state(load_optimizer_state(model.path), step)
        if resuming:
            schedule = Schedule(**model.state["schedule"])
            state, metrics = model.state, model.metrics
        else:  # re-warm and decay again from where the parent stopped (Ibrahim et al., 2024)
            schedule = Schedule.rewarm(step, cfg.steps - step, cfg.lr, cfg.min_lr, cfg.warmup_steps)
            state, metrics = {"step": step, "tokens_seen": model.state["tokens_seen"]}, {}
    run_training(data, tokenizer, out, model_config, cfg, params, optimizer, schedule, state,
                 metrics)
    return out


def _train_tokenizer(config: Config, plan: Plan) -> Tokenizer:
    documents = (doc for s in plan.new for doc in read_parquet_texts(config.home / s["path"]))
    log.info("tokenizer_train", shards=len(plan.new), vocab_size=config.train.vocab_size)
    return Tokenizer.train(documents, config.train.vocab_size)


def _train_config(config: Config, plan: Plan, known, resuming: bool) -> TrainConfig:
    """A model from scratch trains as `[train]` says; a retrain too, but in champion's windows
    and held-out split, so that their losses compare. An update keeps the lineage's settings
    and takes its step count and re-warmed learning rates from `[continual]`."""
    local = {"threads": config.train.threads, "checkpoint_every": config.train.checkpoint_every}
    if known is None:
        return config.train
    lineage = TrainConfig(**known.state["train_config"])
    if resuming:  # the work folder's own settings: the step to reach is already in them
        return dataclasses.replace(lineage, **local)
    if plan.kind == "retrain":
        return dataclasses.replace(config.train, seq_len=lineage.seq_len,
                                   val_fraction=lineage.val_fraction)
    c = config.continual
    return dataclasses.replace(lineage, steps=known.state["step"] + c.steps, lr=c.lr,
                               min_lr=c.min_lr, warmup_steps=c.warmup_steps, **local)


def _tokens(config: Config, shards: list[dict], tokenizer, cfg: TrainConfig):
    return [shard_tokens(config.home / s["path"], s["sha256"], tokenizer, config.home / "tokens",
                         cfg.val_fraction) for s in shards]


def _training_data(config: Config, plan: Plan, tokenizer, cfg: TrainConfig) -> TokenData:
    """The training tokens of the plan's shards and, for an update, a replay sample of the old
    ones, so that `replay_fraction` of the windows come from old data; validation on the
    plan's shards."""
    learned = _tokens(config, plan.learned, tokenizer, cfg)
    dtype = token_dtype(tokenizer.vocab_size)
    train_tokens = concat([t.train for t in learned], dtype)
    val_tokens = concat([t.val for t in learned], dtype)
    if plan.kind == "update" and plan.old:
        fraction = config.continual.replay_fraction
        pool = concat([t.train for t in _tokens(config, plan.old, tokenizer, cfg)], dtype)
        wanted = round(len(train_tokens) * fraction / (1 - fraction))
        replay = replay_sample(pool, wanted, seed=[cfg.seed, cfg.steps])
        log.info("replay", new_tokens=len(train_tokens), replay_tokens=len(replay),
                 old_shards=len(plan.old))
        train_tokens = np.concatenate([train_tokens, replay])
    needed = cfg.seq_len + cfg.batch_size + 1
    count = len(plan.shard_paths)
    require_tokens(train_tokens, needed, f"the training tokens of {count} shard(s)")
    require_tokens(val_tokens, needed, f"the held-out tokens of {count} shard(s)")
    return TokenData(train=train_tokens, val=val_tokens)


def replay_sample(pool: np.ndarray, n_tokens: int, seed) -> np.ndarray:
    """About n_tokens from the pool, as whole segments picked at random (all of it if small)."""
    chunks = len(pool) // SEGMENT
    if n_tokens >= len(pool) or chunks == 0:
        return np.asarray(pool)
    picks = np.random.default_rng(seed).choice(chunks, size=min(chunks, -(-n_tokens // SEGMENT)),
                                               replace=False)
    return np.concatenate([pool[i * SEGMENT : (i + 1) * SEGMENT] for i in np.sort(picks)])


# --- evaluate --------------------------------------------------------------------------------


def evaluate(config: Config, plan: Plan) -> Evaluation:
    """Held-out loss of the trained model and of its parent on the new shards and on the old
    ones (the same windows for both), and the gate's verdict. Kept in the work folder."""
    saved = work_folder(config, plan) / "evaluation.json"
    if saved.is_file():
        return Evaluation.from_dict(json.loads(saved.read_text()))
    child = load_model(work_folder(config, plan) / "model")
    cfg = dataclasses.replace(TrainConfig(**child.state["train_config"]),
                              eval_batches=config.continual.eval_batches)
    needed = cfg.seq_len + cfg.batch_size + 1
    dtype = token_dtype(child.tokenizer.vocab_size)
    new_val = concat([t.val for t in _tokens(config, plan.new, child.tokenizer, cfg)], dtype)
    old_val = concat([t.val for t in _tokens(config, plan.old, child.tokenizer, cfg)], dtype)
    if plan.new:  # a retrain may have none
        require_tokens(new_val, needed, f"the held-out tokens of {len(plan.new)} new shard(s)")
    has_old = len(old_val) >= needed

    def losses(model):
        return (held_out_loss(model.params, model.config, new_val, cfg) if plan.new else None,
                held_out_loss(model.params, model.config, old_val, cfg) if has_old else None)

    new_loss, old_loss = losses(child)
    parent_new = parent_old = None
    if plan.parent is not None:
        parent_new, parent_old = losses(load_model(registry(config).pull(plan.parent)))
    passed, reason = gate(config, plan, new_loss, old_loss, parent_new, parent_old)
    result = Evaluation(new_loss, old_loss, parent_new, parent_old, passed, reason)
    log.info("evaluate", plan=plan.id, **result.to_dict())
    saved.write_text(json.dumps(result.to_dict(), indent=2))
    return result


def gate(config: Config, plan: Plan, new_loss: float | None, old_loss: float | None,
         parent_new: float | None, parent_old: float | None) -> tuple[bool, str]:
    """Champion moves only when new-data loss improves on the parent's and old-data loss
    worsens by at most `gate_tolerance` (a retrain with no new shards must improve on the old).
    A model from scratch has a tokenizer of its own, so its losses do not compare with
    champion's: it becomes champion only when there is none."""
    if plan.kind == "scratch":
        if registry(config).champion() is None:
            return True, "first version: no champion to compare with"
        return False, ("trained from scratch with its own tokenizer, so its losses do not "
                       "compare with champion's: promote it by hand with `cllm models promote`")
    if new_loss is None:
        if not old_loss < parent_old:
            return False, (f"held-out loss {old_loss:.4f} does not improve on the parent's "
                           f"{parent_old:.4f}")
        return True, f"held-out loss {old_loss:.4f} < parent's {parent_old:.4f}"
    if not new_loss < parent_new:
        return False, (f"new-data loss {new_loss:.4f} does not improve on the parent's "
                       f"{parent_new:.4f}")
    tolerance = config.continual.gate_tolerance
    if old_loss is not None and old_loss > parent_old * (1 + tolerance):
        return False, (f"old-data loss {old_loss:.4f} is more than {tolerance:.1%} above the "
                       f"parent's {parent_old:.4f}")
    kept = f"; old-data loss {old_loss:.4f} vs {parent_old:.4f}" if old_loss is not None else ""
    return True, f"new-data loss {new_loss:.4f} < parent's {parent_new:.4f}{kept}"


# --- register and promote --------------------------------------------------------------------


def register(config: Config, plan: Plan, evaluation: Evaluation) -> str:
    """Log the training as an MLflow run and register its model version with the lineage
    tags; a version already registered for this parent and these shards is returned as is."""
    reg = registry(config)
    found = reg.find(plan.parent or "", plan.shard_paths)
    if found:
        return found.version
    _check_current(config, plan)
    out = work_folder(config, plan) / "model"
    model = load_model(out)
    state, losses = model.state, model.metrics.get("step_losses", [])
    params = {**state["train_config"], **asdict(model.config), "parent_version": plan.parent or "",
              "new_shards": len(plan.new), "old_shards": len(plan.old),
              "training": plan.kind,
              "replay_fraction": config.continual.replay_fraction if plan.kind == "update" else 0.0}
    e = evaluation
    run_id, source = reg.log_training(
        out, params, losses, state["step"] - len(losses), model.metrics.get("history", []),
        {"val_loss_new": e.val_loss_new, "val_loss_old": e.val_loss_old,
         "parent_val_loss_new": e.parent_val_loss_new,
         "parent_val_loss_old": e.parent_val_loss_old})
    tags = {"parent_version": plan.parent or "", "shards": json.dumps(plan.shard_paths),
            "tokenizer_sha256": model.tokenizer.sha256, "tokens_seen": state["tokens_seen"],
            "val_loss_new": _fmt(e.val_loss_new), "val_loss_old": _fmt(e.val_loss_old),
            "code_version": code_version(), "training": plan.kind,
            "gate": f"{'passed' if e.passed else 'refused'}: {e.reason}"}
    version = reg.register(source, run_id, tags).version
    log.info("registered", model=config.model_name, version=version, parent=plan.parent,
             run_id=run_id)
    return version


def promote(config: Config, version: str) -> bool:
    """Move champion to the version if its gate passed, then mark its shards consumed (last:
    until then `reconcile` can tell the run was interrupted). Returns whether it moved."""
    reg = registry(config)
    registered = reg.resolve(f"{config.model_name}/{version}")
    passed = registered.tags.get("gate", "").startswith("passed")
    if passed:
        reg.set_champion(version)
    new = _new_paths(config)  # a retrain's older shards stay with their version
    with Catalog(config.home) as catalog:
        catalog.mark_consumed([config.home / p for p in registered.shards if p in new], version)
    log.info("promote", version=version, champion=passed, gate=registered.tags.get("gate"))
    return passed


def _fmt(loss: float | None) -> str:
    return "" if loss is None else f"{loss:.5f}"


def code_version() -> str:
    """The package version and, in a git checkout, its commit (`+dirty` with local changes)."""
    base = package_version("crystalline")
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10, check=True)
        return f"{base}+{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return base


# --- the whole flow --------------------------------------------------------------------------


def plan_next(config: Config) -> Plan:
    """The continuous flow's next training (the Airflow DAG's): an update of champion, or
    version 1 from scratch while there is no champion."""
    return plan(config) if registry(config).champion() else plan_from_scratch(config)


def registered_for(config: Config, plan: Plan) -> str | None:
    """The version already registered for the plan's parent and shards, if any: a model from
    scratch or a retrain can meet the very same shards again."""
    if not plan.shard_paths:
        return None
    found = registry(config).find(plan.parent or "", plan.shard_paths)
    return found.version if found else None


def idle_reason(plan: Plan, done: str | None) -> str | None:
    """Why the plan needs no training (`done`: the version `registered_for` found), or None."""
    if done:
        return f"version {done} was already trained on these {len(plan.shard_paths)} shards"
    if not plan.shard_paths:
        return "no new shards" if plan.kind == "update" else \
            "champion, or a retrain against it, already covers every shard"
    return None


def finish(config: Config, plan: Plan, evaluation: Evaluation) -> tuple[str, bool]:
    """Register and promote, keep the training's live-progress file, then drop the plan's
    work folder: the version and whether champion moved."""
    version = register(config, plan, evaluation)
    promoted = promote(config, version)
    _keep_progress(config, plan, f"{config.model_name}/{version}", promoted)
    shutil.rmtree(work_folder(config, plan), ignore_errors=True)
    return version, promoted


def _keep_progress(config: Config, plan: Plan, version: str, promoted: bool) -> None:
    """Move the training's progress file to `$CLLM_HOME/training/<plan>/`, marked with the
    version it became, for the web application's Training tab; the newest KEPT_RUNS stay."""
    progress = progress_path(work_folder(config, plan) / "model")
    if not progress.is_file():
        return
    record = ProgressFile(progress, resumed=True)
    record.write("registered", version=version, promoted=promoted)
    record.close()
    kept = config.home / "training" / plan.id / progress.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.replace(progress, kept)
    runs = sorted(kept.parent.parent.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEPT_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def _run(config: Config, make_plan, wait: bool) -> Outcome:
    with update_lock(config, wait):
        planned = make_plan(config)
        done = registered_for(config, planned)
        if not planned.shard_paths or done:
            return Outcome(planned, version=done)
        train(config, planned)
        evaluation = evaluate(config, planned)
        version, promoted = finish(config, planned, evaluation)
        return Outcome(planned, evaluation, version, promoted)


def update(config: Config, wait: bool = True) -> Outcome:
    """`cllm update`: continue champion on the new shards; no new shards, no version."""
    return _run(config, plan, wait)


def from_scratch(config: Config, wait: bool = True) -> Outcome:
    """`cllm train --from-scratch`: a tokenizer and model on every shard; the first version
    becomes champion. When a version was trained from scratch on these very shards, that one
    is the outcome (`evaluation` None) and nothing trains."""
    return _run(config, plan_from_scratch, wait)


def retrain(config: Config, wait: bool = True) -> Outcome:
    """`cllm train --retrain`: the consolidating retrain, promoted only through the gate."""
    return _run(config, plan_retrain, wait)
