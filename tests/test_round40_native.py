"""Round 40, native: --force replaces only an earlier looplm result (never a run's training file, wherever the
command runs), a second Ctrl-C cannot stop the restore of the earlier results, and analyze's --tol is checked
once, by the flag's name."""

from __future__ import annotations

import json

import pytest

from looplm import fit
from looplm.cli import main
from looplm.errors import UserError

from .test_round38_resume import TEXT, text_cfg


def test_sweep_force_from_another_folder_keeps_the_runs_training_file(tmp_path, monkeypatch, capsys):
    """A run's relative data.path was resolved against the current folder: from another folder the protection saw
    nothing there, and `sweep --force --out` replaced the run's training file with the sweep's JSON."""
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (tmp_path / "work" / "a.txt").write_text(TEXT)
    (tmp_path / "work" / "mine.txt").write_text(TEXT)
    fit(text_cfg(1, "a.txt"), tmp_path / "work" / "run", progress=False)
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["sweep", "../work/run", "--data", "../work/mine.txt", "--out", "../work/a.txt", "--force",
                 "--depths", "1:2", "--no-progress"]) == 2
    assert (tmp_path / "work" / "a.txt").read_text() == TEXT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --out ../work/a.txt exists and is not a looplm result") and "\n" not in err
    # an earlier sweep's result there is still replaced
    sweep = ["sweep", "../work/run", "--data", "../work/mine.txt", "--out", "s.json", "--no-progress"]
    assert main([*sweep, "--depths", "1:2"]) == 0
    assert main([*sweep, "--depths", "1:3", "--force"]) == 0
    assert json.loads((tmp_path / "elsewhere" / "s.json").read_text())["depths"] == [1, 2, 3]


def test_force_replaces_only_what_looplm_writes(tmp_path):
    from looplm.outputs import fresh_outputs

    own = {"s.json": '{"depths": [1], "accuracy": [0.5]}', "f.png": b"\x89PNG\r\n\x1a\nxx", "f.pdf": b"%PDF-1.4",
           "t.md": "# lm-eval by loop count: m\n"}
    for name, body in own.items():
        (tmp_path / name).write_bytes(body if isinstance(body, bytes) else body.encode())
        fresh_outputs([tmp_path / name], force=True)
    for name, body in {"rows.jsonl": '{"prompt": "1+1", "answer": "2"}\n', "c.json": "[1, 2]",
                       "x.png": "not a figure", "notes.md": "# mine"}.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(UserError, match=rf"^--out .*{name} exists and is not a looplm .*choose another --out$"):
            fresh_outputs([tmp_path / name], force=True)

