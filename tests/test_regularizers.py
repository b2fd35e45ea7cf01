"""Each penalty against a simple float64 reference built from the explicit per-sample Jacobian."""

import pytest
import torch

from looplm.looped import phi
from looplm.model import Context, LoopedTransformer, twice_differentiable
from looplm.regularizers import (
    fixed_point_residual,
    hutchinson,
    jsrr,
    jsrr_release,
    penalty,
    power_penalty,
    unit_probes,
)

from .conftest import tiny_model_config

B, T, D = 3, 5, 8


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_model_config(d_model=D, n_heads=2, d_ff=16)).double()
    with torch.no_grad():
        for p in m.parameters():  # away from the near-identity init so J is far from I
            p.add_(0.3 * torch.randn_like(p))
    return m


def per_sample_jacobians(step_fn, h):
    """(B, T·D, T·D) blocks J_i, from the full (B,T,D,B,T,D) Jacobian; also checks off-diagonal blocks vanish."""
    J = torch.autograd.functional.jacobian(step_fn, h, create_graph=True)  # (B,T,D,B,T,D)
    n = h[0].numel()
    J = J.reshape(h.shape[0], n, h.shape[0], n)
    off = J.clone()
    for i in range(h.shape[0]):
        off[i, :, i] = 0
    assert off.abs().max() < 1e-12, "samples must not interact inside Φ"
    return torch.stack([J[i, :, i] for i in range(h.shape[0])])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_jsrr_value_and_gradient_match_explicit_jacobian(model):
    h = torch.randn(B, T, D, dtype=torch.float64)
    step = phi(model, Context(None))
    with twice_differentiable():
        got = jsrr(step, h, gen(1))
        v = unit_probes(h.shape, gen(1), h.device, h.dtype).reshape(B, -1)
        Js = per_sample_jacobians(step, h)
        ref = torch.einsum("bij,bj->bi", Js, v).pow(2).sum(1).mean()
    torch.testing.assert_close(got, ref)
    w = model.core[0].attn.f.qkv.weight
    torch.testing.assert_close(torch.autograd.grad(got, w)[0], torch.autograd.grad(ref, w)[0])


def test_jsrr_gradient_reaches_loop_params_not_the_state(model):
    h0 = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    h = phi(model, Context(None))(h0)  # a trajectory leading to h
    with twice_differentiable():
        pen = jsrr(phi(model, Context(None)), h, gen())
    pen.backward()
    assert h0.grad is None  # taken at the detached state
    assert model.core[0].mlp.f.up.weight.grad.abs().sum() > 0
    assert model.tok_emb.weight.grad is None


def test_release_variant_is_a_global_vjp(model):
    h = torch.randn(B, T, D, dtype=torch.float64)
    step = phi(model, Context(None))
    with twice_differentiable():
        got = jsrr_release(step, h, gen(2))
        v = torch.randn(h.shape, generator=gen(2), dtype=torch.float32).double()
        v = (v / v.norm()).reshape(B, -1)
        Js = per_sample_jacobians(step, h)
        ref = torch.einsum("bi,bij->bj", v, Js).pow(2).sum()
    torch.testing.assert_close(got, ref)


def test_hutchinson_and_residual_and_power(model):
    h = torch.randn(B, T, D, dtype=torch.float64)
    step = phi(model, Context(None))
    with twice_differentiable():
        Js = per_sample_jacobians(step, h).detach()
        eps = torch.randn(h.shape, generator=gen(3), dtype=torch.float32).double().reshape(B, -1)
        ref_h = (torch.einsum("bij,bj->bi", Js, eps).pow(2).sum(1) / (T * D)).mean()
        torch.testing.assert_close(hutchinson(step, h, gen(3)).detach(), ref_h)
        # Averaged over many probes it estimates the mean squared Frobenius norm per dimension.
        est = torch.stack([hutchinson(step, h, gen(s)).detach() for s in range(300)]).mean()
        fro = (Js.pow(2).sum((1, 2)) / (T * D)).mean()
        assert abs(est / fro - 1) < 0.1
        torch.testing.assert_close(fixed_point_residual(step, h).detach(),
                                   (step(h) - h).pow(2).sum((1, 2)).mean().detach())
        # One power step is JSRR itself.
        torch.testing.assert_close(power_penalty(step, h, gen(4), iters=1)[0], jsrr(step, h, gen(4)))
        torch.testing.assert_close(penalty("jsrr", step, h, gen(5)), jsrr(step, h, gen(5)))


def test_power_iteration_finds_a_known_real_spectral_radius():
    # A linear map with known eigenvalues (non-symmetric, real spectrum): A = S diag(λ) S^-1 per sample.
    torch.manual_seed(0)
    n = 12
    lam = torch.linspace(0.1, 0.9, n, dtype=torch.float64)
    lam[-1] = 1.7
    S = torch.randn(n, n, dtype=torch.float64) + 3 * torch.eye(n, dtype=torch.float64)
    A = S @ torch.diag(lam) @ torch.linalg.inv(S)
    step = lambda h: torch.einsum("ij,btj->bti", A, h)
    h = torch.randn(2, 1, n, dtype=torch.float64)
    pen, _ = power_penalty(step, h, gen(), iters=200)
    assert abs(pen.item() - 1.7**2) < 1e-6


def test_a_mask_gives_each_padded_sample_its_unpadded_penalty(model):
    """With right padding and a real-token mask, every estimator's per-sample term equals that of the sample
    alone, unpadded, with the same probe (causal attention: real tokens never see the padding after them)."""
    lens = [5, 3, 4]
    h = torch.randn(B, T, D, dtype=torch.float64)
    mask = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]
    m = mask[..., None].double()
    step = phi(model, Context(None))
    alone = [h[i : i + 1, :n] for i, n in enumerate(lens)]
    with twice_differentiable():
        v = unit_probes(h.shape, gen(7), h.device, h.dtype, m)  # the probes jsrr and power draw
        eps = torch.randn(h.shape, generator=gen(7), dtype=torch.float32).double() * m  # hutchinson's
        want = {
            "jsrr": [jv_sq(step, x, v[i : i + 1, :n]) for i, (x, n) in enumerate(zip(alone, lens, strict=True))],
            "hutchinson": [jv_sq(step, x, eps[i : i + 1, :n]) / (n * D)
                           for i, (x, n) in enumerate(zip(alone, lens, strict=True))],
            "residual": [(step(x) - x).pow(2).sum() for x in alone],
        }
        for kind, rows in want.items():
            torch.testing.assert_close(penalty(kind, step, h, gen(7), mask=mask), torch.stack(rows).mean(), msg=kind)
        # Two power steps: the same as each sample alone, started from its masked probe.
        pw = torch.stack([power_penalty(step, x, iters=2, v0=v[i : i + 1, :n])[0]
                          for i, (x, n) in enumerate(zip(alone, lens, strict=True))]).mean()
        torch.testing.assert_close(penalty("power", step, h, gen(7), power_iters=2, mask=mask), pw)
        # A mask of ones changes nothing.
        torch.testing.assert_close(jsrr(step, h, gen(8), torch.ones(B, T, dtype=torch.bool)), jsrr(step, h, gen(8)))
        # A sample with no real token adds 0 in every estimator (hutchinson's 0 / 0 made the whole mean NaN).
        empty = mask.clone()
        empty[1] = False
        for kind in ("jsrr", "hutchinson", "residual"):
            rows = [r for i, r in enumerate(want[kind]) if i != 1]
            torch.testing.assert_close(penalty(kind, step, h, gen(7), mask=empty), torch.stack(rows).sum() / B,
                                       msg=kind)


def jv_sq(step, h, v):
    """||J v||² for one sample from its explicit Jacobian."""
    Js = per_sample_jacobians(step, h)
    return torch.einsum("bij,bj->bi", Js, v.reshape(1, -1)).pow(2).sum()


def test_an_empty_state_or_a_mask_of_another_shape_is_refused(model):
    """Every penalty on an empty batch returned NaN (hutchinson an IndexError), and a (T,) mask with B == T was
    read as one flag per sample: one ValueError from the shared check."""
    from looplm.regularizers import fused_loop, jsrr_fast

    f = phi(model, Context(None))
    h = torch.randn(T, T, D, dtype=torch.float64)
    fns = [lambda x, m=None: jsrr(f, x, mask=m), lambda x, m=None: jsrr_release(f, x, mask=m),
           lambda x, m=None: power_penalty(f, x, iters=2, mask=m)[0], lambda x, m=None: hutchinson(f, x, mask=m),
           lambda x, m=None: fixed_point_residual(f, x, mask=m), lambda x, m=None: jsrr_fast(model, x, mask=m),
           lambda x, m=None: fused_loop(model, x, None, mask=m)[1]]
    with twice_differentiable():
        for fn in fns:
            for empty in (h[:0], h[:, :0]):
                with pytest.raises(ValueError, match="a penalty needs a non-empty"):
                    fn(empty)
            with pytest.raises(ValueError, match=r"mask must have the state's \(B, T\) = \(5, 5\), got shape \(5,\)"):
                fn(h, torch.ones(T, dtype=torch.bool))
            assert torch.isfinite(fn(h, torch.ones(T, T, dtype=torch.bool)))
