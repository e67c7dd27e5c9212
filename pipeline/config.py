"""The pipeline's configuration: the general keys, the sections of the packages below it
(`[model]`, `[train]` from engine/config.py, `[crawl]` from crawler/config.py) and its own
`[continual]`, loaded from cllm.toml and `CLLM_*` (core/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import General, load
from core.errors import UserError
from crawler.config import CrawlConfig
from engine.config import GPTConfig, TrainConfig


@dataclass
class ContinualConfig:
    """`[continual]`: how `cllm update` continues the champion on new shards."""

    steps: int = 200  # optimizer steps of one update
    replay_fraction: float = 0.25  # share of an update's training tokens drawn from older shards
    lr: float = 1e-3  # the re-warmed peak learning rate
    min_lr: float = 1e-4  # where the update's cooldown ends
    warmup_steps: int = 20  # at most a tenth of the steps (Schedule.rewarm)
    cooldown: float = 1.0  # the share of the steps after the warm-up that decay
    gate_tolerance: float = 0.02  # old-data loss may worsen by this share and still pass
    eval_batches: int = 8  # batches of held-out windows per part for the gate
    # the `nightly_retrain` DAG's cron (02:00 UTC); "" runs it only when triggered
    retrain_schedule: str = "0 2 * * *"

    def validate(self) -> None:
        for name in ("steps", "warmup_steps", "eval_batches"):
            if getattr(self, name) < 1:
                raise UserError(f"continual setting {name}={getattr(self, name)} must be at "
                                "least 1")
        if not 0 <= self.replay_fraction < 1:
            raise UserError(f"continual setting replay_fraction={self.replay_fraction} must be "
                            "at least 0 and below 1")
        if not 0 < self.cooldown <= 1:
            raise UserError(f"continual setting cooldown={self.cooldown} must be above 0 and "
                            "at most 1 (the share of an update's steps after its warm-up that "
                            "decay)")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise UserError(f"continual learning rates lr={self.lr}, min_lr={self.min_lr} must "
                            "satisfy 0 <= min_lr <= lr and lr > 0")
        if self.gate_tolerance < 0:
            raise UserError(f"continual setting gate_tolerance={self.gate_tolerance} must be 0 "
                            "or more")


@dataclass
class Config(General):
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)


def load_config(path: str | Path | None = None, environ=None) -> Config:
    """The configuration from the file (if any) and the environment."""
    return load(Config, path, environ)
