"""Round 39, run directories: a fine-tune's writers stay out of the data of every run up its train.init_from
chain, a resume keeps the stored spelling of the same data, a missing looplm run gets no hub download hint, demo
speaks of its own stages (not of a --resume the user never gave), and a piped --data file is refused with the
reason."""

from __future__ import annotations

import pytest

from looplm import fit
from looplm.errors import UserError

from .test_round38_resume import TEXT, TINY, text_cfg


def test_a_fine_tune_of_a_fine_tune_stays_out_of_the_first_runs_data(tmp_path, monkeypatch):
    """A -> B -> C (each train.init_from the one before): C's sweep --force replaced A's training file, and its
    export-hf, analyze and fine-tunes wrote into A's corpus; only B's data was checked."""
    from looplm import outputs
    from looplm.cli import data_inputs
    from looplm.outputs import check_outside_data

    (tmp_path / "cdir").mkdir()
    (tmp_path / "cdir" / "a.txt").write_text(TEXT)
    (tmp_path / "b.txt").write_text(TEXT)
    fit(text_cfg(1, str(tmp_path / "cdir")), tmp_path / "A", progress=False)
    fit(text_cfg(1, str(tmp_path / "b.txt"), **{"train.init_from": str(tmp_path / "A")}), tmp_path / "B",
        progress=False)
    c = text_cfg(1, str(tmp_path / "b.txt"), **{"train.init_from": str(tmp_path / "B")})
    fit(c, tmp_path / "C", progress=False)
    assert "train.init_from chain" in data_inputs(c, None)[tmp_path / "cdir"]  # sweep's and analyze's
    with pytest.raises(UserError, match=r"cdir/hf would write into the data of .*A, a run further up the "):
        check_outside_data(tmp_path / "cdir" / "hf", c)  # export-hf's
    with pytest.raises(UserError, match=r"cdir/D would write into the data of .*A, a run further up the "):
        fit(text_cfg(1, str(tmp_path / "b.txt"), **{"train.init_from": str(tmp_path / "C")}),
            tmp_path / "cdir" / "D", progress=False)
    # a chain that leads back to a run already walked (a copied run) ends there
    loop = text_cfg(1, str(tmp_path / "b.txt"), **{"train.init_from": str(tmp_path / "C")})
    monkeypatch.setattr(outputs.ckpt, "load_config", lambda p: loop)
    assert list(outputs.run_data(loop)) == [tmp_path / "b.txt"]


def test_a_resume_that_names_the_data_otherwise_keeps_the_recorded_name(tmp_path, monkeypatch):
    """A resume from a subfolder (`../data/rows.jsonl` for `data/rows.jsonl`) stored the new spelling in
    config.yaml and the checkpoint: from the run's own folder it then named nothing, and the run's sweep and
    --resume there were refused."""
    from looplm import load_config as read
    from looplm.checkpoint import load_config as saved

    (tmp_path / "data").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "data" / "a.txt").write_text(TEXT)
    monkeypatch.chdir(tmp_path)
    fit(text_cfg(1, "data/a.txt"), tmp_path / "R", progress=False)
    monkeypatch.chdir(tmp_path / "sub")
    fit(text_cfg(2, "../data/a.txt"), tmp_path / "R", resume=True, progress=False)
    monkeypatch.chdir(tmp_path)
    assert read(str(tmp_path / "R" / "config.yaml")).data.path == "data/a.txt"
    assert saved(tmp_path / "R").data.path == "data/a.txt"
    fit(text_cfg(3, "data/a.txt"), tmp_path / "R", resume=True, progress=False)  # from its own folder: goes on


def test_a_missing_looplm_run_gets_no_hub_download_hint(tmp_path, monkeypatch, capsys):
    """`sweep runs/mine`, `generate runs/mine` and a preset's train.init_from=runs/addition-fixed8 were told to
    `hf download` it, which those commands, refusing a Hugging Face folder, cannot use; analyze keeps the hint."""
    from looplm.cli import main

    monkeypatch.chdir(tmp_path)
    for argv in (["sweep", "runs/mine"], ["generate", "runs/mine", "1+1="]):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == "error: checkpoint runs/mine does not exist"
    assert main(["train", "--config", "addition-stars", "--out", "r", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: train.init_from=runs/addition-fixed8 does not exist (preset addition-stars fine-tunes that run); "
        "train it first: `looplm train --config addition-fixed8 --out runs/addition-fixed8` (or `looplm demo`, "
        "which trains both stages)")
    assert main(["train", "--config", "addition-fixed8", "--out", "r", "--set", "train.init_from=old/run"]) == 2
    assert "train.init_from=old/run does not exist; give the run directory" in capsys.readouterr().err
    assert main(["analyze", "runs/mine", "--no-progress"]) == 2
    assert "`hf download runs/mine --local-dir DIR`" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # (nothing made)


def test_the_demo_speaks_of_its_stages_not_of_resume(tmp_path, capsys):
    """`looplm demo` said "note: --resume: nothing to resume in demo/stage1 ...; starting a new run", and a rerun
    with another train.seed and --force "--resume would change the run ...": the user gave no --resume, and
    --force replaces only the demo's results, not its stages."""
    from looplm.config import ConfigError
    from looplm.demo import cmd_demo

    sets = [f"{k}={v}" for k, v in {**TINY, "train.steps": 1, "train.stop_at_acc": 0}.items()]
    cmd_demo(str(tmp_path / "demo"), sets, progress=False, n=4)
    assert "resume" not in capsys.readouterr().out
    with pytest.raises(ConfigError) as e:
        cmd_demo(str(tmp_path / "demo"), [*sets, "train.seed=3"], progress=False, n=4, force=True)
    assert str(e.value) == (f"{tmp_path / 'demo' / 'stage1'} was trained with other settings (train.seed: checkpoint "
                            "0 vs requested 3); the demo's stages resume, even with force=True (which replaces only "
                            "its results): use another out")


def test_a_piped_data_file_is_refused_with_the_reason_and_the_way_out(tmp_path):
    """`sweep --data /dev/stdin` from a pipe: "data file /dev/stdin is not a regular file", no reason, no way out."""
    import os

    from looplm.records import read_rows

    os.mkfifo(tmp_path / "rows.jsonl")  # (refused before it is opened: no writer is needed)
    with pytest.raises(ValueError, match=r"rows.jsonl is a FIFO \(named pipe\), not a file: a pipe's rows are gone "
                                         r"once read, .*write the rows to a file first"):
        read_rows(tmp_path / "rows.jsonl")
