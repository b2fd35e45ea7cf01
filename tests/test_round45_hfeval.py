"""Round 45, HF eval (probe round 43): use_weighted_exit had no accepted place (a task's generation_kwargs were sent
to model_args, which refused it), eval-lm named model_args it does not have, a fine-tune run without checkpoint/ was
"not a Hugging Face model directory", a task YAML file was an "unknown task", the prompts-cut note blamed the model's
positions for the caller's max_length, and `--include-path a,b` did not say the option takes one folder."""

import shutil

import pytest

pytest.importorskip("transformers")
pytest.importorskip("lm_eval")

from looplm.errors import UserError  # noqa: E402

from . import hf_fixtures as hfx  # noqa: E402


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """A tiny Ouro base, lm-eval tasks over math problems, and a fine-tune run with two saved checkpoints."""
    from looplm.cli import main

    d = tmp_path_factory.mktemp("r45")
    base = hfx.save_tiny_base(d / "base", hfx.tiny_chat_tokenizer())
    data = hfx.write_jsonl(hfx.math_problems(4), d / "m.jsonl")
    hfx.write_lm_eval_tasks(d / "tasks", data, max_gen_toks=2)
    settings = {"model.name_or_path": base, "data.source": data, "data.max_length": 256, "loops.sampler": "fixed",
                "loops.num_loops": 1, "reg.kind": "none", "train.steps": 2, "train.batch_size": 2,
                "train.threads": 1, "train.checkpoint_every": 1, "train.keep_checkpoints": 3}
    (d / "ft.yaml").write_text("model:\n  name_or_path: base\n")
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--config", str(d / "ft.yaml"), *sets, "--out", str(d / "run"), "--no-progress"]) == 0
    return {"dir": d, "base": base, "tasks": d / "tasks", "run": d / "run"}


def _eval_lm(argv, capsys):
    from looplm.cli import main

    capsys.readouterr()
    rc = main(["eval-lm", *argv])
    return rc, capsys.readouterr()


def test_use_weighted_exit_is_a_model_arg_and_scores_the_weighted_logits(fx):
    """model_args use_weighted_exit was "not a setting of the looplm model", and a task's generation_kwargs were
    sent there: no way to score Ouro's weighted exit through lm-eval."""
    import torch

    from looplm.hf.lm_eval_adapter import LoopedLM

    lm = LoopedLM.create_from_arg_string(f"pretrained={fx['base']},num_loops=2,use_weighted_exit=True",
                                         {"device": "cpu"})
    assert lm._loop_kwargs()["use_weighted_exit"] is True
    ids = torch.tensor([[5, 6, 7, 8]])
    want = lm.model(ids, num_loops=2, use_weighted_exit=True).logits
    assert torch.equal(lm._model_call(ids), want)  # log-likelihoods are scored on the weighted logits
    assert not torch.equal(want, lm.model(ids, num_loops=2).logits)
    with pytest.raises(UserError, match="two exit rules"):  # the model set the threshold aside without a word
        LoopedLM.create_from_arg_string(f"pretrained={fx['base']},use_weighted_exit=True,exit_threshold=0.5",
                                        {"device": "cpu"})


def test_eval_depths_records_weighted_exit(fx, tmp_path, capsys):
    from looplm.hf.lm_eval_depths import eval_depths

    res = eval_depths(str(fx["base"]), ["tiny_math_mc"], [1, 2], tmp_path / "e", include_path=str(fx["tasks"]),
                      limit=2, batch_size=1, device="cpu", use_weighted_exit=True, exit_dtype="float32")
    assert res["settings"]["use_weighted_exit"] is True and res["settings"]["exit_dtype"] == "float32"
    assert "weighted exit" in capsys.readouterr().out
    rc, cap = _eval_lm([str(fx["base"]), "--tasks", "tiny_math_mc", "--include-path", str(fx["tasks"]), "--depths",
                        "1", "--limit", "1", "--out", str(tmp_path / "c"), "--use-weighted-exit",
                        "--exit-threshold", "0.5"], capsys)
    assert rc == 2 and "--use-weighted-exit and --exit-threshold are two exit rules" in cap.err


@pytest.mark.parametrize("extra", ["  use_weighted_exit: true\n", "  num_loops: 3\n  exit_dtype: float32\n"])
def test_a_tasks_loop_settings_name_eval_lms_own_options(fx, tmp_path, capsys, extra):
    """`looplm eval-lm` has no model_args, yet a task's generation_kwargs num_loops were sent there."""
    tasks = tmp_path / "t"
    shutil.copytree(fx["tasks"], tasks)
    gen = (tasks / "tiny_math_gen.yaml").read_text()
    (tasks / "tiny_math_gen.yaml").write_text(gen.replace("  do_sample: false\n", "  do_sample: false\n" + extra))
    rc, cap = _eval_lm([str(fx["base"]), "--tasks", "tiny_math_gen", "--include-path", str(tasks), "--depths", "1",
                        "--limit", "1", "--batch-size", "1", "--out", str(tmp_path / "e")], capsys)
    assert rc == 2 and "model_args" not in cap.err, cap.err
    want = "give --use-weighted-exit" if "weighted" in extra else "give --exit-dtype, --depths"
    assert want in cap.err, cap.err


def test_a_run_without_its_checkpoint_names_the_saved_ones(fx, tmp_path, capsys):
    """It was "not a Hugging Face model directory"; analyze, sweep and generate name the newest saved checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(fx["run"], run)
    shutil.rmtree(run / "checkpoint")
    argv = ["--tasks", "tiny_math_mc", "--include-path", str(fx["tasks"]), "--depths", "1", "--out",
            str(tmp_path / "e")]
    rc, cap = _eval_lm([str(run), *argv], capsys)
    assert rc == 2 and "is a run without a current checkpoint" in cap.err, cap.err
    newest = sorted((run / "checkpoints").iterdir())[-1]
    assert f"its newest saved checkpoint is {newest}" in cap.err, cap.err
    rc, cap = _eval_lm([str(run / "checkpoints"), *argv], capsys)
    assert rc == 2 and f"({newest.name}); give one of them (the newest: {newest})" in cap.err, cap.err


def test_a_task_yaml_file_is_a_task(fx, tmp_path, capsys):
    """lm-eval takes a task's YAML file; eval-lm called it an unknown task."""
    from looplm.hf.lm_eval_depths import eval_depths

    res = eval_depths(str(fx["base"]), [str(fx["tasks"] / "tiny_math_mc.yaml")], [1], tmp_path / "e", limit=1,
                      batch_size=1, device="cpu")
    assert res["tasks"] == ["tiny_math_mc"] and res["include_path"] == str(fx["tasks"].resolve())
    rc, cap = _eval_lm([str(fx["base"]), "--tasks", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "f")],
                       capsys)
    assert rc == 2 and "no such task file" in cap.err, cap.err


def test_prompts_cut_note_names_the_callers_max_length(fx, tmp_path, capsys):
    """The note blamed "the model's 40 positions" (it has 512) and advised a model with more."""
    from looplm.hf.lm_eval_depths import eval_depths

    eval_depths(str(fx["base"]), ["tiny_math_gen"], [1], tmp_path / "e", include_path=str(fx["tasks"]), limit=2,
                batch_size=1, device="cpu", max_gen_toks=8, model_kwargs={"max_length": 12})
    out = capsys.readouterr().out
    assert "model_kwargs max_length=12" in out and "a larger max_length" in out, out
    assert "more positions" not in out


def test_include_path_takes_one_folder(fx, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    rc, cap = _eval_lm([str(fx["base"]), "--tasks", "tiny_math_mc", "--include-path", f"{other},{fx['tasks']}",
                        "--out", str(tmp_path / "e")], capsys)
    assert rc == 2 and "takes one folder" in cap.err, cap.err
