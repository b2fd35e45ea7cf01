"""Checkpoints: `model.safetensors` + `config.json` + `trainer_state.pt`, written atomically.

A checkpoint directory is first written under a temporary name, its files fsynced, then renamed into
place, so a crash mid-save leaves the previous checkpoint whole. Weights load through safetensors only and
the trainer state through `torch.load(weights_only=True)`: no pickle from a checkpoint ever runs code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config, ConfigError
from .model import LoopedTransformer

WEIGHTS, CONFIG, STATE = "model.safetensors", "config.json", "trainer_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the requested model."""


def resolve(path: str | Path) -> Path:
    """Accept a run directory or its `checkpoint/` folder; return the folder holding the weights."""
    p = Path(path)
    if (p / WEIGHTS).is_file():
        return p
    if (p / "checkpoint" / WEIGHTS).is_file():
        return p / "checkpoint"
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    raise CheckpointError(f"no {WEIGHTS} in {p} or {p / 'checkpoint'}: not a looplm checkpoint or run directory")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(ckpt_dir: str | Path, model: LoopedTransformer, cfg: Config, state: dict[str, Any] | None = None
         ) -> Path:
    """Atomically write a checkpoint directory (replacing any previous one at that path)."""
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    old = ckpt_dir.with_name(ckpt_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt", "looplm": "1"})
    (tmp / CONFIG).write_text(cfg.to_json())
    if state is not None:
        torch.save(state, tmp / STATE)
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    # Swap: current -> .old, tmp -> current, drop .old. A crash between the two renames leaves `.old`,
    # which `recover` puts back.
    if ckpt_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        ckpt_dir.rename(old)
    tmp.rename(ckpt_dir)
    _fsync_dir(ckpt_dir.parent)
    shutil.rmtree(old, ignore_errors=True)
    return ckpt_dir


def recover(ckpt_dir: str | Path) -> None:
    """Finish an interrupted swap: if only `<name>.old` survives, it becomes the checkpoint again."""
    ckpt_dir = Path(ckpt_dir)
    old = ckpt_dir.with_name(ckpt_dir.name + ".old")
    if not ckpt_dir.exists() and old.exists():
        old.rename(ckpt_dir)
    shutil.rmtree(ckpt_dir.with_name(ckpt_dir.name + ".tmp"), ignore_errors=True)


def load_config(path: str | Path) -> Config:
    d = resolve(path)
    f = d / CONFIG
    try:
        return Config.from_dict(json.loads(f.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{f} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON ({e.msg}); the file is corrupted") from None
    except ConfigError as e:
        raise CheckpointError(f"{f}: {e}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", expect: Config | None = None
               ) -> tuple[LoopedTransformer, Config]:
    """Build the model from `config.json` and load `model.safetensors` strictly.

    With `expect`, the checkpoint's model section must equal `expect.model`; mismatches are listed.
    """
    d = resolve(path)
    cfg = load_config(d)
    if expect is not None:
        mine, theirs = cfg.to_dict()["model"], expect.to_dict()["model"]
        diff = [f"model.{k}: checkpoint {mine[k]!r} vs requested {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
        if diff:
            raise CheckpointError(f"checkpoint {d} does not match the requested model:\n  " + "\n  ".join(diff))
    model = LoopedTransformer(cfg.model)
    f = d / WEIGHTS
    try:
        weights = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{f} is unreadable ({e}); the file is truncated or corrupted") from None
    missing, unexpected = set(model.state_dict()) - set(weights), set(weights) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{f} does not match config.json: missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)}")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{f} does not match config.json: {e}") from None
    return model.to(device), cfg


def load_state(path: str | Path) -> dict[str, Any]:
    f = resolve(path) / STATE
    if not f.is_file():
        raise CheckpointError(f"{f} is missing: this checkpoint holds weights only and cannot be resumed")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged zip/pickle
        raise CheckpointError(f"{f} is unreadable ({type(e).__name__}: {e}); the file is truncated or corrupted"
                              ) from None
