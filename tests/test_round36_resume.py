"""Round 36, resume: a run in which a parameter never had a gradient resumes bitwise, files a user added to
checkpoint/ survive a resume, settings that do not change the training are said so, fit leaves the caller's RNG
as it was, and read-only commands need only the checkpoint files they read."""

from __future__ import annotations

import torch

from looplm import fit, load_config

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0}


def cfg_of(steps: int, **more) -> object:
    sets = {**TINY, "train.steps": steps, **more}
    return load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in sets.items()])


def test_a_run_whose_position_table_had_no_gradient_yet_resumes_bitwise(tmp_path):
    # truncated backprop (the last 2 loops) without injection: pos_emb gets a gradient only at steps that draw at
    # most 2 loops. The first step draws more, so AdamW held no state for it, and the strict trainer-state load
    # refused the resume; a later step does train it, with the step count of a run never interrupted
    from looplm.checkpoint import load_state

    bp = {"loops.backprop_loops": 2, "model.injection": "none"}
    fit(cfg_of(6, **bp), tmp_path / "whole", progress=False)
    fit(cfg_of(1, **bp), tmp_path / "cut", progress=False)
    assert "pos_emb.weight" not in load_state(tmp_path / "cut" / "checkpoint")["optimizer"]["state"]
    fit(cfg_of(6, **bp), tmp_path / "cut", resume=True, progress=False)
    a, b = (tmp_path / run / "checkpoint" for run in ("whole", "cut"))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert load_state(b)["optimizer"]["state"]["pos_emb.weight"]["step"] == 1


def test_a_trainer_state_that_does_not_list_a_parameter_is_still_refused():
    from looplm.train import _full_state, _load_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = _full_state(model, opt)[1]
    model.zero_grad(set_to_none=True)  # as a resume loads it
    _load_optimizer(model, torch.optim.AdamW(model.parameters()), state)  # whole: loads
    del state["state"]["1.bias"]
    fresh = torch.optim.AdamW(model.parameters())
    _load_optimizer(model, fresh, state)  # listed, no state: it never stepped, and stays so (no step count of 1)
    assert model[1].bias not in fresh.state and model[1].weight in fresh.state
    state["param_groups"][0]["params"].remove("1.bias")  # not listed at all: another model's state
    try:
        _load_optimizer(model, torch.optim.AdamW(model.parameters()), state)
    except RuntimeError as e:
        assert "Missing optimizer state for parameter '1.bias'" in str(e)
    else:
        raise AssertionError("a trainer state that does not list a parameter was loaded")


def test_files_a_user_added_to_the_checkpoint_survive_a_resume(tmp_path, capsys):
    run = tmp_path / "run"
    fit(cfg_of(2, **{"train.checkpoint_every": 1}), run, progress=False)
    (run / "checkpoint" / "README.md").write_text("# my model\n")  # a model card, before an upload
    (run / "checkpoint" / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (run / "checkpoint" / "card").mkdir()
    (run / "checkpoint" / "card" / "plot.png").write_bytes(b"png")
    capsys.readouterr()
    fit(cfg_of(4, **{"train.checkpoint_every": 1}), run, resume=True, progress=False)
    assert ("checkpoint holds files looplm did not write (.gitattributes, README.md, card/plot.png); each new "
            "checkpoint carries them over") in capsys.readouterr().out
    assert (run / "checkpoint" / "README.md").read_text() == "# my model\n"
    assert (run / "checkpoint" / ".gitattributes").read_text() == "*.safetensors filter=lfs\n"
    assert (run / "checkpoint" / "card" / "plot.png").read_bytes() == b"png"
    from looplm import checkpoint as ckpt

    ckpt.verify(run / "checkpoint")  # the manifest still lists only looplm's files, and they all check
    assert ckpt.saved_step(run / "checkpoint") == 4 and not (run / ckpt.HISTORY).exists()


def test_log_checkpoint_and_eval_settings_are_said_not_to_change_the_training(tmp_path, capsys):
    import pytest

    from looplm.train import Interrupted

    fit(cfg_of(4), tmp_path / "whole", progress=False)
    with pytest.raises(Interrupted):
        fit(cfg_of(4), tmp_path / "cut", progress=False, fault={"interrupt_at_step": 1})
    capsys.readouterr()
    other = {"train.log_every": 1, "train.checkpoint_every": 3, "train.keep_checkpoints": 2, "train.eval_every": 1,
             "train.eval_size": 8}
    fit(cfg_of(4, **other), tmp_path / "cut", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "resuming with changed settings; they do not change the training:" in out
    for key in other:
        assert f"{key}: checkpoint" in out
    assert "will differ" not in out
    a, b = (tmp_path / run / "checkpoint" / "model.safetensors" for run in ("whole", "cut"))
    assert a.read_bytes() == b.read_bytes()  # as said


def test_eval_settings_change_the_training_when_stop_at_acc_ends_it_on_their_score(tmp_path):
    from looplm.rundir import check_resume

    stop = {"train.stop_at_acc": 0.99, "train.eval_every": 1}
    fit(cfg_of(1, **stop), tmp_path / "run", progress=False)
    changed = check_resume(tmp_path / "run" / "checkpoint", cfg_of(1, **stop, **{"train.eval_size": 8}),
                           tmp_path / "run")
    assert changed == [("train.eval_size: checkpoint 256 vs requested 8", "differs")]


def test_fit_leaves_the_callers_random_state_as_it_was(tmp_path):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    fit(cfg_of(1), tmp_path / "a", progress=False)
    assert torch.equal(torch.get_rng_state(), before)  # a model built after fit was the same one fit after fit
    first = torch.randn(3)
    fit(cfg_of(1), tmp_path / "b", progress=False)
    assert not torch.equal(torch.randn(3), first)


def test_a_missing_bookkeeping_file_is_refused_with_a_way_forward(tmp_path):
    import json
    import shutil

    import pytest

    from looplm import checkpoint as ckpt

    fit(cfg_of(1), tmp_path / "run", progress=False)
    d = tmp_path / "run" / "checkpoint"
    listed = json.loads((d / ckpt.MANIFEST).read_text())["files"]
    gone = next(n for n in listed if n not in (ckpt.WEIGHTS, ckpt.CONFIG, ckpt.STATE))  # the tokenizer
    (d / gone).unlink()
    said = rf"{gone} \([^)]*\) is missing \(listed in manifest.json\); restore it, or copy the model's files "
    with pytest.raises(ckpt.CheckpointError, match=said + "without manifest.json to a folder of their own to use the "
                                                   "checkpoint without it"):
        ckpt.verify(d)
    copy = tmp_path / "copy"  # the way forward works
    shutil.copytree(d, copy, ignore=shutil.ignore_patterns(ckpt.MANIFEST))
    ckpt.load_model(copy)
