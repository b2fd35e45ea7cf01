"""Round 39 (API): the penalties and spectral estimates refuse a mask that is not 0/1; numpy's bool and datetime64
are ctx leaves that hold no tensor, and a refused leaf is named with its module; generate with no prompts returns an
empty result cached or with an exit rule too; a tuple subclass whose __new__ takes its fields is rebuilt in ctx;
CharTokenizer refuses a character given twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from looplm.generate import Generated, generate
from looplm.looped import _check_ctx_leaves, detach_ctx, slice_ctx
from looplm.model import LoopedTransformer
from looplm.regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
from looplm.spectra import spectral_norm, spectral_radius
from looplm.tasks.tokenizers import CharTokenizer

from .conftest import tiny_config

PENALTIES = {"jsrr": jsrr, "jsrr_release": jsrr_release, "hutchinson": hutchinson,
             "power_penalty": lambda f, h, g, mask: power_penalty(f, h, g, iters=2, mask=mask)[0],
             "fixed_point_residual": fixed_point_residual}


def _phi():
    torch.manual_seed(0)
    w = torch.randn(4, 4, dtype=torch.float64) * 0.5
    h = torch.randn(2, 3, 4, dtype=torch.float64)
    return (lambda x: torch.tanh(x @ w)), h


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("fill, shown", [(2.0, "2.0"), (float("nan"), "nan"), (float("-inf"), "-inf"), (0.5, "0.5")])
def test_a_penalty_refuses_a_mask_that_is_not_0_or_1(name, fill, shown):
    f, h = _phi()
    m = torch.ones(2, 3)
    m[0, 2] = fill  # (a mask of 2s scaled the penalty by about 4, NaN made it NaN)
    with pytest.raises(ValueError, match=f"mask must hold only 0 .* and 1 .*; it holds {shown}"):
        PENALTIES[name](f, h, _gen(), mask=m)


@pytest.mark.parametrize("fn", [spectral_radius, spectral_norm])
def test_a_spectral_estimate_refuses_a_mask_that_is_not_0_or_1(fn):
    f, h = _phi()
    with pytest.raises(ValueError, match=r"it holds -inf .*additive attention mask"):  # (rho was 0, "converged")
        fn(f, h, iters=5, tol=1e-6, generator=_gen(), mask=torch.tensor([[0.0, 0.0, float("-inf")]] * 2))


@pytest.mark.parametrize("name", PENALTIES)
def test_a_0_1_mask_of_any_dtype_gives_the_bool_masks_penalty_float64(name):
    f, h = _phi()
    real = torch.tensor([[True, True, False], [True, True, True]])
    want = PENALTIES[name](f, h, _gen(), mask=real)
    for m in (real.double(), real.float(), real.long()):
        assert PENALTIES[name](f, h, _gen(), mask=m) == want
    assert float(PENALTIES[name](f, h, _gen(), mask=torch.zeros(2, 3)).detach()) == 0.0  # all padding: valid, 0


def test_spectral_radius_of_a_0_1_float_mask_is_the_bool_masks():
    f, h = _phi()
    real = torch.tensor([[True, True, False], [True, True, True]])
    a = spectral_radius(f, h, iters=40, tol=1e-9, generator=_gen(), mask=real)
    b = spectral_radius(f, h, iters=40, tol=1e-9, generator=_gen(), mask=real.double())
    assert torch.equal(a.value, b.value)


@pytest.mark.parametrize("leaf", [np.bool_(True), np.datetime64("2026-01-01"), np.str_("s")], ids=repr)
def test_numpy_scalars_that_are_no_numbers_are_ctx_leaves(leaf):
    _check_ctx_leaves("Mod", {"x": torch.randn(4, 2), "k": leaf})  # (was: "holding a bool")
    assert slice_ctx({"x": torch.randn(4, 2), "k": leaf}, 2, 4)["k"] is leaf


def test_a_refused_leaf_is_named_with_its_module():
    with pytest.raises(ValueError, match=r"^Mod.embed returned a ctx holding a numpy\.ndarray at ctx\['k'\]"):
        _check_ctx_leaves("Mod", {"x": torch.randn(4, 2), "k": np.zeros(3)})


class Pair(tuple):
    """A tuple subclass whose constructor takes its fields (type(x)(generator) was Python's TypeError)."""

    def __new__(cls, a, b):
        return super().__new__(cls, (a, b))


class Listed(tuple):
    """A tuple subclass built from one iterable, as tuple is."""


def test_a_tuple_subclass_ctx_is_rebuilt_with_its_type():
    x = torch.randn(4, 3, requires_grad=True)
    mem = torch.randn(5, 3)
    for ctx in (Pair(x, mem), Listed([x, mem])):
        _check_ctx_leaves("Mod", {"p": ctx})
        cut, det = slice_ctx(ctx, 2, 4), detach_ctx(ctx)
        assert type(cut) is type(ctx) and type(det) is type(ctx)
        assert torch.equal(cut[0], x[:2]) and torch.equal(cut[1], mem)
        assert torch.equal(det[0], x) and not det[0].requires_grad


def test_a_tuple_subclass_looplm_cannot_rebuild_is_refused():
    class Swapped(tuple):
        def __new__(cls, a, b):
            return super().__new__(cls, (b, a))

    with pytest.raises(ValueError, match=r"ctx\['p'\] is a .*Swapped, a tuple subclass that looplm cannot rebuild "
                                         r".*plain tuple or list, a NamedTuple or a dataclass"):
        _check_ctx_leaves("Mod", {"p": Swapped(torch.randn(4, 3), torch.randn(4, 3))})


@pytest.mark.parametrize("kw", [dict(use_cache=True), dict(exit_stable=2), dict(exit_tol=0.1), dict()], ids=str)
def test_generate_with_no_prompts_returns_an_empty_result(kw):
    torch.manual_seed(0)
    m = LoopedTransformer(tiny_config().model)
    out = generate(m, [], num_loops=2, max_new_tokens=3, eos_id=1, **kw)  # (was: "max() arg is an empty sequence")
    assert type(out) is Generated and out == [] and out.finished == []


@pytest.mark.parametrize("chars, shown", [("aab", "'a'"), ("0123456789+=0", "'0'"),
                                          ("x\u00e9\u00e9yxx", r"'x', 'é' \(U\+00E9\)")])
def test_char_tokenizer_refuses_a_character_given_twice(chars, shown):
    with pytest.raises(ValueError, match=f"characters must be distinct; .* gives \\[{shown}\\] more than once"):
        CharTokenizer(chars)  # (was: a dead id, decoded but never encoded)


def test_char_tokenizer_of_distinct_characters_is_as_before():
    tok = CharTokenizer("ab=")
    assert tok.vocab_size == 5 and tok.encode("ba=") == [3, 2, 4] and tok.decode([3, 2, 4]) == "ba="
