"""Round 36, native side: a module whose step updates a buffer in place (BatchNorm's running statistics) is
refused up front by the protocol check, and by the penalty itself in one line; export-hf and train refuse an --out
inside a run's corpus; truncated backprop without input injection says what gets no gradient; a chain/parity
--data file with other fields is told the fixed fields those tasks read."""

import pytest
import torch
import torch.nn as nn

from looplm.config import load_config
from looplm.looped import check_protocol
from looplm.loops import backprop_notes
from looplm.tasks import make_task
from looplm.train import fit

from .conftest import tiny_config


class MineBN(nn.Module):
    """A step with a BatchNorm1d: in train mode it updates running_mean/var in place."""

    def __init__(self, vocab: int = 16, d: int = 16):
        super().__init__()
        self.emb, self.lin, self.out = nn.Embedding(vocab, d), nn.Linear(d, d), nn.Linear(d, vocab)
        self.bn = nn.BatchNorm1d(d)

    def embed(self, input_ids, attention_mask=None):
        e = self.emb(input_ids)
        return e, {"x": e}

    def step(self, h, ctx, loop=0):
        z = self.lin(h) + ctx["x"]
        return torch.tanh(self.bn(z.transpose(1, 2)).transpose(1, 2))

    def readout(self, h, ctx):
        return self.out(h)

    def loop_units(self):
        return [self.lin]


def test_protocol_check_takes_the_penalty_and_refuses_a_step_that_updates_a_buffer():
    """check_protocol with the run's reg refuses, in one line naming the step and the fix, and leaves the module's
    buffers, modes and torch's random state as they were; without a penalty the module is fine."""
    cfg = tiny_config(reg=dict(kind="jsrr", start_step=0))
    b = make_task(cfg).held_out(2)
    torch.manual_seed(0)
    m = MineBN().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"MineBN\.step updates a tensor in place \(add_.*track_running_stats=False"
                       ) as e:
        check_protocol(m, b.input_ids, b.mask, 16, reg=cfg.reg)
    assert "\n" not in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and all(x.training for x in m.modules())
    check_protocol(m, b.input_ids, b.mask, 16, reg=tiny_config(reg=dict(kind="none")).reg)


def test_the_penalty_names_the_step_where_it_runs(tmp_path):
    """The backstop: fit's first penalised step said torch.func's raw "attempted to call in-place operation ...
    mutate a captured Tensor"; it is the same one-line ValueError."""
    cfg = tiny_config(train=dict(steps=3, eval_every=0), reg=dict(kind="jsrr", start_step=1, rho_every=0))
    with pytest.raises(ValueError, match=r"MineBN\.step updates a tensor in place.*LayerNorm"):
        fit(cfg, tmp_path / "run", model=MineBN(), progress=False)


def test_truncated_backprop_without_injection_says_the_positions_get_no_gradient():
    """backprop_loops=1 below every sampled count (3) with model.injection=none: the position table and the prelude
    never train, and nothing said so; with injection=add, or a count the full graph covers, no such note."""
    cfg = tiny_config(loops=dict(sampler="fixed", num_loops=3, backprop_loops=1), model=dict(injection="none"))
    (note,) = backprop_notes(cfg.loops, 6, cfg.model)
    assert "backprop_loops=1 is below every loop count this run trains (3)" in note
    assert "position table gets no gradient" in note and "model.injection=add" in note
    pre = tiny_config(loops=dict(sampler="fixed", num_loops=3, backprop_loops=1),
                      model=dict(injection="none", n_prelude=1))
    assert "the position table and the prelude get no gradient" in backprop_notes(pre.loops, 6, pre.model)[0]
    add = tiny_config(loops=dict(sampler="fixed", num_loops=3, backprop_loops=1), model=dict(injection="add"))
    assert backprop_notes(add.loops, 6, add.model) == []
    some = tiny_config(loops=dict(min_loops=1, max_loops=6, backprop_loops=2), model=dict(injection="none"))
    assert backprop_notes(some.loops, 6, some.model) == []  # a draw of 1 or 2 loops reaches h(0)


@pytest.mark.parametrize("task", ["chain", "parity"])
def test_a_fixed_field_task_names_its_fields_not_the_jsonl_keys(tmp_path, task):
    """A chain/parity --data file with other fields was told to set data.prompt_field / answer_field, keys those
    tasks refuse; it is told the task reads fixed {"prompt", "answer"} rows."""
    cfg = load_config(f"{task}-stars")
    f = tmp_path / "d.jsonl"
    f.write_text('{"question": "1+1=", "solution": "2"}\n')
    with pytest.raises(ValueError, match=rf"field 'prompt' is missing \(the {task} task reads fixed "
                                         r'\{"prompt", "answer"\} rows\)') as e:
        make_task(cfg).load_eval(str(f), None)
    assert "prompt_field" not in str(e.value)


def test_fit_refuses_a_buffer_updating_step_before_it_trains(tmp_path):
    """fit passes the run's reg to the protocol check: with reg.start_step past the first steps, the run trained and
    wrote checkpoints until the penalty's first step, then died; now nothing is written."""
    cfg = tiny_config(train=dict(steps=30, eval_every=0, checkpoint_every=5), reg=dict(kind="jsrr", start_step=20,
                                                                                        rho_every=0))
    with pytest.raises(ValueError, match=r"MineBN\.step updates a tensor in place"):
        fit(cfg, tmp_path / "run", model=MineBN(), progress=False)
    assert not (tmp_path / "run").exists()


def test_fit_notes_what_truncated_backprop_without_injection_never_trains(tmp_path, capsys):
    cfg = tiny_config(train=dict(steps=1, eval_every=0), loops=dict(sampler="fixed", num_loops=3, backprop_loops=1),
                      model=dict(injection="none"))
    fit(cfg, tmp_path / "run", progress=False)
    assert "position table gets no gradient" in capsys.readouterr().out


def test_train_refuses_an_out_inside_its_init_from_runs_corpus(tmp_path):
    """A fine-tune written into the corpus folder of the run it starts from: that run's sweep, analyze and --resume
    then read the fine-tune's files as data."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    text = dict(task="text", path=str(corpus), window=15, test_size=8)
    src = fit(tiny_config(data=text, model=dict(vocab_size=0), train=dict(steps=1, eval_every=0)), tmp_path / "src",
              progress=False)
    (tmp_path / "small.txt").write_text("the lazy dog jumps over the quick brown fox. " * 40)
    ft = tiny_config(data={**text, "path": str(tmp_path / "small.txt")}, model=dict(vocab_size=0),
                     train=dict(steps=1, eval_every=0, init_from=str(src)))
    from looplm.errors import UserError

    with pytest.raises(UserError, match=r"train.init_from run's data"):
        fit(ft, corpus / "ft", progress=False)
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt"]
