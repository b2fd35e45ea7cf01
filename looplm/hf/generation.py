"""The loop count of `generate()` from a generation config, for the looped HF models (Ouro, a looplm export).

transformers passes a generation config's own keys to its decoding and keeps any other key without reading it: a
`num_loops` in `GenerationConfig(...)` or in `model.generation_config` was kept, and saved, while every call ran the
model's default loop count. (transformers drops such a key when it reloads a generation_config.json it derived
from the model config: pass `num_loops` to `generate()`, or set it on the loaded model's generation_config.)
"""

from __future__ import annotations

import copy
from typing import Any

LOOP_KEYS = ("num_loops", "exit_threshold")  # the looped models' own decoding settings


class LoopGeneration:
    """A mixin before GenerationMixin: `generate()` takes `num_loops` (and Ouro's `exit_threshold`) from the
    generation config in use when the call does not pass them (a call's `exit_threshold=None` is the model
    config's rule, as in a forward call). transformers reads a keyword that names an
    attribute of the config as a change to the config, never handing it to the model: the keys are taken out of
    a copy of the config and passed as the model's own arguments."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        mine = getattr(self, "generation_config", None)
        config = kwargs.get("generation_config") or mine
        own = {k: getattr(config, k) for k in LOOP_KEYS if getattr(config, k, None) is not None}
        for k, v in own.items():
            kwargs.setdefault(k, v)  # a key the call passes, None included, is the call's (None: the model's own)
        if kwargs.get("generation_config") is not None:
            kwargs["generation_config"] = copy.deepcopy(kwargs["generation_config"])
            for k in LOOP_KEYS:
                if hasattr(kwargs["generation_config"], k):
                    delattr(kwargs["generation_config"], k)
        # (and out of the model's own config for the call: transformers fills a passed config's gaps from it)
        kept = {k: getattr(mine, k) for k in LOOP_KEYS if hasattr(mine, k)}
        for k in kept:
            delattr(mine, k)
        try:
            return super().generate(*args, **kwargs)
        finally:
            for k, v in kept.items():
                setattr(mine, k, v)
