"""looplm: looped (depth-recurrent) language models and STARS, stability-driven recurrent scaling.

The public API is small on purpose: configs, the looped-model protocol and its one loop, the model, samplers,
regularizers, tasks, the trainer and depth sweeps. Submodules hold the rest.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): `import looplm` and the `looplm` command start without torch, so
# Ctrl-C while torch loads is still one line, and `looplm --help` answers at once.
_WHERE = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "UserError": "errors",
    "parse_depths": "evaluate",
    "sweep": "evaluate",
    "generate": "generate",
    "LoopedModel": "looped",
    "check_looped": "looped",
    "phi": "looped",
    "run_loop": "looped",
    "sample_loops": "loops",
    "LoopedTransformer": "model",
    "twice_differentiable": "model",
    "fixed_point_residual": "regularizers",
    "hutchinson": "regularizers",
    "jsrr": "regularizers",
    "jsrr_release": "regularizers",
    "power_penalty": "regularizers",
    "AdditionTask": "tasks",
    "Batch": "tasks",
    "CharTokenizer": "tasks",
    "read_addition_jsonl": "tasks",
    "fit": "train",
    "train": "train",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'looplm' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`looplm.train` and `looplm.generate` are functions of the public API and also the names of their modules:
    importing a submodule sets it as the package's attribute, which would hide the function. The function stays;
    the modules are `sys.modules["looplm.train"]` (`importlib.import_module("looplm.train")`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("train", "generate") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import Config, ConfigError, load_config
    from .errors import UserError
    from .evaluate import parse_depths, sweep
    from .generate import generate
    from .looped import LoopedModel, check_looped, phi, run_loop
    from .loops import sample_loops
    from .model import LoopedTransformer, twice_differentiable
    from .regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
    from .tasks import AdditionTask, Batch, CharTokenizer, read_addition_jsonl
    from .train import fit, train

__version__ = "0.1.0"

__all__ = [
    "AdditionTask", "Batch", "CharTokenizer", "Config", "ConfigError", "LoopedModel", "LoopedTransformer",
    "UserError", "check_looped", "fit", "fixed_point_residual", "generate", "hutchinson", "jsrr", "jsrr_release",
    "load_config", "parse_depths", "phi", "power_penalty", "read_addition_jsonl", "run_loop", "sample_loops",
    "sweep", "train", "twice_differentiable",
]
