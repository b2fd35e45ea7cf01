"""Round 38, resume: a data path spelled otherwise (or relative to another directory) is the same data, a change
of train.threads is said to change float rounding, a fine-tune's writers stay out of its source run's corpus, a
--resume with nothing to resume says so, a changed corpus folder names what changed, and what a new checkpoint
does not carry over of a user's additions to checkpoint/ is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from looplm import fit, load_config
from looplm.config import ConfigError

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0}
TEXT = "the quick brown fox jumps over the lazy dog\n" * 20


def text_cfg(steps: int, path: str, **more) -> object:
    sets = {**TINY, "train.steps": steps, "data.path": path, "data.window": 15, **more}
    return load_config("text-stars", [f"{k}={v}" for k, v in sets.items()])


def add_cfg(steps: int, **more) -> object:
    sets = {**TINY, "train.steps": steps, **more}
    return load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in sets.items()])


def corpus(folder: Path) -> Path:
    (folder / "cdir").mkdir(parents=True)
    (folder / "cdir" / "a.txt").write_text(TEXT)
    return folder / "cdir"


def test_a_data_path_spelled_otherwise_or_from_another_directory_resumes(tmp_path, monkeypatch, capsys):
    """'cl' vs 'cl/' vs './cl' vs an absolute path were refused as a change of data.path, so a run with a relative
    data.path could be resumed only from the directory it started in."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    corpus(start)
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    fit(text_cfg(1, "cdir"), tmp_path / "run", progress=False)
    fit(text_cfg(2, "cdir/"), tmp_path / "run", resume=True, progress=False)  # tab completion's slash
    fit(text_cfg(3, "./cdir"), tmp_path / "run", resume=True, progress=False)
    other = corpus(elsewhere)
    (other / "a.txt").write_text(TEXT[::-1])
    monkeypatch.chdir(elsewhere)  # the recorded './cdir' is relative to start/: here it names other data
    for path in ("./cdir", str(other)):  # which the digest refuses, by any name
        with pytest.raises(ConfigError, match="no longer holds the data"):
            fit(text_cfg(4, path), tmp_path / "run", resume=True, progress=False)
    fit(text_cfg(4, str(start / "cdir")), tmp_path / "run", resume=True, progress=False)
    assert "data.path" not in capsys.readouterr().out  # (no change to speak of)


def test_an_absolute_data_path_naming_another_file_is_still_a_change(tmp_path):
    cdir = corpus(tmp_path)
    (tmp_path / "b.txt").write_text(TEXT)  # the same text, but not the file the run was given
    fit(text_cfg(1, str(cdir)), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="data.path: checkpoint '.*cdir' vs requested '.*b.txt'"):
        fit(text_cfg(2, str(tmp_path / "b.txt")), tmp_path / "run", resume=True, progress=False)


def test_a_resume_that_changes_threads_says_it_changes_float_rounding(tmp_path, capsys):
    """threads split a matmul's sums otherwise: the resumed weights differ in round-off (1.3e-7), yet the note
    said the setting "does not change the training" """
    from looplm.train import Interrupted

    with pytest.raises(Interrupted):
        fit(add_cfg(2, **{"train.threads": 1}), tmp_path / "r", progress=False, fault={"interrupt_at_step": 1})
    capsys.readouterr()
    fit(add_cfg(2, **{"train.threads": 2}), tmp_path / "r", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "train.threads: checkpoint 1 vs requested 2 (changes float rounding only)" in out
    assert "will differ from an uninterrupted one in float rounding only:" in out


def test_a_fine_tunes_writers_stay_out_of_its_source_runs_corpus(tmp_path, monkeypatch):
    """export-hf, sweep and analyze of a fine-tune wrote into its train.init_from run's corpus folder, which that
    run then refused on its resume; train refused the same --out. From Python the message says out, not --out."""
    from looplm.cli import data_inputs
    from looplm.errors import UserError
    from looplm.outputs import check_outside_data

    cdir = corpus(tmp_path)
    (tmp_path / "small.txt").write_text(TEXT)
    fit(text_cfg(1, str(cdir)), tmp_path / "tr", progress=False)
    ft = text_cfg(1, str(tmp_path / "small.txt"), **{"train.init_from": str(tmp_path / "tr")})
    fit(ft, tmp_path / "ft", progress=False)
    assert data_inputs(ft, None)[cdir] == "the train.init_from run's data (data.path)"  # sweep's and analyze's
    with pytest.raises(UserError, match=r"^out .*cdir/fromB would write into the train.init_from run's data"):
        check_outside_data(cdir / "fromB", ft)  # export-hf's
    with pytest.raises(UserError, match=r"^out .*cdir/pyrun is inside data.path"):
        fit(text_cfg(1, str(cdir)), cdir / "pyrun", progress=False)
    with pytest.raises(UserError, match=r"^out .*cdir/pyrun2 would write into the train.init_from run's data"):
        fit(ft, cdir / "pyrun2", progress=False)


def test_a_resume_with_nothing_to_resume_says_it_starts_a_new_run(tmp_path, capsys):
    """A typo in the run path trained from scratch beside the real run, unsaid."""
    fit(add_cfg(1), tmp_path / "nonexist", resume=True, progress=False)
    assert f"nothing to resume in {tmp_path / 'nonexist'} (it does not exist); starting a new run" in \
        capsys.readouterr().out
    fit(add_cfg(2), tmp_path / "nonexist", resume=True, progress=False)  # a run there now: no such note
    assert "nothing to resume" not in capsys.readouterr().out


def test_a_changed_corpus_folder_names_what_changed(tmp_path):
    """"data: cl no longer give the data ..." (grammar), naming only two digests."""
    from looplm import tasks

    cdir = corpus(tmp_path)
    (cdir / "c.txt").write_text("gone soon\n")
    fit(text_cfg(1, str(cdir)), tmp_path / "tr", progress=False)
    (cdir / "b.txt").write_text("new doc\n")
    (cdir / "c.txt").unlink()
    (cdir / "a.txt").write_text(TEXT + "more\n")
    task = tasks.make_task(text_cfg(1, str(cdir)))
    with pytest.raises(ConfigError) as e:
        tasks.check_fingerprint(task, tmp_path / "tr" / "checkpoint", "restore it")
    said = str(e.value)
    assert f"data: {cdir} no longer holds the data" in said
    assert "files added: b.txt; files removed: c.txt; files changed size: a.txt;" in said
    assert " characters then, " in said and " now; sha256 " in said


def test_what_a_new_checkpoint_does_not_carry_over_is_named(tmp_path, capsys):
    """An empty folder or a FIFO put in RUN/checkpoint/ was dropped at the next save, and the resume note listed
    only the files it carries."""
    fit(add_cfg(1), tmp_path / "r", progress=False)
    ck = tmp_path / "r" / "checkpoint"
    (ck / "README.md").write_text("card\n")
    (ck / "emptydir" / "inner").mkdir(parents=True)
    os.mkfifo(ck / "fifo")
    capsys.readouterr()
    fit(add_cfg(2), tmp_path / "r", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "holds files looplm did not write (README.md)" in out
    assert f"note: {ck} holds emptydir/, fifo, which a new checkpoint does not carry over" in out
