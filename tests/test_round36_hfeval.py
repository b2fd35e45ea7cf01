"""Round 36 (HF eval): special-token text and tags after an answer, one relation symbol however written, an empty
gold refused, and the adapter's chat prompt rendered as training rendered it (date, system prompt)."""

from __future__ import annotations

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct

# a decode() that keeps special tokens, and GRPO-style tags: the answer is 18 in each
TAGGED = ["#### 18<|im_end|>", "#### 18 <|im_end|>", "The answer is 18.<|im_end|><|endoftext|><|endoftext|>",
          "The answer is 18<|eot_id|>", "#### 18</s>", "Answer: 18</s>",
          "<reasoning>The answer is 18.</reasoning><answer>18</answer>",
          "<reasoning>the answer is 17</reasoning>\n<answer>18</answer>", "\\boxed{18}<|im_end|>",
          "Gemma says #### 18<end_of_turn>"]


@pytest.mark.parametrize("text", TAGGED)
def test_special_tokens_and_tags_end_the_answer(text: str) -> None:
    assert is_correct(extract_answer(text), gold_answer("18")), extract_answer(text)


def test_answer_block_is_the_answer() -> None:
    assert extract_answer("The answer is 17.\n<answer>18</answer>") == "18"  # the phrase before it was read: 17
    assert extract_answer("<answer>The answer is (3, 5)</answer><|im_end|>") == "(3, 5)"
    assert extract_answer("<answer></answer> so 12") == "12"  # an empty block is no answer: the text is read
    assert extract_answer("x < 5 and y > 3 so 7") == "7"  # a comparison is no tag


@pytest.mark.parametrize("pred, gold", [
    ("\\boxed{x \\leq 3}", "x \\le 3"), ("\\boxed{x \\le 3}", "x \\leq 3"), ("The answer is x ≤ 3.", "x \\leq 3"),
    ("\\boxed{x \\geq 3}", "x \\ge 3"), ("\\boxed{x\\geq2}", "x ≥ 2"), ("\\boxed{x \\neq 3}", "x \\ne 3"),
    ("\\boxed{x \\lt 3}", "x < 3"), ("\\boxed{x \\gt 3}", "x > 3")])
def test_one_relation_however_written(pred: str, gold: str) -> None:
    assert is_correct(extract_answer(pred), gold_answer(gold))


def test_different_relations_stay_different() -> None:
    assert not is_correct(extract_answer("\\boxed{x \\leq 3}"), gold_answer("x \\ge 3"))
    assert not is_correct(extract_answer("\\boxed{x \\ne 3}"), gold_answer("x \\le 3"))


@pytest.mark.parametrize("gold", ["", "   ", "#### ", "####"])
def test_empty_gold_refused(gold: str) -> None:
    with pytest.raises(ValueError, match="missing value"):
        gold_answer(gold)
    if "#" not in gold:  # is_correct reads a gold as given: blank is missing
        with pytest.raises(ValueError, match="missing value"):
            is_correct("18", gold)


# a dated template as Llama 3.2/3.3's: the date given, else today's (strftime_now)
DATED = ("{%- if not date_string is defined %}{%- if strftime_now is defined %}"
         "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
         "{%- endif %}{%- endif %}{{ '<|im_start|>system\\nToday Date: ' + date_string + '<|im_end|>\\n' }}")
SYSTEM = "You are a careful math tutor."


@pytest.fixture(scope="module")
def dated(tmp_path_factory):
    """A fine-tune with a dated chat template and a data.system_prompt, and lm-eval tasks over its data."""
    pytest.importorskip("transformers")
    from looplm.cli import main
    from looplm.hf.chat import CHATML_TEMPLATE

    from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks

    d = tmp_path_factory.mktemp("dated")
    base = save_tiny_base(d / "base", tiny_chat_tokenizer(chat_template=DATED + CHATML_TEMPLATE))
    settings = {"model.name_or_path": base, "data.source": write_jsonl(math_problems(4), d / "m.jsonl"),
                "data.max_length": 256, "data.system_prompt": SYSTEM, "loops.sampler": "fixed", "loops.num_loops": 1,
                "reg.kind": "none", "train.steps": 1, "train.batch_size": 2, "train.threads": 1}
    (d / "ft.yaml").write_text("model:\n  name_or_path: base\n")
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--config", str(d / "ft.yaml"), *sets, "--out", str(d / "run"), "--no-progress"]) == 0
    write_lm_eval_tasks(d / "tasks", write_jsonl(math_problems(2), d / "t.jsonl"), max_gen_toks=2)
    return {"dir": d, "base": base, "run": d / "run", "tasks": d / "tasks"}


def test_adapter_renders_a_dated_template_with_the_training_date(dated):
    """Training renders chat.DATE; the adapter (and eval-lm, which loads it) rendered today's date."""
    from looplm.hf.chat import DATE
    from looplm.hf.lm_eval_adapter import LoopedLM

    lm = LoopedLM(pretrained=str(dated["base"]), num_loops=1, device="cpu", batch_size=1)
    prompt = lm.apply_chat_template([{"role": "user", "content": "What is 2+2?"}])
    assert f"Today Date: {DATE}<" in prompt, prompt


def test_adapter_command_gives_the_runs_system_prompt_and_training_date(dated, tmp_path):
    """`python -m looplm.hf.lm_eval_adapter run ... --apply_chat_template` scored a fine-tune without its
    data.system_prompt (eval-lm gives it) and under today's date: both now as in training, with a note."""
    import os
    import subprocess
    import sys

    from looplm.hf.chat import DATE

    out = tmp_path / "lo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "looplm",
                        "--model_args", f"pretrained={dated['run'] / 'checkpoint'},num_loops=1", "--tasks",
                        "tiny_math_mc", "--include_path", str(dated["tasks"]), "--limit", "1", "--device", "cpu",
                        "--batch_size", "1", "--apply_chat_template", "--log_samples", "--output_path", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data.system_prompt" in r.stdout
    samples = "".join(p.read_text() for p in out.rglob("samples_*.jsonl"))
    assert SYSTEM in samples and f"Today Date: {DATE}" in samples


def test_a_system_instruction_given_is_kept(dated, capsys):
    """The run's system prompt is lm-eval's system instruction only when none is given and the chat template is
    applied (plain-text prompts have no turns), for model_args as a dict or a string."""
    from looplm.hf.lm_eval_adapter import _with_run_system

    seen = []
    evaluate = _with_run_system(lambda **kw: seen.append(kw.get("system_instruction")))
    args = {"pretrained": str(dated["run"] / "checkpoint")}
    evaluate(model="looplm", model_args=args, apply_chat_template=True, system_instruction="Mine")
    evaluate(model="looplm", model_args=args, apply_chat_template=False, system_instruction=None)
    evaluate(model="looplm", model_args=f"pretrained={args['pretrained']},num_loops=1", apply_chat_template=True,
             system_instruction=None)
    evaluate(model="looplm", model_args={"pretrained": str(dated["base"])}, apply_chat_template=True,
             system_instruction=None)
    assert seen == ["Mine", None, SYSTEM, None]
    assert capsys.readouterr().out.count("data.system_prompt") == 1


def test_eval_depths_from_python_names_its_arguments(dated, tmp_path):
    """eval_depths() from Python named the command line's flags (--include-path, --exit-threshold)."""
    from looplm.errors import UserError
    from looplm.hf.lm_eval_depths import eval_depths

    with pytest.raises(UserError, match="^exit_dtype is the dtype of an exit rule: give exit_threshold too"):
        eval_depths(str(dated["base"]), ["tiny_math_mc"], [1], tmp_path / "e", exit_dtype="float32")
    with pytest.raises(UserError, match="^include_path .* is not a folder"):
        eval_depths(str(dated["base"]), ["tiny_math_mc"], [1], tmp_path / "e", include_path=str(tmp_path / "no"),
                    device="cpu")
