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
from engine.model import GPTConfig
from engine.train import TrainConfig


@dataclass
class Config:
    home: Path = Path("./var")  # CLLM_HOME: where all state lives
    model_name: str = "cllm"  # the registered model's name
    log_format: str = "auto"  # auto (console on a terminal, JSON elsewhere), console, json
    model: GPTConfig = field(default_factory=GPTConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crawl: CrawlConfig = field(default_factory=CrawlConfig)

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
