"""The public task classes and API functions check their arguments, as the config and the CLI check the same values:
a wrong one is a ValueError or TypeError naming it, never a silent fallback or an error from deep in torch, numpy or
Python."""

import re

import pytest
import torch

from looplm.generate import generate
from looplm.looped import run_loop
from looplm.model import LoopedTransformer
from looplm.regularizers import hutchinson, jsrr
from looplm.tasks import AdditionTask, ChainTask, JsonlTask, ParityTask, TextTask
from looplm.tasks.addition import make_batch

from .conftest import tiny_model_config

TEXT = "the quick brown fox jumps over the lazy dog\n" * 30


@pytest.mark.parametrize("name", ["word", "chars", "Char", "bytes", ""])
def test_text_task_refuses_an_unknown_tokenizer(tmp_path, name):
    """Any name but char and byte trained a BPE tokenizer without a word."""
    (tmp_path / "a.txt").write_text(TEXT)
    with pytest.raises(ValueError, match=f"^unknown tokenizer {name!r}; choose char, byte, bpe$"):
        TextTask(str(tmp_path / "a.txt"), 16, 0.05, name, 300, 32)


def _tasks(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "add.jsonl").write_text("".join(f'{{"num1": {1000 + i}, "num2": 2000, "answer": {3000 + i}}}\n'
                                                for i in range(10)))
    (tmp_path / "j.jsonl").write_text("".join(f'{{"prompt": "{i}*2=", "answer": "{2 * i}"}}\n' for i in range(60)))
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "{b:06b}=", "answer": "{b.bit_count() % 2}"}}\n'
                                              for b in range(10)))
    return [(AdditionTask(test_size=16), "add.jsonl"), (JsonlTask(str(tmp_path / "j.jsonl")), "j.jsonl"),
            (ParityTask(6, 8, 10, 0, 16), "p.jsonl"), (TextTask(str(tmp_path / "a.txt"), 8, 0.2), "a.txt")]


def test_load_eval_and_train_batch_check_their_count(tmp_path):
    """load_eval(path, -1) dropped the last row (n=0: max() of nothing; text: a torch error), and train_batch(0)
    was max() of nothing (negative: torch's "negative dimension")."""
    for task, f in _tasks(tmp_path):
        path = str(tmp_path / f)
        full = len(task.load_eval(path, None))
        assert len(task.load_eval(path, 10**6)) == full
        for bad in (-1, -3, 0, 1.5, True, "2"):
            with pytest.raises(ValueError, match=f"^n must be an integer >= 1, got {bad!r}$"):
                task.load_eval(path, bad)
            with pytest.raises(ValueError, match=f"^n must be an integer >= 1, got {bad!r}$"):
                task.train_batch(bad, torch.Generator().manual_seed(0))


def test_sized_batch_checks_its_size_and_count():
    """sized_batch took n=2.5 as 3 problems and True as 1; n=0 was max() of nothing, None a '<' TypeError, and a
    size of 6.0 was Python's "cannot be interpreted as an integer"."""
    for task in (ParityTask(6, 8, 16, 0, 32), ChainTask(1, 3, 16, 0, 64)):
        assert len(task.sized_batch(6, 3)) == 3
        for bad in (2.5, True, 0, -3, None, "3"):
            with pytest.raises(ValueError, match=f"^n must be an integer >= 1, got {bad!r}$"):
                task.sized_batch(6, bad)
        for bad in (6.0, 0, True, None):
            with pytest.raises(ValueError, match=f"^size must be an integer >= 1, got {bad!r}$"):
                task.sized_batch(bad, 4)
    with pytest.raises(ValueError, match=r"^max_len must be an integer >= 1, got 32.5$"):
        ParityTask(6, 8, 16, 0, 32.5)


def test_task_constructors_check_their_arguments(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    for make, msg in [
        (lambda: AdditionTask(test_size=0), r"^test_size must be an integer >= 1, got 0$"),  # held_out: IndexError
        (lambda: AdditionTask(digits="4"), r"^digits must be an integer >= 1, got '4'$"),  # was a '<=' TypeError
        (lambda: AdditionTask(test_seed=-1), r"^test_seed must be an integer >= 0, got -1$"),
        (lambda: TextTask(str(tmp_path / "a.txt"), window=0), r"^window must be an integer >= 1, got 0$"),
        (lambda: TextTask(str(tmp_path / "a.txt"), test_fraction=1.0), r"^test_fraction must be a number in \(0, 1\)"),
        (lambda: ParityTask(8, 6, 10, 0), r"^min_size 8 is above max_size 6; need min_size <= max_size$"),
        (lambda: ParityTask(1, 6, 10, 0), r"^min_size must be an integer >= 6, got 1$"),
        (lambda: ChainTask(0, 3, 10, 0), r"^min_size must be an integer >= 1, got 0$"),
        (lambda: ChainTask(1, 3, 0, 0), r"^test_size must be an integer >= 1, got 0$"),
    ]:
        with pytest.raises(ValueError, match=msg):
            make()


def test_run_loop_refuses_an_exit_rule_that_is_no_rule():
    """A function as `exit` was an AttributeError ('function' object has no attribute 'done')."""
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    h0, ctx = m.embed(torch.tensor([[3, 4, 5]]))
    with pytest.raises(TypeError, match="^exit must be an object with `done` and `update"):
        run_loop(m, h0, ctx, 2, exit=lambda t, h, new: None)


def test_run_loop_checks_checkpoint_and_keep():
    """checkpoint='no' (truthy) turned activation checkpointing on, and keep=5 was "'int' object is not callable"
    from inside the loop."""
    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    h0, ctx = m.embed(torch.tensor([[3, 4, 5]]))
    for bad in ("no", 1, None):
        with pytest.raises(TypeError, match=f"^checkpoint must be True or False, got {bad!r}$"):
            run_loop(m, h0, ctx, 2, checkpoint=bad)
    with pytest.raises(TypeError, match="^keep must be a function keep\\(t, h\\) or None, got int$"):
        run_loop(m, h0, ctx, 2, keep=5)


def test_an_infinite_exit_tolerance_is_refused_as_the_cli_refuses_it():
    """sweep(exit_tol=inf) exited every row at loop 1 (the CLI's --exit-tol inf is refused)."""
    from looplm.evaluate import sweep

    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    batch = make_batch([[3, 4, 5, 6, 2]] * 2, [3] * 2, 16)
    for tol in (float("inf"), 1e400):
        with pytest.raises(ValueError, match="^exit_tol must be a finite number >= 0, got inf$"):
            sweep(m, batch, [1, 2], exit_tol=tol)
        with pytest.raises(ValueError, match="^exit_tol must be a finite number >= 0, got inf$"):
            generate(m, [[3, 4]], 2, 4, 1, exit_tol=tol)


def test_counts_in_messages_agree_with_their_nouns(tmp_path):
    """"got null null", "a list of 1 objects" and "there are only 1 windows"."""
    from looplm.cli import eval_problems

    (tmp_path / "n.jsonl").write_text('{"prompt": "1=", "answer": null}\n')
    with pytest.raises(ValueError, match=r":1: field 'answer' must be a string, got null$"):
        JsonlTask(str(tmp_path / "n.jsonl")).held_out(1)
    (tmp_path / "a.jsonl").write_text('[{"prompt": "1=", "answer": "2"}]\n')
    with pytest.raises(ValueError, match=r"a\.jsonl is one JSON document \(a list of 1 object\), but"):
        JsonlTask(str(tmp_path / "a.jsonl")).held_out(1)
    (tmp_path / "t.txt").write_text(TEXT)
    (tmp_path / "short.txt").write_text("the quick")
    task = TextTask(str(tmp_path / "t.txt"), 8, 0.2)
    with pytest.raises(ValueError, match=r"^--n 3: there is only 1 window in .*short\.txt; ask for at most 1$"):
        eval_problems(task, None, str(tmp_path / "short.txt"), 3)


def test_generate_with_an_exit_rule_on_a_module_of_ones_own_blames_the_rule():
    """It said "use generate(..., use_cache=False)", which the call already was."""
    from .test_protocol import CumulativeMixer

    for kw in ({"exit_tol": 0.1}, {"exit_stable": 2}):
        with pytest.raises(TypeError, match="^an exit rule .* only looplm's LoopedTransformer has, not "
                                            "CumulativeMixer; drop the exit rule$"):
            generate(CumulativeMixer(), [[3, 4, 5]], 2, 4, 1, **kw)


def test_a_penalty_outside_twice_differentiable_says_to_use_it():
    """It was torch's NotImplementedError on forward AD through a fused kernel, ending "Please file an issue to
    PyTorch"."""
    from looplm.looped import phi

    m = LoopedTransformer(tiny_model_config(max_seq_len=16))
    batch = make_batch([[3, 4, 5, 6, 2]] * 2, [3] * 2, 16)
    h0, ctx = m.embed(batch.input_ids)
    for pen in (jsrr, hutchinson):
        with pytest.raises(NotImplementedError, match=r"under `with looplm.twice_differentiable\(\):`"):
            pen(phi(m, ctx), h0)


def test_generate_past_a_modules_position_table_suggests_max_len():
    """A module of one's own with 16 positions was torch's IndexError ("index out of range in self")."""
    from .test_protocol import CumulativeMixer

    with pytest.raises(ValueError, match=r"^CumulativeMixer.embed failed on 17 positions .*pass generate\(\.\.\., "
                                         r"max_len=<its length>\)$"):
        generate(CumulativeMixer(), [[3, 4, 5]], 2, 40, 1)
    assert len(generate(CumulativeMixer(), [[3, 4, 5]], 2, 40, 1, max_len=16)[0]) <= 13


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_config_path_is_named(path, tmp_path, capsys):
    """Path("") is ".": it was refused as "config . is a directory"."""
    from looplm.cli import main
    from looplm.config import load_config

    with pytest.raises(ValueError, match=f"^config {path!r} is empty; give a YAML file or a preset name$"):
        load_config(path)
    assert main(["train", "--config", path, "--out", str(tmp_path / "r")]) == 2 and not (tmp_path / "r").exists()
    assert capsys.readouterr().err == f"error: config {path!r} is empty; give a YAML file or a preset name\n"


def test_an_exit_tolerance_given_as_a_torch_scalar_is_taken_as_counts_are():
    """exit_tol=torch.tensor(0.1) was refused as "must be a finite number >= 0, got tensor(0.1000)"; counts take
    torch scalars."""
    import numpy as np

    from looplm.evaluate import sweep

    m = LoopedTransformer(tiny_model_config(max_seq_len=16)).eval()
    batch = make_batch([[3, 4, 5, 6, 2]] * 2, [3] * 2, 16)
    want = sweep(m, batch, [1, 2], exit_tol=0.25)
    for tol in (torch.tensor(0.25), torch.tensor(0.25, dtype=torch.float64), np.array(0.25)):
        assert sweep(m, batch, [1, 2], exit_tol=tol).to_json() == want.to_json()  # the rule's tol: a plain 0.25
        assert generate(m, [[3, 4]], 2, 4, 1, exit_tol=tol) == generate(m, [[3, 4]], 2, 4, 1, exit_tol=0.25)
    for bad in (torch.tensor(True), torch.tensor([0.1]), torch.tensor(float("nan")), torch.tensor(-1.0)):
        with pytest.raises(ValueError, match=rf"^exit_tol must be a finite number >= 0, got {re.escape(repr(bad))}$"):
            sweep(m, batch, [1, 2], exit_tol=bad)


def test_a_preset_name_given_as_a_path_is_the_preset(tmp_path, monkeypatch):
    """load_config(Path("addition-prenorm-stars")) was refused as "neither a file nor a preset; presets: ...,
    addition-prenorm-stars, ..."; a Path is still a path first."""
    from pathlib import Path

    from looplm.config import load_config

    monkeypatch.chdir(tmp_path)
    assert load_config(Path("addition-prenorm-stars")) == load_config("addition-prenorm-stars")
    (tmp_path / "addition-prenorm-stars").write_text("model:\n  d_model: 48\n")  # a local file of that name
    assert load_config(Path("addition-prenorm-stars")).model.d_model == 48
    assert load_config("addition-prenorm-stars").model.d_model != 48  # a bare name means the preset


def test_a_fine_tune_from_a_wider_head_says_where_its_vocabulary_size_comes_from(tmp_path):
    """A jsonl run from an addition run takes the source's tokenizer (14 ids), but the addition presets pad the head
    to 16: the fine-tune was refused as "model.vocab_size: checkpoint 16 vs requested 14", a size nobody set. The
    refusal says where 14 comes from and the setting that fine-tunes it."""
    import json

    from looplm.checkpoint import CheckpointError
    from looplm.config import load_config
    from looplm.train import fit

    tiny = ["model.d_model=32", "model.d_ff=64", "model.n_heads=2", "model.max_seq_len=16", "train.steps=1",
            "train.batch_size=8", "train.eval_every=0", "data.test_size=16", "loops.max_loops=4", "reg.rho_every=0"]
    fit(load_config("addition-prenorm-stars", tiny), tmp_path / "add", progress=False)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(400)))
    ft = [*tiny, f"data.path={rows}", f"train.init_from={tmp_path / 'add'}"]
    with pytest.raises(CheckpointError, match=r"^model\.vocab_size=0 means the task's vocabulary, 14 ids \(the "
                                              r"tokenizer of train\.init_from .*add\), but that checkpoint's head is "
                                              r"16 wide; to fine-tune it, set model\.vocab_size=16 in cfg$"):
        fit(load_config("jsonl-stars", ft), tmp_path / "ft", progress=False)
    assert not (tmp_path / "ft").exists()
    fit(load_config("jsonl-stars", [*ft, "model.vocab_size=16"]), tmp_path / "ft", progress=False)  # as it says
