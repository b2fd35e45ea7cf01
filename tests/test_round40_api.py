"""Round 40 (API): the spectral estimates refuse a mask that is not the state's (B, T); power_penalty's returned
probe is the next power iterate (a warm start with iters=1 advances) and a bad v0 is refused by name; run_loop
checks exit.done; check_protocol refuses loop_units() that are not modules."""

from __future__ import annotations

import pytest
import torch

from looplm.looped import check_protocol, run_loop
from looplm.regularizers import power_penalty
from looplm.spectra import frobenius_hutchinson, spectral_norm, spectral_radius

from .test_protocol import CumulativeMixer


def _phi(B: int = 4, T: int = 4, D: int = 3):
    torch.manual_seed(0)
    w = torch.randn(D, D, dtype=torch.float64) * 0.3
    return (lambda x: torch.tanh(x @ w)), torch.randn(B, T, D, dtype=torch.float64)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


ESTIMATES = {"spectral_radius": lambda f, h, m: spectral_radius(f, h, iters=20, generator=_gen(), mask=m),
             "spectral_norm": lambda f, h, m: spectral_norm(f, h, iters=20, generator=_gen(), mask=m),
             "frobenius_hutchinson": lambda f, h, m: frobenius_hutchinson(f, h, 2, _gen(), mask=m)}


@pytest.mark.parametrize("name", ESTIMATES)
@pytest.mark.parametrize("B", [4, 2])
def test_a_spectral_estimate_refuses_a_1d_mask(name, B):
    """A (T,) mask with B == T was read as one flag per sample (rho 0 "converged" for the "padded" samples);
    with B != T it was torch's expand error. It is the penalties' check now: the state's (B, T)."""
    f, h = _phi(B=B)
    with pytest.raises(ValueError, match=rf"mask must have the state.s \(B, T\) = \({B}, 4\), got shape \(4,\)"):
        ESTIMATES[name](f, h, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    ESTIMATES[name](f, h, torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(B, 4))  # the (B, T) mask runs


def test_power_penalty_warm_start_advances_with_one_iteration():
    """The probe returned was v0 itself with iters=1, so passing it back never moved: the penalty stayed
    ||J v_init||^2. It is the next iterate J v / ||J v|| now; 50 calls reach rho^2 = 0.81."""
    a = torch.diag(torch.tensor([0.9, 0.1, 0.05], dtype=torch.float64))
    f = lambda x: x @ a  # noqa: E731
    h = torch.randn(1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p, v = power_penalty(f, h, generator=torch.Generator().manual_seed(1))
    assert not v.requires_grad and torch.allclose(v.flatten(1).norm(dim=1), torch.ones(1, dtype=torch.float64))
    for _ in range(50):
        p, v = power_penalty(f, h, v0=v)
    assert abs(p.item() - 0.81) < 1e-3


def test_power_penalty_value_of_one_call_is_unchanged():
    """Returning the next iterate changes only the probe: the penalty is still ||J v||^2 of the probe used."""
    f, h = _phi()
    v0 = torch.randn(h.shape, dtype=torch.float64, generator=_gen())
    v0 = v0 / v0.flatten(1).norm(dim=1).view(-1, 1, 1)
    for iters in (1, 3):
        u = v0
        for _ in range(iters - 1):
            ju = torch.func.jvp(f, (h,), (u,))[1]
            u = ju / ju.flatten(1).norm(dim=1).view(-1, 1, 1)
        jv = torch.func.jvp(f, (h,), (u,))[1]
        p, v = power_penalty(f, h, iters=iters, v0=v0)
        torch.testing.assert_close(p, jv.flatten(1).pow(2).sum(1).mean())
        torch.testing.assert_close(v, jv / jv.flatten(1).norm(dim=1).view(-1, 1, 1))


@pytest.mark.parametrize("v0, said", [
    (torch.randn(4, 4), r"v0 must have h's shape \(4, 4, 3\).*got \(4, 4\)"),
    (torch.zeros(4, 4, 3), r"v0 is zero on the real tokens of sample\(s\) \[0, 1, 2, 3\]"),
    (torch.cat([torch.zeros(1, 4, 3), torch.ones(3, 4, 3)]), r"v0 is zero .* sample\(s\) \[0\]"),
    (torch.full((4, 4, 3), float("nan")), "v0 holds NaN or inf"),
])
def test_power_penalty_refuses_a_bad_v0_by_name(v0, said):
    """A wrong shape was torch's forward-AD error, an all-zero probe a penalty of 0, NaN a NaN penalty."""
    f, h = _phi()
    with pytest.raises(ValueError, match=said):
        power_penalty(f, h, iters=2, v0=v0.double())


def test_power_penalty_v0_zero_only_on_padding_is_fine():
    """A sample with no real token has a zero probe (power_penalty's own), and passing it back runs."""
    f, h = _phi()
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    p, v = power_penalty(f, h, _gen(), mask=mask)
    assert v[1].abs().sum() == 0
    p2, _ = power_penalty(f, h, v0=v, mask=mask)
    assert torch.isfinite(p2) and p2 > 0


class _Exit:
    def __init__(self, done):
        self.done = done

    def update(self, t, h_prev, h):
        pass


@pytest.mark.parametrize("done, found", [
    ([False] * 3, "list"), (torch.zeros(5, dtype=torch.bool), r"\(5,\) torch.bool"),
    (torch.zeros(3, dtype=torch.long), r"\(3,\) torch.int64"), (torch.zeros(3, 1, dtype=torch.bool), r"\(3, 1\)"),
])
def test_run_loop_checks_exit_done(done, found):
    """exit.done that is no (B,) bool tensor was an AttributeError, a size mismatch, where's dtype error, or (a
    (B, 1) tensor) taken as is."""
    m = CumulativeMixer()
    h0, ctx = m.embed(torch.randint(2, 14, (3, 5)))
    with pytest.raises(TypeError, match=r"exit.done must be a \(3,\) bool tensor.*got " + found):
        run_loop(m, h0, ctx, 3, exit=_Exit(done))
    assert torch.equal(run_loop(m, h0, ctx, 3, exit=_Exit(torch.ones(3, dtype=torch.bool))), h0)


@pytest.mark.parametrize("units, found", [
    (lambda m: [m.mix.weight], r"got a tensor of shape \[24, 24\].* among them"),
    (lambda m: m.mix.weight, r"got a tensor of shape \[24, 24\]"),
    (lambda m: [m.mix, None], "got a NoneType among them"),
])
def test_check_protocol_refuses_loop_units_that_are_not_modules(units, found):
    """Tensors as loop units passed the protocol check (and trained under DDP), then FSDP's fully_shard failed on
    every rank inside torch."""
    class Units(CumulativeMixer):
        def loop_units(self):
            return units(self)

    ids = torch.randint(2, 14, (2, 5))
    with pytest.raises(TypeError, match=r"Units.loop_units\(\) must return a list of nn.Module.*" + found):
        check_protocol(Units(), ids, torch.ones_like(ids, dtype=torch.bool), 14)
    check_protocol(CumulativeMixer(), ids, torch.ones_like(ids, dtype=torch.bool), 14)
