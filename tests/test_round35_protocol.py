"""Round 35, the protocol's edges: reg.samples cuts only the per-sample tensors of a module's ctx (a shared memory
bank of the batch's length was cut too), a ctx looplm cannot walk is refused, a torch.compile'd module is refused
by fit, resume notes, and the tokenizer's and the loop sampler's argument checks."""

import collections

import pytest
import torch
import torch.nn as nn

from looplm.looped import check_protocol, detach_ctx, phi, run_loop, slice_ctx
from looplm.model import LoopedTransformer, twice_differentiable
from looplm.objective import regularized_loop
from looplm.regularizers import penalty
from looplm.tasks import make_task
from looplm.train import fit

from .conftest import tiny_config


class Mem(nn.Module):
    """A looped block that reads a learned memory bank of 8 slots, shared by every sample (not per-sample)."""

    def __init__(self, vocab: int = 16, d: int = 16, slots: int = 8):
        super().__init__()
        self.emb, self.lin, self.out = nn.Embedding(vocab, d), nn.Linear(d, d), nn.Linear(d, vocab)
        self.mem = nn.Parameter(torch.randn(slots, d))
        self.seen: collections.Counter = collections.Counter()

    def embed(self, input_ids, attention_mask=None):
        e = self.emb(input_ids)
        return e, {"x": e, "mem": self.mem}

    def step(self, h, ctx, loop=0):
        self.seen[tuple(ctx["mem"].shape)] += 1
        a = torch.softmax(h @ ctx["mem"].T, -1) @ ctx["mem"]
        return torch.tanh(self.lin(h) + a + ctx["x"])

    def readout(self, h, ctx):
        return self.out(h)

    def loop_units(self):
        return [self.lin]


def test_reg_samples_keeps_a_shared_ctx_tensor_of_the_batch_length_whole(tmp_path):
    """A memory bank of 8 slots at batch 8 was cut to reg.samples=2 slots for the penalty: its JSRR was taken on
    another map, a 2-slot softmax, with no word."""
    cfg = tiny_config(train=dict(steps=3, eval_every=0), reg=dict(kind="jsrr", samples=2, rho_every=0, start_step=0))
    torch.manual_seed(0)
    m = Mem()
    fit(cfg, tmp_path / "run", model=m, progress=False)
    assert set(m.seen) == {(8, 16)}, dict(m.seen)


def test_the_cut_penalty_is_the_penalty_of_the_first_k_rows_float64():
    """The penalty over reg.samples=k rows equals the one taken by hand on the first k rows of the per-sample ctx
    with the whole shared bank."""
    torch.manual_seed(0)
    m = Mem().double()
    cfg = tiny_config(reg=dict(kind="jsrr", samples=3))
    b = make_task(cfg).held_out(8)
    rows = check_protocol(m, b.input_ids[:2], b.mask[:2], 16)
    assert rows == {("['x']",): True, ("['mem']",): False}
    h0, ctx = m.embed(b.input_ids, b.mask)
    states = {}
    run_loop(m, h0, ctx, 3, keep=lambda t, s: states.__setitem__(t, s))
    _, pen = regularized_loop(m, h0, ctx, 3, 2, cfg.reg, torch.Generator().manual_seed(1), b.mask, ctx_rows=rows)
    by_hand = {"x": ctx["x"][:3].detach(), "mem": m.mem.detach()}
    with twice_differentiable():
        want = penalty("jsrr", phi(m, by_hand), states[2].detach()[:3], torch.Generator().manual_seed(1), 0,
                       b.mask[:3])
    torch.testing.assert_close(pen, want, rtol=1e-12, atol=0)


def test_the_builtin_context_is_cut_as_before():
    """The built-in Context names no rows: its per-sample tensor e is cut, bit for bit as before."""
    cfg = tiny_config(model=dict(injection="add", n_prelude=1))
    m = LoopedTransformer(cfg.model)
    b = make_task(cfg).held_out(8)
    _, ctx = m.embed(b.input_ids, b.mask)
    cut = slice_ctx(detach_ctx(ctx), 3, 8)
    assert torch.equal(cut.e, ctx.e[:3])
    rows = check_protocol(m, b.input_ids[:2], b.mask[:2], cfg.model.vocab_size)
    assert torch.equal(slice_ctx(detach_ctx(ctx), 3, 8, rows).e, cut.e)


class Opaque:
    def __init__(self, e):
        self.e = e


class Plain(Mem):
    """ctx as a plain object: neither detached (the penalty's gradient reached the embedding) nor cut."""

    def embed(self, input_ids, attention_mask=None):
        e = self.emb(input_ids)
        return e, Opaque(e)

    def step(self, h, ctx, loop=0):
        return torch.tanh(self.lin(h) + ctx.e)


def test_a_ctx_looplm_cannot_walk_is_refused():
    cfg = tiny_config()
    b = make_task(cfg).held_out(2)
    with pytest.raises(ValueError, match=r"Plain.embed returned a ctx holding a tests\.test_round35_protocol\.Opaque "
                                         r"at ctx; looplm detaches ctx .*make it a dataclass"):
        check_protocol(Plain(), b.input_ids, b.mask, 16)


def test_fit_refuses_a_compiled_module_before_anything_is_written(tmp_path):
    """fit(model=torch.compile(m)) trained uncompiled (looplm never calls forward), recorded torch's wrapper as the
    run's class and saved the weights as `_orig_mod.`: the run could be neither resumed nor used by a command."""
    cfg = tiny_config(train=dict(steps=2, eval_every=0), reg=dict(rho_every=0))
    m = LoopedTransformer(cfg.model)
    with pytest.raises(TypeError, match=r"model: got a torch.compile'd module \(OptimizedModule of "
                                        r"LoopedTransformer\); fit drives its embed, step and readout, never its "
                                        r"forward.*pass the module itself \(model=LoopedTransformer\(\.\.\.\)\)"):
        fit(cfg, tmp_path / "run", model=torch.compile(m), progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change", [{"logger": "tensorboard"}, {"threads": 1}, {"device": "cpu"}])
def test_a_resume_that_changes_only_how_a_run_is_run_does_not_say_it_will_differ(tmp_path, capsys, change):
    """train.logger, train.threads, or train.device=cpu for a run whose auto resolved to the CPU: resume said "the
    run will differ from an uninterrupted one", which none of them makes it."""
    if "logger" in change:
        pytest.importorskip("torch.utils.tensorboard")
    if "device" in change and torch.cuda.is_available():
        pytest.skip("auto resolves to cuda here")
    cfg = tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=2, device="auto"), reg=dict(rho_every=0))
    with pytest.raises(RuntimeError):
        fit(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 3})
    capsys.readouterr()
    fit(tiny_config(train={**dict(steps=4, eval_every=0, checkpoint_every=2, device="auto"), **change},
                    reg=dict(rho_every=0)), tmp_path / "r", resume=True, progress=False)
    out = capsys.readouterr()
    said = out.out + out.err
    assert "will differ from an uninterrupted one:" not in said
    if "device" not in change:  # (auto and cpu are the same device here: no change at all)
        key = next(iter(change))  # threads: the same training summed in another order (round 38)
        effect = "(changes float rounding only)" if key == "threads" else "(does not change the training)"
        assert f"train.{key}" in said and effect in said


def test_a_resume_that_changes_training_still_says_it_will_differ(tmp_path, capsys):
    cfg = tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=2), reg=dict(rho_every=0))
    with pytest.raises(RuntimeError):
        fit(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 3})
    capsys.readouterr()
    fit(tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=2, lr=2e-3, threads=1),
                    reg=dict(rho_every=0)), tmp_path / "r", resume=True, progress=False)
    out = capsys.readouterr()
    said = out.out + out.err
    assert "the run will differ from an uninterrupted one" in said and "train.lr" in said
    assert "train.threads: checkpoint 0 vs requested 1 (changes float rounding only)" in said


def test_char_tokenizer_decode_refuses_an_id_outside_its_vocabulary():
    """An id past the vocabulary was a bare IndexError; a negative one was dropped without a word."""
    from looplm.tasks.tokenizers import CharTokenizer

    tok = CharTokenizer()
    assert tok.decode([2, 3, 1, 5]) == "01"
    for bad in (14, -1):
        with pytest.raises(ValueError, match=rf"id {bad} is outside the vocabulary of 14 tokens \(ids 0..13\)"):
            tok.decode([2, bad])


@pytest.mark.parametrize("step", ["5", None, 2.0, True])
def test_sample_loops_refuses_a_step_that_is_no_integer(step):
    from looplm.loops import sample_loops

    cfg = tiny_config(loops=dict(sampler="uniform", curriculum_steps=3)).loops
    with pytest.raises(TypeError, match=r"step must be an integer \(the training step\), got "):
        sample_loops(cfg, torch.Generator().manual_seed(0), step)
    assert sample_loops(cfg, torch.Generator().manual_seed(0), 1) == cfg.num_loops  # (the curriculum's)
