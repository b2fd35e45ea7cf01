"""Spectral estimators against exact eigen/singular values, the per-loop diagnostics, the PCA, and `analyze`."""

import json
import math
import re

import numpy as np
import pytest
import torch

from looplm.cli import main
from looplm.dynamics import (
    diagnose,
    frobenius_hutchinson,
    log_spaced,
    spectral_norm,
    spectral_radius,
    trajectory_pca,
)
from looplm.evaluate import sweep
from looplm.generate import generate
from looplm.looped import phi, run_loop
from looplm.model import LoopedTransformer, twice_differentiable
from looplm.regularizers import core_jvp
from looplm.tasks.addition import EOS, AdditionTask, make_batch
from looplm.train import train

from .conftest import tiny_config, tiny_model_config

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def linear_step(A):
    """Φ(h) = A_i h_i per sample: a batched linear map with a known spectrum."""
    return lambda h: torch.einsum("bij,bj->bi", A, h)


def with_spectrum(blocks, n, seed):
    """Per sample: S · blockdiag(block, spread of smaller reals) · S⁻¹, S a random well-conditioned (non-
    orthogonal) basis, so A is non-symmetric and non-normal with exactly the eigenvalues we chose."""
    g = gen(seed)
    out = []
    for blk in blocks:
        k = blk.shape[0]
        D = torch.zeros(n, n, dtype=F64)
        D[:k, :k] = blk
        D[k:, k:] = torch.diag(torch.linspace(-0.6, 0.6, n - k, dtype=F64))
        S = torch.randn(n, n, generator=g, dtype=F64) + 4 * torch.eye(n, dtype=F64)
        out.append(S @ D @ torch.linalg.inv(S))
    return torch.stack(out)


def exact_rho(A):
    return torch.linalg.eigvals(A).abs().max(dim=1).values


def rel_err(est, ref):
    return ((est - ref).abs() / ref).max().item()


N = 40
REAL = [torch.tensor([[1.3]], dtype=F64), torch.tensor([[-1.4]], dtype=F64), torch.tensor([[0.9]], dtype=F64)]
# dominant complex pair 0.9 ± 0.6i (|λ| = 1.08) and a dominant ±1.1 pair: ||J v|| oscillates under power iteration
COMPLEX = [torch.tensor([[0.9, -0.6], [0.6, 0.9]], dtype=F64)] * 2
PLUS_MINUS = [torch.tensor([[1.1, 0.0], [0.0, -1.1]], dtype=F64)] * 2


@pytest.mark.parametrize("method", ["power", "arnoldi"])
def test_real_dominant_eigenvalue_of_a_non_symmetric_map(method):
    A = with_spectrum(REAL, N, seed=1)
    assert (A - A.transpose(1, 2)).abs().max() > 1  # genuinely non-symmetric
    h = torch.randn(3, N, dtype=F64)
    r = spectral_radius(linear_step(A), h, iters=200, tol=1e-4, generator=gen(), method=method)
    assert r.converged.all()
    assert rel_err(r.value, exact_rho(A)) < 1e-3  # far inside the 2% target
    # the eigenvalue itself, sign included, not just its modulus
    torch.testing.assert_close(r.eigenvalue.real, torch.tensor([1.3, -1.4, 0.9], dtype=F64), rtol=2e-3, atol=0)
    assert r.eigenvalue.imag.abs().max() < 1e-6
    s = spectral_norm(linear_step(A), h, iters=200, tol=1e-4, generator=gen(), method=method)
    assert s.converged.all() and rel_err(s.value, torch.linalg.svdvals(A)[:, 0]) < 1e-3


@pytest.mark.parametrize("blocks", [COMPLEX, PLUS_MINUS], ids=["complex-pair", "plus-minus-pair"])
def test_equal_modulus_dominant_pair_is_flagged_by_plain_power_iteration(blocks):
    A = with_spectrum(blocks, N, seed=2)
    h = torch.randn(2, N, dtype=F64)
    plain = spectral_radius(linear_step(A), h, iters=300, tol=1e-3, generator=gen(), method="power", subspace=False)
    assert not plain.converged.any() and plain.value.isnan().all()
    assert (plain.residual > 1e-2).all()  # far from an eigenpair: nothing to report
    # The 2-D Ritz step on the last two iterates and Arnoldi both resolve the pair.
    for method in ("power", "arnoldi"):
        r = spectral_radius(linear_step(A), h, iters=300, tol=1e-4, generator=gen(), method=method)
        assert r.converged.all(), method
        assert rel_err(r.value, exact_rho(A)) < 1e-3, method
    if blocks is COMPLEX:
        assert (r.eigenvalue.imag.abs() - 0.6).abs().max() < 1e-3


@pytest.mark.parametrize("method", ["power", "arnoldi"])
def test_unresolvable_spectrum_is_flagged_not_misreported(method):
    # A random orthogonal map: all n eigenvalues on the unit circle, no Krylov space of dimension < n can
    # isolate one. Neither method may report a number.
    Q = torch.linalg.qr(torch.randn(2, N, N, generator=gen(3), dtype=F64))[0]
    h = torch.randn(2, N, dtype=F64)
    r = spectral_radius(linear_step(Q), h, iters=25, tol=1e-3, generator=gen(), method=method)
    assert not r.converged.any() and r.value.isnan().all() and (r.iters == 25).all()
    # And a real dominant eigenvalue with a tiny gap, given too few steps.
    A = with_spectrum([torch.diag(torch.tensor([1.0, 0.995], dtype=F64))] * 2, N, seed=4)
    r = spectral_radius(linear_step(A), h, iters=15, tol=1e-5, generator=gen(), method="power")
    assert not r.converged.any() and r.value.isnan().all()


def test_arnoldi_is_exact_once_the_krylov_space_is_invariant():
    A = with_spectrum(COMPLEX, 12, seed=5)  # n = 12 <= iters: breakdown at step 12 at the latest
    r = spectral_radius(linear_step(A), torch.randn(2, 12, dtype=F64), iters=50, tol=1e-9, generator=gen(),
                        method="arnoldi")
    assert r.converged.all() and (r.iters <= 12).all()
    torch.testing.assert_close(r.value, exact_rho(A), rtol=1e-8, atol=0)


def test_hutchinson_frobenius():
    A = with_spectrum(REAL, 30, seed=6)
    h = torch.randn(3, 30, dtype=F64)
    exact = A.pow(2).sum((1, 2))
    f = frobenius_hutchinson(linear_step(A), h, samples=400, generator=gen(), dist="gaussian")
    z = (f.sq - exact).abs() / f.stderr
    assert (z < 4).all(), z  # unbiased, with an honest standard error
    assert ((f.stderr / exact) < 0.15).all()
    # Rademacher probes on an orthogonal map are exact: ||Qε||² = ||ε||² = n.
    Q = torch.linalg.qr(torch.randn(2, 30, 30, generator=gen(7), dtype=F64))[0]
    fq = frobenius_hutchinson(linear_step(2.0 * Q), h[:2], samples=3, generator=gen(), dist="rademacher")
    torch.testing.assert_close(fq.sq, torch.full((2,), 4.0 * 30, dtype=F64))
    torch.testing.assert_close(fq.rms, torch.full((2,), 2.0, dtype=F64))


# --- a tiny looped model, whose full Jacobian is small enough to build -------------------------------------
B, T, D = 2, 5, 16


def per_sample_jacobians(step_fn, h):
    with twice_differentiable():
        J = torch.autograd.functional.jacobian(step_fn, h)
    n = h[0].numel()
    J = J.reshape(h.shape[0], n, h.shape[0], n)
    return torch.stack([J[i, :, i] for i in range(h.shape[0])])


@pytest.fixture(scope="module", params=["pre", "post_sandwich"])
def looped(request):
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(d_model=D, n_heads=2, d_ff=32, norm_placement=request.param)).double()
    with torch.no_grad():
        for p in m.parameters():  # away from the near-identity init, so J has a spread spectrum
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(2, 14, (B, T), generator=gen(1))
    e, ctx = m.embed(ids)
    with torch.no_grad():
        h = run_loop(m, e, ctx, 3)
    step = phi(m, ctx)
    return step, h, per_sample_jacobians(step, h), (m, ctx.e)


@pytest.mark.parametrize("method", ["power", "arnoldi"])
def test_looped_model_spectra_match_the_full_jacobian(looped, method):
    step, h, J, _ = looped
    iters = 60 if method == "arnoldi" else 200  # n = T·D = 80 > 60: a genuinely partial Krylov space
    r = spectral_radius(step, h, iters=iters, tol=1e-3, generator=gen(), method=method)
    s = spectral_norm(step, h, iters=iters, tol=1e-3, generator=gen(), method=method)
    assert s.converged.all() and rel_err(s.value, torch.linalg.svdvals(J)[:, 0]) < 0.02
    ok = r.converged
    # Power iteration may run out of steps where the top two moduli are close (post_sandwich here: a complex
    # pair at |λ| = 0.774 over a real 0.752, a ratio of 0.97); it must then say so, never give a number.
    assert ok.any() and r.value[~ok].isnan().all()
    assert rel_err(r.value[ok], exact_rho(J)[ok]) < 0.02
    if method == "arnoldi":
        assert ok.all() and (r.iters < 80).all()


def test_looped_model_frobenius_and_masked_radius(looped):
    step, h, J, _ = looped
    f = frobenius_hutchinson(step, h, samples=200, generator=gen(), dist="rademacher")
    exact_f = J.pow(2).sum((1, 2))
    # a Monte Carlo estimate: its error is governed by its standard error, which must be honest and small
    assert ((f.sq - exact_f).abs() < 4 * f.stderr).all() and (f.stderr / exact_f < 0.05).all()
    # A mask: the estimate must be that of P J P, whose spectrum is the kept principal block's plus zeros
    # (for padding, a prefix of real tokens). Causal attention makes J block lower triangular over positions,
    # so its spectrum is the union of the diagonal blocks'; dropping the position that holds each sample's
    # dominant eigenvalue makes sure the mask changes the answer.
    blk = torch.stack([torch.stack([torch.linalg.eigvals(J[i, p * D:(p + 1) * D, p * D:(p + 1) * D]).abs().max()
                                    for p in range(T)]) for i in range(B)])  # (B, T) ρ of each diagonal block
    torch.testing.assert_close(blk.max(1).values, exact_rho(J))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[torch.arange(B), blk.argmax(1)] = False
    r = spectral_radius(step, h, iters=60, tol=1e-4, generator=gen(), method="arnoldi", mask=mask)
    idx = [mask[i].repeat_interleave(D).nonzero().squeeze(1) for i in range(B)]
    exact = torch.stack([torch.linalg.eigvals(J[i][ix][:, ix]).abs().max() for i, ix in enumerate(idx)])
    assert r.converged.all() and rel_err(r.value, exact) < 0.02
    assert ((exact_rho(J) - exact) > 0.02 * exact).all()  # the mask mattered
    fm = frobenius_hutchinson(step, h, samples=2, generator=gen(), mask=mask)
    assert fm.n.tolist() == [(T - 1) * D] * B


# --- trajectories --------------------------------------------------------------------------------------------
def test_trajectory_pca_matches_numpy_svd_and_known_geometry():
    g = gen(8)
    traj = torch.randn(30, 4, 6, generator=g, dtype=F64).cumsum(0)  # a random walk, L=30 points in R^24
    coords, ratio = trajectory_pca(traj)
    X = traj.reshape(30, -1).numpy()
    X = X - X.mean(0)
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    ref = U[:, :2] * S[:2]
    for j in range(2):
        sign = np.sign(ref[:, j] @ coords[:, j].numpy())
        np.testing.assert_allclose(coords[:, j].numpy(), sign * ref[:, j], atol=1e-9)
    np.testing.assert_allclose(ratio.numpy(), S[:2] ** 2 / (S**2).sum(), rtol=1e-9)
    assert coords[-1, 0] >= coords[0, 0]  # sign convention: PC1 runs from the first state to the last

    # A spiral lying in a 2-D plane of R^50: PCA recovers it up to a rotation (all pairwise distances).
    t = torch.linspace(0, 3 * math.pi, 40, dtype=F64)
    plane = torch.stack([torch.exp(-0.2 * t) * torch.cos(t), torch.exp(-0.2 * t) * torch.sin(t)], 1)
    basis = torch.linalg.qr(torch.randn(50, 2, generator=g, dtype=F64))[0]
    pts = plane @ basis.T + torch.randn(50, generator=g, dtype=F64)
    coords, ratio = trajectory_pca(pts)
    torch.testing.assert_close(torch.cdist(coords, coords), torch.cdist(plane, plane))
    assert abs(ratio.sum().item() - 1) < 1e-9


def test_log_spaced():
    d = log_spaced(1, 100, 12)
    assert d[0] == 1 and d[-1] == 100 and len(d) >= 10 and d == sorted(set(d))
    assert log_spaced(3, 3, 5) == [3]


# --- per-loop diagnostics on a tiny model ------------------------------------------------------------------
def greedy_batch(m, task, n, depth):
    """Addition prompts whose gold answer is the model's own greedy output at `depth` for every other row (as
    in test_evaluate), so exact match is non-trivial at that depth."""
    a, b = task.test_pairs(n, seed=3)
    prompts = [task.tok.encode(task.prompt(int(x), int(y))) for x, y in zip(a, b, strict=True)]
    outs = generate(m, prompts, depth, max_new_tokens=5, eos_id=EOS)
    seqs = []
    for i, (p, o) in enumerate(zip(prompts, outs, strict=True)):
        if i % 2 == 0:  # greedy's own answer; it ends with EOS only where greedy stopped
            seqs.append(p + o + ([EOS] if len(o) < 5 else []))
        else:
            seqs.append(p + task.tok.encode(task.target(int(a[i]), int(b[i]))) + [EOS])
    return make_batch(seqs, [len(p) for p in prompts], m.cfg.max_seq_len)


@pytest.mark.parametrize("placement", ["post_sandwich", "pre"])
def test_diagnose_on_a_tiny_model(placement):
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(norm_placement=placement, max_seq_len=16)).eval()
    with torch.no_grad():  # a sharper random model, so greedy outputs vary from row to row (norms untouched)
        m.tok_emb.weight.mul_(20)
        for name, p in m.core.named_parameters():
            if ".f." in name:
                p.add_(0.2 * torch.randn_like(p))
    task = AdditionTask(4)
    batch = greedy_batch(m, task, 24, depth=3)
    depths = [1, 2, 3, 4, 5, 6]
    res = diagnose(m, batch, depths, spectral_depths=[1, 6], spectral_n=3, iters=40, tol=1e-3, pca_n=2,
                   batch_size=10, hutchinson_samples=2)
    met = res["metrics"]
    # exact match agrees with the one-pass sweep at every depth, and is not trivially 0
    assert res["accuracy"] == pytest.approx(sweep(m, batch, depths).accuracy)
    assert res["accuracy"][2] >= 0.4
    # recompute norms and residuals from the states directly
    with torch.no_grad():
        e, ctx = m.embed(batch.input_ids)
        _, states = m(batch.input_ids, 6, return_states=True)
    real = (batch.input_ids != 0).double()[..., None]
    hs = [e.double() * real] + [s.double() * real for s in states]
    tok_norm = (hs[4].norm(dim=-1).sum(1) / real[..., 0].sum(1))
    assert met["state_norm"]["mean"][3] == pytest.approx(tok_norm.mean().item(), rel=1e-6)
    resid = (hs[4] - hs[3]).flatten(1).norm(dim=1) / hs[4].flatten(1).norm(dim=1)
    q = torch.quantile(resid, torch.tensor([0.1, 0.5, 0.9], dtype=F64)).tolist()
    assert [met["step_residual"][k][3] for k in ("q10", "q50", "q90")] == pytest.approx(q, rel=1e-6)
    assert met["step_residual"]["mean"][3] == pytest.approx(resid.mean().item(), rel=1e-6)
    assert met["dist_to_final"]["mean"][-1] == 0.0 and met["dist_to_final"]["mean"][0] > 0
    if placement == "post_sandwich":
        # an external LayerNorm (weight 1, bias 0 at init) puts every token on the sphere of radius √D
        assert all(abs(x - math.sqrt(32)) < 1e-3 for x in met["state_norm"]["mean"])
        assert all(s < 1e-3 for s in met["state_norm"]["std"])
    assert all(0 <= x <= math.log(16) + 1e-9 for x in met["entropy"]["mean"]) and min(met["ce"]["mean"]) > 0
    with torch.no_grad():
        logp = torch.log_softmax(m.readout(states[3], ctx).double(), -1)
    ans = (batch.targets != -100).double()
    ent = (-(logp.exp() * logp).sum(-1) * ans).sum(1) / ans.sum(1)
    assert met["entropy"]["mean"][3] == pytest.approx(ent.mean().item(), rel=1e-5)
    assert all(met[k]["q10"][i] <= met[k]["q50"][i] <= met[k]["q90"][i] for k in met for i in range(6))
    sp = res["spectral"]
    assert sp["depths"] == [1, 6] and len(sp["rho"]["q50"]) == 2 and len(sp["rho"]["converged_frac"]) == 2
    assert all(0 <= c <= 1 for c in sp["rho"]["converged_frac"] + sp["sigma_max"]["converged_frac"])
    for i in range(2):  # ρ <= σ_max wherever both converged
        if sp["rho"]["q90"][i] is not None and sp["sigma_max"]["q10"][i] is not None:
            assert sp["rho"]["mean"][i] <= sp["sigma_max"]["mean"][i] * (1 + 1e-3)
    pca = res["pca"]["samples"]
    assert len(pca) == 2 and len(pca[0]["coords"]) == 6 and 0 < sum(pca[0]["explained"]) <= 1 + 1e-9
    assert len(pca[0]["coords_direction"]) == 6 and 0 < sum(pca[0]["explained_direction"]) <= 1 + 1e-9
    if placement == "post_sandwich":  # states already on a sphere of radius √D: directions are h/√D
        torch.testing.assert_close(torch.tensor(pca[0]["coords_direction"]) * math.sqrt(32),
                                   torch.tensor(pca[0]["coords"]), atol=1e-3, rtol=1e-3)
    json.dumps(res, allow_nan=False)  # strict JSON: no NaN anywhere


# --- the CLI, end to end -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn") / "run"
    return train(tiny_config(train=dict(steps=3, eval_every=0)), out, progress=False)


def test_analyze_and_plot_cli(tiny_run, tmp_path, capsys):
    out = tmp_path / "an"
    assert main(["analyze", str(tiny_run), "--depths", "1:8", "--n", "12", "--spectral-n", "3", "--iters", "30",
                 "--pca-n", "3", "--hutchinson", "2", "--out", str(out), "--no-progress"]) == 0
    dyn = json.loads((out / "dynamics.json").read_text())
    assert dyn["kind"] == "looplm.dynamics" and dyn["depths"] == list(range(1, 9)) and dyn["n"] == 12
    assert dyn["spectral"]["depths"][0] == 1 and dyn["spectral"]["depths"][-1] == 8
    assert dyn["train_loops"] == [1, 6] and len(dyn["pca"]["samples"]) == 3
    png = b"\x89PNG\r\n\x1a\n"
    for f in ("dynamics.png", "trajectories.png"):
        assert (out / f).read_bytes()[:8] == png
    # plot: a sweep and a dynamics file overlaid, plus the dynamics panel and trajectories next to --out
    assert main(["sweep", str(tiny_run), "--depths", "1:8", "--n", "12", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tiny_run), str(out / "dynamics.json"), "--labels", "sweep", "dyn",
                 "--out", str(tmp_path / "fig" / "acc.png")]) == 0
    written = capsys.readouterr().out
    for f in ("acc.png", "acc-dynamics.png", "acc-trajectories.png"):
        assert (tmp_path / "fig" / f).read_bytes()[:8] == png and f in written


@pytest.mark.parametrize("args, msg", [
    (["--depths", "9:2"], "reversed"),
    (["--depths", "1:8", "--spectral-depths", "50"], "not among --depths"),
    (["--n", "0"], "argument --n: must be >= 1"),
    (["--tol", "0"], "--tol"),
])
def test_analyze_bad_input_is_one_error_line(tiny_run, tmp_path, capsys, args, msg):
    capsys.readouterr()
    assert main(["analyze", str(tiny_run), "--out", str(tmp_path), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and msg in err and err.count("\n") == 1
    assert not (tmp_path / "dynamics.json").exists()


def test_plot_rejects_json_that_is_neither(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    assert main(["plot", str(tmp_path / "x.json"), "--out", str(tmp_path / "a.png")]) == 2
    assert "neither" in capsys.readouterr().err


def test_the_hand_written_jvp_gives_the_same_estimates(looped):
    step, h, _, (m, e) = looped
    fast = lambda hh, vv: core_jvp(m, hh, vv, e)[1]
    for fn in (spectral_radius, spectral_norm):
        a = fn(step, h, iters=40, tol=1e-3, generator=gen())
        b = fn(step, h, iters=40, tol=1e-3, generator=gen(), jvp_fn=fast)
        torch.testing.assert_close(a.raw, b.raw, rtol=1e-9, atol=0)
        assert (a.converged == b.converged).all()


def test_perturbation_recovery_measures_what_it_says():
    from looplm.dynamics import perturbation_recovery

    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(norm_placement="post_sandwich", injection="add", n_prelude=1,
                                            max_seq_len=16)).double().eval()
    task = AdditionTask(2)
    batch = task.test_batch(12, seed=3)
    res = perturbation_recovery(m, batch, at=4, eps=[0.0, 0.1, 10.0], ks=[1, 5, 20], kind="noise")
    zero, small, big = res["rows"]
    assert zero["distance"] == [0.0, 0.0, 0.0] and zero["accuracy"] == res["clean_accuracy"]
    assert 0 < small["distance"][0] < big["distance"][0]  # a larger kick lands farther away
    # The clean accuracy is the sweep's at the same depths.
    want = sweep(m, batch, [5, 9, 24]).accuracy
    assert res["clean_accuracy"] == pytest.approx(want)
    swap = perturbation_recovery(m, batch, at=4, eps=[], ks=[1, 20], kind="swap")
    assert len(swap["rows"]) == 1 and swap["rows"][0]["distance"][0] > 0
    with pytest.raises(ValueError, match="noise or swap"):
        perturbation_recovery(m, batch, 4, [0.1], [1], kind="shake")


@pytest.mark.parametrize("how, msg", [("nan", r"^the model's weights are not finite \(1 tensor\(s\): tok_emb.weight\)"),
                                      ("huge", r"^the model's (states|readout logits) at depth 1 are not finite")])
def test_diagnose_refuses_a_model_whose_weights_or_states_are_not_finite(how, msg):
    """Was a traceback from deep in torch (linalg.eig in the Arnoldi estimate, or svd in the PCA)."""
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    with torch.no_grad():
        if how == "nan":
            m.tok_emb.weight[3] = float("nan")
        else:
            m.tok_emb.weight.mul_(1e36)
    batch = make_batch([[3, 4, 5, 6, EOS]] * 4, [3] * 4, 16)
    for kw in ({}, {"spectral_n": 0}):
        with pytest.raises(ValueError, match=msg):
            diagnose(m, batch, [1, 2], **kw)


def test_diagnose_refuses_a_tol_of_one_or_more_and_a_seed_past_torchs():
    """tol >= 1 accepts any vector as an eigenvector (every estimate "converged"); seed 2**70 was torch's overflow."""
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    batch = make_batch([[3, 4, 5, 6, EOS]] * 2, [3] * 2, 16)
    for tol in (1, 5.0):
        with pytest.raises(ValueError, match=rf"^tol must be a number in \(0, 1\), got {tol}$"):
            diagnose(m, batch, [1, 2], tol=tol)
    with pytest.raises(ValueError, match=r"^seed must be below 2\*\*64, got 1180591620717411303424$"):
        diagnose(m, batch, [1, 2], seed=2**70)


def test_a_batch_whose_parts_differ_in_shape_is_refused_by_name():
    """diagnose scored two problems with one row of targets (n 2, one counted right); sweep failed inside torch's
    indexing ("The shape of the mask [1, 5] at index 0 does not match ...")."""
    from looplm import Batch

    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, 6, EOS]] * 2, [3] * 2, 16)
    for parts, shapes in [((b.input_ids, b.targets[:1], b.mask), "input_ids [2, 4], targets [1, 4], mask [2, 4]"),
                          ((b.input_ids, b.targets, b.mask[:, :3]), "input_ids [2, 4], targets [2, 4], mask [2, 3]"),
                          ((b.input_ids[0], b.targets[0], b.mask[0]), "input_ids [4], targets [4], mask [4]")]:
        for read in (diagnose, sweep):
            with pytest.raises(ValueError, match=rf"^a Batch's input_ids, targets and mask must share one \(batch, "
                                                 rf"positions\) shape, got {re.escape(shapes)}$"):
                read(m, Batch(*parts), [1, 2])
    with pytest.raises(TypeError, match="^Batch.targets must be a torch.Tensor, got list$"):
        Batch(b.input_ids, b.targets.tolist(), b.mask)


def test_a_sweep_exit_rule_that_cannot_stop_a_row_early_says_so(tiny_run, tmp_path, capsys):
    """--exit-stable 50 over depths 1:3 ran every row to the cap and printed its accuracy as the rule's own."""
    capsys.readouterr()
    base = ["sweep", str(tiny_run), "--depths", "1:3", "--n", "4", "--no-progress", "--out"]
    assert main([*base, str(tmp_path / "a.json"), "--exit-stable", "50"]) == 0
    assert ("note: the exit rule cannot stop a row before the cap (--exit-stable 50 holds at loop 51 at the earliest; "
            "the deepest depth is 3): every row ran 3 loop(s), so its accuracy is depth 3's") in capsys.readouterr().out
    assert main([*base, str(tmp_path / "b.json"), "--exit-stable", "1"]) == 0  # can stop a row at loop 2
    assert "note: the exit rule" not in capsys.readouterr().out


def test_perturbation_recovery_checks_each_argument_by_name():
    """at=0 and ks=[0] were blamed on `num_loops`, ks=[] was max()'s error, eps=0.1 "'float' object is not
    iterable", seed="a" torch's; a NaN or inf eps ran and returned NaN distances (no JSON), and a swap in a batch of
    one swapped the sample with itself and reported a perfect recovery."""
    from looplm.dynamics import perturbation_recovery as pr

    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, 6, EOS]] * 2, [3] * 2, 16)
    for args, kw, msg in [
        ((0, [0.1], [1]), {}, r"at must be >= 1 \(the loops run before the disturbance\), got 0"),
        ((1, [0.1], [2, 0]), {}, r"ks must be >= 1 \(the loops run after the disturbance\), got 0"),
        ((1, [0.1], [1.5]), {}, r"ks must be an integer >= 1 .*, got 1.5"),
        ((1, [0.1], []), {}, "ks is empty; give at least one"),
        ((1, 0.1, [1]), {}, "eps must be a list, got 0.1"),
        ((1, [], [1]), {}, "eps is empty; give at least one"),
        ((1, [0.1], [1]), {"seed": "a"}, "seed must be an integer >= 0, got 'a'"),
        *(((1, [0.1, e], [1]), {}, rf"eps must list finite noise scales >= 0 \(\|\|δ\|\| = ε·\|\|h\|\|\), got {e}")
          for e in (float("nan"), float("inf"), -0.1, True)),
    ]:
        with pytest.raises(ValueError, match=f"^{msg}$"):
            pr(m, b, *args, **kw)
    with pytest.raises(ValueError, match=r"^kind='swap' gives each sample another sample's state: it needs at least "
                                         r"2 samples, the batch has 1$"):
        pr(m, make_batch([[3, 4, 5, 6, EOS]], [3], 16), 1, [], [1], kind="swap")
    res = pr(m, b, np.int64(1), np.array([0.1]), (torch.tensor(2),), seed=np.int64(3))  # numpy and torch numbers
    json.dumps(res, allow_nan=False)  # strict JSON: plain numbers
    assert res["rows"][0]["eps"] == 0.1 and res["ks"] == [2]


def test_analyze_refuses_trajectories_that_cannot_fit_and_names_pca_n(monkeypatch):
    """The PCA keeps pca_n samples' float64 states at every depth, with no check: `analyze --depths 1:100000` of the
    shipped model holds ~12 GB, and ran until it was out of memory with "lower the batch size, width or depths"."""
    from looplm import memory
    from looplm.errors import UserError

    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    b = make_batch([[3, 4, 5, 6, EOS]] * 4, [3] * 4, 16)  # 4 real tokens each, D = 32
    depths = list(range(1, 1001))
    states = 8 * 1000 * 32 * (2 * 4 + 4 * 4)  # pca_n=2: both samples' states, and the PCA's copies of one
    stats = 7 * 8 * 1000 * 4
    monkeypatch.setattr(memory, "available_bytes", lambda: stats + states - 1)
    with pytest.raises(UserError, match=r"^not enough memory: the trajectory PCA of 2 samples over 1,000 depths "
                                        r"\(their states, 0\.0 GiB; pca_n=0 \(--pca-n 0\) keeps none, or analyze "
                                        r"fewer depths\) and the per-depth statistics need at least 0\.0 GiB"):
        diagnose(m, b, depths, spectral_n=0, pca_n=2)
    assert diagnose(m, b, depths, spectral_n=0, pca_n=0)["pca"]["samples"] == []  # no states kept: it fits
    monkeypatch.setattr(memory, "available_bytes", lambda: stats + states)
    assert len(diagnose(m, b, depths, spectral_n=0, pca_n=2)["pca"]["samples"]) == 2

    def no_memory(*a, **k):  # running out anyway (an address-space limit the estimate missed, say)
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 614400000 bytes.")

    monkeypatch.setattr("looplm.dynamics.trajectory_pca", no_memory)
    with pytest.raises(UserError, match=r"^out of memory \(DefaultCPUAllocator: .* bytes\.\); the trajectory PCA keeps "
                                        r"2 samples' states at all 1,000 depths: pca_n=0 \(--pca-n 0\) keeps none, or "
                                        r"analyze fewer depths$"):
        diagnose(m, b, depths, spectral_n=0, pca_n=2)


def test_generate_refusing_an_overflow_does_not_send_the_user_to_fewer_loops():
    """Every depth overflows here, yet generate said "(depths below 3 may still be read)": it checks only the depth
    it decodes at (analyze, which checks its depths in order, may say so)."""
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    with torch.no_grad():
        m.tok_emb.weight.mul_(1e36)
    for cache in (False, True):
        with pytest.raises(ValueError, match=r"^the model's .* at depth 3 are .*; looplm does not score or decode such "
                                             r"a model$"):
            generate(m, [[3, 4, 5]], 3, 4, 1, use_cache=cache)
