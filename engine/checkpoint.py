"""A checkpoint is a model version directory:

    config.json            the architecture (GPTConfig)
    model.safetensors      the weights
    optimizer.safetensors  AdamW's moments, so training can continue
    tokenizer.json         the frozen tokenizer of the lineage
    training_state.json    step, tokens seen, schedule, the training settings
    metrics.json           losses

It is written whole into a sibling temporary directory and swapped in by renames, so a
reader (or a run killed midway) sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from engine.errors import UserError
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "config.json").write_text(json.dumps(asdict(config), indent=2))
    save_file({k: to_numpy(v) for k, v in params.items()}, tmp / "model.safetensors")
    save_file({k: to_numpy(v) for k, v in optimizer_state.items()}, tmp / "optimizer.safetensors")
    tokenizer.save(tmp / "tokenizer.json")
    (tmp / "training_state.json").write_text(json.dumps(state, indent=2))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def recover(path: Path) -> None:
    """Finish a swap that a kill interrupted between its two renames."""
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        old.rename(path)


def is_checkpoint(path: Path) -> bool:
    recover(path)
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
    recover(path)
    raw = _read_json(path / "config.json")
    try:
        config = GPTConfig(**raw)
    except TypeError as e:
        raise UserError(f"{path / 'config.json'} does not describe a model ({e})") from None
    config.validate()
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


def load_optimizer_state(path: Path) -> dict:
    return _read_tensors(Path(path) / "optimizer.safetensors")
