"""Configuration: one TOML file, `CLLM_*` environment overrides, then command-line flags.

Every key is optional. The file is `--config FILE`, else `$CLLM_CONFIG`, else `./cllm.toml`
when it exists. Top-level keys are the general settings (`General`); each table (`[model]`,
`[train]`, ...) is one section, a dataclass owned by the package it configures. An environment
variable `CLLM_<SECTION>_<KEY>` overrides a section key (`CLLM_TRAIN_STEPS=500`), `CLLM_<KEY>`
a general one (`CLLM_HOME=/srv/cllm`). Unknown keys are errors, so a typo never passes silently.

A package loads what it reads: `load(Schema)` with a dataclass of the general keys and its
sections (the pipeline all of them, the crawler its own). The tables of other packages are
left to them, so a section never needs to import the code of another.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

# Every table a cllm.toml may hold, whichever package reads it (engine: model, train; crawler:
# crawl; pipeline: continual; app: ui, serve); any other is a typo.
SECTIONS = ("model", "train", "crawl", "continual", "ui", "serve")
# CLLM_* variables that are not settings (read where they act, like MLflow's own variables)
NOT_SETTINGS = {"CLLM_CONFIG", "CLLM_ARRAY_MODULE"}

T = typing.TypeVar("T")


@dataclass
class General:
    """The top-level keys, which every schema has."""

    home: Path = Path("./var")  # CLLM_HOME: where all state lives
    model_name: str = "cllm"  # the registered model's name
    log_format: str = "auto"  # auto (console on a terminal, JSON elsewhere), console, json
    # CLLM_DATABASE_URL: where the shard catalog and the crawl state live. Empty: SQLite files
    # under the home; postgresql://user:password@host:port/database: one database that a
    # fleet of crawlers (and the training) share.
    database_url: str = ""
    # CLLM_REGISTRY_ATTEMPTS: how many times a registry call is tried while the registry is
    # down or locked; 5 waits about 15 s in all (pipeline/registry_errors.py)
    registry_attempts: int = 5

    def validate(self) -> None:
        if self.registry_attempts < 1:
            raise UserError(f"setting registry_attempts={self.registry_attempts} must be at least "
                            "1: set registry_attempts (CLLM_REGISTRY_ATTEMPTS) to how many times "
                            "a registry call is tried")


def sections(config) -> dict[str, object]:
    """The section dataclasses of a loaded configuration, by table name."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if _is_section(f)}


def _is_section(f: dataclasses.Field) -> bool:
    return callable(f.default_factory) and dataclasses.is_dataclass(f.default_factory)


def config_file(path: str | Path | None, environ: typing.Mapping[str, str]) -> Path | None:
    found = path or environ.get("CLLM_CONFIG") or ("cllm.toml" if Path("cllm.toml").is_file()
                                                   else None)
    return Path(found) if found else None


def load(schema: type[T], path: str | Path | None = None,
         environ: typing.Mapping[str, str] | None = None) -> T:
    """A `schema` (General's keys and some sections) from the file (if any) and the
    environment, its general keys and every section validated."""
    environ = os.environ if environ is None else environ
    config = schema()
    if (file := config_file(path, environ)) is not None:
        _apply_file(config, file)
    _apply_environ(config, environ)
    for section in [config, *sections(config).values()]:
        if hasattr(section, "validate"):
            section.validate()
    return config


def _apply_file(config, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: pass an existing --config FILE") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    known = sections(config)
    for key, value in data.items():
        if key in known or (key in SECTIONS and isinstance(value, dict)):
            if not isinstance(value, dict):
                raise UserError(f"config file {path}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                if key in known:
                    set_value(known[key], sub_key, sub_value, f"{path} [{key}]")
        else:
            set_value(config, key, value, str(path))


def _apply_environ(config, environ: typing.Mapping[str, str]) -> None:
    known = sections(config)
    for name, raw in environ.items():
        if not name.startswith("CLLM_") or name in NOT_SETTINGS:
            continue
        key = name[len("CLLM_") :].lower()
        section = next((s for s in SECTIONS if key.startswith(s + "_")), None)
        if section is None:
            set_value(config, key, raw, f"environment {name}")
        elif section in known:
            set_value(known[section], key[len(section) + 1 :], raw, f"environment {name}")


def apply_flags(section, args, names: list[str]) -> None:
    """Copy the command-line flags that were given (the attributes of `args` that are not
    None) onto a section, which is then checked again: flags beat the file and environment."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            set_value(section, name, value, f"--{name.replace('_', '-')}")
    if hasattr(section, "validate"):
        section.validate()


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
    converted = kind(value)
    if kind is float and not math.isfinite(converted):
        raise ValueError(value)  # nan and inf pass every comparison a check could make
    return converted
