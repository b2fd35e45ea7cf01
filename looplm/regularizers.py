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
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
