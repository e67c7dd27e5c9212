"""Continuous learning: new shards in the catalog become a new model version in the registry.

The steps, one module each, every one a library function that the CLI, the tests and the
Airflow DAGs call the same way (a `Plan` and an `Evaluation` are JSON-ready):

    plan       pipeline/plan.py      what to learn: an update of champion, a model from
                                     scratch, or the nightly retrain (`PlanKind`)
    train      pipeline/training.py  the model, in the plan's work folder
    gate       pipeline/gate.py      held-out loss, child against parent; the gate's verdict
    publish    pipeline/publish.py   register the version, move champion, mark the shards

This module runs them in order: `update(config)`, `from_scratch(config)` and `retrain(config)`
under the update lock (one training of a home's catalog at a time), after `reconcile`
finishes what an interrupted run left. Every step can be run again: the plan's work folder
keeps what the steps before it did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from core.errors import UserError
from core.home import Home
from core.locks import FileLock
from pipeline.config import Config
from pipeline.gate import Evaluation, evaluate
from pipeline.plan import Plan, PlanKind, plan_from_scratch, plan_retrain, plan_update
from pipeline.publish import finish, reconcile
from pipeline.registry import Registry
from pipeline.training import train

log = structlog.get_logger()
Planner = Callable[[Config, Registry], Plan]  # plan_update, plan_next, ... (pipeline/plan.py)


@dataclass
class Outcome:
    plan: Plan
    evaluation: Evaluation | None = None
    version: str | None = None  # None: nothing to do
    promoted: bool = False

    def lines(self, model_name: str) -> list[str]:
        """What happened, as `cllm update` and `cllm train --from-scratch` print it."""
        plan, e = self.plan, self.evaluation
        lines = [f"skipped shard {s['path']}: {s['reason']} (left new)" for s in plan.skipped]
        if e is None:
            champion = f" (champion is {model_name}/{plan.parent})" if self.version is None else ""
            return lines + [f"{idle_reason(plan, self.version)}: nothing to do{champion}"]
        trained = {PlanKind.UPDATE: f"on {len(plan.new)} new shard(s)"
                   + (f", replaying {len(plan.old)} older" if plan.old else ""),
                   PlanKind.RETRAIN: f"anew on all {len(plan.shard_paths)} shard(s), with the "
                   "parent's tokenizer",
                   PlanKind.SCRATCH: f"from scratch on {len(plan.new)} shard(s)"}[plan.kind]
        parent = f" (parent {plan.parent})" if plan.parent else ""
        lines.append(f"registered {model_name}/{self.version}{parent}, trained {trained}")
        if e.val_loss_new is not None:
            lines.append(f"val loss on new data {e.val_loss_new:.4f}" + (
                f" (parent {e.parent_val_loss_new:.4f})" if e.parent_val_loss_new is not None
                else ""))
        if e.val_loss_old is not None:
            lines.append(f"val loss on old data {e.val_loss_old:.4f} "
                         f"(parent {e.parent_val_loss_old:.4f})")
        lines.append(f"gate {'passed' if e.passed else 'refused'}: {e.reason}")
        lines.append(f"champion is now {model_name}/{self.version}" if self.promoted
                     else "champion stays where it was")
        return lines


@contextmanager
def update_lock(config: Config, wait: bool = True) -> Iterator[None]:
    """One training of the catalog (update, from scratch, retrain) per home at a time."""
    home = Home(config.home)
    lock = FileLock(home.update_lock)
    if not lock.acquire(wait=False):
        if not wait:
            raise UserError(f"another update is running in {home} (it holds "
                            f"{home.update_lock}): wait for it, or run without --no-wait to "
                            "queue behind it")
        log.info("update_waiting", lock=str(home.update_lock),
                 message="another update is running; waiting for it to finish")
        lock.acquire(wait=True)
    try:
        yield
    finally:
        lock.release()


def registry_of(config: Config) -> Registry:
    return Registry(config.home, config.model_name, config.registry_attempts)


def make_plan(config: Config, registry: Registry, planner: Planner) -> Plan:
    """The plan step as the flow and the DAGs run it: finish an interrupted run first, then
    plan."""
    reconcile(config, registry)
    return planner(config, registry)


def registered_for(registry: Registry, plan: Plan) -> str | None:
    """The version already registered for the plan's parent and shards, if any: a model from
    scratch or a retrain can meet the very same shards again."""
    if not plan.shard_paths:
        return None
    found = registry.find(plan.parent or "", plan.shard_paths)
    return found.version if found else None


def idle_reason(plan: Plan, done: str | None) -> str | None:
    """Why the plan needs no training (`done`: the version `registered_for` found), or None."""
    if done:
        return f"version {done} was already trained on these {len(plan.shard_paths)} shards"
    if not plan.shard_paths:
        return "no new shards" if plan.kind is PlanKind.UPDATE else \
            "champion, or a retrain against it, already covers every shard"
    return None


def run(config: Config, planner: Planner, wait: bool = True) -> Outcome:
    """Every step in order, under the update lock."""
    registry = registry_of(config)
    with update_lock(config, wait):
        planned = make_plan(config, registry, planner)
        done = registered_for(registry, planned)
        if not planned.shard_paths or done:
            return Outcome(planned, version=done)
        train(config, registry, planned)
        evaluation = evaluate(config, registry, planned)
        version, promoted = finish(config, registry, planned, evaluation)
        return Outcome(planned, evaluation, version, promoted)


def update(config: Config, wait: bool = True) -> Outcome:
    """`cllm update`: continue champion on the new shards; no new shards, no version."""
    return run(config, plan_update, wait)


def from_scratch(config: Config, wait: bool = True) -> Outcome:
    """`cllm train --from-scratch`: a tokenizer and model on every shard; the first version
    becomes champion. When a version was trained from scratch on these very shards, that one
    is the outcome (`evaluation` None) and nothing trains."""
    return run(config, plan_from_scratch, wait)


def retrain(config: Config, wait: bool = True) -> Outcome:
    """`cllm train --retrain`: the consolidating retrain, promoted only through the gate."""
    return run(config, plan_retrain, wait)
