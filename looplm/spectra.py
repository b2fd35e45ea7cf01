"""Spectral estimates of ∂Φ/∂h for a looped model's one-loop map Φ, batched over samples, J never built.

Φ is the one-loop map h(t) -> h(t+1) (`looplm.looped.phi(model, ctx)`, for any model of the looped protocol).
Samples never interact inside Φ, so ∂Φ/∂h is block-diagonal with one (n x n) block J_i per sample, n = T·D
(regularizers.py). Every estimator below is batched over samples: one JVP (or VJP) with a separate direction
per sample advances all of them, and every number it returns is per sample.

What each estimator measures, exactly:

- `spectral_radius`  ρ(J_i) = max |eig(J_i)|, the asymptotic growth rate of a small perturbation per loop.
  A fixed point is stable when ρ < 1. Two methods, both with `iters` JVPs at most (default: arnoldi):
  - `method="power"`: power iteration v <- J v / ||J v||. After each step it tests two certificates:
    (a) a real eigenpair: θ = vᵀJv with relative residual ||Jv − θv|| / |θ| <= tol;
    (b) a 2-D invariant subspace spanned by the last two iterates (Rayleigh-Ritz on span{v_k, v_k+1}, using
        the JVPs already computed): the largest-modulus eigenvalue θ of the 2x2 projection, with relative
        residual ||J y − θ y|| / |θ| <= tol for its Ritz vector y. This is what catches a complex dominant
        pair (iterates rotate in a plane) and a ±λ pair (iterates alternate), where ||Jv|| oscillates and
        plain power iteration never settles. `subspace=False` turns (b) off.
    It also requires |θ| to have changed by <= tol (relative) since the previous step. If neither
    certificate holds within `iters` steps, the sample is reported as not converged.
  - `method="arnoldi"`: an `iters`-dimensional Krylov space (Arnoldi with full re-orthogonalization), the
    largest-modulus Ritz value θ of the Hessenberg matrix, and its residual ||J y − θ y|| = |H[m, m-1]|·|s_m|
    (exact, no extra JVP). Same acceptance rule (relative residual <= tol, stable |θ| between checks).
    Far faster than power iteration when eigenvalues cluster (J ≈ I + small, as in pre-norm models), and
    several eigenvalues of equal modulus do not stall it once the Krylov space is large enough to hold them.
  A small residual certifies that θ is an exact eigenvalue of a matrix within ||r|| of J_i (backward error).
  Limits: (1) that θ is the *largest* eigenvalue rests on the random start having a component along its
  eigenvector (true with probability 1, but slow convergence can hide a barely-excited outlier);
  (2) for strongly non-normal J (causal attention makes J_i block lower triangular over positions) a small
  backward error can still mean a sizeable forward error in θ. Non-converged samples get NaN, never a guess;
  the last raw iterate is kept in `raw` for inspection only.

- `spectral_norm`    σ_max(J_i) = ||J_i||_2, the largest one-step amplification of any perturbation; an upper
  bound on ρ. Power iteration (or Lanczos via `method="arnoldi"`) on the symmetric JᵢᵀJᵢ, one JVP plus one
  VJP per step. Converged when the relative residual of the JᵀJ eigenpair is <= tol (then σ is accurate to
  about tol/2 or better). JᵀJ is symmetric positive semi-definite, so no complex or sign trouble; only a
  tight top singular-value gap slows it.

- `frobenius_hutchinson`  ||J_i||²_F = Σ σ_k², unbiased: the mean over `samples` probes ε (Gaussian or
  Rademacher, E εεᵀ = I) of ||J_i ε||². Returned as `sq` (the unbiased estimate of the square), its standard
  error, and `rms` = sqrt(sq / n), the root-mean-square singular value (1 for J = I), which sits on the same
  scale as ρ and σ_max. sqrt of an unbiased estimate is slightly biased low (Jensen).

Every estimator takes an optional `jvp_fn(h, v) -> J v` to replace `torch.func.jvp` through `step_fn`
(`diagnose` passes the hand-written `regularizers.core_jvp` when the model supports it: same numbers, ~2x
faster), and an optional `mask` broadcastable to h (1 = a real token, 0 = padding). It then
measures P J P with P the projection on the real positions. Under causal attention the real positions are a
prefix whose outputs never depend on the pads after them, so the spectrum of P J P is the spectrum of the
real-token block plus zeros: the pads' own (irrelevant) eigenvalues are left out.

"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .model import twice_differentiable
from .regularizers import check_state, expand_mask, restrict

StepFn = Callable[[torch.Tensor], torch.Tensor]
MatVec = Callable[[torch.Tensor], torch.Tensor]  # (B, n) float64 -> (B, n) float64, one operator per row
JvpFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h, v) -> J v, both shaped like h

_TINY = 1e-300
# the penalties' state check (regularizers.check_state), which the spectra skipped: an empty batch was torch's
# reshape or index error, a (B, 0, D) state NaN for every sample without a word
_NEEDS = "a spectral estimate"


# --- results -------------------------------------------------------------------------------------------------
@dataclass
class SpectralEstimate:
    """Per-sample result of an iterative spectral estimate. All tensors have shape (B,)."""

    value: torch.Tensor  # float64: the estimate where converged, NaN where not
    converged: torch.Tensor  # bool
    residual: torch.Tensor  # float64: relative residual of the accepted (or last) eigenpair
    iters: torch.Tensor  # int64: operator applications used (JVPs; JVP+VJP pairs for the spectral norm)
    raw: torch.Tensor  # float64: the last estimate whether or not it converged (inspection only)
    eigenvalue: torch.Tensor | None = None  # complex128: the dominant eigenvalue found (spectral_radius only)
    method: str = ""

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.double().mean()) if self.converged.numel() else float("nan")


@dataclass
class FrobeniusEstimate:
    sq: torch.Tensor  # (B,) unbiased estimate of ||J_i||_F²
    stderr: torch.Tensor  # (B,) standard error of `sq` (NaN with one probe)
    n: torch.Tensor  # (B,) dimension of each J_i (real positions x D under a mask)
    samples: int

    @property
    def rms(self) -> torch.Tensor:
        """sqrt(||J_i||²_F / n): the root-mean-square singular value."""
        return (self.sq.clamp_min(0) / self.n).sqrt()


# --- operators -----------------------------------------------------------------------------------------------
def _mask_like(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    # the penalties' shape check: a (T,) mask with B == T was read as one flag per sample (rho 0 "converged")
    if mask is None:
        return None
    return expand_mask(mask, h).expand_as(h)


def _jvp_op(step_fn: StepFn, h: torch.Tensor, mask: torch.Tensor | None, jvp_fn: JvpFn | None = None) -> MatVec:
    step_fn = restrict(step_fn, None)  # Φ must map the state to one of its shape
    B, shape, dt = h.shape[0], h.shape, h.dtype
    m = _mask_like(h, mask)

    def mv(v: torch.Tensor) -> torch.Tensor:
        x = v.to(dt).view(shape)
        if m is not None:
            x = x * m
        jv = torch.func.jvp(step_fn, (h,), (x,))[1] if jvp_fn is None else jvp_fn(h, x)
        if m is not None:
            jv = jv * m
        return jv.reshape(B, -1).to(torch.float64)

    return mv


def _jtj_op(step_fn: StepFn, h: torch.Tensor, mask: torch.Tensor | None, jvp_fn: JvpFn | None = None) -> MatVec:
    """v -> Jᵀ(J v): one JVP then one VJP through a graph built once at h."""
    step_fn = restrict(step_fn, None)  # Φ must map the state to one of its shape
    B, shape, dt = h.shape[0], h.shape, h.dtype
    m = _mask_like(h, mask)
    jv = _jvp_op(step_fn, h, mask, jvp_fn)
    with torch.enable_grad():
        hh = h.detach().requires_grad_(True)
        y = step_fn(hh)

    def mv(v: torch.Tensor) -> torch.Tensor:
        u = jv(v).to(dt).view(shape)  # already masked
        with torch.enable_grad():
            (g,) = torch.autograd.grad(y, hh, u, retain_graph=True)
        if m is not None:
            g = g * m
        return g.reshape(B, -1).to(torch.float64)

    return mv


def _start(h: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    """(B, n) float64 unit Gaussian start vectors, zero on masked positions."""
    v = torch.randn(h.shape, generator=generator, dtype=torch.float64, device="cpu").to(h.device)
    m = _mask_like(v, mask)
    if m is not None:
        v = v * m
    v = v.reshape(h.shape[0], -1)
    return v / v.norm(dim=1, keepdim=True).clamp_min(_TINY)


# --- the iterative methods, on any batched operator ----------------------------------------------------------
def _power(mv: MatVec, v: torch.Tensor, iters: int, tol: float, subspace: bool, symmetric: bool):
    """Power iteration with a 1-D (real eigenpair) and an optional 2-D (last two iterates) certificate."""
    B = v.shape[0]
    dev = v.device
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    val = torch.full((B,), float("nan"), dtype=torch.complex128, device=dev)
    res = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    used = torch.full((B,), iters, dtype=torch.int64, device=dev)
    last = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
    prev_v = prev_w = None
    for k in range(1, iters + 1):
        w = mv(v)
        # (a) real eigenpair (v is unit)
        th = (v * w).sum(1)
        r1 = (w - th[:, None] * v).norm(dim=1) / th.abs().clamp_min(_TINY)
        cand, cres = th.to(torch.complex128), r1
        if subspace and not symmetric and prev_v is not None:
            t2, r2, ok2 = _ritz2(prev_v, v, prev_w, w)
            use2 = ok2 & (r2 < r1)
            cand = torch.where(use2, t2, cand)
            cres = torch.where(use2, r2, cres)
        mod = cand.abs()
        stable = (mod - last).abs() <= tol * mod.clamp_min(_TINY)
        val, res, used, done = _accept(cand, cres, stable, k, tol, val, res, used, done)
        last = mod
        if bool(done.all()):
            break
        prev_v, prev_w = v, w
        v = w / w.norm(dim=1, keepdim=True).clamp_min(_TINY)
    return val, done, res, used, last


def _accept(cand: torch.Tensor, cres: torch.Tensor, stable: torch.Tensor, k: int, tol: float, val: torch.Tensor,
            res: torch.Tensor, used: torch.Tensor, done: torch.Tensor):
    """Per batch row, accept the candidate the first time its residual is within `tol` and its modulus has
    stopped moving; accepted rows then keep their value and iteration count, and their residual freezes."""
    newly = ~done & (cres <= tol) & stable
    val = torch.where(newly, cand, val)
    res = torch.where(done, res, cres)
    used = torch.where(newly, torch.full_like(used, k), used)
    return val, res, used, done | newly


def _ritz2(v0: torch.Tensor, v1: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor):
    """Rayleigh-Ritz on span{v0, v1} given w = J v: largest-modulus Ritz value and its relative residual."""
    X = torch.stack([v0, v1], dim=2)  # (B, n, 2)
    W = torch.stack([w0, w1], dim=2)
    Q, R = torch.linalg.qr(X)
    r11 = R[:, 1, 1].abs()
    ok = r11 > 1e-8 * R[:, 0, 0].abs().clamp_min(_TINY)  # else the iterates are parallel: no plane
    Rs = R.clone()
    Rs[:, 1, 1] = torch.where(ok, R[:, 1, 1], torch.ones_like(r11))
    JQ = torch.linalg.solve_triangular(Rs, W, upper=True, left=False)  # W R^-1 = J Q
    G = Q.transpose(1, 2) @ JQ  # (B, 2, 2)
    ev, S = torch.linalg.eig(G)
    i = ev.abs().argmax(dim=1)
    th = ev.gather(1, i[:, None]).squeeze(1)
    s = S.gather(2, i[:, None, None].expand(-1, 2, 1))  # (B, 2, 1)
    y = Q.to(torch.complex128) @ s
    r = (JQ.to(torch.complex128) @ s - th[:, None, None] * y).norm(dim=(1, 2)) / y.norm(dim=(1, 2)).clamp_min(_TINY)
    return th, r / th.abs().clamp_min(_TINY), ok


def _arnoldi(mv: MatVec, v: torch.Tensor, iters: int, tol: float, symmetric: bool, check_every: int = 5):
    """Arnoldi (Lanczos with full re-orthogonalization when symmetric), checked every `check_every` steps."""
    B, n = v.shape
    dev = v.device
    m_max = min(iters, n)
    V = torch.zeros(B, m_max + 1, n, dtype=torch.float64, device=dev)
    H = torch.zeros(B, m_max + 1, m_max, dtype=torch.float64, device=dev)
    V[:, 0] = v
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    broke = torch.zeros(B, dtype=torch.bool, device=dev)
    val = torch.full((B,), float("nan"), dtype=torch.complex128, device=dev)
    res = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    used = torch.full((B,), m_max, dtype=torch.int64, device=dev)
    last = torch.full((B,), float("nan"), dtype=torch.float64, device=dev)
    for j in range(m_max):
        w = mv(V[:, j])
        for _ in range(2):  # classical Gram-Schmidt, twice: orthogonal to working precision
            c = torch.einsum("bkn,bn->bk", V[:, : j + 1], w)
            w = w - torch.einsum("bkn,bk->bn", V[:, : j + 1], c)
            H[:, : j + 1, j] += c
        beta = w.norm(dim=1)
        scale = H[:, : j + 2, : j + 1].flatten(1).norm(dim=1)
        brk = beta <= 1e-12 * scale.clamp_min(_TINY)  # invariant subspace: the Ritz values are exact
        broke = broke | brk
        H[:, j + 1, j] = torch.where(broke, torch.zeros_like(beta), beta)
        V[:, j + 1] = torch.where(broke[:, None], torch.zeros_like(w), w / beta.clamp_min(_TINY)[:, None])
        m = j + 1
        if not (m % check_every == 0 or m == m_max or bool((brk & ~done).any())):
            continue
        Hm = H[:, :m, :m]
        if symmetric:
            Hm = 0.5 * (Hm + Hm.transpose(1, 2))
            ev, S = torch.linalg.eigh(Hm)
            ev, S = ev.to(torch.complex128), S.to(torch.complex128)
        else:
            ev, S = torch.linalg.eig(Hm)
        i = ev.abs().argmax(dim=1)
        th = ev.gather(1, i[:, None]).squeeze(1)
        s_last = S[:, m - 1, :].gather(1, i[:, None]).squeeze(1)  # eigenvectors are unit 2-norm
        r = H[:, m, m - 1].abs() * s_last.abs() / th.abs().clamp_min(_TINY)
        mod = th.abs()
        stable = broke | ((mod - last).abs() <= tol * mod.clamp_min(_TINY))
        val, res, used, done = _accept(th, r, stable, m, tol, val, res, used, done)
        last = mod
        if bool(done.all()):
            break
    return val, done, res, used, last


def _estimate(mv: MatVec, v0: torch.Tensor, iters: int, tol: float, method: str, symmetric: bool,
              subspace: bool = True):
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    if method == "power":
        return _power(mv, v0, iters, tol, subspace, symmetric)
    if method == "arnoldi":
        return _arnoldi(mv, v0, iters, tol, symmetric)
    raise ValueError(f"unknown method {method!r}; choose power or arnoldi")


def _needs_autograd(name: str, why: str) -> None:
    """A VJP records a graph, which torch.inference_mode() forbids (and enable_grad cannot lift: the state made
    under it can never be saved for backward): torch's own error, "element 0 of tensors does not require grad",
    did not say that. torch.no_grad() is fine: the estimators enable gradients where they need them."""
    if torch.is_inference_mode_enabled():
        raise ValueError(f"{name} needs autograd ({why}): call it outside torch.inference_mode() (torch.no_grad() "
                         "is fine)")


# --- public estimators ---------------------------------------------------------------------------------------
@torch.no_grad()
def spectral_radius(step_fn: StepFn, h: torch.Tensor, iters: int = 100, tol: float = 1e-3,
                    generator: torch.Generator | None = None, method: str = "arnoldi", subspace: bool = True,
                    mask: torch.Tensor | None = None, jvp_fn: JvpFn | None = None) -> SpectralEstimate:
    """ρ(J_i) per sample at state h (B, ...), with a convergence certificate (module docstring).

    `jvp_fn(h, v) -> J v` replaces `torch.func.jvp` through `step_fn` (e.g. the hand-written
    `regularizers.core_jvp`, about 2x faster on the built-in block); it must compute the same product.
    """
    h = check_state(h, _NEEDS).detach().clone()
    with twice_differentiable():
        mv = _jvp_op(step_fn, h, mask, jvp_fn)
        val, done, res, used, last = _estimate(mv, _start(h, mask, generator), iters, tol, method, False, subspace)
    rho = torch.where(done, val.abs(), torch.full_like(last, float("nan")))
    return SpectralEstimate(rho.cpu(), done.cpu(), res.cpu(), used.cpu(), last.cpu(), val.cpu(), method)


@torch.no_grad()
def spectral_norm(step_fn: StepFn, h: torch.Tensor, iters: int = 100, tol: float = 1e-3,
                  generator: torch.Generator | None = None, method: str = "arnoldi",
                  mask: torch.Tensor | None = None, jvp_fn: JvpFn | None = None) -> SpectralEstimate:
    """σ_max(J_i) per sample: the top eigenvalue of JᵢᵀJᵢ by power iteration or Lanczos, square-rooted.

    `residual` is the relative residual of the JᵀJ eigenpair; `iters` counts JVP+VJP pairs.
    """
    _needs_autograd("spectral_norm", "its Jᵀ(J v) is a vector-Jacobian product")
    h = check_state(h, _NEEDS).detach().clone()
    with twice_differentiable():
        mv = _jtj_op(step_fn, h, mask, jvp_fn)
        val, done, res, used, last = _estimate(mv, _start(h, mask, generator), iters, tol, method, True)
    sig = val.real.clamp_min(0).sqrt()
    sig = torch.where(done, sig, torch.full_like(sig, float("nan")))
    return SpectralEstimate(sig.cpu(), done.cpu(), res.cpu(), used.cpu(), last.clamp_min(0).sqrt().cpu(),
                            None, method)


@torch.no_grad()
def frobenius_hutchinson(step_fn: StepFn, h: torch.Tensor, samples: int = 16,
                         generator: torch.Generator | None = None, dist: str = "gaussian",
                         mask: torch.Tensor | None = None, jvp_fn: JvpFn | None = None) -> FrobeniusEstimate:
    """Hutchinson's unbiased estimate of ||J_i||²_F = E||J_i ε||², `samples` JVPs (module docstring)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if dist not in ("gaussian", "rademacher"):
        raise ValueError(f"unknown probe distribution {dist!r}; choose gaussian or rademacher")
    h = check_state(h, _NEEDS).detach().clone()
    B = h.shape[0]
    m = _mask_like(h, mask)
    n = (m.reshape(B, -1).sum(1) if m is not None else torch.full((B,), h[0].numel())).to(torch.float64).cpu()
    vals = []
    with twice_differentiable():
        mv = _jvp_op(step_fn, h, mask, jvp_fn)
        for _ in range(samples):
            e = torch.randn(h.shape, generator=generator, dtype=torch.float64, device="cpu")
            if dist == "rademacher":
                e = e.sign()
            vals.append(mv(e.to(h.device).reshape(B, -1)).pow(2).sum(1).cpu())
    x = torch.stack(vals)  # (samples, B)
    se = x.std(0, unbiased=True) / math.sqrt(samples) if samples > 1 else torch.full((B,), float("nan"))
    return FrobeniusEstimate(x.mean(0), se.to(torch.float64), n, samples)


def monitor_rho(model: torch.nn.Module, mb: Any, n_loops: int, probes: torch.Generator, amp: Any,
                gathered: Callable) -> dict[str, float]:
    """ρ(∂Φ/∂h) at the state after this step's loop count, on up to 16 samples' real tokens of the last
    micro-batch: 30 Arnoldi steps (looplm.spectra.spectral_radius). `rho` is the mean largest-modulus Ritz
    value, a running estimate; `rho_converged` the fraction of samples whose estimate passed the residual test.
    The training log's monitor (`reg.rho_every`): `gathered()` holds FSDP's full weights, `amp` its autocast."""
    from .looped import eval_mode, phi, run_loop

    k = min(16, len(mb))
    ids, mask = mb.input_ids[:k], mb.mask[:k]
    # eval: one fixed map: dropout (and random positions) would draw a new Φ at every Arnoldi step
    with eval_mode(model), gathered():
        with torch.no_grad(), amp:
            h0, ctx = model.embed(ids, mask)
            h = run_loop(model, h0, ctx, n_loops)
        with twice_differentiable():
            est = spectral_radius(phi(model, ctx), h.to(h0.dtype), iters=30, tol=1e-3, generator=probes,
                                  method="arnoldi", mask=mask)
    return {"rho": est.raw.mean().item(), "rho_converged": est.converged_fraction}
