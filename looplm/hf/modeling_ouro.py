"""A native implementation of the Ouro looped-LM architecture (ByteDance's Ouro-1.4B / 2.6B and their
fine-tunes), written from the public description and reference code, for transformers 5 without remote code.

Architecture (docs/hf.md records how each point was checked):
- token embedding -> h(0); no input injection, no prelude or coda;
- one loop Φ = the whole stack of `num_hidden_layers` decoder layers followed by the final RMSNorm; the
  normalized state feeds the next loop, so h(t) = Φ(h(t-1)) and logits(t) = lm_head(h(t)) with no further norm;
- decoder layer ("sandwich" RMSNorm, pre_sandwich in docs/method.md): x + N2(attn(N1(x))), then x + N4(mlp(N3(x)))
  with N1..N4 = input_layernorm, input_layernorm_2, post_attention_layernorm, post_attention_layernorm_2;
- attention: bias-free q/k/v/o projections, grouped KV heads when `num_key_value_heads` < heads, RoPE on q and k
  (rotate-half convention), scale head_dim^-0.5, causal;
- MLP: SwiGLU, down(act(gate(x)) * up(x)), bias-free;
- early-exit gate: Linear(hidden, 1) with bias, applied to the normalized state after every loop; at inference
  each token reads the first loop whose cumulative exit probability reaches `config.early_exit_threshold`,
  computed in the gate's dtype as the reference does;
- KV cache: one slot per (loop, layer), slot = loop * num_hidden_layers + layer.

Our additions: the loop count is a call argument (`num_loops`, default `config.total_ut_steps`); the model
implements looplm's looped-model protocol (`embed` / `step` = Φ / `readout`, looplm.looped), so looplm's trainer,
penalties and diagnostics drive it unchanged; per-loop states and logits can be returned; left padding gets
correct positions; the exit distribution can be computed in float32 instead (`exit_dtype`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils import ModelOutput

from ..looped import check_loop_kwargs, loop_count, run_loop
from ..model import in_twice_differentiable
from .configuration_ouro import OuroConfig, check_exit_dtype, check_exit_threshold, rope_settings
from .flags import check_flag
from .generation import LoopGeneration
from .inputs import PACKING_KWARGS, check_cache_kind, check_unknown_kwargs, packed_positions, sdpa_only

# Attribute set on a KV cache the first time it is filled: the loop count its slots were laid out for.
_LOOPS_ATTR = "_looplm_num_loops"


class OuroRMSNorm(nn.Module):
    """RMSNorm computed in (at least) float32 and cast back before the weight, as Ouro's and Llama's norms are.

    Built from primitive ops, so its forward-mode derivative and double backward are exact (Jacobian penalties
    take both)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.promote_types(dtype, torch.float32))
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class OuroMLP(nn.Module):
    def __init__(self, config: OuroConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LoopContext(NamedTuple):
    """Everything one loop needs besides the state: rotary tables, the attention mask and the KV cache, shared by
    all loops.

    `mask` is a boolean (B, 1, T, K) "may attend" mask, or None for plain causal attention over the T tokens.
    The cache has one slot per (loop, layer): loop * num_hidden_layers + layer.
    """

    cos: torch.Tensor  # (B or 1, T, head_dim)
    sin: torch.Tensor
    mask: torch.Tensor | None
    cache: Cache | None = None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class OuroAttention(nn.Module):
    def __init__(self, config: OuroConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        h, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)

    def forward(self, x: torch.Tensor, ctx: LoopContext, slot: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = ctx.cos.unsqueeze(1).to(q.dtype), ctx.sin.unsqueeze(1).to(q.dtype)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if ctx.cache is not None:
            k, v = ctx.cache.update(k, v, slot)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx.mask, is_causal=ctx.mask is None and T > 1,
            dropout_p=self.dropout if self.training else 0.0, scale=self.head_dim ** -0.5)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


class OuroDecoderLayer(nn.Module):
    """x + N2(attn(N1(x))), then x + N4(mlp(N3(x))): RMSNorm before and after each sublayer."""

    def __init__(self, config: OuroConfig, layer_idx: int) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = OuroAttention(config, layer_idx)
        self.mlp = OuroMLP(config)
        self.input_layernorm = OuroRMSNorm(config.hidden_size, eps)
        self.input_layernorm_2 = OuroRMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm = OuroRMSNorm(config.hidden_size, eps)
        self.post_attention_layernorm_2 = OuroRMSNorm(config.hidden_size, eps)

    def forward(self, x: torch.Tensor, ctx: LoopContext, slot: int = 0) -> torch.Tensor:
        x = x + self.input_layernorm_2(self.self_attn(self.input_layernorm(x), ctx, slot))
        return x + self.post_attention_layernorm_2(self.mlp(self.post_attention_layernorm(x)))


# transformers 5.24 renamed the outputs' `past_key_values` to `cache`; build outputs with whichever this version has.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class OuroModelOutput(BaseModelOutputWithPast):
    """`last_hidden_state` is h(num_loops); `loop_states` holds h(1..num_loops) when asked for, and so does
    `hidden_states` with `output_hidden_states=True` (one entry per loop, not per layer)."""

    loop_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class OuroCausalLMOutput(CausalLMOutputWithPast):
    """`logits` come from the early-exit rule (`exit_threshold`, else `config.early_exit_threshold`; None: the
    last loop) or the exit-weighted average. `loop_logits` are filled when requested, `exit_probs`
    ((B, T, num_loops), the gate's exit distribution) whenever the gate ran."""

    loop_logits: tuple[torch.Tensor, ...] | None = None
    exit_probs: torch.Tensor | None = None


def get_cache(out: ModelOutput) -> Cache | None:
    return getattr(out, _CACHE_FIELD, None)


class OuroPreTrainedModel(PreTrainedModel):
    config_class = OuroConfig
    config: OuroConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OuroDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_sdpa = True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        return sdpa_only(type(self).__name__, requested_attention)

    def set_attn_implementation(self, attn_implementation: Any) -> None:  # ("eager" was taken without a word)
        asked = attn_implementation if isinstance(attn_implementation, dict) else {"": attn_implementation}
        for requested in asked.values():
            sdpa_only(type(self).__name__, requested)
        super().set_attn_implementation(attn_implementation)


def _prepare_cache(cache: Any, num_loops: int, num_layers: int) -> Cache:
    """A cache with room for num_loops * num_layers slots. transformers' `generate` hands the model a cache
    sized for `num_hidden_layers` slots; an empty one is replaced by a growable `DynamicCache`."""
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(f"the KV cache must be a transformers Cache, got {type(cache).__name__}")
    check_cache_kind(None, cache)
    seen = getattr(cache, _LOOPS_ATTR, None) if cache is not None else None
    if seen is not None and seen != num_loops:
        raise ValueError(f"this KV cache was filled with {seen} loops per layer; a call with num_loops={num_loops} "
                         "cannot reuse it (pass the same num_loops for the whole generation, or a fresh cache)")
    if cache is None or (getattr(cache, "layer_class_to_replicate", None) is None
                         and len(getattr(cache, "layers", [])) < num_loops * num_layers):
        if cache is not None and cache.get_seq_length() > 0:
            raise ValueError(f"the KV cache has {len(cache.layers)} layer slots but {num_loops} loops x {num_layers} "
                             f"layers need {num_loops * num_layers}; start from an empty cache")
        cache = DynamicCache()
    setattr(cache, _LOOPS_ATTR, num_loops)
    return cache


class OuroModel(OuroPreTrainedModel):
    def __init__(self, config: OuroConfig) -> None:
        super().__init__(config)
        if getattr(config, "use_sliding_window", False) and config.sliding_window is not None:
            raise ValueError("sliding-window attention is not implemented (no published Ouro config uses it)")
        kind, _, _ = rope_settings(config)
        if kind not in ("default", "linear"):
            raise ValueError(f"rope_type={kind!r} is not implemented (Ouro uses plain RoPE)")
        self.padding_idx = getattr(config, "pad_token_id", None)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(OuroDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = OuroRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.early_exit_gate = nn.Linear(config.hidden_size, 1)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    # --- the pieces of a forward pass ----------------------------------------------------------------------
    def rotary(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin tables (B, T, head_dim) for integer positions (B, T), computed in float32 like the
        reference and cast to `dtype` (float64 stays float64)."""
        kind, theta, params = rope_settings(self.config)
        d = self.config.head_dim
        work = torch.promote_types(dtype, torch.float32)
        inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=position_ids.device, dtype=torch.int64)
                                    .to(work) / d))
        pos = position_ids.to(work)
        if kind == "linear":
            pos = pos / float(params["factor"])
        freqs = pos[..., None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def loop_context(self, batch: int, length: int, device: torch.device, dtype: torch.dtype,
                     attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                     past_length: int = 0, cache: Cache | None = None) -> LoopContext:
        """Rotary tables and attention mask for `length` new tokens after `past_length` cached ones.

        attention_mask: (B, past_length + length) with 1 for real tokens and 0 for padding. When positions are
        not given, padded rows count positions from their first real token, so a left-padded prompt sees the
        same positions as the unpadded one. Positions that restart inside an unpadded row with nothing cached
        are packed sequences (DataCollatorWithFlattening, padding-free training), as transformers'
        `find_packed_sequence_indices` reads them: each token attends only within its own sequence.
        """
        total = past_length + length
        padded = attention_mask is not None and not bool(attention_mask.all())
        if attention_mask is not None and attention_mask.shape[-1] != total:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens; expected {total} "
                             f"({past_length} cached + {length} new)")
        segment = None  # (B, T) sequence index of each token in a packed row
        if position_ids is None:
            if padded:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, past_length:]
            else:
                position_ids = torch.arange(past_length, total, device=device).unsqueeze(0)
        else:
            position_ids = torch.as_tensor(position_ids, device=device)
            if position_ids.shape[-1] != length or position_ids.numel() not in (length, batch * length):
                raise ValueError(f"position_ids of shape {tuple(position_ids.shape)} do not fit {batch} rows of "
                                 f"{length} tokens")
            position_ids = position_ids.reshape(-1, length)  # (T,) or (1, T) or (B, T)
            if not padded and past_length == 0:
                # Packed rows got their positions but plain causal attention, which crossed into the sequences
                # before them: a wrong loss without a word.
                steps = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1)
                if bool((steps != 1).any()):
                    segment = (steps != 1).cumsum(-1)
        cos, sin = self.rotary(position_ids, dtype)
        mask = None  # plain causal attention; one token after a cache attends to everything (no mask either)
        if segment is not None:
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
            mask = causal & (segment[:, :, None] == segment[:, None, :])[:, None]  # (B or 1, 1, T, T)
        elif padded or (past_length > 0 and length > 1):
            q_pos = torch.arange(past_length, total, device=device)
            k_pos = torch.arange(total, device=device)
            mask = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, K) causal
            if padded:
                mask = mask & attention_mask.bool()[:, None, None, :]
                # Every query may see itself: a fully masked row (a padding query) would give NaN, and NaN values
                # leak through zero attention weights into real tokens in later layers.
                mask = mask | (k_pos[None, :] == q_pos[:, None])[None, None]
        return LoopContext(cos, sin, mask, cache)

    def embed(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Token ids (B, T) -> h(0), the (B, T, D) embeddings."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        return self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds

    def step(self, h: torch.Tensor, ctx: LoopContext, loop: int = 0) -> torch.Tensor:
        """One application of Φ: all decoder layers, then the final norm. (B, T, D) -> (B, T, D).

        With a cache, layer l of loop `loop` uses slot loop * num_hidden_layers + l. Per-layer activation
        checkpointing (`gradient_checkpointing_enable()`) applies in training, outside the penalties: their JVP
        runs the layers plainly, and so does a VJP penalty's Φ (residual, jsrr_release), whose recomputation in
        the backward would run outside `twice_differentiable()`'s attention kernel and differ from its forward.
        """
        use_ckpt = (self.gradient_checkpointing and self.training and torch.is_grad_enabled() and ctx.cache is None
                    and not _in_jvp(h) and not in_twice_differentiable())
        n_layers = len(self.layers)
        for i, layer in enumerate(self.layers):
            slot = loop * n_layers + i
            if use_ckpt:
                h = checkpoint(layer, h, ctx, slot, use_reentrant=False)
            else:
                h = layer(h, ctx, slot)
        return self.norm(h)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                num_loops: int | None = None, output_loop_states: bool = False,
                output_hidden_states: bool | None = None, past_key_values: Cache | None = None,
                output_attentions: bool | None = None, **kwargs: Any) -> OuroModelOutput:
        n = loop_count(num_loops, self.config.total_ut_steps)  # (int() ran 2.5 as 2)
        check_no_attentions("Ouro", output_attentions, self.config)
        packing = {k: kwargs.pop(k) for k in PACKING_KWARGS if k in kwargs}
        check_unknown_kwargs("OuroModel", kwargs)
        cache = cache if cache is not None else past_key_values
        use_cache = check_flag("use_cache", use_cache, optional=True)  # ("no" is a true value: it cached)
        output_loop_states = check_flag("output_loop_states", output_loop_states)
        output_hidden_states = output_flag("output_hidden_states", output_hidden_states, self.config)
        if use_cache is None:
            use_cache = bool(self.config.use_cache) and not self.training
        if use_cache:
            cache = _prepare_cache(cache, n, len(self.layers))
        elif cache is not None:
            raise ValueError("a KV cache was passed with use_cache=False")
        if attention_mask is not None and not torch.is_tensor(attention_mask):
            raise TypeError(f"attention_mask must be a (batch, length) tensor of 1 (token) and 0 (padding), got "
                            f"{type(attention_mask).__name__}")
        h = self.embed(input_ids, inputs_embeds)
        B, T, _ = h.shape
        past = cache.get_seq_length() if cache is not None else 0
        if packing:
            position_ids = packed_positions(B, T, h.device, attention_mask, position_ids, past, **packing)
        ctx = self.loop_context(B, T, h.device, h.dtype, attention_mask, position_ids, past, cache)
        keep = output_loop_states or bool(output_hidden_states)
        states: list[torch.Tensor] = []
        h = run_loop(self, h, ctx, n, keep=(lambda t, s: states.append(s)) if keep else None)
        return OuroModelOutput(
            last_hidden_state=h, loop_states=tuple(states) if keep else None,
            hidden_states=tuple(states) if output_hidden_states else None, **{_CACHE_FIELD: cache})


def output_flag(name: str, value: Any, config: Any) -> bool:
    """An `output_attentions` / `output_hidden_states` argument as transformers models read it: the call's
    True/False, or with None the config's (`config.output_hidden_states = True` was ignored)."""
    return bool(check_flag(name, value if value is not None else getattr(config, name, False), optional=True))


def check_no_attentions(model: str, output_attentions: Any, config: Any) -> None:
    """Refuse output_attentions=True (or config.output_attentions): the attention runs in torch's fused
    scaled_dot_product_attention, which computes no weights to return (`attentions` was None without a word)."""
    if output_flag("output_attentions", output_attentions, config):
        raise ValueError(f"{model} returns no attention weights (its attention runs in torch's fused "
                         "scaled_dot_product_attention, which gives none): drop output_attentions=True (and "
                         "config.output_attentions)")


def _in_jvp(x: torch.Tensor) -> bool:
    """Whether x carries a forward-mode tangent (torch.func.jvp), where activation checkpointing cannot apply."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def exit_distribution(gate_logits: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, T, n) per-loop gate logits -> (B, T, n) exit probabilities: loop t exits with probability
    λ_t Π_{s<t} (1 - λ_s), λ = sigmoid(gate), and the last loop takes the remaining mass.

    Computed in the gate logits' dtype (or `dtype`), with the reference's order of operations: the survival
    product is taken one loop at a time, each product rounded to that dtype. In bf16 the rounding is what lets
    the cumulative probability reach 1 before the last loop, so the order matters for matching it."""
    lam = torch.sigmoid(gate_logits if dtype is None else gate_logits.to(dtype))  # (B, T, n)
    remaining = torch.ones_like(lam[..., 0])  # (B, T)
    probs = []
    for t in range(lam.shape[-1] - 1):
        probs.append(lam[..., t] * remaining)
        remaining = remaining * (1 - lam[..., t])
    probs.append(remaining)
    return torch.stack(probs, dim=-1)


def exit_steps(exit_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, T, n) exit distribution -> (B, T) index of the first loop whose cumulative probability reaches
    `threshold`, or the last loop when none does. `cumsum` runs in the distribution's dtype, as in the reference
    (on CPU torch accumulates in float32 and rounds every partial sum to that dtype)."""
    reached = exit_probs.cumsum(-1) >= threshold
    last = torch.full_like(reached[..., 0], exit_probs.shape[-1] - 1, dtype=torch.long)
    return torch.where(reached.any(-1), reached.long().argmax(-1), last)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None,
                   input_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Next-token cross-entropy of (B, T, V) logits against (B, T) labels, shifted inside (HF convention; -100 is
    ignored). The mean over target tokens, or, given `num_items_in_batch` (HF Trainer's count of target tokens in
    the whole accumulated batch), their sum divided by it, so every micro-batch's tokens weigh the same.
    `input_shape` (B, T) of the input: labels of another shape are refused as such (they were blamed on
    logits_to_keep, a setting the caller never gave)."""
    if input_shape is not None and tuple(labels.shape) != tuple(input_shape):
        raise ValueError(f"labels of shape {tuple(labels.shape)} must have the input's shape {tuple(input_shape)} "
                         "(one label per input token; -100 for tokens not scored)")
    if logits.shape[1] != labels.shape[1]:
        raise ValueError("labels need logits at every position (logits_to_keep=0)")
    pred = logits[:, :-1].flatten(0, 1).float()  # (B·(T-1), V)
    target = labels[:, 1:].flatten().to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(pred, target, ignore_index=-100)
    total = F.cross_entropy(pred, target, ignore_index=-100, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class OuroForCausalLM(LoopGeneration, OuroPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: OuroConfig) -> None:
        super().__init__(config)
        self.model = OuroModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def get_decoder(self) -> OuroModel:
        return self.model

    # --- the looped-model protocol (looplm.looped) -------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, LoopContext]:
        """(B, T) ids -> (h(0), ctx). A right-padded mask needs no attention mask (causal attention never looks
        right), so training keeps the fast causal kernels; any other padding gets the full mask and positions."""
        h = self.model.embed(input_ids)
        B, T = input_ids.shape
        if attention_mask is not None:
            m = attention_mask.bool()
            if not bool((m[:, 1:] & ~m[:, :-1]).any()):  # ones then zeros in every row
                attention_mask = None
        return h, self.model.loop_context(B, T, h.device, h.dtype, attention_mask)

    def step(self, h: torch.Tensor, ctx: LoopContext, loop: int = 0) -> torch.Tensor:
        return self.model.step(h, ctx, loop)

    pointwise_readout = True  # readout acts on each position alone (the trainer applies it to scored rows only)

    def readout(self, h: torch.Tensor, ctx: LoopContext | None = None) -> torch.Tensor:
        """State h(t) -> logits(t). The state is already normalized (the final norm is part of Φ)."""
        return self.lm_head(h)

    def loop_units(self) -> list[nn.Module]:
        return list(self.model.layers)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' generate(), refusing a static KV cache (`cache_implementation="static"` and the like, in
        the call or a generation config): its slots are laid out for one pass through the layers, and it handed
        the model a dict of masks (an AttributeError inside the attention setup)."""
        config = kwargs.get("generation_config") or getattr(self, "generation_config", None)
        kind = kwargs.get("cache_implementation", getattr(config, "cache_implementation", None))
        if kind is None and config is not getattr(self, "generation_config", None):  # (gaps filled from the model's)
            kind = getattr(getattr(self, "generation_config", None), "cache_implementation", None)
        check_cache_kind(kind, kwargs.get("past_key_values"))
        return super().generate(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                num_loops: int | None = None, exit_threshold: float | None = None,
                use_weighted_exit: bool = False, output_loop_logits: bool = False,
                output_hidden_states: bool | None = None, past_key_values: Cache | None = None,
                return_dict: bool | None = None, exit_dtype: str | None = None,
                num_items_in_batch: Any = None, output_attentions: bool | None = None,
                token_type_ids: Any = None, **kwargs: Any) -> OuroCausalLMOutput | tuple:
        """Logits after `num_loops` loops (default `config.total_ut_steps`).

        Early exit, as in the reference model: each token's logits come from the first loop whose cumulative exit
        probability reaches the threshold (the last loop if none does). The threshold is `exit_threshold`, or,
        without labels, `config.early_exit_threshold` (None: the last loop). The reference's default 1.0 is the
        last loop in exact arithmetic, but in bf16 the cumulative sum can round up to 1 sooner, and then tokens
        exit early exactly as in the reference. `exit_dtype` ("model" or "float32", default
        `config.exit_dtype`) sets the dtype of that computation (`exit_distribution`). `use_weighted_exit=True`
        averages the per-loop logits under the exit distribution instead. Every loop still runs, so the KV cache
        stays complete.

        `labels` (B, T) are shifted inside (HF convention; -100 is ignored); the loss uses the returned logits,
        which with labels are the last loop's unless `exit_threshold` or `use_weighted_exit` is passed.
        `num_items_in_batch` (HF Trainer) makes the loss the summed token CE divided by it.
        """
        check_loop_kwargs(kwargs)
        packing = {k: kwargs.pop(k) for k in PACKING_KWARGS if k in kwargs}  # (OuroModel reads them)
        check_unknown_kwargs("OuroForCausalLM", kwargs, token_type_ids)  # (named: generate() passes them on)
        # (use_weighted_exit="false" averaged the loops' logits, and output_loop_logits="no" returned them)
        weighted = check_flag("use_weighted_exit", use_weighted_exit)
        if weighted and exit_threshold is not None:  # the average was taken and the threshold set aside
            raise ValueError("use_weighted_exit=True and exit_threshold are two exit rules (the exit-weighted "
                             "average of the loops' logits, or the first loop past the threshold); pass one")
        output_loop_logits = check_flag("output_loop_logits", output_loop_logits)
        return_dict = check_flag("return_dict", return_dict, optional=True)
        if exit_threshold is None and labels is None:  # training losses keep the last loop unless asked
            exit_threshold = getattr(self.config, "early_exit_threshold", None)
        exit_threshold = check_exit_threshold(exit_threshold)
        mode = check_exit_dtype(exit_dtype if exit_dtype is not None else getattr(self.config, "exit_dtype", "model"))
        need_states = output_loop_logits or weighted or exit_threshold is not None
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, num_loops=num_loops, output_loop_states=need_states,
                         output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                         **packing)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep

        def sel(x: torch.Tensor) -> torch.Tensor:
            return x[:, keep] if isinstance(keep, slice) else x.index_select(1, keep.to(x.device))

        loop_logits = exit_probs = None
        if need_states:
            states = out.loop_states
            gates = torch.cat([self.model.early_exit_gate(sel(s)) for s in states], -1)  # (B, T', n)
            exit_probs = exit_distribution(
                gates, None if mode == "model" else torch.promote_types(gates.dtype, torch.float32))
            if output_loop_logits or weighted:
                loop_logits = tuple(self.lm_head(sel(s)) for s in states)
            if weighted:
                logits = sum(lg * exit_probs[..., i : i + 1].to(lg.dtype) for i, lg in enumerate(loop_logits))
            elif exit_threshold is not None:
                step = exit_steps(exit_probs, float(exit_threshold))[..., None]  # (B, T', 1)
                # A selection chain instead of stacking all loops: at most two (B, T', D) copies alive at once.
                chosen = sel(states[-1])
                for t in range(len(states) - 2, -1, -1):
                    chosen = torch.where(step == t, sel(states[t]), chosen)
                logits = self.lm_head(chosen)
            else:
                logits = loop_logits[-1] if loop_logits is not None else self.lm_head(sel(out.last_hidden_state))
        else:
            logits = self.lm_head(sel(out.last_hidden_state))
        loss = None if labels is None else causal_lm_loss(logits, labels, num_items_in_batch,
                                                          out.last_hidden_state.shape[:2])
        result = OuroCausalLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                    **{_CACHE_FIELD: get_cache(out)},
                                    loop_logits=loop_logits if output_loop_logits else None,
                                    exit_probs=exit_probs)
        if return_dict is False:
            return result.to_tuple()
        return result


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_parameter_names(config: OuroConfig) -> list[str]:
    """The weight names a checkpoint of this architecture holds, in the published checkpoints' naming."""
    names = ["model.embed_tokens.weight", "model.norm.weight", "model.early_exit_gate.weight",
             "model.early_exit_gate.bias", "lm_head.weight"]
    per_layer = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                 "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                 "input_layernorm.weight", "input_layernorm_2.weight", "post_attention_layernorm.weight",
                 "post_attention_layernorm_2.weight"]
    names += [f"model.layers.{i}.{n}" for i in range(config.num_hidden_layers) for n in per_layer]
    return sorted(names)


__all__ = ["OuroConfig", "OuroModel", "OuroForCausalLM", "OuroPreTrainedModel", "LoopContext",
           "exit_distribution", "exit_steps", "causal_lm_loss", "expected_parameter_names", "count_parameters"]

