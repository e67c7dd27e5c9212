"""Configuration: one TOML file, `CLLM_*` environment overrides, then command-line flags.

Every key is optional. The file is `--config FILE`, else `$CLLM_CONFIG`, else `./cllm.toml`
when it exists. Top-level keys are the general settings; each table (`[model]`, `[train]`,
...) is one section dataclass. An environment variable `CLLM_<SECTION>_<KEY>` overrides a
section key (`CLLM_TRAIN_STEPS=500`), `CLLM_<KEY>` a general one (`CLLM_HOME=/srv/cllm`).
Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from crawler.config import CrawlConfig
from engine.errors import UserError
from engine.config import GPTConfig, TrainConfig


@dataclass
class ContinualConfig:
    """`[continual]`: how `cllm update` continues the champion on new shards."""

    steps: int = 200  # optimizer steps of one update
    replay_fraction: float = 0.25  # share of an update's training tokens drawn from older shards
    lr: float = 1e-3  # the re-warmed peak learning rate
    min_lr: float = 1e-4  # where the update's cosine decay ends
    warmup_steps: int = 20  # at most a tenth of the steps (Schedule.rewarm)
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
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise UserError(f"continual learning rates lr={self.lr}, min_lr={self.min_lr} must "
                            "satisfy 0 <= min_lr <= lr and lr > 0")
        if self.gate_tolerance < 0:
            raise UserError(f"continual setting gate_tolerance={self.gate_tolerance} must be 0 "
                            "or more")


@dataclass
class UIConfig:
    """`[ui]`: the web application, `cllm ui` (flags override)."""

    host: str = "127.0.0.1"  # an address other than loopback needs a token
    port: int = 8000
    token: str = ""  # when set, every request must carry it (CLLM_UI_TOKEN)

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise UserError(f"ui setting port={self.port} must be between 1 and 65535")


@dataclass
class Config:
    home: Path = Path("./var")  # CLLM_HOME: where all state lives
    model_name: str = "cllm"  # the registered model's name
    log_format: str = "auto"  # auto (console on a terminal, JSON elsewhere), console, json
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    ui: UIConfig = field(default_factory=UIConfig)

    @property
    def sections(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if _is_section(f)}


def _is_section(f: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(f.default_factory) if callable(f.default_factory) else False


def load_config(path: str | Path | None = None, environ: typing.Mapping[str, str] | None = None):
    """The configuration from the file (if any) and the environment."""
    environ = os.environ if environ is None else environ
    config = Config()
    path = path or environ.get("CLLM_CONFIG") or ("cllm.toml" if Path("cllm.toml").is_file() else None)
    if path:
        _apply_file(config, Path(path))
    _apply_environ(config, environ)
    for section in config.sections.values():
        if hasattr(section, "validate"):
            section.validate()
    return config


def _apply_file(config: Config, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: pass an existing --config FILE") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    sections = config.sections
    for key, value in data.items():
        if key in sections:
            if not isinstance(value, dict):
                raise UserError(f"config file {path}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                set_value(sections[key], sub_key, sub_value, f"{path} [{key}]")
        else:
            set_value(config, key, value, str(path))


def _apply_environ(config: Config, environ: typing.Mapping[str, str]) -> None:
    sections = config.sections
    for name, raw in environ.items():
        if not name.startswith("CLLM_") or name in ("CLLM_CONFIG", "CLLM_ARRAY_MODULE"):
            continue
        key = name[len("CLLM_") :].lower()
        for section_name, section in sections.items():
            if key.startswith(section_name + "_"):
                set_value(section, key[len(section_name) + 1 :], raw, f"environment {name}")
                break
        else:
            set_value(config, key, raw, f"environment {name}")


def set_value(target, key: str, value, source: str) -> None:
    """Set one known key, converting strings (from the environment) to the field's type."""
    fields = {f.name: f for f in dataclasses.fields(target) if not _is_section(f)}
    if key not in fields:
        known = ", ".join(sorted(fields))
        raise UserError(f"unknown setting {key!r} in {source}: known settings are {known}")
    kind = typing.get_type_hints(type(target))[key]
    try:
        setattr(target, key, _convert(value, kind))
    except (TypeError, ValueError):
        raise UserError(f"setting {key} in {source} must be {kind.__name__}, not {value!r}") from None


def _convert(value, kind):
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind is int and isinstance(value, (bool, float)):
        raise TypeError(value)
    if kind is Path:
        return Path(value)
    return kind(value)
