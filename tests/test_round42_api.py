"""Round 42 (API): the spectral estimates make the penalties' state check; power_penalty's v0 of another float dtype
is cast to h's and a non-float one refused; a ModuleDict from loop_units() is named; CharTokenizer refuses entries
that are no single character and an empty vocabulary, and decode names an id that is no int; the demo's dynamics
read only the tokenizer's ids."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from looplm.looped import check_protocol
from looplm.regularizers import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty
from looplm.spectra import frobenius_hutchinson, spectral_norm, spectral_radius
from looplm.tasks.tokenizers import BpeTokenizer, ByteTokenizer, CharTokenizer

from .test_protocol import CumulativeMixer
from .test_round38_resume import TINY

W = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.5


def _phi(h: torch.Tensor) -> torch.Tensor:
    return torch.tanh(h @ W.to(h.dtype))


SPECTRA = {"spectral_radius": lambda h: spectral_radius(_phi, h, iters=10),
           "spectral_norm": lambda h: spectral_norm(_phi, h, iters=10),
           "frobenius_hutchinson": lambda h: frobenius_hutchinson(_phi, h, 2)}


@pytest.mark.parametrize("name", SPECTRA)
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (4,)])
def test_a_spectral_estimate_refuses_an_empty_state_as_the_penalties_do(name, shape):
    """An empty batch was torch's reshape error (frobenius_hutchinson an IndexError), a (2, 0, 4) state NaN for
    every sample without a word: the spectra skipped the penalties' state check."""
    with pytest.raises(ValueError, match=r"^a spectral estimate needs a non-empty \(B, T, D\) state, got shape "
                                         + re.escape(str(shape)) + "$"):
        SPECTRA[name](torch.randn(shape))
    SPECTRA[name](torch.randn(2, 3, 4))  # a state runs


def test_power_penalty_casts_a_float_v0_to_hs_dtype_and_refuses_a_non_float_one():
    """A float64 v0 for a float32 h was torch's "expected m1 and m2 to have the same dtype" from inside the user's
    step, an int or bool v0 its "Expected tangent to be floating point"."""
    h = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    v = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(2))
    want, probe = power_penalty(_phi, h, v0=v)
    got, probe64 = power_penalty(_phi, h, v0=v.double())  # a direction: the same probe, in h's dtype
    assert probe64.dtype == h.dtype and torch.allclose(got, want) and torch.allclose(probe64, probe)
    for bad in (torch.ones(2, 3, 4, dtype=torch.long), torch.ones(2, 3, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match=rf"^v0 must be a floating-point probe like h \(torch.float32\), got a "
                                             rf"{bad.dtype} tensor$"):
            power_penalty(_phi, h, v0=bad)


@pytest.mark.parametrize("kind", ["ModuleDict", "dict"])
def test_loop_units_as_a_module_dict_is_named_with_the_way_out(kind):
    """A ModuleDict iterates over its keys: it was refused as "got a str among them"."""
    class Units(CumulativeMixer):
        def loop_units(self):
            d = {"a": self.mix}
            return torch.nn.ModuleDict(d) if kind == "ModuleDict" else d

    ids = torch.randint(2, 14, (2, 5))
    with pytest.raises(TypeError, match=rf"Units.loop_units\(\) must return a list of nn.Module .*got a {kind}, "
                                        r"which iterates over its keys; return list\(d.values\(\)\)$"):
        check_protocol(Units(), ids, torch.ones_like(ids, dtype=torch.bool), 14)


@pytest.mark.parametrize("chars, error, found", [
    (["ab", "c"], ValueError, "CharTokenizer takes one character per id, got the entry 'ab'"),
    ("", ValueError, "CharTokenizer needs at least one character; its vocabulary is empty"),
    ([], ValueError, "CharTokenizer needs at least one character; its vocabulary is empty"),
    (5, TypeError, "CharTokenizer takes a str of characters, got int 5")])
def test_char_tokenizer_refuses_what_is_no_alphabet(chars, error, found):
    """['ab', 'c'] decoded id 2 to 'ab', which encode then refused; '' gave a vocabulary of no character."""
    with pytest.raises(error, match=f"^{found}$"):
        CharTokenizer(chars)
    tok = CharTokenizer(["a", "b"])  # single characters, as a list: the same tokenizer as "ab"
    assert tok.chars == "ab" and tok.to_json() == CharTokenizer("ab").to_json()


@pytest.mark.parametrize("tok", [CharTokenizer("abc"), ByteTokenizer()], ids=["char", "byte"])
def test_decode_names_an_id_that_is_no_int(tok):
    """decode("ab") was "'<=' not supported between instances of 'int' and 'str'", decode([3.0]) "string indices
    must be integers"; ints, numpy ints and int tensors decode as before."""
    with pytest.raises(TypeError, match=r"^decode takes token ids \(a list of ints or a 1-D int tensor\), got str "
                                        r"'ab'; encode turns text into ids$"):
        tok.decode("ab")
    with pytest.raises(TypeError, match=r"^id 3.0 \(float\) is no token id: decode takes ints$"):
        tok.decode([3.0])
    with pytest.raises(TypeError, match=r"^id tensor\(3.\) \(Tensor\) is no token id"):
        tok.decode(torch.tensor([3.0]))
    want = tok.decode([3, 4])
    assert tok.decode([np.int64(3), 4]) == tok.decode(torch.tensor([3, 4])) == tok.decode(np.array([3, 4])) == want


def test_bpe_decode_names_an_id_that_is_no_int():
    pytest.importorskip("tokenizers")
    tok = BpeTokenizer.train(["the quick brown fox"] * 4, 270)
    with pytest.raises(TypeError, match=r"^id 3.0 \(float\) is no token id"):
        tok.decode([3.0])
    ids = tok.encode("the fox")
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids) == "the fox"


def test_the_demo_reads_the_dynamics_on_the_tokenizers_ids(tmp_path, monkeypatch):
    """The demo's diagnose step passed no vocab: the dynamics' CE, entropy and exact match read all 16 head logits,
    where the sweep and `looplm analyze` read the tokenizer's 14 ids."""
    import looplm.cli
    import looplm.dynamics
    from looplm.demo import cmd_demo

    class Reached(Exception):
        pass

    seen = {}

    def diagnose(model, batch, depths, **kw):
        seen.update(kw, head=model.cfg.vocab_size)
        raise Reached

    monkeypatch.setattr(looplm.cli, "run_sweep", lambda *a, **kw: {})  # (the sweep itself passes vocab)
    monkeypatch.setattr(looplm.dynamics, "diagnose", diagnose)
    sets = [f"{k}={v}" for k, v in {**TINY, "train.steps": 1, "train.stop_at_acc": 0}.items()]
    with pytest.raises(Reached):
        cmd_demo(str(tmp_path / "demo"), sets, progress=False, n=4)
    assert seen.get("vocab") == 14 and seen["head"] == 16


PENALTIES_AND_SPECTRA = {
    "jsrr": lambda f, h: jsrr(f, h), "jsrr_release": lambda f, h: jsrr_release(f, h),
    "power_penalty": lambda f, h: power_penalty(f, h)[0], "hutchinson": lambda f, h: hutchinson(f, h),
    "fixed_point_residual": lambda f, h: fixed_point_residual(f, h), "spectral_radius": spectral_radius,
    "spectral_norm": spectral_norm, "frobenius_hutchinson": frobenius_hutchinson}


@pytest.mark.parametrize("name", PENALTIES_AND_SPECTRA)
def test_a_step_that_changes_the_states_shape_is_refused(name):
    """A Φ returning h[..., :2] gave a value (of a Jacobian that is no square) without a word; a tuple was an
    AttributeError from inside the penalty."""
    h = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    for step, found in ((lambda x: x[..., :2], "shape (2, 3, 2)"), (lambda x: (x, x), "a tuple")):
        with pytest.raises(ValueError, match=re.escape(f"the step function must return a state of h's shape "
                                                       f"(2, 3, 4), got {found}")):
            PENALTIES_AND_SPECTRA[name](step, h)


@pytest.mark.parametrize("name", PENALTIES_AND_SPECTRA)
def test_an_integer_or_non_tensor_state_is_refused(name):
    """An int64 state was torch's "linalg.vector_norm: Expected a floating point" (or a list an AttributeError)."""
    with pytest.raises(ValueError, match=r"needs a floating-point \(B, T, D\) state, got a torch.int64 tensor"):
        PENALTIES_AND_SPECTRA[name](lambda x: x * 2, torch.arange(24).view(2, 3, 4))
    with pytest.raises(ValueError, match=r"needs a non-empty \(B, T, D\) state, got a list"):
        PENALTIES_AND_SPECTRA[name](lambda x: x, [[1.0]])
