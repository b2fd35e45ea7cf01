"""Round 35 (HF evaluation side): answers, a run's system prompt in analyze/eval-lm, a checkpoint shared without its
optimizer state or with an edited config, lm-eval's task patterns, and minor refusals."""

from __future__ import annotations

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct, to_number


@pytest.mark.parametrize("completion, gold", [
    ("\\boxed{x^{2}+7x+10}", "x^2+7x+10"),
    ("\\boxed{3x^2-5}", "3x^{2}-5"),
    ("\\boxed{\\frac{x^2}{2}}", "\\frac{x^{2}}{2}"),
    ("\\boxed{e^{x}}", "e^x"),
    ("\\boxed{\\pi r^{2}}", "\\pi r^2"),
    ("\\boxed{a_{1}}", "a_1"),
    ("The answer is $x^{2}+1$.", "x^2+1"),
])
def test_one_character_script_braced_or_bare_is_the_same(completion, gold):
    # `x^2` and `x^{2}` typeset the same, as `\sqrt2` and `\sqrt{2}` do: both spellings were graded different
    assert is_correct(extract_answer(completion), gold_answer(gold))


def test_scripts_still_differ_and_powers_still_compute():
    assert not is_correct(extract_answer("\\boxed{x^3}"), gold_answer("x^2"))
    assert not is_correct(extract_answer("\\boxed{a_{2}}"), gold_answer("a_1"))
    assert not is_correct(extract_answer("\\boxed{x^{12}}"), gold_answer("x^1"))
    assert to_number("2^{10}") == 1024 and to_number("2^10") == 1024
    assert is_correct(extract_answer("\\boxed{2^{10}}"), gold_answer("1024"))
    assert is_correct(extract_answer("\\boxed{x^{2}/3}"), gold_answer("x^2/3"))


# --- a fine-tune run: its system prompt, its checkpoint shared without trainer_state.pt or with an edited config ---
SYSTEM = "You are a math tutor."


@pytest.fixture(scope="module")
def ft(tmp_path_factory):
    pytest.importorskip("transformers")
    from looplm.cli import main

    from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks

    d = tmp_path_factory.mktemp("ft")
    tok = tiny_chat_tokenizer()
    base = save_tiny_base(d / "base", tok)
    data = write_jsonl(math_problems(6), d / "m.jsonl")
    y = d / "ft.yaml"
    y.write_text(f"model:\n  name_or_path: {base}\ndata:\n  source: {data}\n  max_length: 256\n"
                 f"  system_prompt: {SYSTEM}\nloops:\n  sampler: fixed\n  num_loops: 2\nreg:\n  kind: none\n"
                 "train:\n  steps: 1\n  batch_size: 2\n  threads: 1\n")
    assert main(["finetune", "--config", str(y), "--out", str(d / "run"), "--no-progress"]) == 0
    write_lm_eval_tasks(d / "tasks", write_jsonl(math_problems(3), d / "t.jsonl"), max_gen_toks=4)
    return {"dir": d, "run": d / "run", "data": data, "tok": tok, "tasks": d / "tasks", "yaml": y}


def _analyze(run, data, out):
    from looplm.cli import main

    return main(["analyze", str(run), "--data", str(data), "--depths", "1:2", "--n", "2", "--spectral-depths",
                 "none", "--no-plot", "--no-progress", "--out", str(out)])


def test_analyze_scores_a_finetune_with_its_system_prompt(ft, tmp_path, capsys):
    """The run trained every example with data.system_prompt; analyze scored prompts without it, with no word."""
    import json

    from looplm.hf.analysis import text_batch

    assert _analyze(ft["run"], ft["data"], tmp_path / "a") == 0
    assert "data.system_prompt" in capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "dynamics.json").read_text())
    _, with_prompt = text_batch(ft["tok"], str(ft["data"]), 2, 256, SYSTEM)
    _, without = text_batch(ft["tok"], str(ft["data"]), 2, 256)
    assert with_prompt["tokens"] > without["tokens"]
    assert res["data_stats"]["tokens"] == with_prompt["tokens"] and res["system_prompt"] == SYSTEM


def test_eval_lm_with_chat_template_gives_lm_eval_the_runs_system_prompt(ft, tmp_path, monkeypatch, capsys):
    import lm_eval

    from looplm.hf.lm_eval_depths import eval_depths

    seen, real = [], lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate",
                        lambda **kw: seen.append(kw.get("system_instruction")) or real(**kw))
    res = eval_depths(str(ft["run"] / "checkpoint"), ["tiny_math_mc"], [1], tmp_path / "e",
                      include_path=str(ft["tasks"]), limit=1, apply_chat_template=True, batch_size=1)
    assert seen == [SYSTEM] and res["settings"]["system_instruction"] == SYSTEM
    assert "data.system_prompt" in capsys.readouterr().out


def _slim(ft, tmp_path):
    """The run as shared: its checkpoint without the optimizer state."""
    import shutil

    run = tmp_path / "slim"
    shutil.copytree(ft["run"], run)
    (run / "checkpoint" / "trainer_state.pt").unlink()
    return run


def test_a_checkpoint_without_its_trainer_state_is_read_but_not_resumed(ft, tmp_path, capsys):
    """Dropping trainer_state.pt (the optimizer, 2x the weights) before sharing made eval-lm, analyze, the adapter and
    finetune from it say the checkpoint was damaged ("missing (listed in manifest.json)")."""
    from looplm.cli import main
    from looplm.hf.lm_eval_adapter import LoopedLM

    run = _slim(ft, tmp_path)
    assert _analyze(run, ft["data"], tmp_path / "a") == 0
    LoopedLM(pretrained=str(run / "checkpoint"), num_loops=1, device="cpu", dtype="float32")
    assert main(["finetune", "--config", str(ft["yaml"]), "--out", str(tmp_path / "r2"), "--no-progress",
                 "--set", f"model.name_or_path={run / 'checkpoint'}"]) == 0
    capsys.readouterr()
    assert main(["finetune", "--config", str(ft["yaml"]), "--out", str(run), "--resume", "--no-progress",
                 "--set", "train.steps=2"]) == 2
    assert "trainer_state.pt is missing" in capsys.readouterr().err


def test_an_edited_config_is_said_to_be_edited_not_corrupted(ft, tmp_path, capsys):
    import shutil

    run = tmp_path / "ed"
    shutil.copytree(ft["run"], run)
    f = run / "checkpoint" / "config.json"
    f.write_text(f.read_text().replace('"early_exit_threshold": 1.0', '"early_exit_threshold": 0.5'))
    assert _analyze(run, ft["data"], tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "changed since the checkpoint was written" in err and "--exit-threshold" in err
    assert "corrupted" not in err and len(err.strip().splitlines()) == 1


def test_eval_lm_expands_lm_evals_task_patterns_and_takes_a_list_of_task_folders(ft, tmp_path, capsys):
    """`--tasks "tiny_math_*"` (lm-eval's shell-style pattern) was an unknown task; include_path=[folder] (lm-eval's
    TaskManager takes a list) a raw pathlib TypeError."""
    from looplm.cli import main
    from looplm.hf.lm_eval_depths import eval_depths

    assert main(["eval-lm", str(ft["run"]), "--tasks", "tiny_math_*", "--include-path", str(ft["tasks"]),
                 "--depths", "1", "--limit", "1", "--out", str(tmp_path / "e")]) == 0
    assert "tiny_math_gen, tiny_math_mc" in capsys.readouterr().out
    import json

    assert json.loads((tmp_path / "e" / "eval_lm.json").read_text())["tasks"] == ["tiny_math_gen", "tiny_math_mc"]
    res = eval_depths(str(ft["run"] / "checkpoint"), ["tiny_math_mc"], [1], tmp_path / "e2",
                      include_path=[str(ft["tasks"])], limit=1, batch_size=1)
    assert res["include_path"] == str(ft["tasks"].resolve())  # one folder, recorded as --include-path is
    with pytest.raises(ValueError, match="include_path must be a folder"):
        eval_depths(str(ft["run"] / "checkpoint"), ["tiny_math_mc"], [1], tmp_path / "e3", include_path=[3])


def test_adapter_refuses_an_empty_num_loops(ft):
    """`num_loops=` (a sweep script's `num_loops=$N` with N unset) scored the default depth without a word."""
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import LoopedLM

    with pytest.raises(UserError, match="num_loops= has no value"):
        LoopedLM(pretrained=str(ft["run"] / "checkpoint"), num_loops="", device="cpu", dtype="float32")
