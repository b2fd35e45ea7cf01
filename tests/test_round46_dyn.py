"""Round 46 (probe round 44, items 3, 4, 6, 8, 9): analyze's automatic spectral depths, left-padded batches,
diagnose under inference_mode, --exit-stable past the tokenizer's ids, generate's note on a malformed prompt."""

import importlib
import json

import pytest
import torch

from looplm import Batch
from looplm.cli import main
from looplm.dynamics import diagnose
from looplm.model import LoopedTransformer
from looplm.tasks.addition import AdditionTask
from looplm.tasks.sized import ChainTask, ParityTask
from looplm.train import train

from .conftest import tiny_config, tiny_model_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("r46") / "run"
    return train(tiny_config(train=dict(steps=2, eval_every=0)), out, progress=False)


@pytest.fixture(scope="module")
def model_batch():
    torch.manual_seed(0)
    task = AdditionTask(max_len=16)
    return LoopedTransformer(tiny_model_config()), task.encode_problems([1234, 5678, 12, 3], [4321, 8765, 34, 4])


# --- item 3: "about 12 log-spaced depths among --depths" were 2 or 3 of them ---------------------------------------
@pytest.mark.parametrize("depths, want", [
    ("1,2,4,8,16,32,64", [1, 2, 4, 8, 16, 32, 64]),  # was [1, 2, 64]
    ("1,10,100,1000", [1, 10, 100, 1000]),  # was [1, 1000]
    ("1:1000:10", [1, 11, 21, 41, 81, 151, 281, 531, 1000]),  # was [1, 81, 1000]
    ("1:100", [1, 2, 4, 5, 8, 12, 19, 28, 43, 66, 100]),  # (a dense list: as before)
])
def test_auto_spectral_depths_are_about_12_of_the_given_depths(depths, want):
    from looplm.cli import parse_depths
    from looplm.dynamics import spectral_subset

    assert spectral_subset(parse_depths(depths)) == want


def test_analyze_and_diagnose_probe_the_sparse_depths_asked_for(run, model_batch, tmp_path):
    out = tmp_path / "an"
    assert main(["analyze", str(run), "--depths", "1,2,4,8,16,32", "--n", "2", "--spectral-n", "1", "--iters", "2",
                 "--pca-n", "0", "--hutchinson", "0", "--no-plot", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "dynamics.json").read_text())["spectral"]["depths"] == [1, 2, 4, 8, 16, 32]
    m, b = model_batch
    d = diagnose(m, b, [1, 2, 4, 8, 16, 32], spectral_n=1, iters=2, hutchinson_samples=0, pca_n=0, vocab=14)
    assert d["spectral"]["depths"] == [1, 2, 4, 8, 16, 32]


# --- item 4: a left-padded Batch was scored wrong, with no error -------------------------------------------------
def test_a_left_padded_batch_is_refused(model_batch):
    _, b = model_batch
    T = b.input_ids.shape[1]
    ids, tg, mk = torch.zeros_like(b.input_ids), torch.full_like(b.targets, -100), torch.zeros_like(b.mask)
    for i in range(len(b)):
        n = int(b.mask[i].sum())
        ids[i, T - n:], tg[i, T - n:], mk[i, T - n:] = b.input_ids[i, :n], b.targets[i, :n], True
    with pytest.raises(ValueError, match=r"^a Batch is right-padded: .* row 0 has a real token after padding"):
        Batch(ids, tg, mk)
    with pytest.raises(ValueError, match="row 1 has"):  # an integer mask, a gap inside one row
        Batch(b.input_ids[:2], b.targets[:2], torch.tensor([[1] * T, [1, 0] + [1] * (T - 2)]))
    # right padding, a row of padding only, an integer mask and a full batch are all fine
    Batch(b.input_ids, b.targets, b.mask)
    Batch(b.input_ids[:2], torch.full_like(b.targets[:2], -100), torch.zeros_like(b.mask[:2]))
    Batch(b.input_ids, b.targets, b.mask.long())
    Batch(b.input_ids, b.targets, torch.ones_like(b.mask))


# --- item 6: diagnose under inference_mode failed with torch's autograd error ---------------------------------------
def test_diagnose_under_no_grad_works_and_under_inference_mode_says_why(model_batch):
    m, b = model_batch
    kw = dict(spectral_n=1, iters=2, hutchinson_samples=1, pca_n=0, vocab=14)
    with torch.no_grad():
        assert diagnose(m, b, [1, 2], **kw)["spectral"]["depths"] == [1, 2]
    with torch.inference_mode(), pytest.raises(ValueError, match=r"^diagnose needs autograd for σ_max: call it outside "
                                                                r"torch.inference_mode\(\), or pass spectral_n=0$"):
        diagnose(m, b, [1, 2], **kw)
    with torch.inference_mode():
        assert diagnose(m, b, [1, 2], **(kw | dict(spectral_n=0)))["accuracy"] is not None


# --- item 8: --exit-stable judged the argmax over ids the tokenizer cannot decode -------------------------------------
def test_exit_stable_judges_the_tokenizers_ids_only():
    from looplm.generate import TokenExit

    class Head:  # id 3 always on top among the tokenizer's 14; ids 14 and 15 above it, taking turns
        calls = 0

        def readout(self, h, ctx):
            self.calls += 1
            out = torch.zeros(h.shape[0], h.shape[1], 16)
            out[..., 3], out[..., 14 + self.calls % 2] = 50.0, 100.0
            return out

    _, ctx = LoopedTransformer(tiny_model_config()).embed(torch.tensor([[1, 2, 3]]))
    rule = TokenExit(Head(), ctx, None, 2, 1, torch.device("cpu"), 14)
    h = torch.zeros(1, 3, 32)
    for t in range(1, 9):
        rule.update(t, h, h)
    assert rule.done.tolist() == [True] and rule.depth.tolist() == [3]  # (was never done: the cap, 8 loops)
    assert TokenExit(Head(), ctx, None, 2, 1, torch.device("cpu")).vocab is None  # (a head as wide as the tokenizer)


def test_generate_cached_hands_the_exit_rule_its_vocab(monkeypatch):
    G = importlib.import_module("looplm.generate")  # (looplm.generate, the attribute, is the function)
    seen = []

    class Spy(G.TokenExit):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.append(self.vocab)

    monkeypatch.setattr(G, "TokenExit", Spy)
    G.generate_cached(LoopedTransformer(tiny_model_config()), [[1, 2]], 3, 2, 0, None, 1, 14)
    assert seen and set(seen) == {14}


# --- item 9: generate answered any prompt on an addition run with no note -------------------------------------------
def test_tasks_note_prompts_that_are_not_their_problems():
    add = AdditionTask()
    assert add.prompt_note("1234+5678=") is None
    for p in ("1+2+3=", "=", "+", "12345678+1=", "999+1=", "12+34=", "0123+4567=", "1234+5678"):
        assert add.prompt_note(p) == (f"note: {p!r} is not a 4-digit addition problem: the model was trained on a+b= "
                                      "with 4-digit operands only")
    parity = ParityTask(6, 8, 16, 0)
    assert parity.prompt_note("010110=") is None and "not a parity problem" in parity.prompt_note("0120=")
    assert ChainTask(1, 2, 16, 0).prompt_note("a=1;b=a;?b=") is None


def test_generate_notes_a_malformed_prompt(run, capsys):
    capsys.readouterr()
    assert main(["generate", str(run), "1+2+3=", "1234+5678="]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("note: '1+2+3=' is not a 4-digit addition problem: the model was trained on a+b= with 4-digit "
                      "operands only")
    assert out[1].startswith("1+2+3= ") and out[2].startswith("1234+5678= ") and len(out) == 3
    assert main(["generate", str(run), "12a4+1="]) == 2  # refused (outside the vocabulary): its error line only
    assert capsys.readouterr().out == ""
