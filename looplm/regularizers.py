"""Jacobian penalties on the one-loop map Φ, as pure functions of (step_fn, h, generator).

`step_fn` maps a (B, T, D) state to the next one; samples never interact inside Φ (attention is within a
sequence), so ∂Φ/∂h is block-diagonal with one (T·D x T·D) block J_i per sample, and one batched JVP with a
separate probe per sample gives every J_i v_i at once.

`mask` (B, T), optional, marks real tokens (bool, or 1 = real and 0 = padding; other values are refused): J_i
is then Φ's Jacobian restricted to sample i's real tokens (probe zero on padding, output read on real tokens
only), so a right-padded sequence has the penalty it would have unpadded (causal attention: real tokens never
see the padding after them).

What each estimator measures (docs/method.md), with v_i a random unit vector:
- `jsrr`            (1/N) Σ_i ||J_i v_i||²      the paper's Eq. 4: one power-iteration step, a proxy for ρ(J_i)²
- `jsrr_release`    ||vᵀ J||², one unit v over the whole (B, T, D) batch (the authors' released code).
                    E = ||J||²_F / (B·T·D): a scaled Frobenius norm, not ρ.
- `power_penalty`   (1/N) Σ_i ||J_i u_i||², u_i after k-1 gradient-free power steps: closer to ρ(J_i)² (for a
                    real dominant eigenvalue) as k grows.
- `hutchinson`      (1/N) Σ_i ||J_i ε_i||² / (T·D), ε_i ~ N(0, I): unbiased for ||J_i||²_F / (T·D) (DEQ style).
- `fixed_point_residual` (1/N) Σ_i ||Φ(h_i) − h_i||²: the L2 residual penalty the paper compares against.

Every penalty is taken at `h.detach()`: its gradient reaches the parameters of Φ through the Jacobian at
that point, not the trajectory that led there. Call under `twice_differentiable()` (model.py).

Training computes them through `looplm.objective.regularized_loop`, which for `jsrr` on the built-in block
uses a hand-written JVP (`core_jvp`, no twice_differentiable needed) and, when the state is the input of a loop
the forward runs anyway, fuses the penalty into that loop (`fused_loop`). Same value and gradients; see
tests/test_performance.py and docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .arguments import MAX_DEPTH, check_count

if TYPE_CHECKING:
    pass

StepFn = Callable[[torch.Tensor], torch.Tensor]


def unit_probes(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype = torch.float32, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, ...) Gaussian directions normalized to unit length per sample (over all but the batch dim); with a
    mask (broadcastable to `shape`), zero where it is 0 and unit length over the rest."""
    v = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu").to(device=device, dtype=dtype)
    if mask is not None:
        v = v * mask
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def expand_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A (B, T) real-token mask as a (B, T, 1) tensor of `like`'s dtype, or None; every penalty's state `like`
    passes here, so this is where it is checked (ValueError): an empty batch made the mean over no samples NaN
    (hutchinson an IndexError), and a (T,) mask with B == T was read as one flag per sample."""
    check_state(like)
    if mask is None:
        return None
    if tuple(mask.shape) not in (tuple(like.shape[:2]), (*like.shape[:2], 1)):  # (B, T, 1, 1) broadcast T-fold
        raise ValueError(f"mask must have the state's (B, T) = {tuple(like.shape[:2])}, got shape "
                         f"{tuple(mask.shape)}")
    m = check_mask_values(mask).to(like.dtype)
    while m.dim() < like.dim():
        m = m.unsqueeze(-1)
    return m


def check_state(h: torch.Tensor, user: str = "a penalty") -> torch.Tensor:
    """`h` itself if it is a non-empty state of at least two dims (B, T, ...), else ValueError saying what `user`
    needs; the penalties and the spectra check here (an empty batch was torch's reshape or index error, a (B, 0, D)
    state a NaN per sample)."""
    if not isinstance(h, torch.Tensor) or h.dim() < 2 or h.numel() == 0:
        found = f"shape {tuple(h.shape)}" if isinstance(h, torch.Tensor) else f"a {type(h).__name__}"
        raise ValueError(f"{user} needs a non-empty (B, T, D) state, got {found}")
    if not h.is_floating_point():  # (an int state was torch's norm error, from inside the penalty)
        raise ValueError(f"{user} needs a floating-point (B, T, D) state, got a {h.dtype} tensor")
    return h


def check_mask_values(mask: torch.Tensor) -> torch.Tensor:
    """`mask` itself if it holds only 0 and 1 (any bool mask does: training's own masks are bool, so they cost
    nothing here), else ValueError naming the values. The penalties and spectra multiply by the mask, so an
    additive attention mask (all 0 = attend) gave a penalty of 0 and rho 0 "converged", 2s scaled them by 4, NaN
    made them NaN. An all-0 mask is valid: every token is padding."""
    if mask.dtype == torch.bool:
        return mask
    bad = mask[(mask != 0) & (mask != 1)]
    if bad.numel():
        found = ", ".join(str(v) for v in bad.unique()[:5].tolist())
        raise ValueError(f"mask must hold only 0 (padding) and 1 (a real token), or be bool; it holds {found} (an "
                         "additive attention mask, 0 = attend and -inf = padding, is not this mask: pass `mask == 0`)")
    return mask


def restrict(step_fn: StepFn, mask: torch.Tensor | None) -> StepFn:
    """Φ read on real tokens only (its output zeroed on padding), and checked: Φ maps a state to one of its shape
    (a Φ that returned h[..., :2] gave a penalty of a Jacobian that is no square, without a word; a tuple was an
    AttributeError; a non-function, "'int' object is not callable")."""
    if not callable(step_fn):
        raise TypeError(f"step_fn must be a function h -> Phi(h) returning a tensor shaped like h, got "
                        f"{type(step_fn).__name__}")

    def checked(x: torch.Tensor) -> torch.Tensor:
        y = step_fn(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            found = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
            raise ValueError(f"the step function must return a state of h's shape {tuple(x.shape)}, got {found}")
        return y if mask is None else y * mask
    return checked


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32 for reductions (bf16 sums lose the penalty); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sq_norm_per_sample(x: torch.Tensor) -> torch.Tensor:
    return _upcast(x).flatten(1).pow(2).sum(dim=1)  # (B,)


def jvp(step_fn: StepFn, h: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ(h), J v) by forward-mode AD; both differentiable w.r.t. the parameters Φ closes over."""
    try:
        return torch.func.jvp(step_fn, (h,), (v,))
    except NotImplementedError as e:  # torch's own line ends "Please file an issue to PyTorch": the fix is here
        if "forward AD" not in str(e):
            raise
        torch_says = str(e).splitlines()[0]
        raise NotImplementedError("a penalty's JVP reached a fused kernel without forward-mode AD (an attention or "
                                  "norm kernel); call the penalty under `with looplm.twice_differentiable():`, "
                                  f"which swaps in kernels that have it (torch: {torch_says:.200})") from None


def jsrr(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's JSRR: (1/N) Σ_i ||J_i v_i||², one JVP with a random unit probe per sample. Scalar."""
    h = check_state(h).detach()
    m = expand_mask(mask, h)
    v = unit_probes(h.shape, generator, h.device, h.dtype, m)
    _, jv = jvp(restrict(step_fn, m), h, v)
    return _sq_norm_per_sample(jv).mean()


def jsrr_release(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """The authors' released variant: ||vᵀ J||² by VJP, one unit v over the whole batch tensor, no mean."""
    h = check_state(h).detach().requires_grad_(True)
    m = expand_mask(mask, h)
    y = restrict(step_fn, m)(h)
    v = torch.randn(y.shape, generator=generator, dtype=torch.float32, device="cpu").to(y.device, y.dtype)
    if m is not None:
        v = v * m
    v = v / v.norm().clamp_min(1e-12)  # an all-padding mask: v = 0 and the penalty 0, as the others give (0/0 NaN)
    (vj,) = torch.autograd.grad(y, h, v, create_graph=True)
    if m is not None:
        vj = vj * m
    return _upcast(vj).pow(2).sum()


def power_penalty(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None, iters: int = 1,
                  v0: torch.Tensor | None = None, mask: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """k-step power iteration; only the last JVP builds a graph. Returns (penalty, next unit probe).

    The probe returned is the next iterate J v / ||J v|| (detached): pass it back as `v0` on the next call to
    warm-start (a persistent vector), so repeated calls with iters=1 still advance toward the dominant
    eigenvector. `v0` must have h's shape, be floating point, be finite and be non-zero on every sample with a
    real token; it is read as a direction (made unit length per sample, as a random start is), then cast to h's
    dtype and device (an int or bool v0 is refused: it holds no direction to cast).
    """
    iters = check_count("iters", iters, 1)  # 0, -3 and True ran one iteration, reported as asked
    if iters > MAX_DEPTH:  # each iteration is a JVP, a loop's worth of work: 10**12 never ended
        raise ValueError(f"iters must be at most {MAX_DEPTH:,}, got {iters:,}")
    h = check_state(h).detach()
    m = expand_mask(mask, h)
    step_fn = restrict(step_fn, m)
    v = unit_probes(h.shape, generator, h.device, h.dtype, m) if v0 is None else _check_v0(v0, h, m)
    with torch.no_grad():
        for _ in range(iters - 1):
            _, jv = jvp(step_fn, h, v)
            v = _next_probe(jv, v)
    _, jv = jvp(step_fn, h, v)
    # the next iterate, not v: with iters=1 returning v itself meant a warm start never moved
    return _sq_norm_per_sample(jv).mean(), _next_probe(jv.detach(), v)


def _next_probe(jv: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J v / ||J v|| per sample; a sample whose J v is 0 (v in J's null space, or all padding) keeps v, so a
    probe handed back as v0 is never made zero by the step."""
    norm = jv.flatten(1).norm(dim=1).view(-1, *([1] * (jv.dim() - 1)))
    return torch.where(norm > 1e-12, jv / norm.clamp_min(1e-12), v)


def _check_v0(v0: torch.Tensor, h: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """`v0` detached, or ValueError: a wrong shape reached torch's forward-AD error, an all-zero probe gave a
    penalty of 0 silently, NaN gave NaN."""
    if not isinstance(v0, torch.Tensor) or v0.shape != h.shape:
        found = tuple(v0.shape) if isinstance(v0, torch.Tensor) else type(v0).__name__
        raise ValueError(f"v0 must have h's shape {tuple(h.shape)} (pass back the probe power_penalty returned), "
                         f"got {found}")
    if not v0.is_floating_point():  # torch's "Expected tangent to be floating point", from inside the user's step
        raise ValueError(f"v0 must be a floating-point probe like h ({h.dtype}), got a {v0.dtype} tensor")
    v0 = v0.detach().to(h.device)  # (the mask is on h's device)
    if not torch.isfinite(v0).all():
        raise ValueError("v0 holds NaN or inf; pass a finite probe (or None for a random one)")
    live = v0 if m is None else v0 * m
    real = torch.ones(h.shape[0], dtype=torch.bool, device=h.device) if m is None else (m.flatten(1) != 0).any(1)
    zero = ((live.flatten(1) == 0).all(1) & real).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"v0 is zero on the real tokens of sample(s) {zero[:5]}, which makes their penalty 0; pass "
                         "a non-zero probe (or None for a random one)")
    # a unit probe per sample, as a random start is: unnormalised, the penalty came out times |v0|^2 at iters=1
    norm = v0.flatten(1).norm(dim=1).view(-1, *([1] * (v0.dim() - 1)))
    v0 = torch.where(norm > 0, v0 / norm.clamp_min(torch.finfo(v0.dtype).tiny), v0)
    # in h's dtype once unit length (a direction casts safely): a float64 probe for a float32 h was torch's dtype
    # error from inside the user's step
    return v0.to(h.dtype)


def hutchinson(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1/N) Σ_i ||J_i ε_i||² / n_i with Gaussian ε: an unbiased estimate of the mean ||J_i||²_F / n_i, n_i = T·D
    (or the sample's real tokens x D under a mask)."""
    h = check_state(h).detach()
    m = expand_mask(mask, h)
    eps = torch.randn(h.shape, generator=generator, dtype=torch.float32, device="cpu").to(h.device, h.dtype)
    if m is None:
        n = torch.full((h.shape[0],), float(h[0].numel()), device=h.device)
    else:
        eps = eps * m
        # a sample with no real token adds 0, as in the other penalties (0 / 0 made the whole batch's mean NaN)
        n = m.expand_as(h).flatten(1).sum(1).to(torch.float32).clamp_min(1)
    _, jv = jvp(restrict(step_fn, m), h, eps)
    return (_sq_norm_per_sample(jv) / n).mean()


def fixed_point_residual(step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1/N) Σ_i ||Φ(h_i) − h_i||²: the L2 fixed-point residual penalty. `generator` is unused."""
    h = check_state(h).detach()
    m = expand_mask(mask, h)
    r = restrict(step_fn, None)(h) - h
    return _sq_norm_per_sample(r if m is None else r * m).mean()


def penalty(kind: str, step_fn: StepFn, h: torch.Tensor, generator: torch.Generator | None = None,
            power_iters: int = 1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch on RegConfig.kind."""
    if kind == "jsrr":
        return jsrr(step_fn, h, generator, mask)
    if kind == "jsrr_release":
        return jsrr_release(step_fn, h, generator, mask)
    if kind == "power":
        return power_penalty(step_fn, h, generator, iters=power_iters, mask=mask)[0]
    if kind == "hutchinson":
        return hutchinson(step_fn, h, generator, mask)
    if kind == "residual":
        return fixed_point_residual(step_fn, h, generator, mask)
    raise ValueError(f"unknown regularizer kind {kind!r}")


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
    """True when `core_jvp` is the model's Φ: looplm's own step (`model.builtin_loop`; a subclass's step is
    its own) over the built-in Block, with no active dropout."""
    from .model import Block, CausalSelfAttention, builtin_loop

    if not builtin_loop(model):
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

    Same values as `jvp(phi(model, ctx), h, v)` (ctx.e = e) up to float rounding; differentiable w.r.t. the parameters
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
              generator: torch.Generator | None = None, samples: int = 0, mask: torch.Tensor | None = None
              ) -> torch.Tensor:
    """`jsrr(phi(model, ctx), h, generator, mask)` (ctx.e = e) computed by `core_jvp`: the same value and
    gradients.

    samples=k > 0 takes the penalty over the first k samples of the batch only (the batch is i.i.d., so this
    is the same mean over a smaller sample: unbiased, with more variance) and costs about k/B of the full one.
    With samples=0 the probes drawn are identical to `jsrr`'s, so the two agree within rounding.
    """
    h = h.detach()
    if e is not None:
        e = e.detach()
    if 0 < samples < h.shape[0]:
        h = h[:samples]
        e = e[:samples] if e is not None else None
        mask = mask[:samples] if mask is not None else None
    m = expand_mask(mask, h)
    v = unit_probes(h.shape, generator, h.device, h.dtype, m)
    _, jv = core_jvp(model, h, v, e)
    return _sq_norm_per_sample(jv if m is None else jv * m).mean()


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
               generator: torch.Generator | None = None, samples: int = 0, mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φ(h), (1/N) Σ_i ||J_i v_i||²) from one loop: the next state and the paper's JSRR at the state h.

    Gradients equal those of `model.step(h, ctx)` plus `jsrr(phi(model, detach_ctx(ctx)), h.detach(), mask=mask)`
    with the same probes (tests/test_performance.py, float64), at the cost of one loop plus a tangent pass
    instead of a loop plus a separate JVP that recomputes Φ(h). `samples=k` restricts the penalty to the first k
    samples (see `jsrr_fast`); the other samples run a plain loop. Needs `supports_fast_jvp(model)`.
    """
    k = samples if 0 < samples < h.shape[0] else h.shape[0]
    m = expand_mask(mask[:k] if mask is not None else None, h[:k])
    v = unit_probes(h[:k].shape, generator, h.device, h.dtype, m)
    params = tuple(model.core.parameters())
    y, jv = _FusedLoop.apply(model, h[:k], e[:k] if e is not None else None, v, *params)
    if k < h.shape[0]:
        from .model import Context

        y = torch.cat([y, model.step(h[k:], Context(e[k:] if e is not None else None))])
    return y, _sq_norm_per_sample(jv if m is None else jv * m).mean()
