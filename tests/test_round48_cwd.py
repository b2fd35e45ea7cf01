"""A run whose working folder is deleted while it trains still writes its checkpoints: data.json's record of where
the data was read (round 45) called os.getcwd() at every save, which raised once the folder was gone, so every
checkpoint write failed (and a run with train.checkpoint_every=0 lost its weights at the end)."""

from __future__ import annotations

import json
import os

from looplm import load_config
from looplm.tasks import DATA_FILE, make_task, save_fingerprint

from .test_round46_heldout import rows


def test_a_deleted_working_folder_leaves_the_checkpoint_record_writable(tmp_path, monkeypatch):
    data = rows(tmp_path / "mul.jsonl", 0)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config("jsonl-stars", [f"data.path={data}", "model.max_seq_len=16"])
    task = make_task(cfg)
    out = tmp_path / "ckpt"
    out.mkdir()
    work.rmdir()  # the folder the run was launched from, deleted mid-run (cwd is now a dangling folder)
    save_fingerprint(task, out)  # raised FileNotFoundError from os.getcwd()
    saved = json.loads((out / DATA_FILE).read_text())
    assert saved["read_from"] == [str(data)] and saved["cwd"] == str(work)  # taken when the task was made
    del task.read_at  # a task made elsewhere (no record of its own): the digest is still written, without it
    save_fingerprint(task, out)
    assert "read_from" not in json.loads((out / DATA_FILE).read_text())
    monkeypatch.chdir(tmp_path)
    assert os.getcwd() == str(tmp_path)
