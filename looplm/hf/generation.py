"""The loop count of `generate()` from a generation config, for the looped HF models (Ouro, a looplm export).

transformers passes a generation config's own keys to its decoding and keeps any other key without reading it: a
`num_loops` in `GenerationConfig(...)` or in `model.generation_config` was kept, and saved, while every call ran the
model's default loop count. (transformers drops such a key when it reloads a generation_config.json it derived
from the model config: pass `num_loops` to `generate()`, or set it on the loaded model's generation_config.)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

# the looped models' own decoding settings (the export has no exit gate: its forward refuses the last three, as
# from the call; use_weighted_exit was left on the config, and Ouro decoded with last-loop logits without a word)
LOOP_KEYS = ("num_loops", "exit_threshold", "use_weighted_exit", "exit_dtype")
TOKEN_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")  # the model's, kept
# what a caller that passes max_length and use_cache (lm-eval does, on every call) never takes from the model's
_UNREAD = ("max_length", "use_cache", "output_attentions", "output_hidden_states", "_from_model_config",
           "transformers_version")


def set_aside(config: Any) -> dict[str, Any]:
    """The settings of a model's generation config that `request_settings_only` sets aside, where they would have
    changed a generation (a value that is not transformers' default): {key: value}."""
    from transformers import GenerationConfig

    if config is None:
        return {}
    defaults = GenerationConfig._get_default_generation_params()
    return {k: v for k, v in config.to_diff_dict().items()
            if k not in TOKEN_KEYS and k not in _UNREAD and v is not None and defaults.get(k, None) != v}


@contextlib.contextmanager
def request_settings_only(model: Any) -> Iterator[None]:
    """`model.generate()` with a call's own settings only: the model's generation config holds its token ids
    alone meanwhile. transformers fills every setting a call leaves unset from the model's generation config (a
    GenerationConfig passed to the call included), so a base model's max_new_tokens cut every completion, its
    num_beams, penalties or suppressed tokens changed a "greedy" request, and its num_return_sequences returned
    rows the caller did not ask for."""
    from transformers import GenerationConfig

    own = model.generation_config
    ids = {k: getattr(own, k, None) for k in TOKEN_KEYS}
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if v is not None})
    try:
        yield
    finally:
        model.generation_config = own


class LoopGeneration:
    """A mixin before GenerationMixin: `generate()` takes `num_loops` (and Ouro's exit rule) from the
    generation config in use when the call does not pass them (a call's `exit_threshold=None` is the model
    config's rule, as in a forward call). transformers reads a keyword that names an
    attribute of the config as a change to the config, never handing it to the model: the keys are taken out of
    a copy of the config and passed as the model's own arguments."""

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        mine = getattr(self, "generation_config", None)
        config = kwargs.get("generation_config") or mine
        # (use_weighted_exit=False is the forward's default: not moved, so the export takes it too)
        own = {k: v for k in LOOP_KEYS if (v := getattr(config, k, None)) is not None and v is not False}
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
