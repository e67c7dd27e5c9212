"""The first step of continuous learning: what the next training learns.

A `Plan` names its kind, the parent version it starts from and the shards, each by its path
under the home and its sha256. Its id hashes its kind, parent and shards, and its work folder
`$CLLM_HOME/work/<id>/` keeps the plan, the training's checkpoint and the evaluation, so a
rerun of any later step finds what an interrupted one left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import PurePosixPath
from dataclasses import asdict, dataclass, field
from enum import Enum

import structlog

from core.catalog import Catalog, Shard
from core.errors import UserError
from core.files import write_json
from core.home import Home
from core.shards import shard_problem
from pipeline.config import Config
from pipeline.registry import Registry

log = structlog.get_logger()
_ID = re.compile(r"(update|scratch|retrain)-[0-9a-f]{12}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PlanKind(str, Enum):
    UPDATE = "update"  # continue champion on the new shards, replaying some old ones
    SCRATCH = "scratch"  # a new tokenizer and model on every shard
    RETRAIN = "retrain"  # a new model on every shard with champion's tokenizer (nightly)

    @property
    def continues_parent(self) -> bool:
        """Trains on from the parent's weights, in its lineage's settings, with replay."""
        return self is PlanKind.UPDATE

    @property
    def has_parent(self) -> bool:
        """Keeps the parent's tokenizer, so its losses compare with the parent's at the gate."""
        return self is not PlanKind.SCRATCH

    @property
    def learns_old(self) -> bool:
        """Trains on the consumed shards too, not only on the new ones."""
        return self is PlanKind.RETRAIN


@dataclass
class Plan:
    id: str
    parent: str | None  # champion when planned; None: a model from scratch
    new: list[dict]  # {"path", "sha256"} of the shards not yet learned (relative to the home)
    old: list[dict] = field(default_factory=list)  # learned before: replay pool, old-data eval
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}: left as they are
    kind: PlanKind = PlanKind.UPDATE

    @property
    def learned(self) -> list[dict]:
        """The shards the model trains on (none: nothing to do)."""
        return self.new + self.old if self.kind.learns_old else self.new

    @property
    def shard_paths(self) -> list[str]:
        return [s["path"] for s in self.learned]

    def to_dict(self) -> dict:
        return asdict(self) | {"kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """A plan handed over by another process (an Airflow XCom), checked: its id names a
        work folder inside the home and hashes what it names; its shards lie under shards/."""
        try:
            plan = cls(**data | {"kind": PlanKind(data["kind"])})
            problem = _problem(plan)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            problem = f"{type(e).__name__}: {e}"
        if problem:
            raise UserError(f"the plan handed over is not valid ({problem}): plan again")
        return plan


def _problem(plan: Plan) -> str | None:
    if not isinstance(plan.id, str) or not _ID.fullmatch(plan.id):
        return f"id {plan.id!r} is not one of this pipeline's"
    if plan.parent is not None and not (isinstance(plan.parent, str) and plan.parent.isdigit()):
        return f"parent {plan.parent!r} is not a version number"
    for entry in plan.new + plan.old:
        path = PurePosixPath(entry["path"])
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("shards",):
            return f"shard {entry['path']!r} is not under the home's shards/"
        if not _SHA256.fullmatch(str(entry["sha256"])):
            return f"shard {entry['path']!r} has no sha256"
    if plan.learned and plan.id != _plan_id(plan.kind, plan.parent, plan.learned):
        return f"id {plan.id} does not match its kind, parent and shards"
    return None


def _plan_id(kind: PlanKind, parent: str | None, shards: list[dict]) -> str:
    key = json.dumps([parent, [(s["path"], s["sha256"]) for s in shards]])
    return f"{kind.value}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _entry(shard: Shard) -> dict:
    return {"path": shard.name, "sha256": shard.sha256}


def new_paths(config: Config) -> set[str]:
    """The catalog's `new` shards, as plans and version tags name them."""
    with Catalog.of(config) as catalog:
        return {s.name for s in catalog.list_shards(state="new")}


def _usable(shards: list[Shard]) -> tuple[list[dict], list[dict]]:
    """The shards that can be trained on, and the others with the reason (reported, left as
    they are)."""
    usable, skipped = [], []
    for shard in shards:
        problem = shard_problem(shard.path, shard.sha256)
        if problem:
            log.warning("shard_skipped", shard=shard.name, reason=problem)
            skipped.append({"path": shard.name, "reason": problem})
        else:
            usable.append(_entry(shard))
    return usable, skipped


def _save(home: Home, plan: Plan) -> Plan:
    """Keep the plan in its work folder and drop the folders of the same kind of plan that
    are over (a nightly retrain and an update may be under way side by side)."""
    work = home.work_folder(plan.id)
    for other in home.work.glob(f"{plan.kind.value}-*"):
        if other != work:
            shutil.rmtree(other, ignore_errors=True)
    write_json(work / "plan.json", plan.to_dict())
    return plan


def _champion(config: Config, registry: Registry, purpose: str) -> str:
    parent = registry.champion()
    if parent is None:
        raise UserError(f"model {config.model_name} has no champion in the registry at "
                        f"{registry.uri}{purpose}: train one with `cllm train --from-scratch`")
    return parent


def plan_update(config: Config, registry: Registry) -> Plan:
    """The next increment for champion: the usable `new` shards (none: nothing to do) and the
    consumed ones as the replay pool (retired ones are not: pipeline/reprocess.py)."""
    home = Home(config.home)
    parent = _champion(config, registry, "")
    with Catalog.of(config) as catalog:
        new, skipped = _usable(catalog.list_shards(state="new"))
        old = [_entry(s) for s in catalog.list_shards(state="consumed")]
    plan = Plan(_plan_id(PlanKind.UPDATE, parent, new), parent, new, old, skipped,
                PlanKind.UPDATE)
    return _save(home, plan) if new else plan


def plan_from_scratch(config: Config, registry: Registry) -> Plan:
    """Every usable shard of the catalog, new or consumed (not retired: a reprocessed shard's
    replacement is there), for a new model and tokenizer."""
    home = Home(config.home)
    with Catalog.of(config) as catalog:
        shards, skipped = _usable([s for s in catalog.list_shards() if s.state != "retired"])
    if not shards:
        reason = f"; {len(skipped)} unusable" if skipped else ""
        where = config.database_url or home.catalog
        raise UserError(f"the shard catalog ({where}) holds no usable shards{reason}: "
                        "crawl some with `cllm crawl --seeds URL`")
    return _save(home, Plan(_plan_id(PlanKind.SCRATCH, None, shards), None, shards, [],
                            skipped, PlanKind.SCRATCH))


def plan_retrain(config: Config, registry: Registry) -> Plan:
    """A new model on every usable shard with champion's tokenizer, evaluated against champion.
    Nothing to do (empty plan) when champion was itself trained from scratch or retrained on
    exactly these shards (a retrain already registered against champion: `registered_for`)."""
    home = Home(config.home)
    parent = _champion(config, registry, " to retrain against")
    with Catalog.of(config) as catalog:
        new, skipped = _usable(catalog.list_shards(state="new"))
        old, skipped_old = _usable(catalog.list_shards(state="consumed"))
    plan = Plan(_plan_id(PlanKind.RETRAIN, parent, new + old), parent, new, old,
                skipped + skipped_old, PlanKind.RETRAIN)
    champion = registry.resolve(f"{config.model_name}/{parent}")
    full = champion.tags.get("training") in (PlanKind.SCRATCH, PlanKind.RETRAIN)
    if full and sorted(champion.shards) == sorted(plan.shard_paths):
        log.info("retrain_skipped", champion=parent, shards=len(plan.shard_paths),
                 message="champion already covers every shard")
        return dataclasses.replace(plan, new=[], old=[])
    return _save(home, plan)


def plan_next(config: Config, registry: Registry) -> Plan:
    """The continuous flow's next training (the Airflow DAG's): an update of champion, or
    version 1 from scratch while there is no champion."""
    if registry.champion():
        return plan_update(config, registry)
    return plan_from_scratch(config, registry)


def check_current(config: Config, registry: Registry, plan: Plan) -> None:
    """A plan with a parent is stale once another run consumed its new shards or moved
    champion (a model from scratch depends on neither)."""
    if not plan.kind.has_parent:
        return
    if registry.champion() != plan.parent:
        raise UserError(f"plan {plan.id} was made against version {plan.parent}, which is no "
                        "longer champion: plan again")
    new = new_paths(config)
    gone = [s["path"] for s in plan.new if s["path"] not in new]
    if gone:
        raise UserError(f"plan {plan.id} is stale: shard {gone[0]} is no longer new: plan again")
