"""Round 46, held-out splits of fine-tunes: a run started from another (train.init_from, followed up the chain) may
not hold out rows, or a text tail, that one of those runs trained on (it was scored as held-out, with no word), as
one run may not hold out its own training prompts; a sweep's --data that is such a run's training data is noted;
jsonl rows that give one prompt different answers are noted with the ceiling they put on held-out exact match."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from looplm import fit, load_config
from looplm.errors import ConfigError
from looplm.tasks import eval_file

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0, "train.threads": 1,
        "train.steps": 1}


def run(preset: str, out: Path, **sets) -> Path:
    cfg = load_config(preset, [f"{k}={v}" for k, v in {**TINY, **sets}.items()])
    return fit(cfg, out, progress=False)


def rows(path: Path, start: int, n: int = 120, times: int = 3) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"{a}*{times}=", "answer": str(a * times)}) + "\n"
                            for a in range(start, start + n)))
    return path


@pytest.fixture
def base(tmp_path):
    """j1: a jsonl run on mul.jsonl, a hash split of 20%."""
    rows(tmp_path / "mul.jsonl", 0)
    return run("jsonl-stars", tmp_path / "j1", **{"data.path": tmp_path / "mul.jsonl", "data.test_fraction": 0.2})


def test_a_fine_tune_holding_out_rows_its_base_trained_on_is_refused(tmp_path, base):
    mul = tmp_path / "mul.jsonl"
    # the base's split over the same file (its fraction and seed): nothing it trained on is held out
    run("jsonl-stars", tmp_path / "same", **{"data.path": mul, "data.test_fraction": 0.2, "train.init_from": base})
    # another seed holds out other prompts, most of them trained on by j1
    with pytest.raises(ConfigError, match=r"held-out prompts \(first: .*\) are training prompts of .*j1 \(train\.init"
                                          r"_from\); the held-out score would be on training rows: hold out what it "
                                          r"held out \(its split, data\.test_fraction=0\.2 and data\.test_seed=1234"):
        run("jsonl-stars", tmp_path / "seed", **{"data.path": mul, "data.test_fraction": 0.2, "data.test_seed": 7,
                                                  "train.init_from": base})
    # j1's training file as the held-out file of a fine-tune on other rows
    rows(tmp_path / "mul2.jsonl", 0, times=4)
    with pytest.raises(ConfigError, match=r"94 of the 120 held-out prompts"):
        run("jsonl-stars", tmp_path / "tp", **{"data.path": tmp_path / "mul2.jsonl", "data.test_path": mul,
                                               "train.init_from": base})
    assert not any((tmp_path / d).exists() for d in ("seed", "tp"))


def test_the_chain_is_followed_and_a_run_whose_data_is_gone_is_skipped(tmp_path, base):
    rows(tmp_path / "other.jsonl", 500)
    ft = run("jsonl-stars", tmp_path / "ft", **{"data.path": tmp_path / "other.jsonl", "train.init_from": base})
    with pytest.raises(ConfigError, match=r"training prompts of .*j1 \(up the train\.init_from chain from .*ft\)"):
        run("jsonl-stars", tmp_path / "ft2", **{"data.path": tmp_path / "mul.jsonl", "data.test_fraction": 0.3,
                                                "train.init_from": ft})
    # a base whose files changed (its data.json no longer matches) or are gone says nothing of what it trained on
    rows(tmp_path / "mul.jsonl", 0, n=119)
    run("jsonl-stars", tmp_path / "ft3", **{"data.path": tmp_path / "mul.jsonl", "data.test_fraction": 0.3,
                                            "train.init_from": ft})
    (tmp_path / "mul.jsonl").unlink()
    rows(tmp_path / "m3.jsonl", 0, n=118)  # (not 120 rows: a copy of j1's data is found by its digest, round 47)
    run("jsonl-stars", tmp_path / "ft4", **{"data.path": tmp_path / "m3.jsonl", "data.test_fraction": 0.3,
                                            "train.init_from": ft})


def test_a_text_fine_tune_with_a_longer_tail_than_its_base_is_refused(tmp_path):
    corp = tmp_path / "corp.txt"
    corp.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    t1 = run("text-stars", tmp_path / "t1", **{"data.path": corp, "data.window": 16})  # test_fraction 0.05
    run("text-stars", tmp_path / "same", **{"data.path": corp, "data.window": 16, "train.init_from": t1})
    run("text-stars", tmp_path / "less", **{"data.path": corp, "data.window": 16, "data.test_fraction": 0.02,
                                            "train.init_from": t1})
    copy = tmp_path / "copy.txt"  # the same text under another name is the same text
    shutil.copy(corp, copy)
    with pytest.raises(ConfigError, match=r"data\.test_fraction=0\.3 holds out the last 540 characters of .*copy\.txt, "
                                          r"but .*t1 \(train\.init_from\) trained on the same text up to its last 90 "
                                          r"\(its data\.test_fraction=0\.05\): 450 characters .* set data\.test_"
                                          r"fraction=0\.05 or less"):
        run("text-stars", tmp_path / "tft", **{"data.path": copy, "data.window": 16, "data.test_fraction": 0.3,
                                               "train.init_from": t1})
    assert not (tmp_path / "tft").exists()


def test_sweep_data_that_a_run_up_the_chain_trained_on_is_noted(tmp_path, base, capsys):
    rows(tmp_path / "mul2.jsonl", 0, times=4)
    ft = run("jsonl-stars", tmp_path / "ft", **{"data.path": tmp_path / "mul2.jsonl", "train.init_from": base})
    from looplm import checkpoint as ckpt

    capsys.readouterr()
    eval_file(ckpt.load_config(ft), str(tmp_path / "mul.jsonl"))
    assert f"note: --data {tmp_path / 'mul.jsonl'} is the training data of {base} (the run's " \
           f"train.init_from) (data.path={tmp_path / 'mul.jsonl'})" in capsys.readouterr().out


def test_prompts_with_different_answers_are_noted_with_the_ceiling_they_set(tmp_path, capsys):
    lines = rows(tmp_path / "mul.jsonl", 0).read_text().splitlines()
    twins = [json.dumps({**json.loads(r), "answer": json.loads(r)["answer"] + "0"}) for r in lines[:40]]
    (tmp_path / "dup.jsonl").write_text("\n".join(lines + twins) + "\n")
    capsys.readouterr()
    run("jsonl-stars", tmp_path / "jd", **{"data.path": tmp_path / "dup.jsonl", "data.test_fraction": 0.2})
    out = capsys.readouterr().out
    assert "note: 40 prompts of" in out and "appear with different answers (first: '0*3=')" in out
    assert "held-out exact match can reach at most" in out and "keep one answer per prompt" in out
