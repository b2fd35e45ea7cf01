"""Why a checkpoint's weights do not fit the module they are loaded into, said in one line.

torch's strict `load_state_dict` lists every size mismatch (some 40 lines for a model built with another d_model),
and looplm used to blame the checkpoint ("does not match config.json") when it was the caller's model that was built
with other shapes. For a LoopedTransformer the config fields that differ from the checkpoint's config.json say it;
for any other module (or a config.json that does not describe its own weights), the first few tensors do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import UserError
from .model import LoopedTransformer

SHOWN = 4  # tensors named in a message; the rest are counted


def tensor_diff(held: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]) -> list[str]:
    """Every key missing, extra or of another shape: `name: shape in the file vs in the model`."""
    diff = [f"{k} {list(stored[k].shape)} in the file vs {list(v.shape)} in the model"
            for k, v in held.items() if k in stored and stored[k].shape != v.shape]
    diff += [f"{k} missing from the file" for k in held if k not in stored]
    return diff + [f"{k} in the file but not in the model" for k in stored if k not in held]


def shown(diff: list[str]) -> str:
    more = f" (and {len(diff) - SHOWN} more)" if len(diff) > SHOWN else ""
    return "; ".join(diff[:SHOWN]) + more


def mismatch(f: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor],
             saved: Callable[[], Any]) -> str | None:
    """None when `weights` (file `f`) fit `model` key for key and shape for shape, else what differs.

    `saved()` gives the checkpoint's Config (read only on a mismatch): a LoopedTransformer built with other model
    fields than it records is the caller's mistake, and the message says how to build the right one.
    """
    diff = tensor_diff(model.state_dict(), weights)
    if not diff:
        return None
    if type(model) is not LoopedTransformer:
        return (f"{f} does not fit the state dict of {type(model).__name__}: {shown(diff)}; build the module as the "
                "run that saved it did (its config.json)")
    try:
        theirs = getattr(saved(), "model", None)
    except UserError:  # no readable config.json to compare with: the tensors say it
        theirs = None
    fields = [] if not isinstance(theirs, ModelConfig) else [
        f"{x.name} {getattr(model.cfg, x.name)!r} vs {getattr(theirs, x.name)!r}"
        for x in dataclasses.fields(ModelConfig) if getattr(model.cfg, x.name) != getattr(theirs, x.name)]
    if not fields:  # the model is the one config.json describes: the file is what differs
        return f"{f} does not match config.json: {shown(diff)}"
    return (f"the model passed is built with other settings than {f.parent / 'config.json'} records "
            f"({', '.join(fields)}: model vs checkpoint), so its weights do not fit: build it from the checkpoint's "
            "config with looplm.checkpoint.load_model(path), or LoopedTransformer(looplm.checkpoint.load_config("
            "path).model)")
