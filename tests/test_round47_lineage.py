"""Round 47, the lineage check and --data notes where a run's data is not the same text or file as its base's:
a text corpus that holds the base's text (a folder that gained a file, a file grown in place) or is part of it (one
file of the base's folder) held out text the base trained on, unsaid; a run's relative data.path read from another
working directory cut the chain (and the --data note) silently, or matched another file of the same name; rows
only reordered were refused for a held-out sweep; a --data folder holding the training file went unnoted."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from looplm import checkpoint as ckpt
from looplm.errors import ConfigError
from looplm.tasks import check_fingerprint, eval_file, task_of_checkpoint

from .test_round46_heldout import rows, run

TEXT = {"data.tokenizer": "byte", "data.window": 16}


def swept(folder: Path | str, data: str) -> None:
    """What `looplm sweep FOLDER --data DATA` does before scoring: the run's task, then the --data note."""
    cfg = ckpt.load_config(folder)
    task_of_checkpoint(cfg, folder, held_out=False)
    eval_file(cfg, data, folder)


def words(path: Path, seed: int, n: int = 600) -> Path:
    r = random.Random(seed)
    path.write_text(" ".join("".join(r.choice("abcdefghij") for _ in range(r.randint(2, 7))) for _ in range(n)))
    return path


def test_text_folder_that_gained_a_file_is_checked_against_the_base(tmp_path):
    (tmp_path / "c").mkdir()
    words(tmp_path / "c" / "a.txt", 1)
    base = run("text-stars", tmp_path / "tb", **TEXT, **{"data.path": tmp_path / "c" / "a.txt"})
    words(tmp_path / "c" / "z.txt", 2, 60)
    with pytest.raises(ConfigError, match=r"data\.test_fraction=0\.3 holds out the last .* characters of .*c, but "
                                          r"[\d,]+ of them are text .*tb \(train\.init_from\) trained on \(its text, "
                                          r".*a\.txt, is part of this one.* set data\.test_fraction=0\.\d+ or "
                                          r"less") as e:
        run("text-stars", tmp_path / "ft", **TEXT, **{"data.path": tmp_path / "c", "data.test_fraction": 0.3,
                                                     "train.init_from": base})
    assert not (tmp_path / "ft").exists()
    advised = str(e.value).split("set data.test_fraction=")[1].split()[0]  # the advice is accepted
    run("text-stars", tmp_path / "ok", **TEXT, **{"data.path": tmp_path / "c", "data.test_fraction": advised,
                                                 "train.init_from": base})


def test_one_file_of_the_base_folder_is_checked_against_the_base(tmp_path):
    (tmp_path / "c").mkdir()
    words(tmp_path / "c" / "a.txt", 1)
    words(tmp_path / "c" / "b.txt", 2, 60)
    base = run("text-stars", tmp_path / "tb", **TEXT, **{"data.path": tmp_path / "c"})
    with pytest.raises(ConfigError, match=r"of them are text .*tb \(train\.init_from\) trained on \(its text, .*c, "
                                          r"holds this one.*no tail of this text is free of it"):
        run("text-stars", tmp_path / "ft", **TEXT, **{"data.path": tmp_path / "c" / "a.txt", "train.init_from": base})


def test_text_file_grown_in_place_is_checked_against_the_base(tmp_path):
    t = words(tmp_path / "t.txt", 1)
    base = run("text-stars", tmp_path / "tb", **TEXT, **{"data.path": t})
    t.write_text(t.read_text() + " " + words(tmp_path / "more.txt", 3, 60).read_text())
    with pytest.raises(ConfigError, match=r"of them are text .*tb \(train\.init_from\) trained on"):
        run("text-stars", tmp_path / "ft", **TEXT, **{"data.path": t, "data.test_fraction": 0.2,
                                                     "train.init_from": base})
    run("text-stars", tmp_path / "ok", **TEXT, **{"data.path": t, "data.test_fraction": 0.03, "train.init_from": base})


@pytest.mark.parametrize("recorded", [True, False])  # False: a run from before data.json said where it read
def test_fine_tune_from_another_directory_is_checked_against_the_base(tmp_path, monkeypatch, recorded, capsys):
    rows(tmp_path / "mul.jsonl", 0)
    monkeypatch.chdir(tmp_path)
    base = run("jsonl-stars", "j1", **{"data.path": "mul.jsonl", "data.test_fraction": 0.2})
    if not recorded:
        f = base / "checkpoint" / "data.json"
        f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "read_from"}))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    with pytest.raises(ConfigError, match=r"data: \d+ of the \d+ held-out prompts .* are training prompts of \.\./j1"):
        run("jsonl-stars", "jft", **{"data.path": "../mul.jsonl", "data.test_fraction": 0.2, "data.test_seed": 7,
                                     "train.init_from": "../j1"})
    capsys.readouterr()
    swept("../j1", "../mul.jsonl")
    assert "note: --data ../mul.jsonl is the run's training data (data.path=mul.jsonl)" in capsys.readouterr().out


def test_base_data_not_found_is_noted(tmp_path, capsys):
    rows(tmp_path / "mul.jsonl", 0)
    base = run("jsonl-stars", tmp_path / "j1", **{"data.path": tmp_path / "mul.jsonl", "data.test_fraction": 0.2})
    rows(tmp_path / "mul2.jsonl", 0, times=4)
    (tmp_path / "mul.jsonl").unlink()
    capsys.readouterr()
    run("jsonl-stars", tmp_path / "ft", **{"data.path": tmp_path / "mul2.jsonl", "train.init_from": base})
    assert "is not found as it trained on it" in capsys.readouterr().out


def test_same_named_file_elsewhere_is_not_the_training_data(tmp_path, monkeypatch, capsys):
    (tmp_path / "X").mkdir()
    (tmp_path / "Y").mkdir()
    rows(tmp_path / "X" / "data.jsonl", 0)
    rows(tmp_path / "Y" / "data.jsonl", 500)
    monkeypatch.chdir(tmp_path / "X")
    run("jsonl-stars", "A", **{"data.test_fraction": 0.2})
    monkeypatch.chdir(tmp_path / "Y")
    capsys.readouterr()
    swept("../X/A", "data.jsonl")
    assert "note:" not in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"data: data\.jsonl no longer holds the data .*A/checkpoint was trained "
                                          r"on, or the run was trained in another directory \("):
        task_of_checkpoint(ckpt.load_config("../X/A"), "../X/A")


def test_reordered_rows_keep_the_held_out_split(tmp_path):
    f = rows(tmp_path / "crl.jsonl", 0)
    jc = run("jsonl-stars", tmp_path / "jc", **{"data.path": f, "data.test_fraction": 0.2})
    lines = f.read_text().splitlines(keepends=True)
    random.Random(9).shuffle(lines)
    f.write_text("".join(lines))
    task = task_of_checkpoint(ckpt.load_config(jc), jc)  # the held-out split is the same: accepted
    with pytest.raises(ConfigError, match=r"data: .*crl\.jsonl holds the rows .* in another order \(a run draws its "
                                          r"batches by row index"):
        check_fingerprint(task, jc, "restore it")  # (a resume)
    rows(tmp_path / "mul2.jsonl", 0)  # the same rows, another file: a fine-tune is still checked
    with pytest.raises(ConfigError, match=r"are training prompts of .*jc \(train\.init_from\)"):
        run("jsonl-stars", tmp_path / "ft", **{"data.path": f, "data.test_fraction": 0.2, "data.test_seed": 7,
                                               "train.init_from": jc})


def test_data_folder_holding_the_training_file_is_noted(tmp_path, capsys):
    (tmp_path / "corp").mkdir()
    t = words(tmp_path / "corp" / "a.txt", 1)
    t1 = run("text-stars", tmp_path / "t1", **TEXT, **{"data.path": t})
    capsys.readouterr()
    swept(t1, str(tmp_path / "corp"))
    assert f"note: --data {tmp_path / 'corp'} holds the run's training data" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "corp")


def test_sweep_from_another_directory_follows_the_chain(tmp_path, monkeypatch, capsys):
    rows(tmp_path / "mul.jsonl", 0)
    rows(tmp_path / "mul2.jsonl", 0, times=4)
    monkeypatch.chdir(tmp_path)
    run("jsonl-stars", "j1", **{"data.path": "mul.jsonl", "data.test_fraction": 0.2})
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    run("jsonl-stars", "jft", **{"data.path": "../mul2.jsonl", "train.init_from": "../j1"})
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    swept("sub/jft", "mul.jsonl")  # the file j1 (jft's init_from, ../j1 from sub) trained on
    assert "note: --data mul.jsonl is the training data of ../j1 (the run's train.init_from)" in capsys.readouterr().out
