"""Round 40 (API): the spectral estimates refuse a mask that is not the state's (B, T); power_penalty's returned
probe is the next power iterate (a warm start with iters=1 advances) and a bad v0 is refused by name; run_loop
checks exit.done; check_protocol refuses loop_units() that are not modules."""

from __future__ import annotations

import pytest
import torch

from looplm.spectra import frobenius_hutchinson, spectral_norm, spectral_radius


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
