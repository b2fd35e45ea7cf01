"""Latent dynamics of a looped model: per-loop diagnostics, trajectory PCA, recovery from perturbations.

The spectral estimates of ∂Φ/∂h that `diagnose` records (ρ, σ_max, the Hutchinson Frobenius norm) live in
`looplm.spectra`, which documents exactly what each one measures; they are re-exported here.

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
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .arguments import MAX_DEPTH, check_count, check_depths, finite_real, int_list
from .evaluate import check_finite, check_scored, check_targets, check_weights_finite, state_overflow
from .looped import check_given, detach_ctx, eval_mode, loop_arg, phi, run_loop
from .memory import out_of_memory_hint
from .regularizers import core_jvp, supports_fast_jvp
from .spectra import _TINY, frobenius_hutchinson, spectral_norm, spectral_radius
from .tasks.base import IGNORE, Batch

__all__ = ["METRIC_DEFINITIONS", "diagnose", "frobenius_hutchinson", "log_spaced", "perturbation_recovery",
           "spectral_norm", "spectral_radius", "spectral_subset", "trajectory_pca"]


# --- trajectories --------------------------------------------------------------------------------------------
def trajectory_pca(traj: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of one trajectory (L, ...) of L states: (L, k) coordinates and (k,) explained-variance ratios.

    The points are centered on their mean and projected on the top-k right singular vectors of the centered
    (L, n) matrix (torch SVD, float64). Signs are fixed so that PC1 runs from the first state to the last
    (coordinate of the last point >= that of the first) and PC2's largest-magnitude coordinate is positive.
    """
    X = traj.reshape(traj.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(X).all()):  # (was torch's SVD error)
        raise ValueError("trajectory_pca needs finite states; this trajectory holds NaN or inf")
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
    # (lo=0 was a math domain error, lo > hi silently swapped, count=0 gave both ends)
    lo, hi, count = check_count("lo", lo, 1), check_count("hi", hi, 1), check_count("count", count, 1)
    if hi < lo:
        raise ValueError(f"hi must be >= lo, got lo={lo}, hi={hi}")
    if hi == lo or count == 1:
        return sorted({lo, hi})
    pts = torch.logspace(math.log10(lo), math.log10(hi), count, dtype=torch.float64).round().long().tolist()
    return sorted(set(pts) | {lo, hi})


def spectral_subset(depths: list[int], count: int = 12) -> list[int]:
    """About `count` of the given (sorted, positive) `depths`, as evenly spaced in log t as they allow: for each of
    `count` log-spaced targets from the first depth to the last, the given depth nearest to it in log t; all of them
    when there are at most `count`. (Keeping only the log-spaced targets that happen to be among `depths` left
    [1, 2, 64] of 1,2,4,...,64 and [1, 1000] of 1,10,100,1000.)"""
    depths = sorted(set(depths))
    if len(depths) <= count:
        return depths
    logs = torch.tensor(depths, dtype=torch.float64).log()
    targets = torch.linspace(float(logs[0]), float(logs[-1]), count, dtype=torch.float64)
    return sorted({depths[int((logs - t).abs().argmin())] for t in targets})


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
    # the scored positions: an answer task's answer tokens; a text window's every next token
    "entropy": "entropy (nats) of the next-token distribution, averaged over the scored positions (the answer's; "
               "for text, every position of the window)",
    "ce": "cross-entropy (nats) of the gold next token, averaged over the scored positions (teacher forcing)",
    "accuracy": "exact match of greedy decoding (= every teacher-forced argmax on the scored positions is right; for "
                "text, the whole window)",
    "rho": "spectral radius of dPhi/dh at h(t), real tokens only; converged samples only",
    "sigma_max": "largest singular value of dPhi/dh at h(t), real tokens only; converged samples only",
    "frobenius_rms": "sqrt(||dPhi/dh||_F^2 / n), Hutchinson estimate: the root-mean-square singular value",
}


@torch.no_grad()
def diagnose(model: torch.nn.Module, batch: Batch, depths: list[int], spectral_depths: list[int] | None = None,
             spectral_n: int | None = None, iters: int = 60, tol: float = 1e-3, method: str = "arnoldi",
             hutchinson_samples: int = 8, pca_n: int | None = None, batch_size: int = 256, seed: int = 0,
             progress: bool = False, vocab: int | None = None) -> dict:
    """Per-loop diagnostics of `model` on `batch` at each depth in `depths`; a JSON-ready dict.

    Cheap statistics (norms, residuals, distance to the final state, entropy, CE, exact match) cover every
    depth and every sample: two forward passes to max(depths) (the first only finds h(L)). The spectral
    estimates cost up to `iters` JVPs (σ_max: `iters` JVP+VJP pairs) per depth, so they are taken only at
    `spectral_depths` (default: about 12 of `depths`, as evenly log-spaced as they allow) and on the first `spectral_n`
    samples. `pca_n` samples' trajectories over `depths` are projected on their own top-2 PCs. None: 16 and 8
    samples, or all there are if fewer; a number larger than the batch is refused.
    Real tokens are the batch's mask (a text model's pad id may also be a real token, e.g. EOS); every
    statistic is taken over them only. `vocab`: the ids the tokenizer can decode, as in `evaluate.sweep`.
    """
    check_given(model, batch)
    depths = check_depths(depths, "analyze")
    vocab = None if vocab is None else check_count("vocab", vocab, 1)
    # checked, and kept as the plain ints the checks return: batch_size=-1 scored nothing and reported a perfect CE
    # of 0, and a numpy count made the result no JSON (and a numpy seed no torch seed)
    batch_size, iters, hutchinson_samples, seed = (
        check_count(name, v, lo) for name, v, lo in (("batch_size", batch_size, 1), ("iters", iters, 1),
                                                     ("hutchinson_samples", hutchinson_samples, 0), ("seed", seed, 0)))
    spectral_n, pca_n = (None if v is None else check_count(name, v, 0)
                         for name, v in (("spectral_n", spectral_n), ("pca_n", pca_n)))
    if seed >= 2**64:  # torch.Generator's seed range: larger was torch's "Overflow when unpacking long long"
        raise ValueError(f"seed must be below 2**64, got {seed}")
    for name, v in (("iters", iters), ("hutchinson_samples", hutchinson_samples)):
        if v > MAX_DEPTH:  # each a JVP, a loop's worth of work: 10**12 ran until killed
            raise ValueError(f"{name} must be at most {MAX_DEPTH:,}, got {v:,}")
    given, tol = tol, finite_real(tol)  # (a 0-d tensor too, as exit_tol)
    if tol is None or not 0 < tol < 1:
        # a relative residual of 1 or more accepts any vector: every estimate would count as converged
        raise ValueError(f"tol must be a number in (0, 1), got {given!r:.80}")
    if method not in ("arnoldi", "power"):
        raise ValueError(f"unknown method {method!r:.80}; choose arnoldi or power")
    if spectral_depths is not None:  # a list, tuple or integer array; [] probes no depth
        asked = int_list(spectral_depths, "spectral_depths")  # (a bool is no depth)
        spectral_depths = check_depths(sorted(set(asked)), "probe") if asked else []
    n = len(batch)
    if n < 1:
        raise ValueError("no samples to analyze")
    check_scored(batch)
    check_weights_finite(model)
    spectral_n = min(16, n) if spectral_n is None else spectral_n
    pca_n = min(8, n) if pca_n is None else pca_n
    # a trajectory of one depth is one point per sample: its "principal components" explain 0% (nothing to draw)
    pca_skipped = pca_n > 0 and len(depths) < 2
    pca_n = 0 if pca_skipped else pca_n
    real = batch.mask.bool()
    with eval_mode(model):
        dev = next(model.parameters()).device
        L = depths[-1]
        if spectral_depths is None:
            spectral_depths = spectral_subset(depths)
        spectral_depths = sorted(set(spectral_depths)) if spectral_n > 0 else []
        if any(d not in set(depths) for d in spectral_depths):
            raise ValueError("spectral depths must be among the analyzed depths")
        # More samples than the batch holds would be clipped, and the result read as the number asked for.
        for name, k in (("spectral_n", spectral_n if spectral_depths else 0), ("pca_n", pca_n)):
            if k > n:
                raise ValueError(f"{name}={k} is more than the {n} problems analyzed; ask for at most {n} (or more "
                                 "problems)")
        if spectral_n and spectral_depths and torch.is_inference_mode_enabled():
            # (no_grad is fine: σ_max enables grad for its VJP; inference tensors cannot have one, and torch said only
            # "element 0 of tensors does not require grad")
            raise ValueError("diagnose needs autograd for σ_max: call it outside torch.inference_mode(), or pass "
                             "spectral_n=0")
        want = {d: i for i, d in enumerate(depths)}
        oom = _require_memory(model, batch, real, len(depths), pca_n, dev)
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
                    check_finite(h, t)  # (eig, svd and the norms below would fail on them or report NaN)
                    sl = slice(s, s + h.shape[0])
                    hn = hd.flatten(1).norm(dim=1)
                    per["state_norm"][i, sl] = ((hd.norm(dim=-1) * tok).sum(1) / tok.sum(1)).cpu()
                    per["step_residual"][i, sl] = ((hd - prev[0]).flatten(1).norm(dim=1) / hn.clamp_min(_TINY)).cpu()
                    per["dist_to_final"][i, sl] = ((hd - fin).flatten(1).norm(dim=1) / fin_norm.clamp_min(_TINY)).cpu()
                    logits = model.readout(h, ctx)[..., :vocab]  # only the tokenizer's ids, as `sweep` reads them
                    check_finite(logits, t, "readout logits")
                    logp = F.log_softmax(logits.to(torch.float64), dim=-1)  # (b, T, V)
                    check_targets(tgt, ans, logp.shape[-1])  # (gather read past V: an IndexError)
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

            with out_of_memory_hint(oom):  # (where the trajectories grow)
                run_loop(model, h0, ctx, L, keep=keep)

        # spectral estimates on the first spectral_n samples, at spectral_depths
        spec: dict = {"depths": spectral_depths, "n": spectral_n, "iters": iters, "tol": tol, "method": method,
                      "hutchinson_samples": hutchinson_samples if n_spec_work else 0}  # what was taken, not asked
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

        with out_of_memory_hint(oom):
            pca = _pca(trajs, correct[-1])
        metrics = {k: _series(list(per[k])) for k in keys}
        acc = correct.to(torch.float64).mean(1).tolist()
        # CE over all scored tokens, each token once (a perplexity's exponent, as `sweep` gives it): metrics' "ce"
        # summarizes per-sample means, which would weigh a short tail window like a full one
        w = (batch.targets != IGNORE).sum(1).to(torch.float64)  # (n,) scored tokens per sample
        ce_tok = (per["ce"].nan_to_num(0.0) * w).sum(1) / w.sum().clamp_min(1)  # (depths,)
        return {"kind": "looplm.dynamics", "version": 1, "depths": list(depths), "n": n, "accuracy": acc,
                "metrics": metrics, "ce_per_token": ce_tok.tolist(), "spectral": spec,
                "pca": {"depths": list(depths),
                        "space": "each sample's real-token states h(t), flattened (T_i*D); coords_direction: the same "
                                 "with every token's state scaled to unit norm", "samples": pca,
                        **({"note": "no trajectories: one depth analyzed (a trajectory needs 2 or more)"}
                           if pca_skipped else {})},
                "definitions": METRIC_DEFINITIONS, "seed": seed, "seconds": round(time.perf_counter() - t0, 2)}


def _pca(trajs: list[list[torch.Tensor]], correct: torch.Tensor) -> list[dict]:
    """`diagnose`'s PCA entries: each sample's trajectory (its states at every depth) on its top-2 PCs."""
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
                    "explained_direction": [float(r) for r in dratio], "correct_final": bool(correct[j])})
    return pca


def _require_memory(model: torch.nn.Module, batch: Batch, real: torch.Tensor, n_depths: int, pca_n: int,
                    dev: torch.device) -> str | None:
    """Refuse, before the work, an analysis whose results cannot fit in memory: the per-depth statistics of every
    sample, and the states the trajectory PCA keeps, float64, of `pca_n` samples at every depth, with the copies the
    PCA makes of the largest. Those were kept with no check: `--depths 1:100000` of the shipped model needed ~12 GB
    and ran until it was out of memory. Returns the hint for running out anyway (None without a PCA)."""
    from .memory import gib, require

    stats = 7 * 8 * n_depths * len(batch)  # five float64 series and the exact-match flags per (depth, sample)
    if not pca_n:
        require(stats, f"the per-depth statistics of {len(batch)} problems at {n_depths:,} depths (analyze fewer)")
        return None
    d = model.embed(batch.input_ids[:1].to(dev), real[:1].to(dev))[0].shape[-1]  # the state's width
    tokens = real[:pca_n].sum(1)  # each PCA sample's real tokens
    states = 8 * n_depths * d * (int(tokens.sum()) + 4 * int(tokens.max()))  # kept, and the PCA's copies of one
    fix = "pca_n=0 (--pca-n 0) keeps none, or analyze fewer depths"
    require(stats + states, f"the trajectory PCA of {pca_n} samples over {n_depths:,} depths (their states, "
                            f"{gib(states)}; {fix}) and the per-depth statistics")
    return f"the trajectory PCA keeps {pca_n} samples' states at all {n_depths:,} depths: {fix}"


# --- robustness: perturb the state and watch it come back --------------------------------------------------------
def _listed(name: str, v: Any) -> list:
    """An argument that lists values (a list, tuple or array), with at least one; ValueError naming it."""
    try:
        if isinstance(v, str | bytes | Mapping):  # (a dict ran with its keys as the list)
            raise TypeError
        v = list(v)
    except TypeError:  # (a number was "'float' object is not iterable")
        raise ValueError(f"{name} must be a list, got {v!r:.80}") from None
    if not v:
        raise ValueError(f"{name} is empty; give at least one")
    return v


@torch.no_grad()
def perturbation_recovery(model: torch.nn.Module, batch: Batch, at: int, eps: list[float], ks: list[int],
                          kind: str = "noise", seed: int = 0, vocab: int | None = None) -> dict:
    """How a looped model recovers when its state is disturbed after `at` loops.

    kind="noise": h(at) + δ, δ Gaussian, scaled per sample to ||δ||_F = ε·||h(at)||_F over its real tokens, for
    each ε in `eps` (finite, >= 0; 0 is the undisturbed control). kind="swap": h(at) replaced by another sample's
    h(at) (the batch rolled by one; at least 2 samples), the loop continuing with each sample's own input (ε is then
    ignored; one row). `at` and every k are loop counts >= 1. After k more loops (k in `ks`) it
    reports exact match (the greedy answer read out there), and the distance to the undisturbed trajectory at the
    same depth, ||h'(at+k) - h(at+k)||_F / ||h(at+k)||_F over real tokens, which goes to 0 when the state falls
    back to the fixed point the input defines. JSON-ready: states that overflow (`evaluate.state_overflow`),
    undisturbed or disturbed, are refused, as `diagnose` refuses them. `vocab` as in `evaluate.sweep`.
    """
    check_given(model, batch)
    if kind not in ("noise", "swap"):
        raise ValueError(f"unknown perturbation {kind!r:.80}; choose noise or swap")
    # each checked by its own name: run_loop blamed `num_loops` for at=0 and ks=[0], ks=[] was max()'s error, a NaN
    # or inf eps ran and returned NaN distances (no JSON), and a swap in a batch of one swapped a sample with itself
    at = loop_arg("at", at, 1, " (the loops run before the disturbance)")
    ks = [loop_arg("ks", k, 1, " (the loops run after the disturbance)") for k in _listed("ks", ks)]
    seed = check_count("seed", seed, 0)
    vocab = None if vocab is None else check_count("vocab", vocab, 1)
    if seed >= 2**64:
        raise ValueError(f"seed must be below 2**64, got {seed}")
    if kind == "noise":
        eps = _listed("eps", eps)
        scales = [finite_real(e) for e in eps]
        for e, f in zip(eps, scales, strict=True):
            if f is None or f < 0:
                raise ValueError(f"eps must list finite noise scales >= 0 (||δ|| = ε·||h||), got {e!r:.80}")
        eps = scales
    elif len(batch) < 2:
        raise ValueError(f"kind='swap' gives each sample another sample's state: it needs at least 2 samples, the "
                         f"batch has {len(batch)}")
    check_scored(batch)
    with eval_mode(model):
        dev = next(model.parameters()).device
        ids, tgt, real = batch.input_ids.to(dev), batch.targets.to(dev), batch.mask.to(dev)
        ans = tgt != IGNORE
        m = real[..., None].to(torch.float64)
        h0, ctx = model.embed(ids, real)
        h_at = run_loop(model, h0, ctx, at)
        K, want = max(ks), set(ks)
        ref: dict[int, torch.Tensor] = {}  # only the read-out depths: every state to K would be K x (B, T, D)
        run_loop(model, h_at, ctx, K, keep=lambda t, h: ref.__setitem__(t, h) if t in want else None, first=1)

        def score(h: torch.Tensor, k: int, disturbed: str = "") -> tuple[float, float]:
            # overflowing states are refused, as analyze (diagnose) refuses them: the distances were NaN in a
            # result meant for JSON, and an overflowed row's answer is no measurement. `disturbed` names the
            # disturbance, so that an eps too large is told apart from a model whose own loop overflows.
            logits = model.readout(h, ctx)[..., :vocab]
            if not disturbed:
                check_finite(h, at + k)
                check_finite(logits, at + k, "readout logits")
            elif bool(state_overflow(h).any()) or not bool(torch.isfinite(logits).all()):
                fix = "give a smaller eps" if kind == "noise" else "the loop diverges from another sample's state"
                raise ValueError(f"{disturbed}: the disturbed states at depth {at + k} overflow (not finite, or a "
                                 f"state's norm past float32's range, ~1.8e19); looplm does not score such states; "
                                 f"{fix}")
            pred = logits.argmax(-1)
            acc = ((pred == tgt) | ~ans).all(1).double().mean().item()
            d = ((h - ref[k]).double() * m).flatten(1).norm(dim=1) / (ref[k].double() * m).flatten(1).norm(dim=1)
            return acc, d.mean().item()

        clean = [score(ref[k], k)[0] for k in ks]  # (first: an overflow there is the model's, not the eps's)
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
            what = "kind='swap'" if e is None else f"eps={e!r:.40}"
            accs, dists = zip(*(score(got[k], k, what) for k in ks), strict=True)
            rows.append({"eps": e, "accuracy": list(accs), "distance": list(dists)})
        return {"kind": kind, "at": at, "ks": list(ks), "n": len(batch), "clean_accuracy": clean, "rows": rows,
                "seed": seed}
