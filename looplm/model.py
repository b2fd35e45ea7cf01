"""LoopedTransformer: embeddings -> prelude -> shared core Φ applied t times -> coda -> final norm -> tied head.

The loop count is a call argument, not a property of the weights. The state h(t) after each loop is the
whole (B, T, D) hidden matrix; `core_step` is the one-loop map Φ that the regularizers and diagnostics take
Jacobians of.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig

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
    """One sublayer f wrapped in its normalization placement (DESIGN.md §1 table).

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.placement
        if p == "pre":
            return x + self.drop(self.f(self.n_in(x)))
        if p == "post":
            return self.n_out(self.alpha * x + self.drop(self.f(x)))
        if p == "pre_sandwich":
            return x + self.drop(self.n_out(self.f(self.n_in(x))))
        return self.n_out(self.alpha * x + self.drop(self.f(self.n_in(x))))  # post_sandwich


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)
        # (B, T, D) -> (B, H, T, D/H)
        q, k, v = (t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Run the model on paths whose JVPs and double backwards are exact; every Jacobian penalty needs this.

    - SDPA goes through its math backend: the fused CPU (flash) kernel has neither a double backward nor
      a forward-mode derivative (DESIGN.md §4).
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


class LoopedTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
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

    # --- the three stages -------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, D) prelude output e, which is also h(0)."""
        B, T = input_ids.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.cfg.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.cfg.vocab_size})")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))
        for blk in self.prelude:
            x = blk(x)
        return x

    def core_step(self, h: torch.Tensor, e: torch.Tensor | None = None) -> torch.Tensor:
        """One application of Φ: (B, T, D) -> (B, T, D). With injection=add, Φ sees h + e."""
        if self.cfg.injection == "add":
            if e is None:
                raise ValueError("injection='add' needs the prelude output e")
            h = h + e
        for blk in self.core:
            h = blk(h)
        return h

    def step_fn(self, e: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """Φ as a function of the state alone, with the input injection bound (for Jacobians)."""
        return lambda h: self.core_step(h, e)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, D) state -> (B, T, V) logits, through the coda, final norm and tied head."""
        for blk in self.coda:
            h = blk(h)
        return F.linear(self.norm_f(h), self.tok_emb.weight)

    # --- the loop ---------------------------------------------------------------------------------------
    def loop(self, h: torch.Tensor, e: torch.Tensor, num_loops: int, backprop_loops: int = 0,
             checkpoint_loops: bool = False, keep: Callable[[int, torch.Tensor], None] | None = None
             ) -> torch.Tensor:
        """Apply Φ `num_loops` times from h. `keep(t, h_t)` sees the state after each loop t = 1..num_loops.

        backprop_loops=k > 0 runs the first num_loops-k loops without building a graph (truncated BPTT).
        """
        if num_loops < 1:
            raise ValueError(f"num_loops must be >= 1, got {num_loops}")
        n_free = num_loops - backprop_loops if 0 < backprop_loops < num_loops else 0
        if n_free:
            with torch.no_grad():
                for t in range(1, n_free + 1):
                    h = self.core_step(h, e)
                    if keep is not None:
                        keep(t, h)
        use_ckpt = checkpoint_loops and torch.is_grad_enabled()
        for t in range(n_free + 1, num_loops + 1):
            if use_ckpt:
                h = checkpoint(self.core_step, h, e, use_reentrant=False)
            else:
                h = self.core_step(h, e)
            if keep is not None:
                keep(t, h)
        return h

    def forward(self, input_ids: torch.Tensor, num_loops: int, return_states: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) ids -> (B, T, V) logits after `num_loops` loops; optionally also [h(1), ..., h(num_loops)]."""
        e = self.embed(input_ids)
        states: list[torch.Tensor] = []
        h = self.loop(e, e, num_loops, keep=(lambda t, s: states.append(s)) if return_states else None)
        logits = self.readout(h)
        return (logits, states) if return_states else logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
