"""The third step of continuous learning: held-out loss of the trained model and of its
parent, on the new shards and on the old ones, and the gate's verdict on champion.

The evaluation is kept in the plan's work folder (`evaluation.json`), so a rerun after a kill
does not evaluate again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

import structlog
from threadpoolctl import threadpool_limits

from core.errors import UserError
from core.files import write_json
from core.home import Home
from engine.checkpoint import load_model
from engine.config import TrainConfig
from engine.data import concat
from engine.train import evaluate as held_out_loss
from pipeline.config import Config
from pipeline.plan import Plan
from pipeline.registry import Registry
from pipeline.tokens import shard_tokens
from pipeline.training import model_dir

log = structlog.get_logger()


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
        """An evaluation handed over by another process (an Airflow XCom): its losses are
        numbers or None; its verdict is for `recheck` to compute again."""
        try:
            evaluation = cls(**data)
            losses = [evaluation.val_loss_new, evaluation.val_loss_old,
                      evaluation.parent_val_loss_new, evaluation.parent_val_loss_old]
            valid = all(x is None or isinstance(x, (int, float)) for x in losses)
        except TypeError:
            valid = False
        if not valid:
            raise UserError("the evaluation handed over is not valid: evaluate again")
        return evaluation


def evaluate(config: Config, registry: Registry, plan: Plan) -> Evaluation:
    """Held-out loss of the trained model and of its parent on the new shards and on the old
    ones (the same windows for both), and the gate's verdict."""
    home = Home(config.home)
    saved = home.work_folder(plan.id) / "evaluation.json"
    if saved.is_file():
        return Evaluation.from_dict(json.loads(saved.read_text()))
    child = load_model(model_dir(home, plan))
    cfg = dataclasses.replace(TrainConfig(**child.state["train_config"]),
                              eval_batches=config.continual.eval_batches)
    needed = cfg.seq_len + cfg.batch_size + 1

    def held_out(shards: list[dict]):
        entries = shard_tokens(home, shards, child.tokenizer, cfg.val_fraction)
        return concat([t.val for t in entries], child.tokenizer.dtype)

    new_val, old_val = held_out(plan.new), held_out(plan.old)
    if plan.new and len(new_val) < needed:  # a retrain may have none
        raise UserError(f"the held-out tokens of {len(plan.new)} new shard(s) are too few "
                        f"({len(new_val)}, and one batch of windows needs {needed}): crawl more "
                        "text before training")
    has_old = len(old_val) >= needed

    def losses(model):
        # on the training's BLAS threads: all of them on a loaded machine's cores made each
        # batch several times slower than the training's steps
        with threadpool_limits(config.train.threads or None):
            return (held_out_loss(model.params, model.config, new_val, cfg) if plan.new
                    else None,
                    held_out_loss(model.params, model.config, old_val, cfg) if has_old
                    else None)

    new_loss, old_loss = losses(child)
    parent_new = parent_old = None
    if plan.parent is not None:
        parent_new, parent_old = losses(load_model(registry.pull(plan.parent)))
    passed, reason = gate(config, plan, new_loss, old_loss, parent_new, parent_old,
                          champion_exists=registry.champion() is not None)
    result = Evaluation(new_loss, old_loss, parent_new, parent_old, passed, reason)
    log.info("evaluate", plan=plan.id, **result.to_dict())
    write_json(saved, result.to_dict())
    return result


def recheck(config: Config, registry: Registry, plan: Plan, e: Evaluation) -> Evaluation:
    """The gate's verdict computed again from the evaluation's losses: a verdict that comes
    from elsewhere is never taken on trust."""
    passed, reason = gate(config, plan, e.val_loss_new, e.val_loss_old, e.parent_val_loss_new,
                          e.parent_val_loss_old, champion_exists=registry.champion() is not None)
    return dataclasses.replace(e, passed=passed, reason=reason)


def gate(config: Config, plan: Plan, new_loss: float | None, old_loss: float | None,
         parent_new: float | None, parent_old: float | None,
         champion_exists: bool = True) -> tuple[bool, str]:
    """Champion moves only when new-data loss improves on the parent's and old-data loss
    worsens by at most `gate_tolerance` (a retrain with no new shards must improve on the old).
    A model from scratch has a tokenizer of its own, so its losses do not compare with
    champion's: it becomes champion only when there is none."""
    if not plan.kind.has_parent:
        if not champion_exists:
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
