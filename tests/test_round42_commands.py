"""Round 42, native read-only commands: a run whose checkpoint/ is gone names its newest history entry and the
resume that restores it, generate says when its exit rule cannot stop a token, a sweep of part of a held-out file
says so, a checkpoint file that is missing says what it held (and the history's identical copy), and "1 window"
takes "is"."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from looplm import fit, load_config
from looplm.cli import main

from .test_round38_resume import TINY, add_cfg

HISTORY = {"train.checkpoint_every": 1, "train.keep_checkpoints": 3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-step addition run whose history keeps steps 1 and 2 beside checkpoint/ (step 3)."""
    out = tmp_path_factory.mktemp("r42") / "run"
    fit(add_cfg(3, **HISTORY), out, progress=False)
    return out


def files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_run_without_checkpoint_names_its_newest_history_entry_and_the_resume(run, tmp_path, monkeypatch, capsys):
    """It was "no model.safetensors in ho or ho/checkpoint: not a looplm checkpoint or run directory"."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, tmp_path / "ho")
    shutil.rmtree(tmp_path / "ho" / "checkpoint")
    before = files(tmp_path)
    for cmd in (["sweep", "ho", "--depths", "1:2", "--no-progress"], ["generate", "ho", "12+34="],
                ["export-hf", "ho", "--out", "hf"]):
        capsys.readouterr()
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert err == ("error: ho is a run without a current checkpoint (ho/checkpoint is missing); its newest saved "
                       "checkpoint is ho/checkpoints/step-00000002 (step 2): give that folder to read it, or restore "
                       "the run's checkpoint with `looplm train --config ho/config.yaml --out ho --resume`\n"), cmd
        assert files(tmp_path) == before  # nothing written
    # the entry named is read as it is
    assert main(["sweep", "ho/checkpoints/step-00000002", "--depths", "1:2", "--no-progress", "--out", "s.json"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["step"] == 2
    # and the resume named restores the run (only the part of the command the message gives)
    monkeypatch.setattr(sys, "argv", ["looplm"])
    assert main(["train", "--config", "ho/config.yaml", "--out", "ho", "--resume", "--no-progress"]) == 0
    assert (tmp_path / "ho" / "checkpoint" / "model.safetensors").is_file()
    # a checkpoint/ folder without its weights is said as such
    (tmp_path / "ho" / "checkpoint" / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["generate", "ho", "12+34="]) == 2
    assert capsys.readouterr().err.startswith("error: ho is a run without a current checkpoint (ho/checkpoint holds "
                                              "no model.safetensors); its newest saved checkpoint is "
                                              "ho/checkpoints/step-0000000")


def test_a_folder_without_a_history_is_still_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    got = subprocess.run([sys.executable, "-m", "looplm.cli", "generate", str(tmp_path / "empty"), "1+2="],
                         capture_output=True, text=True)
    assert got.returncode == 2
    assert got.stderr == (f"error: no model.safetensors in {tmp_path / 'empty'} or {tmp_path / 'empty/checkpoint'}: "
                          "not a looplm checkpoint or run directory\n")


def test_generate_says_when_its_exit_rule_cannot_stop_a_token(run, capsys):
    """sweep said so ("the exit rule cannot stop a row before the cap"); generate said nothing, and every token ran
    the cap as if there were no rule."""
    assert main(["generate", str(run), "1234+5678=", "--exit-stable", "100", "--loops", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: the exit rule cannot stop a token before the cap (--exit-stable 100 holds at loop "
                          "101 at the earliest; the cap is 3 loop(s)): every token runs 3 loop(s), as with no rule; "
                          "raise --loops or loosen the rule\n")
    assert main(["generate", str(run), "12+34=", "--exit-tol", "0", "--loops", "2"]) == 0
    assert "(--exit-tol 0 never holds; the cap is 2 loop(s))" in capsys.readouterr().out
    for rule in (["--exit-stable", "1"], ["--exit-tol", "0.1"]):  # a rule that can stop a token: no note
        assert main(["generate", str(run), "1234+5678=", *rule, "--loops", "3"]) == 0
        assert "note" not in capsys.readouterr().out


def test_a_sweep_of_part_of_a_held_out_file_says_how_much_and_of_which_file(tmp_path, monkeypatch, capsys):
    """A data.test_path of 50 rows was swept on data.test_size=16 of them, said nowhere but in the JSON's `n`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tr.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+{i % 7}=", "answer": str(i + i % 7)})
                                               + "\n" for i in range(200)))
    (tmp_path / "te.jsonl").write_text("".join(json.dumps({"prompt": f"{i}+{i % 5}=", "answer": str(i + 500)})
                                               + "\n" for i in range(500, 550)))
    sets = {**TINY, "train.steps": 1, "data.path": "tr.jsonl", "data.test_path": "te.jsonl"}
    fit(load_config("jsonl-stars", [f"{k}={v}" for k, v in sets.items()]), tmp_path / "tp", progress=False)
    capsys.readouterr()
    assert main(["sweep", "tp", "--depths", "1", "--no-progress", "--out", "a.json"]) == 0
    assert capsys.readouterr().out.startswith(
        "note: the sweep scores the first 16 of the 50 problems of the held-out file te.jsonl (data.test_path), as "
        "data.test_size=16 sets; --n N scores up to N of them\n")
    assert main(["sweep", "tp", "--depths", "1", "--no-progress", "--out", "b.json", "--n", "50"]) == 0
    assert "note" not in capsys.readouterr().out


def test_an_addition_sweep_of_its_whole_split_gives_no_note(run, tmp_path, capsys):
    assert main(["sweep", str(run), "--depths", "1", "--no-progress", "--out", str(tmp_path / "a.json")]) == 0
    assert "note" not in capsys.readouterr().out


def test_a_missing_checkpoint_file_says_what_it_held_and_restores_from_the_history(run, tmp_path, monkeypatch, capsys):
    """"r/checkpoint/tokenizer.json is missing (listed in manifest.json); restore it": from where was not said, nor
    what the file is; the history's copy with the recorded SHA-256 restores it exactly."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(run, tmp_path / "r")
    (tmp_path / "r" / "checkpoint" / "tokenizer.json").unlink()
    capsys.readouterr()
    assert main(["generate", "r", "1+2="]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: r/checkpoint/tokenizer.json (its tokenizer) is missing (listed in manifest.json); "
                          "the run's history holds the same file: restore it with "
                          "`cp r/checkpoints/step-00000002/tokenizer.json r/checkpoint/tokenizer.json`")
    assert err.count("\n") == 1
    shutil.copy(tmp_path / "r/checkpoints/step-00000002/tokenizer.json", tmp_path / "r/checkpoint/tokenizer.json")
    assert main(["generate", "r", "1+2="]) == 0
    # with no copy in the history, the earlier advice
    shutil.rmtree(tmp_path / "r" / "checkpoints")
    (tmp_path / "r" / "checkpoint" / "tokenizer.json").unlink()
    capsys.readouterr()
    assert main(["generate", "r", "1+2="]) == 2
    assert capsys.readouterr().err == (
        "error: r/checkpoint/tokenizer.json (its tokenizer) is missing (listed in manifest.json); restore it, or "
        "copy the model's files without manifest.json to a folder of their own to use the checkpoint without it\n")


def test_one_window_is(tmp_path, monkeypatch, capsys):
    """"--n 2: there are only 1 window in tx5.txt"."""
    from .test_round38_resume import TEXT, text_cfg

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "tx5.txt").write_text("ab")
    fit(text_cfg(1, "a.txt"), tmp_path / "tx", progress=False)
    capsys.readouterr()
    assert main(["sweep", "tx", "--data", "tx5.txt", "--n", "2", "--depths", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err == "error: --n 2: there is only 1 window in tx5.txt; ask for at most 1\n"


@pytest.mark.parametrize("path", ["", " "])
def test_an_empty_checkpoint_path_is_refused_as_empty(run, tmp_path, monkeypatch, capsys, path):
    """"" is the working folder to pathlib: generate and export-hf searched it for a run ("no model.safetensors in .
    or checkpoint"), and read the run there when the working folder was one."""
    shutil.copytree(run, tmp_path / "r")
    monkeypatch.chdir(tmp_path / "r")  # a run to be read by mistake
    before = files(tmp_path)
    for argv in (["generate", path, "1+1="], ["export-hf", path, "--out", str(tmp_path / "x")]):
        assert main(argv) == 2
        said = "empty" if not path else f"blank ({path!r})"
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: the checkpoint path is {said}; give a run directory"], err
    assert files(tmp_path) == before


def test_a_demo_stage_of_another_model_shape_gets_the_demos_advice(tmp_path, monkeypatch, capsys):
    """Another batch size got "the demo's stages resume, even with --force ...: use another --out"; another model
    shape got only the loader's "does not match the requested model", with no fix (--force does not help)."""
    monkeypatch.chdir(tmp_path)
    tiny = [f"--set={kv}" for kv in ("model.d_model=32", "model.n_heads=2", "train.steps=2", "train.batch_size=8",
                                      "train.eval_every=1", "data.test_size=16", "loops.max_loops=4",
                                      "model.max_seq_len=16", "reg.rho_every=0", "data.digits=2")]
    assert main(["demo", "--out", "dm", "--n", "16", "--no-progress", "--set=model.d_ff=64", *tiny]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (tmp_path / "dm").rglob("*") if p.is_file()}
    assert main(["demo", "--out", "dm", "--n", "16", "--no-progress", "--force", "--set=model.d_ff=32", *tiny]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: dm/stage1 was trained with other settings (model.d_ff: checkpoint 64 vs requested 32); the demo's "
        "stages resume, even with --force (which replaces only its results): use another --out"]
    assert {p: p.read_bytes() for p in (tmp_path / "dm").rglob("*") if p.is_file()} == before


def test_plot_of_an_empty_input_is_refused_in_a_folder_of_results(run, tmp_path, monkeypatch, capsys):
    """`looplm plot ''` in a run's folder plotted its sweep.json (pathlib's "." for ""), exit 0."""
    shutil.copytree(run, tmp_path / "r")
    monkeypatch.chdir(tmp_path / "r")
    assert main(["sweep", ".", "--depths", "1:2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["plot", "", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: an input is empty; give a sweep.json or dynamics.json, or their folder"]
    assert not (tmp_path / "x.png").exists()
