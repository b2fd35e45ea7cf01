"""Round 43, resume: a resume from the history says where the damaged checkpoint went (and gives no stale `cp`
advice), a folder in place of the lock file is named as such, a fine-tune's data.source and model folder spelled
otherwise are the same, and the activation-checkpointing settings (memory only) may change on a resume."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from looplm import checkpoint as ckpt
from looplm import fit, load_config
from looplm.cli import main
from looplm.config import Config
from tests.hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0, "train.threads": 1,
        "train.checkpoint_every": 1, "train.keep_checkpoints": 3}


def add_cfg(steps: int, **more) -> Config:
    sets = {**TINY, "train.steps": steps, **more}
    return load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in sets.items()])


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = (load_file(str(r / "checkpoint" / ckpt.WEIGHTS)) for r in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_resume_past_a_damaged_checkpoint_says_where_it_moved_it_and_gives_no_stale_advice(tmp_path, capsys):
    """It printed `cp <history>/tokenizer.json <run>/checkpoint/tokenizer.json`, then moved checkpoint/ aside unsaid,
    so the command restored nothing."""
    run = tmp_path / "run"
    fit(add_cfg(2), run, progress=False)
    (run / "checkpoint" / "tokenizer.json").unlink()
    capsys.readouterr()
    fit(add_cfg(3), run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "`cp " not in err
    assert f"{run / 'checkpoint' / 'tokenizer.json'} (its tokenizer) is missing" in err
    assert "training goes on from its step 1" in err
    aside = [p for p in run.iterdir() if p.name.startswith("checkpoint.damaged-")]
    assert len(aside) == 1 and f"moved the damaged {run / 'checkpoint'} aside as {aside[0]}" in err
    assert ckpt.saved_step(aside[0]) == 2 and ckpt.saved_step(run / "checkpoint") == 3


def test_a_folder_in_place_of_the_lock_file_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    fit(add_cfg(1), run, progress=False)
    (run / ".looplm.lock").unlink()
    (run / ".looplm.lock").mkdir()
    argv = ["train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress", "--resume"]
    for k, v in {**TINY, "train.steps": 2}.items():
        argv += ["--set", f"{k}={v}"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {run / '.looplm.lock'}, the run's lock file, is a folder; remove it (looplm writes that " \
                  "file itself)"
    assert ckpt.saved_step(run / "checkpoint") == 1


def test_checkpoint_loops_may_change_on_a_resume_and_the_weights_are_the_same(tmp_path, capsys):
    """Refused as a change of the run, though the memory error advises it; it recomputes the same operations."""
    whole = fit(add_cfg(3, **{"model.dropout": 0.1}), tmp_path / "whole", progress=False)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(add_cfg(3, **{"model.dropout": 0.1}), cut, progress=False, fault={"crash_at_step": 2})
    capsys.readouterr()
    fit(add_cfg(3, **{"model.dropout": 0.1, "loops.checkpoint_loops": True}), cut, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "resuming with changed settings; they do not change the training:" in out
    assert "loops.checkpoint_loops: checkpoint False vs requested True (changes memory use only" in out
    assert same_weights(whole, cut)  # as said (dropout on: the recomputation draws the same masks)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_tiny_base(tmp_path_factory.mktemp("base") / "ouro-tiny", tiny_chat_tokenizer())


def ft_cfg(base: str, data: str, steps: int, gc: bool = True) -> Config:
    t = dict(steps=steps, batch_size=4, micro_batch_size=2, lr=3e-3, log_every=1, checkpoint_every=1, threads=1)
    return Config.from_dict({"model": {"name_or_path": base, "gradient_checkpointing": gc},
                             "data": {"source": data, "max_length": 256}, "train": t})


def test_a_finetune_resumes_with_its_source_and_model_spelled_otherwise(base_dir, tmp_path, monkeypatch):
    """`./math.jsonl`, `../math.jsonl` from a subfolder and a trailing `/` on the model folder were refused as
    changes of the run; the stored spelling is kept."""
    write_jsonl(math_problems(12), tmp_path / "math.jsonl")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    fit(ft_cfg(str(base_dir), "math.jsonl", 1), tmp_path / "r", progress=False)
    fit(ft_cfg(str(base_dir), "./math.jsonl", 2), tmp_path / "r", resume=True, progress=False)
    monkeypatch.chdir(tmp_path / "sub")
    fit(ft_cfg(f"{base_dir}/", "../math.jsonl", 3), tmp_path / "r", resume=True, progress=False)
    saved = ckpt.load_config(tmp_path / "r" / "checkpoint")
    assert (saved.data.source, saved.model.name_or_path) == ("math.jsonl", str(base_dir))
    assert ckpt.saved_step(tmp_path / "r" / "checkpoint") == 3


def test_a_finetune_resume_may_turn_gradient_checkpointing_off_or_on(base_dir, tmp_path, capsys):
    data = str(write_jsonl(math_problems(12), tmp_path / "math.jsonl"))
    whole = fit(ft_cfg(str(base_dir), data, 3), tmp_path / "whole", progress=False)
    for gc, crash in ((True, 2), (False, 3), (True, None)):  # off from step 1, on again from step 2
        with pytest.raises(RuntimeError, match="injected crash") if crash else contextlib.nullcontext():
            fit(ft_cfg(str(base_dir), data, 3, gc), tmp_path / "cut", resume=crash != 2, progress=False,
                fault={"crash_at_step": crash} if crash else None)
        if crash == 3:
            assert "model.gradient_checkpointing: checkpoint True vs requested False (changes memory use only" in \
                capsys.readouterr().out
    assert same_weights(whole, tmp_path / "cut")
    with pytest.raises(ckpt.CheckpointError, match="model.freeze_exit_gate"):  # the model's other settings: refused
        cfg = ft_cfg(str(base_dir), data, 4)
        cfg.model.freeze_exit_gate = False
        fit(cfg, tmp_path / "cut", resume=True, progress=False)
