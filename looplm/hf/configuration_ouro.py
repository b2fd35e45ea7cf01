"""`OuroConfig`: the configuration of ByteDance's Ouro looped LMs, read natively (no `trust_remote_code`).

Field names and `model_type="ouro"` are those of the published checkpoints' `config.json`, so
`OuroConfig.from_pretrained("ByteDance/Ouro-1.4B")` and `AutoConfig` read them as they are. The defaults are the
Ouro-1.4B values (24 layers of width 2048, 16 heads with no grouping, SwiGLU width 5632, vocabulary 49152, RoPE
θ = 1e6, RMSNorm ε = 1e-6, untied head, 4 loops); docs/hf.md lists what was checked against which public source.

`total_ut_steps` is only the default loop count: every forward call may pass its own `num_loops`.
`early_exit_threshold` is the default exit rule at inference (as in the reference model); `exit_dtype` (ours)
says which dtype the exit distribution is computed in: "model" (the gate logits' dtype, the reference's rule)
or "float32".
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from ..arguments import MAX_DEPTH
from .flags import check_flag

# "model": the exit distribution in the gate logits' dtype, as the reference computes it (in bf16 its cumulative
# sum can round up to 1 before the last loop); "float32": in float32 (float64 stays float64).
EXIT_DTYPES = ("model", "float32")


# model_type -> the looplm class that loads it. transformers only logs a warning when a config of another
# model_type is read, and from_pretrained then builds a randomly initialised model of the wrong architecture
# (a default-size Ouro from a 16-token looplm export) with a table of missing and unexpected weights
LOADERS = {"ouro": "OuroForCausalLM", "looplm": "LooplmForCausalLM"}


def check_model_type(cls: type[PretrainedConfig], config_dict: Any) -> None:
    """Refuse (ValueError) a config.json of the other looplm architecture read through `cls`."""
    found = config_dict.get("model_type") if isinstance(config_dict, dict) else None
    if found in LOADERS and found != cls.model_type:
        raise ValueError(f"this config.json has model_type {found!r}: load it with {LOADERS[found]} (or "
                         f"AutoModelForCausalLM), not {LOADERS[cls.model_type]}; {cls.__name__} would build a randomly "
                         f"initialised {cls.model_type!r} model that uses none of its weights")


class OuroConfig(PretrainedConfig):
    model_type = "ouro"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    # looplm's name for the default loop count (an export's config, `from_pretrained(..., num_loops=2)`) reads and
    # sets total_ut_steps: it was kept and never read, and from_pretrained(num_loops=2) was a TypeError
    attribute_map = {"num_loops": "total_ut_steps"}

    def __init__(
        self,
        vocab_size: int = 49152,
        hidden_size: int = 2048,
        intermediate_size: int = 5632,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 65536,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1000000.0,
        rope_scaling: dict[str, Any] | None = None,
        use_sliding_window: bool = False,
        sliding_window: int | None = None,
        max_window_layers: int | None = None,
        layer_types: list[str] | None = None,
        attention_dropout: float = 0.0,
        total_ut_steps: int | None = None,
        early_exit_threshold: float | None = 1.0,
        exit_dtype: str = "model",
        **kwargs: Any,
    ) -> None:
        num_loops = kwargs.pop("num_loops", None)
        if num_loops is not None and total_ut_steps is not None and num_loops != total_ut_steps:
            raise ValueError(f"num_loops={num_loops!r} and total_ut_steps={total_ut_steps!r} disagree: they name the "
                             "same setting, Ouro's default loop count (total_ut_steps); give one")
        total_ut_steps = next((v for v in (total_ut_steps, num_loops) if v is not None), 4)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        # sizes and counts first: a 0 was a ZeroDivisionError below, 2.5 layers or a "32" a traceback in the model
        for name, v in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                        ("intermediate_size", intermediate_size), ("num_hidden_layers", num_hidden_layers),
                        ("num_attention_heads", num_attention_heads), ("num_key_value_heads", self.num_key_value_heads),
                        ("max_position_embeddings", max_position_embeddings)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
            setattr(self, name, int(v))  # (a numpy integer is no JSON: save_pretrained failed, config.json empty)
        if not (isinstance(hidden_act, str) and hidden_act in ACT2FN):
            raise ValueError(f"hidden_act must name one of transformers' activations (e.g. silu, gelu), got "
                             f"{hidden_act!r}")
        # values that make every logit NaN (rotary frequencies of theta <= 0, a norm dividing by sqrt(x + eps < 0)):
        # scored anyway, a multiple-choice argmax of NaNs came out as 100%
        for name, v in (("rope_theta", rope_theta), ("rms_norm_eps", rms_norm_eps)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 or (
                    name == "rope_theta" and v == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'rope_theta' else '>= 0'}, "
                                 f"got {v!r}")
        factor = (rope_scaling or {}).get("factor")
        if factor is not None and (isinstance(factor, bool) or not isinstance(factor, numbers.Real)
                                   or not math.isfinite(factor) or factor <= 0):
            raise ValueError(f"rope_scaling.factor must be a finite number > 0, got {factor!r}")
        self.head_dim = hidden_size // num_attention_heads if head_dim is None else head_dim
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, numbers.Integral) or self.head_dim < 1:
            # (0, given or from hidden_size < num_attention_heads, was a ZeroDivisionError in the attention scale)
            raise ValueError(f"head_dim must be an integer >= 1 (hidden_size={hidden_size} over "
                             f"num_attention_heads={num_attention_heads} when not given), got {self.head_dim!r}")
        self.head_dim = int(self.head_dim)
        for name, v, top in (("initializer_range", initializer_range, math.inf), ("attention_dropout",
                                                                                   attention_dropout, 1)):
            # a negative standard deviation is torch's error only at a fine-tune's init; a dropout of 1 zeroes all
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= v < top:
                raise ValueError(f"{name} must be a number in [0, {top}), got {v!r}")
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        # (a hand-edited "false" cached); a JSON null is the absent value it always was (read as false)
        self.use_cache = check_flag("use_cache", use_cache, optional=True)
        self.rope_theta = float(rope_theta)
        if rope_scaling is not None:  # transformers v5 turns this into `rope_parameters` (see `rope_settings`)
            self.rope_scaling = rope_scaling
        self.use_sliding_window = bool(check_flag("use_sliding_window", use_sliding_window, optional=True))
        self.sliding_window = sliding_window if use_sliding_window else None
        self.max_window_layers = max_window_layers if max_window_layers is not None else num_hidden_layers
        # a "sliding_attention" layer made generate() build a sliding cache layer (a TypeError in transformers'
        # cache code), and ran full attention everywhere else without a word
        if layer_types is not None and (not isinstance(layer_types, list) or any(t != "full_attention"
                                                                                 for t in layer_types)):
            raise ValueError(f"layer_types must say \"full_attention\" for every layer (or be left out): no other "
                             f"attention is implemented (sliding-window attention: no published Ouro config uses it), "
                             f"got {repr(layer_types)[:200]}")
        self.layer_types = layer_types if layer_types is not None else ["full_attention"] * num_hidden_layers
        self.attention_dropout = attention_dropout
        self.total_ut_steps = total_ut_steps
        self.early_exit_threshold = check_exit_threshold(early_exit_threshold)
        self.exit_dtype = check_exit_dtype(exit_dtype)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        self.total_ut_steps = check_default_loops("total_ut_steps", total_ut_steps)
        check_token_ids(kwargs, vocab_size)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        check_model_type(cls, config_dict)  # (from_pretrained reads config.json through here)
        stray, own = config_dict.get("num_loops"), config_dict.get("total_ut_steps")
        if stray is not None and own is not None and stray != own:  # (what a save before round 44 could write)
            raise ValueError(f"num_loops={stray!r} and total_ut_steps={own!r} disagree: both name Ouro's default "
                             "loop count (total_ut_steps); delete \"num_loops\" from config.json (and make "
                             "total_ut_steps the count you want)")
        return super().from_dict(config_dict, **loop_kwargs(kwargs, ("num_loops", "total_ut_steps")))


def check_default_loops(name: str, value: Any) -> int:
    """A config's default loop count: an integer in 1..MAX_DEPTH, else ValueError naming it (a hand-edited 2.5
    ran 2 loops and `true` 1, read as int() where the loop count is taken)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value > MAX_DEPTH:  # every command refuses to run it: said where the depth is written
        raise ValueError(f"{name} must be at most {MAX_DEPTH:,}, got {value:,}")
    return int(value)


def loop_kwargs(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`from_pretrained(path, num_loops=...)`'s loop count, checked: transformers sets such keywords on the config
    after `__init__`, past its checks (2.5 ran 2 loops, True 1, a disagreeing pair kept one, and None failed at
    the first forward). None is the config's own count (an optional script argument left out)."""
    kwargs = {k: v for k, v in kwargs.items() if not (k in names and v is None)}
    given = {k: check_default_loops(k, kwargs[k]) for k in names if k in kwargs}
    if len(set(given.values())) > 1:
        raise ValueError(f"{' and '.join(f'{k}={v}' for k, v in given.items())} disagree: they name the same "
                         "setting, the default loop count; give one")
    return kwargs


def check_token_ids(config: Any, vocab_size: int) -> None:
    """A config's (or generation config's) pad/bos/eos token ids: each null or a token id in [0, vocab_size), and
    eos a list of them too (several end tokens). 320 of 320 was torch's assertion traceback; -1 became padding row
    319, a real token whose embedding then never trained; a string "0" a TypeError deep in generate() or in a
    fine-tune's setup; a pad/bos list a TypeError in transformers' generation-config checks."""
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        v = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        ids = v if isinstance(v, list) and name == "eos_token_id" else [v]
        if v is not None and not all(isinstance(i, numbers.Integral) and not isinstance(i, bool)
                                     and 0 <= i < vocab_size for i in ids):
            only = "; only eos_token_id may be a list" if isinstance(v, list) and name != "eos_token_id" else ""
            raise ValueError(f"{name} must be null or a token id in [0, {vocab_size}), got {v!r}{only}")


def check_exit_threshold(value: Any) -> float | None:
    """None (always the last loop) or a finite number >= 0; the published configs hold 1.0. A token exits at the
    first loop whose cumulative exit probability reaches it: 0 is always loop 1, above 1 always the last loop. A
    negative value would quietly act as 0, and NaN (never reached) as the last loop: both are refused."""
    if value is None:
        return None
    if isinstance(value, str | bytes):  # float() reads "0.5": a string from the API or a config.json went through
        raise ValueError(f"early_exit_threshold must be a number or null, got the string {value!r}")
    try:
        q = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"early_exit_threshold must be a number or null, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(q) or q < 0:
        raise ValueError(f"early_exit_threshold must be a finite number >= 0 (a cumulative exit probability; "
                         f"null for the last loop), got {value!r}")
    return q


def check_exit_dtype(value: Any) -> str:
    if value not in EXIT_DTYPES:
        raise ValueError(f"exit_dtype must be one of {', '.join(EXIT_DTYPES)}, got {value!r}")
    return value


def rope_settings(config: PretrainedConfig) -> tuple[str, float, dict[str, Any]]:
    """(rope_type, θ, parameters) from a config, whether it stores `rope_scaling` (transformers 4) or
    `rope_parameters` (transformers 5). Ouro's published configs use plain RoPE (`rope_scaling: null`)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "__dict__", {}).get("rope_scaling") or {}
    params = dict(params)
    kind = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    return kind, theta, params
