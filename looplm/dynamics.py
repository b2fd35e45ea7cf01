"""Latent dynamics of a looped model: spectral estimates of ∂Φ/∂h, per-loop diagnostics, trajectory PCA.

Φ is the one-loop map h(t) -> h(t+1) (`looplm.looped.phi(model, ctx)`, for any model of the looped protocol).
Samples never interact inside Φ, so ∂Φ/∂h is block-diagonal with one (n x n) block J_i per sample, n = T·D
(regularizers.py). Every estimator
below is batched over samples: one JVP (or VJP) with a separate direction per sample advances all of them,
and every number it returns is per sample. J_i is never built.

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

`diagnose` runs a model over held-out problems and records, at each depth t, the spread over samples of:
the state norm per token, the relative step residual, the relative distance to the deepest state, the
predictive entropy and cross-entropy on answer positions, exact match (teacher-forced argmax, as in
`evaluate.sweep`), and the three spectral estimates at a (configurable) subset of depths and samples.
`trajectory_pca` projects each sample's trajectory {h(t)} onto its own top-2 principal directions;
`diagnose` does it for the states and for their per-token directions h_p/||h_p||.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .looped import detach_ctx, phi, run_loop
from .model import twice_differentiable
from .regularizers import core_jvp, supports_fast_jvp
from .tasks.base import IGNORE, Batch

StepFn = Callable[[torch.Tensor], torch.Tensor]
MatVec = Callable[[torch.Tensor], torch.Tensor]  # (B, n) float64 -> (B, n) float64, one operator per row
JvpFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h, v) -> J v, both shaped like h

_TINY = 1e-300


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
        return float(self.converged.float().mean()) if self.converged.numel() else float("nan")


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
    if mask is None:
        return None
    m = mask.to(h.dtype)
    while m.dim() < h.dim():
        m = m.unsqueeze(-1)
    return m.expand_as(h)


def _jvp_op(step_fn: StepFn, h: torch.Tensor, mask: torch.Tensor | None, jvp_fn: JvpFn | None = None) -> MatVec:
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


# --- public estimators ---------------------------------------------------------------------------------------
@torch.no_grad()
def spectral_radius(step_fn: StepFn, h: torch.Tensor, iters: int = 100, tol: float = 1e-3,
                    generator: torch.Generator | None = None, method: str = "arnoldi", subspace: bool = True,
                    mask: torch.Tensor | None = None, jvp_fn: JvpFn | None = None) -> SpectralEstimate:
    """ρ(J_i) per sample at state h (B, ...), with a convergence certificate (module docstring).

    `jvp_fn(h, v) -> J v` replaces `torch.func.jvp` through `step_fn` (e.g. the hand-written
    `regularizers.core_jvp`, about 2x faster on the built-in block); it must compute the same product.
    """
    h = h.detach().clone()
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
    h = h.detach().clone()
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
    h = h.detach().clone()
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


# --- trajectories --------------------------------------------------------------------------------------------
def trajectory_pca(traj: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of one trajectory (L, ...) of L states: (L, k) coordinates and (k,) explained-variance ratios.

    The points are centered on their mean and projected on the top-k right singular vectors of the centered
    (L, n) matrix (torch SVD, float64). Signs are fixed so that PC1 runs from the first state to the last
    (coordinate of the last point >= that of the first) and PC2's largest-magnitude coordinate is positive.
    """
    X = traj.reshape(traj.shape[0], -1).to(torch.float64)
    X = X - X.mean(0, keepdim=True)
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    k_eff = min(k, S.numel())
    coords = U[:, :k_eff] * S[:k_eff]
    if k_eff >= 1 and coords[-1, 0] < coords[0, 0]:
        coords[:, 0] = -coords[:, 0]
    for j in range(1, k_eff):
        if coords[coords[:, j].abs().argmax(), j] < 0:
            coords[:, j] = -coords[:, j]
    tot = S.pow(2).sum()
    ratio = S[:k_eff].pow(2) / tot if tot > 0 else torch.zeros(k_eff, dtype=torch.float64)
    if k_eff < k:  # fewer points than components: pad with zeros
        coords = torch.cat([coords, coords.new_zeros(coords.shape[0], k - k_eff)], 1)
        ratio = torch.cat([ratio, ratio.new_zeros(k - k_eff)])
    return coords, ratio


# --- per-loop diagnostics ------------------------------------------------------------------------------------
def log_spaced(lo: int, hi: int, count: int) -> list[int]:
    """About `count` integers from lo to hi (both included), evenly spaced in log t."""
    if hi <= lo or count <= 1:
        return sorted({lo, hi})
    pts = torch.logspace(math.log10(lo), math.log10(hi), count, dtype=torch.float64).round().long().tolist()
    return sorted(set(pts) | {lo, hi})


def _stats(x: torch.Tensor) -> dict[str, float | None]:
    """mean, std and 10/50/90% quantiles over the finite entries of a 1-D tensor; None where empty."""
    x = x.to(torch.float64)
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return {"mean": None, "std": None, "q10": None, "q50": None, "q90": None}
    q = torch.quantile(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"mean": float(x.mean()), "std": float(x.std()) if x.numel() > 1 else 0.0,
            "q10": float(q[0]), "q50": float(q[1]), "q90": float(q[2])}


def _series(rows: list[torch.Tensor]) -> dict[str, list]:
    """Per-depth stats -> {'mean': [...], 'std': [...], ...} (one entry per depth)."""
    st = [_stats(r) for r in rows]
    return {k: [s[k] for s in st] for k in ("mean", "std", "q10", "q50", "q90")}


METRIC_DEFINITIONS = {
    "state_norm": "||h_p(t)||, the L2 norm of one token's state, averaged over the sample's real tokens",
    "step_residual": "||h(t) - h(t-1)||_F / ||h(t)||_F over the sample's real tokens (h(0) = embedding)",
    "dist_to_final": "||h(t) - h(L)||_F / ||h(L)||_F, L = the deepest depth analyzed",
    "entropy": "entropy (nats) of the next-token distribution, averaged over answer positions",
    "ce": "cross-entropy (nats) of the gold next token, averaged over answer positions (teacher forcing)",
    "accuracy": "exact match of greedy decoding (= every teacher-forced argmax on the answer is right)",
    "rho": "spectral radius of dPhi/dh at h(t), real tokens only; converged samples only",
    "sigma_max": "largest singular value of dPhi/dh at h(t), real tokens only; converged samples only",
    "frobenius_rms": "sqrt(||dPhi/dh||_F^2 / n), Hutchinson estimate: the root-mean-square singular value",
}


@torch.no_grad()
def diagnose(model: torch.nn.Module, batch: Batch, depths: list[int], spectral_depths: list[int] | None = None,
             spectral_n: int | None = None, iters: int = 60, tol: float = 1e-3, method: str = "arnoldi",
             hutchinson_samples: int = 8, pca_n: int | None = None, batch_size: int = 256, seed: int = 0,
             progress: bool = False) -> dict:
    """Per-loop diagnostics of `model` on `batch` at each depth in `depths`; a JSON-ready dict.

    Cheap statistics (norms, residuals, distance to the final state, entropy, CE, exact match) cover every
    depth and every sample: two forward passes to max(depths) (the first only finds h(L)). The spectral
    estimates cost up to `iters` JVPs (σ_max: `iters` JVP+VJP pairs) per depth, so they are taken only at
    `spectral_depths` (default: about 12 log-spaced depths among `depths`) and on the first `spectral_n`
    samples. `pca_n` samples' trajectories over `depths` are projected on their own top-2 PCs. None: 16 and 8
    samples, or all there are if fewer; a number larger than the batch is refused.
    Real tokens are the batch's mask (a text model's pad id may also be a real token, e.g. EOS); every
    statistic is taken over them only.
    """
    if not depths:
        raise ValueError("no depths to analyze")
    if sorted(set(depths)) != list(depths) or depths[0] < 1:
        raise ValueError("depths must be sorted, unique and >= 1")
    n = len(batch)
    if n < 1:
        raise ValueError("no samples to analyze")
    spectral_n = min(16, n) if spectral_n is None else spectral_n
    pca_n = min(8, n) if pca_n is None else pca_n
    real = batch.mask.bool()
    model.eval()
    dev = next(model.parameters()).device
    L = depths[-1]
    if spectral_depths is None:
        spectral_depths = [d for d in log_spaced(depths[0], L, 12) if d in set(depths)]
    spectral_depths = sorted(set(spectral_depths)) if spectral_n > 0 else []
    if any(d not in set(depths) for d in spectral_depths):
        raise ValueError("spectral depths must be among the analyzed depths")
    # More samples than the batch holds would be clipped, and the result read as the number asked for.
    for name, k in (("spectral_n", spectral_n if spectral_depths else 0), ("pca_n", pca_n)):
        if k > n:
            raise ValueError(f"{name}={k} is more than the {n} problems analyzed; ask for at most {n} (or more "
                             "problems)")
    want = {d: i for i, d in enumerate(depths)}
    t0 = time.perf_counter()
    keys = ("state_norm", "step_residual", "dist_to_final", "entropy", "ce")
    per = {k: torch.full((len(depths), n), float("nan"), dtype=torch.float64) for k in keys}
    correct = torch.zeros(len(depths), n, dtype=torch.bool)
    trajs: list[list[torch.Tensor]] = [[] for _ in range(pca_n)]
    n_spec_work = (spectral_n * len(spectral_depths) > 0) * spectral_n
    total = 2 * L * math.ceil(n / batch_size) + (L if n_spec_work else 0)
    bar = tqdm(total=total, desc="analyze", unit="loop", disable=not progress)

    for s in range(0, n, batch_size):
        ids = batch.input_ids[s : s + batch_size].to(dev)
        tgt = batch.targets[s : s + batch_size].to(dev)
        ans = tgt != IGNORE  # (b, T) answer positions
        tok = real[s : s + batch_size].to(dev, torch.float64)  # (b, T) real tokens
        h0, ctx = model.embed(ids, real[s : s + batch_size].to(dev))
        # pass 1: the final state only
        h_final = run_loop(model, h0, ctx, L, keep=lambda t, h: bar.update(1))
        fin = h_final.to(torch.float64) * tok[..., None]
        fin_norm = fin.flatten(1).norm(dim=1)
        prev = [h0.to(torch.float64) * tok[..., None]]

        def keep(t: int, h: torch.Tensor, s=s, tgt=tgt, ans=ans, tok=tok, fin=fin, fin_norm=fin_norm,
                 prev=prev, ctx=ctx) -> None:
            bar.update(1)
            hd = h.to(torch.float64) * tok[..., None]
            if t in want:
                i = want[t]
                sl = slice(s, s + h.shape[0])
                hn = hd.flatten(1).norm(dim=1)
                per["state_norm"][i, sl] = ((hd.norm(dim=-1) * tok).sum(1) / tok.sum(1)).cpu()
                per["step_residual"][i, sl] = ((hd - prev[0]).flatten(1).norm(dim=1) / hn.clamp_min(_TINY)).cpu()
                per["dist_to_final"][i, sl] = ((hd - fin).flatten(1).norm(dim=1) / fin_norm.clamp_min(_TINY)).cpu()
                logp = F.log_softmax(model.readout(h, ctx).to(torch.float64), dim=-1)  # (b, T, V)
                ent = -(logp.exp() * logp).sum(-1)
                nll = -logp.gather(-1, tgt.clamp_min(0)[..., None]).squeeze(-1)
                af = ans.to(torch.float64)
                per["entropy"][i, sl] = ((ent * af).sum(1) / af.sum(1)).cpu()
                per["ce"][i, sl] = ((nll * af).sum(1) / af.sum(1)).cpu()
                pred = logp.argmax(dim=-1)
                correct[i, sl] = ((pred == tgt) | ~ans).all(dim=1).cpu()
                for j in range(max(0, min(pca_n - s, h.shape[0]))):
                    trajs[s + j].append(h[j, tok[j].bool()].to(torch.float64).cpu())
            prev[0] = hd

        run_loop(model, h0, ctx, L, keep=keep)

    # spectral estimates on the first spectral_n samples, at spectral_depths
    spec: dict = {"depths": spectral_depths, "n": spectral_n, "iters": iters, "tol": tol, "method": method,
                  "hutchinson_samples": hutchinson_samples}
    rows: dict[str, list[torch.Tensor]] = {"rho": [], "sigma_max": [], "frobenius_rms": []}
    conv: dict[str, list[float]] = {"rho": [], "sigma_max": []}
    it_med: dict[str, list[float]] = {"rho": [], "sigma_max": []}
    if n_spec_work:
        gen = torch.Generator().manual_seed(seed)
        ids = batch.input_ids[:spectral_n].to(dev)
        tok = real[:spectral_n].to(dev)
        h0, ctx = model.embed(ids, tok)
        step = phi(model, detach_ctx(ctx))
        fast = supports_fast_jvp(model)
        jvp_fn = (lambda hh, vv: core_jvp(model, hh, vv, ctx.e)[1]) if fast else None
        spec["jvp"] = "regularizers.core_jvp" if fast else "torch.func.jvp"
        sd = set(spectral_depths)
        Ls = spectral_depths[-1]

        def keep_spec(t: int, h: torch.Tensor) -> None:
            bar.update(1)
            if t not in sd:
                return
            for name, fn in (("rho", spectral_radius), ("sigma_max", spectral_norm)):
                r = fn(step, h, iters=iters, tol=tol, generator=gen, method=method, mask=tok, jvp_fn=jvp_fn)
                rows[name].append(r.value)
                conv[name].append(r.converged_fraction)
                it_med[name].append(float(r.iters.double().median()))
            if hutchinson_samples:
                rows["frobenius_rms"].append(
                    frobenius_hutchinson(step, h, hutchinson_samples, gen, mask=tok, jvp_fn=jvp_fn).rms)

        run_loop(model, h0, ctx, Ls, keep=keep_spec)
        bar.update(L - Ls)
    for name in ("rho", "sigma_max"):
        spec[name] = _series(rows[name]) | {"converged_frac": conv[name], "median_iters": it_med[name]}
    if rows["frobenius_rms"]:
        spec["frobenius_rms"] = _series(rows["frobenius_rms"])
    bar.close()

    pca = []
    for j, tr in enumerate(trajs):
        states = torch.stack(tr)  # (L, T_j, D)
        coords, ratio = trajectory_pca(states)
        # the same on the unit sphere of each token: where an internal norm lets ||h|| drift, the drift
        # direction takes nearly all the variance above and hides how the state's direction moves
        dcoords, dratio = trajectory_pca(states / states.norm(dim=-1, keepdim=True).clamp_min(_TINY))
        pca.append({"index": j, "coords": [[round(float(x), 5) for x in c] for c in coords],
                    "explained": [float(r) for r in ratio],
                    "coords_direction": [[round(float(x), 6) for x in c] for c in dcoords],
                    "explained_direction": [float(r) for r in dratio], "correct_final": bool(correct[-1, j])})
    metrics = {k: _series(list(per[k])) for k in keys}
    acc = correct.to(torch.float64).mean(1).tolist()
    return {"kind": "looplm.dynamics", "version": 1, "depths": list(depths), "n": n, "accuracy": acc,
            "metrics": metrics, "spectral": spec,
            "pca": {"depths": list(depths),
                    "space": "each sample's real-token states h(t), flattened (T_i*D); coords_direction: the same "
                             "with every token's state scaled to unit norm", "samples": pca},
            "definitions": METRIC_DEFINITIONS, "seed": seed, "seconds": round(time.perf_counter() - t0, 2)}


# --- robustness: perturb the state and watch it come back --------------------------------------------------------
@torch.no_grad()
def perturbation_recovery(model: torch.nn.Module, batch: Batch, at: int, eps: list[float], ks: list[int],
                          kind: str = "noise", seed: int = 0) -> dict:
    """How a looped model recovers when its state is disturbed after `at` loops.

    kind="noise": h(at) + δ, δ Gaussian, scaled per sample to ||δ||_F = ε·||h(at)||_F over its real tokens, for
    each ε in `eps`. kind="swap": h(at) replaced by another sample's h(at) (the batch rolled by one), the loop
    continuing with each sample's own input (ε is then ignored; one row). After k more loops (k in `ks`) it
    reports exact match (the greedy answer read out there), and the distance to the undisturbed trajectory at the
    same depth, ||h'(at+k) - h(at+k)||_F / ||h(at+k)||_F over real tokens, which goes to 0 when the state falls
    back to the fixed point the input defines. JSON-ready.
    """
    if kind not in ("noise", "swap"):
        raise ValueError(f"unknown perturbation {kind!r}; choose noise or swap")
    model.eval()
    dev = next(model.parameters()).device
    ids, tgt, real = batch.input_ids.to(dev), batch.targets.to(dev), batch.mask.to(dev)
    ans = tgt != IGNORE
    m = real[..., None].to(torch.float64)
    h0, ctx = model.embed(ids, real)
    h_at = run_loop(model, h0, ctx, at)
    K, want = max(ks), set(ks)
    ref: dict[int, torch.Tensor] = {}  # only the read-out depths: every state to K would be K x (B, T, D)
    run_loop(model, h_at, ctx, K, keep=lambda t, h: ref.__setitem__(t, h) if t in want else None, first=1)

    def score(h: torch.Tensor, k: int) -> tuple[float, float]:
        pred = model.readout(h, ctx).argmax(-1)
        acc = ((pred == tgt) | ~ans).all(1).double().mean().item()
        d = ((h - ref[k]).double() * m).flatten(1).norm(dim=1) / (ref[k].double() * m).flatten(1).norm(dim=1)
        return acc, d.mean().item()

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for e in ([None] if kind == "swap" else eps):
        if kind == "swap":
            h = h_at.roll(1, dims=0)
        else:
            noise = torch.randn(h_at.shape, generator=gen, dtype=torch.float64).to(dev) * m
            scale = e * (h_at.double() * m).flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1).clamp_min(1e-30)
            h = (h_at.double() + noise * scale.view(-1, 1, 1)).to(h_at.dtype)
        got: dict[int, torch.Tensor] = {}
        run_loop(model, h, ctx, K, keep=lambda t, s, got=got: got.__setitem__(t, s) if t in want else None, first=1)
        accs, dists = zip(*(score(got[k], k) for k in ks), strict=True)
        rows.append({"eps": e, "accuracy": list(accs), "distance": list(dists)})
    clean = [score(ref[k], k)[0] for k in ks]
    return {"kind": kind, "at": at, "ks": list(ks), "n": len(batch), "clean_accuracy": clean, "rows": rows,
            "seed": seed}
