"""Round 47, misc: fit takes a module with a frozen float16 parameter (AdamW never updates it); the API says which
container it wanted for a bare depth, a depth spec, one unwrapped prompt or unencoded text (each was "must be
integers, got 8"); `sweep --sizes`'s example works for both sized tasks and a size too small for a held-out problem
names where to start; `sweep --data` notes addition rows of other widths and jsonl prompts with two answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from looplm import LoopedTransformer, generate, sweep
from looplm.cli import eval_problems
from looplm.config import Config
from looplm.dynamics import diagnose
from looplm.fitcheck import check_half
from looplm.tasks.addition import AdditionTask
from looplm.tasks.base import make_batch
from looplm.tasks.jsonl import JsonlTask
from looplm.tasks.sized import ChainTask, ParityTask
from tests.conftest import tiny_config, tiny_model_config


def test_a_frozen_float16_parameter_passes_the_half_check_and_a_trainable_one_does_not():
    """make_optimizer leaves frozen parameters out: a frozen float16 table never meets AdamW's eps."""
    cfg = tiny_config()
    model = LoopedTransformer(cfg.model)
    model.table = nn.Parameter(torch.randn(4, 4).half(), requires_grad=False)
    check_half(model, cfg)  # was TypeError "float16 parameters table: fit cannot train in float16"
    model.table.requires_grad_(True)
    with pytest.raises(TypeError, match="float16 parameters table"):
        check_half(model, cfg)


@pytest.fixture()
def model_batch():
    model = LoopedTransformer(tiny_model_config())
    return model, make_batch([[1, 2, 3, 4], [2, 3, 4, 5]], [2, 2])


@pytest.mark.parametrize("call", [sweep, diagnose])
def test_a_bare_depth_or_a_depth_spec_says_what_was_wanted(model_batch, call):
    model, batch = model_batch
    with pytest.raises(ValueError, match=r"depths must be a list of loop counts \(e\.g\. \[8\]\), got the int 8"):
        call(model, batch, 8)
    with pytest.raises(ValueError, match=r"got the string '1:8'; .*use looplm\.parse_depths\('1:8'\)"):
        call(model, batch, "1:8")
    with pytest.raises(ValueError, match=r"depths must be integers, got \[1, 2\.5\]"):
        call(model, batch, [1, 2.5])


def test_diagnose_spectral_depths_as_a_bare_number_says_so_too(model_batch):
    model, batch = model_batch
    with pytest.raises(ValueError, match=r"spectral_depths must be a list of loop counts \(e\.g\. \[2\]\)"):
        diagnose(model, batch, [1, 2], spectral_depths=2)


def test_one_unwrapped_prompt_or_text_says_how_to_give_prompts(model_batch):
    model, _ = model_batch
    for cache in (False, True):
        with pytest.raises(ValueError, match=r"got a flat list of ints \(\[3, 4, 5\]\); wrap one prompt: \[ids\]"):
            generate(model, [3, 4, 5], 2, 2, 1, use_cache=cache)
        with pytest.raises(ValueError, match=r"got a flat list of ints"):
            generate(model, torch.tensor([3, 4, 5]), 2, 2, 1, use_cache=cache)
        with pytest.raises(ValueError, match=r"got text .*encode it first \(task\.tok\.encode\)"):
            generate(model, ["12+34="], 2, 2, 1, use_cache=cache)
        with pytest.raises(ValueError, match=r"got text"):
            generate(model, "12+34=", 2, 2, 1, use_cache=cache)
    # (still taken: a list of prompts, a 2-d tensor; and a bad id inside a prompt still named)
    for prompts in ([[3, 4, 5]], torch.tensor([[3, 4, 5]]), [torch.tensor([3, 4, 5])]):
        assert len(generate(model, prompts, 2, 2, 1)) == 1
    with pytest.raises(ValueError, match=r"prompt token ids must be integers, got \[3, 4\.5\]"):
        generate(model, [[3, 4.5]], 2, 2, 1)


def test_a_size_without_held_out_problems_names_the_smallest_that_has_them():
    task = ParityTask(6, 10, 16, 0)
    with pytest.raises(ValueError, match=r"no held-out problem of size 1; the smallest size with held-out problems "
                                         r"is (\d+): start the sizes \(--sizes\) there") as e:
        task.sized_batch(1, 4)
    first = int(e.value.args[0].split("problems is ")[1].split(":")[0])
    assert len(task.sized_batch(first, 1)) == 1
    with pytest.raises(ValueError, match=r"ask for at most that many \(--n\), or leave --n out: each size then gives "
                                         "all it has"):
        task.sized_batch(6, 500)


def test_the_sizes_example_in_sweep_help_works_for_parity_and_chain():
    out = subprocess.run([sys.executable, "-m", "looplm", "sweep", "--help"], capture_output=True, text=True,
                         check=True).stdout
    example = " ".join(out.split()).split("instance size, e.g. ")[1].split(";")[0]
    lo, hi = map(int, example.split(":"))
    for task in (ParityTask(6, 10, 16, 0, max_len=32), ChainTask(1, 4, 16, 0, max_len=112)):  # (the presets')
        for size in (lo, hi):
            assert len(task.sized_batch(size, 4, strict=False)) >= 1


def _rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sweep_data_notes_addition_rows_of_other_widths(tmp_path, capsys):
    cfg = Config.from_dict({**Config().to_dict(), "data": {**Config().to_dict()["data"], "task": "addition"}})
    task = AdditionTask(digits=4)
    data = _rows(tmp_path / "short.jsonl", [{"num1": 12, "num2": 34, "answer": 46},
                                            {"num1": 1234, "num2": 5678, "answer": 6912},
                                            {"num1": 12345, "num2": 1, "answer": 12346}])
    eval_problems(task, cfg, data, None)
    out = capsys.readouterr().out
    assert "note: 2 of the 3 problems of" in out and "'12+34=' is not a 4-digit addition problem" in out
    eval_problems(task, cfg, data, 2)  # (only the rows scored)
    assert "note: 1 of the 2 problems" in capsys.readouterr().out
    ok = _rows(tmp_path / "ok.jsonl", [{"num1": 1234, "num2": 5678, "answer": 6912}])
    eval_problems(task, cfg, ok, None)
    assert "note" not in capsys.readouterr().out


def test_sweep_data_notes_a_prompt_with_two_answers(tmp_path, capsys):
    train = _rows(tmp_path / "train.jsonl", [{"prompt": f"{i}*3=", "answer": str(3 * i)} for i in range(20)])
    d = Config().to_dict()
    d["data"].update(task="jsonl", path=train)
    cfg = Config.from_dict(d)
    task = JsonlTask(train)
    data = _rows(tmp_path / "cf.jsonl", [{"prompt": "12*3=", "answer": "36"}, {"prompt": "12*3=", "answer": "63"}])
    eval_problems(task, cfg, data, None)
    out = capsys.readouterr().out
    assert "note: 1 prompt of" in out and "appears with different answers (first: '12*3=')" in out
    assert "exact match on them can reach at most 1/2" in out
    eval_problems(task, cfg, data, 1)
    assert "note" not in capsys.readouterr().out
