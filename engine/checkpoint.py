"""A checkpoint is a model version directory:

    config.json            the architecture (GPTConfig)
    model.safetensors      the weights
    optimizer.safetensors  AdamW's moments, so training can continue
    tokenizer.json         the frozen tokenizer of the lineage
    training_state.json    step, tokens seen, schedule, the training settings
    metrics.json           losses

It is written whole into a sibling temporary directory, synced and swapped in by renames
(core/files.py `atomic_dir`), so a reader, a run killed midway or a power cut sees the old
version or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from core.errors import UserError
from core.files import atomic_dir, recover_dir
from engine.config import GPTConfig
from engine.model import parameter_shapes
from engine.tokenizer import Tokenizer
from engine.xp import to_numpy, xp

FILES = ("config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json",
         "training_state.json", "metrics.json")


@dataclass
class Model:
    """A loaded model version: what generation and continued training need."""

    path: Path
    config: GPTConfig
    params: dict
    tokenizer: Tokenizer
    state: dict = field(default_factory=dict)  # training_state.json
    metrics: dict = field(default_factory=dict)


def save_checkpoint(out: Path, config: GPTConfig, params: dict, optimizer_state: dict,
                    tokenizer: Tokenizer, state: dict, metrics: dict) -> None:
    with atomic_dir(Path(out)) as tmp:
        (tmp / "config.json").write_text(json.dumps(asdict(config), indent=2))
        _save_tensors(params, tmp / "model.safetensors")
        _save_tensors(optimizer_state, tmp / "optimizer.safetensors")
        (tmp / "tokenizer.json").write_text(tokenizer.json_text, encoding="utf-8")
        (tmp / "training_state.json").write_text(json.dumps(state, indent=2))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))


def _save_tensors(tensors: dict, path: Path) -> None:
    try:
        save_file({k: to_numpy(v) for k, v in tensors.items()}, path)
    except SafetensorError as e:  # an I/O error in Rust: the OSError it was, for callers
        found = re.search(r"os error (\d+)", str(e))
        if not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def is_checkpoint(path: Path) -> bool:
    recover_dir(path)
    return (path / "config.json").is_file()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"model directory {path.parent} has no {path.name}: "
                        "it is not a complete model version") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupted (not valid JSON): restore the model version "
                        "or train it again") from None


def _read_tensors(path: Path) -> dict:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise UserError(f"model directory {path.parent} has no {path.name}: "
                        "it is not a complete model version") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is corrupted or truncated ({e}): restore the model version "
                        "or train it again") from None


def load_model(path: Path, dtype=np.float32) -> Model:
    """Load a model version directory, checking every part of it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist: pass a directory written by "
                        "`cllm train` or `cllm models pull`")
    recover_dir(path)
    config = read_model_config(path)
    tensors = _read_tensors(path / "model.safetensors")
    shapes = parameter_shapes(config)
    for name, shape in shapes.items():
        if name not in tensors or tensors[name].shape != shape:
            found = tensors[name].shape if name in tensors else "missing"
            raise UserError(f"{path / 'model.safetensors'} does not match config.json: "
                            f"{name} should be {shape}, is {found}")
    tokenizer = Tokenizer.load(path / "tokenizer.json")
    if tokenizer.vocab_size > config.vocab_size:
        raise UserError(f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
                        f"{config.vocab_size}")
    params = {name: xp.asarray(tensors[name], dtype=dtype) for name in shapes}
    state = _read_json(path / "training_state.json")
    metrics = _read_json(path / "metrics.json")
    return Model(path=path, config=config, params=params, tokenizer=tokenizer, state=state,
                 metrics=metrics)


def read_model_config(path: Path) -> GPTConfig:
    """A model version's config.json alone: its shape."""
    path = Path(path)
    try:
        config = GPTConfig(**_read_json(path / "config.json"))
    except TypeError as e:
        raise UserError(f"{path / 'config.json'} does not describe a model ({e})") from None
    config.validate()
    return config


def read_training_state(path: Path) -> dict:
    """A model version's training_state.json alone: its step, schedule and settings."""
    return _read_json(Path(path) / "training_state.json")


def load_optimizer_state(path: Path) -> dict:
    return _read_tensors(Path(path) / "optimizer.safetensors")
