"""LoopedTransformer: embeddings -> prelude -> shared core Φ applied t times -> coda -> final norm -> tied head.

The loop count is a call argument, not a property of the weights. The state h(t) after each loop is the
whole (B, T, D) hidden matrix. The model implements the looped-model protocol (looplm.looped): `embed`,
`step` (the one-loop map Φ that the penalties and diagnostics take Jacobians of) and `readout`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .config import ModelConfig
from .looped import run_loop

# Set inside `twice_differentiable()`; switches LayerNorm and attention to paths whose higher-order
# derivatives are right.
_HIGHER_ORDER = False


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm whose higher-order derivatives are correct inside `twice_differentiable()`.

    Measured on torch 2.13 (CPU): the fused kernel's forward-mode derivative and its double backward give
    a wrong gradient w.r.t. upstream parameters for a penalty on J·v (e.g. ||J v||² of LN(Wx), checked
    against the explicit Jacobian and finite differences; tests/test_regularizers.py). The composite
    below is the same function built from primitive ops, whose derivatives are exact.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _HIGHER_ORDER:
            return super().forward(x)
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        y = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def make_norm(norm_type: str, d: int) -> nn.Module:
    if norm_type in ("layernorm", "deepnorm"):
        return LayerNorm(d)
    if norm_type == "rmsnorm":
        return nn.RMSNorm(d)
    if norm_type == "simplenorm":  # LayerNorm without the affine parameters
        return LayerNorm(d, elementwise_affine=False)
    raise ValueError(f"unknown norm_type {norm_type!r}")


class Residual(nn.Module):
    """One sublayer f wrapped in its normalization placement (docs/method.md).

    pre:            x + f(N(x))          internal: ||x|| is free to grow with depth
    post:           N(αx + f(x))         external: every loop ends on the norm's manifold
    pre_sandwich:   x + N2(f(N1(x)))     internal (Ouro's layer)
    post_sandwich:  N2(αx + f(N1(x)))    external (the STARS base)
    α = deepnorm_alpha for norm_type=deepnorm, else 1.
    """

    def __init__(self, f: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.f = f
        self.placement = cfg.norm_placement
        self.alpha = cfg.deepnorm_alpha if cfg.norm_type == "deepnorm" else 1.0
        self.n_in = make_norm(cfg.norm_type, cfg.d_model) if self.placement != "post" else None
        self.n_out = make_norm(cfg.norm_type, cfg.d_model) if self.placement != "pre" else None
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        p = self.placement
        if p == "pre":
            return x + self.drop(self.f(self.n_in(x), **kw))
        if p == "post":
            return self.n_out(self.alpha * x + self.drop(self.f(x, **kw)))
        if p == "pre_sandwich":
            return x + self.drop(self.n_out(self.f(self.n_in(x), **kw)))
        return self.n_out(self.alpha * x + self.drop(self.f(self.n_in(x), **kw)))  # post_sandwich


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, kv: KVSlot | None = None) -> torch.Tensor:
        """Causal self-attention over x (B, T, D); with a KV-cache slot, over the cached positions too."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        # (B, T, D) -> (B, H, T, D/H)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        causal = True
        if kv is not None:
            k, v, causal = kv.update(k, v)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class KVCache:
    """K/V tensors (B, H, S, dh) per key (stage, loop, block), grown one position chunk at a time.

    The core's blocks get one slot per loop (Φ is shared, but each loop sees a different state, as in Ouro);
    prelude and coda blocks one slot each. `newest[block]` holds the K/V a core block computed last, which an
    exited position repeats at the loops it skips (looplm.generate)."""

    def __init__(self) -> None:
        self.kv: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.newest: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def repeat_newest(self, key: tuple, block: tuple) -> None:
        """Append `block`'s newest K/V under `key` without computing anything (an exited position)."""
        k, v = self.newest[block]
        past = self.kv.get(key)
        self.kv[key] = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))


@dataclass
class KVSlot:
    """One block's view of the cache at one loop. frozen: (B,) rows whose new K/V are not fresh but repeated
    from the block's newest ones (positions that exited at an earlier loop)."""

    cache: KVCache
    key: tuple
    block: tuple | None = None
    frozen: torch.Tensor | None = None
    store: bool = True

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        c = self.cache
        if self.frozen is not None and self.block in c.newest:
            fk, fv = c.newest[self.block]
            f = self.frozen.view(-1, 1, 1, 1)
            k, v = torch.where(f, fk, k), torch.where(f, fv, v)
        if self.block is not None:
            c.newest[self.block] = (k, v)
        past = c.kv.get(self.key)
        if past is not None:
            if k.shape[2] != 1:
                raise ValueError("after the prompt, the cache takes one position at a time")
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if self.store:
            c.kv[self.key] = (k, v)
        return k, v, past is None  # a new position sees every cached one: no causal mask needed


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Residual(CausalSelfAttention(cfg), cfg)
        self.mlp = Residual(MLP(cfg), cfg)

    def forward(self, x: torch.Tensor, kv: KVSlot | None = None) -> torch.Tensor:
        return self.mlp(self.attn(x, kv=kv))


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Run the model on paths whose JVPs and double backwards are exact; every Jacobian penalty needs this.

    - SDPA goes through its math backend: the fused CPU (flash) kernel has neither a double backward nor
      a forward-mode derivative (docs/method.md).
    - LayerNorm uses its composite form (see `LayerNorm`).
    Values are unchanged up to float rounding.
    """
    global _HIGHER_ORDER
    prev = _HIGHER_ORDER
    _HIGHER_ORDER = True
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        _HIGHER_ORDER = prev


def in_twice_differentiable() -> bool:
    """Whether the code runs under `twice_differentiable()` (a penalty's Φ)."""
    return _HIGHER_ORDER


@dataclass
class Context:
    """What every loop of a LoopedTransformer needs besides the state."""

    e: torch.Tensor | None  # (B, T, D) prelude output, added to the state every loop (injection=add), else None
    cache: KVCache | None = None  # generation only
    exit: Any = None  # a run_loop exit rule whose done rows are frozen (generation only)
    store: bool = True  # whether attention appends this chunk's K/V to the cache

    def slot(self, key: tuple, block: tuple | None = None) -> KVSlot | None:
        if self.cache is None:
            return None
        frozen = self.exit.done if self.exit is not None and bool(self.exit.done.any()) else None
        return KVSlot(self.cache, key, block, frozen if block is not None else None, self.store)


def check_ids(input_ids: Any) -> tuple[int, int]:
    """(B, T) of `input_ids`, a (B, T) tensor of int64 or int32 token ids on a real device, else TypeError or
    ValueError saying so: floats and uint8 were torch's embedding dtype error, bools passed the range check, 1-D and
    3-D ids a tuple unpack, and meta ids a `.item()` error from the range check."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
        ok = isinstance(input_ids, torch.Tensor)
        found = f"a {input_ids.dtype} tensor" if ok else f"a {type(input_ids).__name__}"
        raise TypeError(f"input_ids must be a (B, T) tensor of integer token ids (int64 or int32), got {found}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a (B, T) tensor of token ids, got shape {tuple(input_ids.shape)} (one "
                         "sequence: input_ids[None])")
    if input_ids.is_meta:
        raise ValueError("input_ids are on the meta device, which holds no values; move them to the model's device")
    return input_ids.shape[0], input_ids.shape[1]


def check_ctx(ctx: Any) -> None:
    """The protocol's ctx is opaque to run_loop (a module of one's own may use None), so the model checks its own:
    run_loop(model, h, None, 2) was "'NoneType' object has no attribute 'e'"."""
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be the ctx that model.embed returned (h, ctx = model.embed(input_ids)), got "
                        f"{type(ctx).__name__}")


class LoopedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        if not isinstance(cfg, ModelConfig):  # a whole Config was "'Config' object has no attribute 'vocab_size'"
            hint = "pass cfg.model, the model section" if hasattr(cfg, "model") else "build one: ModelConfig(...)"
            raise TypeError(f"LoopedTransformer takes a ModelConfig, got {type(cfg).__name__}; {hint}")
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.prelude = nn.ModuleList(Block(cfg) for _ in range(cfg.n_prelude))
        self.core = nn.ModuleList(Block(cfg) for _ in range(cfg.n_core))
        self.coda = nn.ModuleList(Block(cfg) for _ in range(cfg.n_coda))
        self.norm_f = make_norm("layernorm" if cfg.norm_type == "deepnorm" else cfg.norm_type, cfg.d_model)
        self.apply(self._init)
        # GPT-2 style: shrink residual-branch outputs. In a loop the same branch is added t times, so an
        # unscaled init makes ||h|| grow fastest exactly where pre-norm models are most fragile.
        n_res = 2 * (cfg.n_prelude + cfg.n_core + cfg.n_coda)
        for name, p in self.named_parameters():
            if name.endswith(("attn.f.proj.weight", "mlp.f.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(n_res))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # --- the looped-model protocol (looplm.looped) -----------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              cache: KVCache | None = None, start: int = 0) -> tuple[torch.Tensor, Context]:
        """(B, T) token ids -> (h(0), ctx). h(0) is the prelude output e, which injection adds to every loop.

        Positions are learned and absolute, counted from `start` (the tokens already in `cache`), so only
        right padding is harmless: causal attention never looks right, and `attention_mask` is not needed.
        """
        B, T = check_ids(input_ids)
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        pos = torch.arange(start, start + T, device=input_ids.device)
        if self.cfg.random_positions and self.training and cache is None:
            # Each training sequence starts at a random position, so every row of the position table is trained
            # and a longer test instance meets no untrained position (randomized positional encodings).
            offset = torch.randint(0, self.cfg.max_seq_len - T + 1, (B, 1), device=input_ids.device)
            pos = pos[None, :] + offset  # (B, T)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        ctx = Context(None, cache)
        for j, blk in enumerate(self.prelude):
            x = blk(x, kv=ctx.slot(("pre", 0, j)))
        return x, Context(x if self.cfg.injection == "add" else None, cache)

    def step(self, h: torch.Tensor, ctx: Context, loop: int = 0) -> torch.Tensor:
        """One application of Φ: (B, T, D) -> (B, T, D). With injection=add, Φ sees h + e."""
        check_ctx(ctx)
        if ctx.e is not None:
            h = h + ctx.e
        for j, blk in enumerate(self.core):
            h = blk(h, kv=ctx.slot(("core", loop + 1, j), ("core", j)))
        return h

    def readout(self, h: torch.Tensor, ctx: Context) -> torch.Tensor:
        """(B, T, D) state -> (B, T, V) logits, through the coda, final norm and tied head."""
        check_ctx(ctx)
        for j, blk in enumerate(self.coda):
            h = blk(h, kv=ctx.slot(("coda", 0, j)))
        return F.linear(self.norm_f(h), self.tok_emb.weight)

    @property
    def pointwise_readout(self) -> bool:
        return self.cfg.n_coda == 0  # coda blocks attend across positions

    def loop_units(self) -> list[nn.Module]:
        return [*self.prelude, *self.core, *self.coda]

    def forward(self, input_ids: torch.Tensor, num_loops: int, return_states: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) ids -> (B, T, V) logits after `num_loops` loops; optionally also [h(1), ..., h(num_loops)]."""
        h, ctx = self.embed(input_ids)
        states: list[torch.Tensor] = []
        h = run_loop(self, h, ctx, num_loops, keep=(lambda t, s: states.append(s)) if return_states else None)
        logits = self.readout(h, ctx)
        return (logits, states) if return_states else logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def builtin_loop(model: Any) -> bool:
    """Whether `model` runs looplm's own embed, step and readout: a LoopedTransformer whose class (or the instance)
    replaces none of them. The paths written against those internals (the hand-written JVP `regularizers.core_jvp`,
    the fast penalty and ρ it gives, and KV-cached decoding) take only such a model; a subclass with its own `step`,
    say, is a module of one's own (docs/protocol.md), driven through its methods. An isinstance check let such a
    subclass through: its penalty, ρ and even its forward (reg.at before the last loop) were the built-in Φ's.
    The same holds inside: a core MLP or norm replaced (a ReLU subclass of MLP, a SwiGLU) or a forward hook got
    the hand-written GELU/LayerNorm Φ silently (or failed inside it), so the submodules must be the built-in ones."""
    return isinstance(model, LoopedTransformer) and all(
        getattr(type(model), m) is getattr(LoopedTransformer, m) and m not in vars(model)
        for m in ("embed", "step", "readout")) and not structure_diff(model, model.cfg) and not _hooked(model)


_REFERENCE: dict[str, tuple[dict[str, type], dict[str, tuple[int, ...]]]] = {}


def structure_diff(model: nn.Module, cfg: ModelConfig) -> list[str]:
    """How `model`'s submodules and state dict differ from those `LoopedTransformer(cfg)` builds: a submodule of
    another type (by exact type: a subclass of MLP has its own forward), one replaced on the instance, and keys
    missing, extra or of another shape. Empty for the model cfg describes."""
    key = repr(cfg)
    if key not in _REFERENCE:  # built once per config, on the meta device (no memory, no init work)
        with torch.device("meta"):
            ref = LoopedTransformer(cfg)
        _REFERENCE[key] = ({n: type(m) for n, m in ref.named_modules() if n},
                           {k: tuple(v.shape) for k, v in ref.state_dict().items()})
    types, shapes = _REFERENCE[key]
    mods = {n: m for n, m in model.named_modules() if n}
    diff = [f"{n} is a {type(m).__name__}, not {types[n].__name__}" for n, m in mods.items()
            if n in types and type(m) is not types[n]]
    diff += [f"{n}.forward is replaced on the instance" for n, m in mods.items() if "forward" in vars(m)]
    def same(n: str) -> bool:  # a parent both hold, of the same type (below a replaced one, all differs)
        return n == "" or (n in mods and n in types and type(mods[n]) is types[n])

    diff += [f"extra module {n}" for n in mods if n not in types and same(n.rpartition(".")[0])]
    diff += [f"no module {n}" for n in types if n not in mods and same(n.rpartition(".")[0])]
    held = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    diff += [f"extra key {k}" for k in held if k not in shapes]
    diff += [f"no key {k}" for k in shapes if k not in held]
    diff += [f"{k} has shape {list(held[k])}, not {list(v)}" for k, v in shapes.items() if k in held and held[k] != v]
    return diff


def _hooked(model: nn.Module) -> bool:
    """Whether a forward or forward-pre hook (on the model, a submodule, or every module) may change what Φ
    computes: the hand-written paths never call the modules, so they would skip it."""
    from torch.nn.modules import module as tm

    if tm._global_forward_hooks or tm._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
