"""Jacobian penalties on the one-loop map Φ, as pure functions of (step_fn, h, generator).

`step_fn` maps a (B, T, D) state to the next one; samples never interact inside Φ (attention is within a
sequence), so ∂Φ/∂h is block-diagonal with one (T·D x T·D) block J_i per sample, and one batched JVP with a
separate probe per sample gives every J_i v_i at once.

What each estimator measures (DESIGN.md §1), with v_i a random unit vector:
- `jsrr`            (1/N) Σ_i ||J_i v_i||²      the paper's Eq. 4: one power-iteration step, a proxy for ρ(J_i)²
- `jsrr_release`    ||vᵀ J||², one unit v over the whole (B, T, D) batch (the authors' released code).
                    E = ||J||²_F / (B·T·D): a scaled Frobenius norm, not ρ.
- `power_penalty`   (1/N) Σ_i ||J_i u_i||², u_i after k-1 gradient-free power steps: closer to ρ(J_i)² (for a
                    real dominant eigenvalue) as k grows.
- `hutchinson`      (1/N) Σ_i ||J_i ε_i||² / (T·D), ε_i ~ N(0, I): unbiased for ||J_i||²_F / (T·D) (DEQ style).
- `fixed_point_residual` (1/N) Σ_i ||Φ(h_i) − h_i||²: the L2 residual penalty the paper compares against.

Every penalty is taken at `h.detach()`: its gradient reaches the parameters of Φ through the Jacobian at
that point, not the trajectory that led there. Call under `twice_differentiable()` (model.py).

Training goes through `regularized_loop`, which computes `jsrr` on the built-in block with a hand-written JVP
(`core_jvp`, no twice_differentiable needed) and, when the state is the input of a loop the forward runs
anyway, fuses the penalty into that loop (`fused_loop`). Same value and gradients; see
tests/test_performance.py and docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import RegConfig

StepFn = Callable[[torch.Tensor], torch.Tensor]


def unit_probes(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, ...) Gaussian directions normalized to unit length per sample (over all but the batch dim)."""
    v = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu").to(device=device, dtype=dtype)
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for reductions (bf16 sums lose the penalty); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sq_norm_per_sample(x: torch.Tensor) -> torch.Tensor:
    return _upcast(x).flatten(1).pow(2).sum(dim=1)  # (B,)


def jvp(step_fn: StepFn, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ(h), J v) by forward-mode AD; both differentiable w.r.t. the parameters Φ closes over."""
    return torch.func.jvp(step_fn, (h,), (v,))


def jsrr(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's JSRR: (1/N) Σ_i ||J_i v_i||², one JVP with a random unit probe per sample. Scalar."""
    h = h.detach()
    v = unit_probes(h.shape, generator, h.device, h.dtype)
    _, jv = jvp(step_fn, h, v)
    return _sq_norm_per_sample(jv).mean()


def jsrr_release(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The authors' released variant: ||vᵀ J||² by VJP, one unit v over the whole batch tensor, no mean."""
    h = h.detach().requires_grad_(True)
    y = step_fn(h)
    v = torch.randn(y.shape, generator=generator, dtype=torch.float32, device="cpu").to(y.device, y.dtype)
    v = v / v.norm()
    (vj,) = torch.autograd.grad(y, h, v, create_graph=True)
    return _upcast(vj).pow(2).sum()


def power_penalty(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None, iters: int = 1,
                  v0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k-step power iteration; only the last JVP builds a graph. Returns (penalty, last unit probe).

    Pass the returned probe back as `v0` on the next call to warm-start (a persistent vector); it must then
    have h's shape.
    """
    h = h.detach()
    v = unit_probes(h.shape, generator, h.device, h.dtype) if v0 is None else v0.detach()
    with torch.no_grad():
        for _ in range(iters - 1):
            _, jv = jvp(step_fn, h, v)
            v = jv / jv.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (jv.dim() - 1)))
    _, jv = jvp(step_fn, h, v)
    return _sq_norm_per_sample(jv).mean(), v


def hutchinson(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(1/N) Σ_i ||J_i ε_i||² / (T·D) with Gaussian ε: an unbiased estimate of the mean ||J_i||²_F / (T·D)."""
    h = h.detach()
    eps = torch.randn(h.shape, generator=generator, dtype=torch.float32, device="cpu").to(h.device, h.dtype)
    _, jv = jvp(step_fn, h, eps)
    return (_sq_norm_per_sample(jv) / h[0].numel()).mean()


def fixed_point_residual(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None
                         ) -> torch.Tensor:
    """(1/N) Σ_i ||Φ(h_i) − h_i||²: the L2 fixed-point residual penalty. `generator` is unused."""
    h = h.detach()
    return _sq_norm_per_sample(step_fn(h) - h).mean()


def penalty(kind: str, step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
            power_iters: int = 1) -> torch.Tensor:
    """Dispatch on RegConfig.kind."""
    if kind == "jsrr":
        return jsrr(step_fn, h, generator)
    if kind == "jsrr_release":
        return jsrr_release(step_fn, h, generator)
    if kind == "power":
        return power_penalty(step_fn, h, generator, iters=power_iters)[0]
    if kind == "hutchinson":
        return hutchinson(step_fn, h, generator)
    if kind == "residual":
        return fixed_point_residual(step_fn, h, generator)
    raise ValueError(f"unknown regularizer kind {kind!r}")


@torch.no_grad()
def power_iteration_rho(step_fn: StepFn, h: torch.Tensor, iters: int = 20,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) ||J_i u_i|| after `iters` power steps: a cheap running estimate of ρ(J_i), for training logs.

    It converges to |λ_max| only when the dominant eigenvalue is real and separated; for a careful estimate
    with a convergence flag use `looplm.dynamics.spectral_radius`.
    """
    h = h.detach()
    v = unit_probes(h.shape, generator, h.device, h.dtype)
    norms = torch.ones(h.shape[0], device=h.device)
    for _ in range(iters):
        _, jv = jvp(step_fn, h, v)
        norms = _upcast(jv).flatten(1).norm(dim=1)
        v = (jv / norms.clamp_min(1e-12).view(-1, *([1] * (jv.dim() - 1))).to(jv.dtype))
    return norms


# --- A hand-written JVP of Φ: the same J v, cheaper than forward-mode AD through the module -------------------
#
# `torch.func.jvp` through the model runs every op's generic forward-mode rule, on the math SDPA backend and
# the composite LayerNorm (model.twice_differentiable). Profiling the demo config (benchmarks/reg_overhead.py)
# showed that path spending much of its time in layout copies (head transposes of primal and tangent), a
# `cat` per split, and the long composite GELU rule. `core_jvp` writes the tangent of each sublayer out by hand
# from primitive, exactly twice-differentiable ops:
#   linear     y = x Wᵀ + b                    ẏ = ẋ Wᵀ
#   layernorm  y = γ x̂ + β, x̂ = (x-μ) r        ẏ = γ r (ẋ - mean ẋ - x̂ mean(x̂ ẋ))
#   rmsnorm    y = γ x̂, x̂ = x r                ẏ = γ r (ẋ - x̂ mean(x̂ ẋ))
#   gelu       y = u Φ(u)                      ẏ = (Φ(u) + u φ(u)) u̇
#   attention  P = softmax(q kᵀ/√d + causal)   Ṗ = P ⊙ (Ṡ - Σ_j P Ṡ), Ṡ = (q̇ kᵀ + q k̇ᵀ)/√d
#              o = P v                         ȯ = Ṗ v + P v̇
# so the whole penalty graph is ordinary first-order autograd over primitive ops. Its value and parameter
# gradients equal `jsrr` (checked against an explicit float64 Jacobian in tests/test_performance.py).


def supports_fast_jvp(model: torch.nn.Module) -> bool:
    """True when `core_jvp` covers the model's core: the built-in Block with no active dropout."""
    from .model import Block, CausalSelfAttention

    if not hasattr(model, "core"):
        return False
    for blk in model.core:
        if type(blk) is not Block or type(blk.attn.f) is not CausalSelfAttention:
            return False
        for res in (blk.attn, blk.mlp):
            if res.drop.p > 0 and res.drop.training:
                return False
            for n in (res.n_in, res.n_out):
                if n is not None and not isinstance(n, (torch.nn.LayerNorm, torch.nn.RMSNorm)):
                    return False
        if blk.attn.f.dropout > 0 and blk.attn.f.training:
            return False
    return True


def _norm_jvp(norm: torch.nn.Module, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(norm, torch.nn.RMSNorm):
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        xh = x * r
        dxh = r * (dx - xh * (xh * dx).mean(-1, keepdim=True))
        if norm.weight is not None:
            return xh * norm.weight, dxh * norm.weight
        return xh, dxh
    xc = x - x.mean(-1, keepdim=True)
    r = torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + norm.eps)
    xh = xc * r
    dxh = r * (dx - dx.mean(-1, keepdim=True) - xh * (xh * dx).mean(-1, keepdim=True))
    if norm.weight is None:
        return xh, dxh
    y = torch.addcmul(norm.bias, xh, norm.weight) if norm.bias is not None else xh * norm.weight
    return y, dxh * norm.weight


def _linear_jvp(lin: torch.nn.Linear, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.nn.functional.linear(x, lin.weight, lin.bias), torch.nn.functional.linear(dx, lin.weight)


def _gelu_jvp(u: torch.Tensor, du: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # gelu_backward(du, u) = gelu'(u)·du in one fused op whose own derivatives (gelu_double_backward) are
    # exact; checked against the explicit float64 Jacobian in tests/test_performance.py.
    return torch.nn.functional.gelu(u), torch.ops.aten.gelu_backward(du, u)


def _attn_jvp(attn: torch.nn.Module, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, D = x.shape
    H = attn.n_heads
    dh = D // H
    qkv, dqkv = _linear_jvp(attn.qkv, x, dx)

    def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B·H, T, dh)
        return t.view(B, T, H, dh).transpose(1, 2).reshape(B * H, T, dh)

    q, k, v = (heads(t) for t in qkv.split(D, dim=-1))
    dq, dk, dv = (heads(t) for t in dqkv.split(D, dim=-1))
    scale = 1.0 / math.sqrt(dh)
    mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    bias = torch.zeros(T, T, dtype=x.dtype, device=x.device).masked_fill(mask, float("-inf"))
    s = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)
    p = torch.softmax(s, dim=-1)
    ds = torch.baddbmm(torch.bmm(dq, k.transpose(1, 2)), q, dk.transpose(1, 2), alpha=1.0) * scale
    pds = p * ds
    dp = pds - p * pds.sum(-1, keepdim=True)
    o = torch.bmm(p, v)
    do = torch.baddbmm(torch.bmm(dp, v), p, dv)

    def merge(t: torch.Tensor) -> torch.Tensor:  # (B·H, T, dh) -> (B, T, D)
        return t.view(B, H, T, dh).transpose(1, 2).reshape(B, T, D)

    return _linear_jvp(attn.proj, merge(o), merge(do))


def _mlp_jvp(mlp: torch.nn.Module, x: torch.Tensor, dx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, du = _linear_jvp(mlp.up, x, dx)
    g, dg = _gelu_jvp(u, du)
    return _linear_jvp(mlp.down, g, dg)


def _residual_jvp(res: torch.nn.Module, f_jvp: Callable, x: torch.Tensor, dx: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    p, a = res.placement, res.alpha
    if p == "pre":
        z, dz = f_jvp(res.f, *_norm_jvp(res.n_in, x, dx))
        return x + z, dx + dz
    if p == "post":
        z, dz = f_jvp(res.f, x, dx)
        return _norm_jvp(res.n_out, a * x + z, a * dx + dz)
    if p == "pre_sandwich":
        z, dz = _norm_jvp(res.n_out, *f_jvp(res.f, *_norm_jvp(res.n_in, x, dx)))
        return x + z, dx + dz
    z, dz = f_jvp(res.f, *_norm_jvp(res.n_in, x, dx))  # post_sandwich
    return _norm_jvp(res.n_out, a * x + z, a * dx + dz)


def core_jvp(model: torch.nn.Module, h: torch.Tensor, v: torch.Tensor, e: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ(h), J v) for the model's core, J = ∂Φ/∂h at h, by the hand-written rules above.

    Same values as `jvp(model.step_fn(e), h, v)` up to float rounding; differentiable w.r.t. the parameters
    (and h, e, v) with exact first and second derivatives. Needs `supports_fast_jvp(model)`; it does not
    depend on `twice_differentiable()` (no fused kernel is on the tangent path).
    """
    if model.cfg.injection == "add":
        if e is None:
            raise ValueError("injection='add' needs the prelude output e")
        h = h + e
    for blk in model.core:
        h, v = _residual_jvp(blk.attn, _attn_jvp, h, v)
        h, v = _residual_jvp(blk.mlp, _mlp_jvp, h, v)
    return h, v


def jsrr_fast(model: torch.nn.Module, h: torch.Tensor, e: torch.Tensor | None = None,
              generator: torch.Generator | None = None, samples: int = 0) -> torch.Tensor:
    """`jsrr(model.step_fn(e), h, generator)` computed by `core_jvp`: the same value and gradients.

    samples=k > 0 takes the penalty over the first k samples of the batch only (the batch is i.i.d., so this
    is the same mean over a smaller sample: unbiased, with more variance) and costs about k/B of the full one.
    With samples=0 the probes drawn are identical to `jsrr`'s, so the two agree bit-for-bit in distribution
    and within rounding in value.
    """
    h = h.detach()
    if e is not None:
        e = e.detach()
    if 0 < samples < h.shape[0]:
        h = h[:samples]
        e = e[:samples] if e is not None else None
    v = unit_probes(h.shape, generator, h.device, h.dtype)
    _, jv = core_jvp(model, h, v, e)
    return _sq_norm_per_sample(jv).mean()


# --- The penalty inside the training loop: fused into a loop the forward runs anyway --------------------------


class _FusedLoop(torch.autograd.Function):
    """One loop y = Φ(h) computed together with its tangent J v (J = ∂Φ/∂h at h), sharing the primal work.

    Backward keeps the penalty's semantics of a *detached* state: the parameters of Φ receive the gradient of
    both outputs, but h (and the injected e) receive only the gradient that flows through y, i.e. exactly
    what they would get from a plain loop plus a separate penalty at h.detach().
    """

    @staticmethod
    def forward(ctx, model, h, e, v, *params):  # type: ignore[override]
        with torch.enable_grad():
            hl = h.detach().requires_grad_(h.requires_grad)
            el = e.detach().requires_grad_(e.requires_grad) if e is not None else None
            y, jv = core_jvp(model, hl, v, el)
        ctx.inner = (hl, el, y, jv, params)
        return y.detach(), jv.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gjv):  # type: ignore[override]
        hl, el, y, jv, params = ctx.inner
        del ctx.inner
        gy = torch.zeros_like(y) if gy is None else gy
        gjv = torch.zeros_like(jv) if gjv is None else gjv
        want = [p for p in params if p.requires_grad]
        gp = iter(torch.autograd.grad([y, jv], want, [gy, gjv], retain_graph=True, allow_unused=True))
        g_params = [next(gp) if p.requires_grad else None for p in params]
        ins = [t for t in (hl, el) if t is not None and t.requires_grad]
        gi = iter(torch.autograd.grad(y, ins, gy, allow_unused=True) if ins else ())
        g_h = next(gi) if hl.requires_grad else None
        g_e = next(gi) if el is not None and el.requires_grad else None
        return (None, g_h, g_e, None, *g_params)


def fused_loop(model: torch.nn.Module, h: torch.Tensor, e: torch.Tensor | None,
               generator: torch.Generator | None = None, samples: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ(h), (1/N) Σ_i ||J_i v_i||²) from one loop: the next state and the paper's JSRR at the state h.

    Gradients equal those of `model.core_step(h, e)` plus `jsrr(model.step_fn(e.detach()), h.detach())` with
    the same probes (tests/test_performance.py, float64), at the cost of one loop plus a tangent pass instead
    of a loop plus a separate JVP that recomputes Φ(h). `samples=k` restricts the penalty to the first k
    samples (see `jsrr_fast`); the other samples run a plain loop. Needs `supports_fast_jvp(model)`.
    """
    k = samples if 0 < samples < h.shape[0] else h.shape[0]
    e_in = e if model.cfg.injection == "add" else None
    v = unit_probes(h[:k].shape, generator, h.device, h.dtype)
    params = tuple(model.core.parameters())
    y, jv = _FusedLoop.apply(model, h[:k], e_in[:k] if e_in is not None else None, v, *params)
    if k < h.shape[0]:
        y = torch.cat([y, model.core_step(h[k:], e[k:] if e is not None else None)])
    return y, _sq_norm_per_sample(jv).mean()


def _fast_ok(model: torch.nn.Module, reg: RegConfig) -> bool:
    return getattr(reg, "impl", "auto") == "auto" and reg.kind == "jsrr" and supports_fast_jvp(model)


def regularized_loop(model: torch.nn.Module, e: torch.Tensor, num_loops: int, at: int | None, reg: RegConfig | None,
                     generator: torch.Generator | None = None, backprop_loops: int = 0,
                     checkpoint_loops: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `num_loops` loops from e and the penalty `reg` (a RegConfig) at the detached state h(at).

    at=None: no penalty (returns None). 0 <= at <= num_loops; h(0) = e. Returns (h(num_loops), penalty).

    The value and the gradients do not depend on how the penalty is computed:
    - `reg.impl=autograd`: the reference path, `penalty(...)` by torch.func under `twice_differentiable()`.
    - `reg.impl=auto` with kind=jsrr on the built-in block: the hand-written `core_jvp`; and when at < num_loops
      (the state is the input of a loop the forward runs anyway: reg.at=penultimate, or random with r < t)
      that loop is run as `fused_loop`, sharing its primal work with the penalty.
    `reg.samples=k > 0` takes the penalty over the first k samples of the batch only.
    """
    if at is None:
        return model.loop(e, e, num_loops, backprop_loops, checkpoint_loops), None
    if not 0 <= at <= num_loops:
        raise ValueError(f"penalty state h({at}) is outside 0..{num_loops}")
    samples = getattr(reg, "samples", 0)
    n_free = num_loops - backprop_loops if 0 < backprop_loops < num_loops else 0
    fast = _fast_ok(model, reg)
    if fast and at < num_loops and at >= n_free and torch.is_grad_enabled():
        if at == 0:
            h = e
        elif at == n_free:
            with torch.no_grad():
                h = model.loop(e, e, at)
        else:
            h = model.loop(e, e, at, at - n_free if n_free else 0, checkpoint_loops)
        h, pen = fused_loop(model, h, e, generator, samples)
        if num_loops - at - 1 > 0:
            h = model.loop(h, e, num_loops - at - 1, 0, checkpoint_loops)
        return h, pen
    kept: dict[str, torch.Tensor] = {"h": e}

    def keep(t: int, s: torch.Tensor) -> None:
        if t == at:
            kept["h"] = s

    h = model.loop(e, e, num_loops, backprop_loops, checkpoint_loops, keep)
    hs, es = kept["h"].detach(), e.detach()
    if 0 < samples < hs.shape[0]:
        hs, es = hs[:samples], es[:samples]
    if fast:
        return h, jsrr_fast(model, hs, es, generator)
    from .model import twice_differentiable

    with twice_differentiable():
        return h, penalty(reg.kind, model.step_fn(es), hs, generator, getattr(reg, "power_iters", 1))
