"""Round 39, HF eval and data: --apply-chat-template on a rolling-log-likelihood task (never applied, yet recorded),
a generation budget that leaves the prompts no room, Phi-3's eos after the last turn, data files in no split, a
JSON file of columns or splits, datasets' split slicing, a hub revision and a model folder as data.chat_template."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.config import ConfigError  # noqa: E402
from looplm.errors import UserError  # noqa: E402
from looplm.hf.data import load_records  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402

SYSTEM = "Be brief."
ROLLING = """task: tiny_roll
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: word_perplexity
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """A tiny base, a one-step fine-tune of it with a data.system_prompt, and lm-eval tasks (generation, choice,
    rolling log-likelihood) over math problems."""
    from looplm.cli import main

    from .hf_fixtures import write_lm_eval_tasks

    d = tmp_path_factory.mktemp("r39")
    base = save_tiny_base(d / "base", tiny_chat_tokenizer())
    data = write_jsonl(math_problems(4), d / "m.jsonl")
    settings = {"model.name_or_path": base, "data.source": data, "data.max_length": 256, "data.system_prompt": SYSTEM,
                "loops.sampler": "fixed", "loops.num_loops": 1, "reg.kind": "none", "train.steps": 1,
                "train.batch_size": 2, "train.threads": 1}
    (d / "ft.yaml").write_text("model:\n  name_or_path: base\n")
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--config", str(d / "ft.yaml"), *sets, "--out", str(d / "run"), "--no-progress"]) == 0
    write_lm_eval_tasks(d / "tasks", data, max_gen_toks=2)
    (d / "tasks" / "tiny_roll.yaml").write_text(ROLLING.format(data=data.resolve()))
    return {"dir": d, "base": base, "run": d / "run", "tasks": d / "tasks"}


def test_chat_template_on_a_rolling_task_is_said_unused_and_recorded_so(fx, tmp_path, capsys):
    """lm-eval scores a rolling log-likelihood on the raw document: the note said the run's system prompt "opens
    every prompt" and eval_lm.json recorded apply_chat_template True and the system instruction."""
    from looplm.hf.lm_eval_depths import eval_depths

    ckpt = str(fx["run"] / "checkpoint")
    res = eval_depths(ckpt, ["tiny_roll"], [1], tmp_path / "e", include_path=str(fx["tasks"]), limit=2,
                      batch_size=1, apply_chat_template=True, device="cpu")
    out = capsys.readouterr().out
    assert res["settings"]["apply_chat_template"] is None and res["settings"]["system_instruction"] is None
    assert "apply_chat_template was not used by tiny_roll" in out and "opens every prompt" not in out
    # beside a task that takes prompts: that one is templated, and the record names it
    res = eval_depths(ckpt, ["tiny_roll", "tiny_math_mc"], [1], tmp_path / "f", include_path=str(fx["tasks"]),
                      limit=1, batch_size=1, apply_chat_template=True, device="cpu")
    out = capsys.readouterr().out
    assert res["settings"]["apply_chat_template"] is True and res["settings"]["system_instruction"] == SYSTEM
    assert res["settings"]["chat_template_tasks"] == ["tiny_math_mc"]
    assert "opens every prompt of tiny_math_mc" in out and "not used by tiny_roll" in out


def test_generation_budget_advice_leaves_room_for_the_prompts(fx, tmp_path, capsys):
    """The refusal advised a budget "below 512"; 500 then cut every prompt to its last 12 tokens, unsaid."""
    from looplm.hf.lm_eval_depths import eval_depths

    kw = {"include_path": str(fx["tasks"]), "limit": 1, "batch_size": 1, "device": "cpu"}
    with pytest.raises(UserError, match=r"of at most (\d+), which leaves room for the task's longest prompt") as e:
        eval_depths(str(fx["base"]), ["tiny_math_gen"], [1], tmp_path / "e", max_gen_toks=100000, **kw)
    assert "below 512" not in str(e.value)


def test_prompts_cut_for_the_generation_budget_are_noted(fx, tmp_path, capsys):
    """A budget just below the positions had lm-eval keep each prompt's last 12 tokens, said only in its progress
    bar; the table looked normal."""
    from looplm.hf.lm_eval_depths import eval_depths

    kw = {"include_path": str(fx["tasks"]), "limit": 1, "batch_size": 1, "device": "cpu"}
    eval_depths(str(fx["base"]), ["tiny_math_gen"], [1], tmp_path / "f", max_gen_toks=500, **kw)
    out = capsys.readouterr().out
    assert "were cut from the left to the 12 positions the generation budget leaves" in out, out


PHI3 = ("{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + "
        "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + "
        "'<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
        "{% else %}{{ eos_token }}{% endif %}")


def test_text_after_the_last_turn_is_named_not_blamed_on_a_turn():
    """Phi-3's template writes eos_token after the conversation: refused as "turn 1 changes earlier text"."""
    from looplm.hf.chat import TemplateError, assistant_spans

    tok = tiny_chat_tokenizer()
    convo = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    with pytest.raises(TemplateError, match=r"writes '<\|endoftext\|>' after a conversation's last turn .*remove "
                                            r"that text from the template's end .*eos_token"):
        assistant_spans(tok, convo, PHI3)
    changing = "{% for m in messages %}{{ m['content'] + '|' + messages|length|string }}{% endfor %}"
    with pytest.raises(TemplateError, match=r"turn 1 changes earlier text"):  # a real change is said as before
        assistant_spans(tok, convo, changing)


def test_data_files_in_no_split_are_named(tmp_path, capsys):
    """extra.jsonl beside train.jsonl/test.jsonl was skipped without a word; beside eval_problems.jsonl (a test
    split), math_problems.jsonl was not named in the refusal; datasets' slicing was said as an unknown split."""
    rows = math_problems(6)
    write_jsonl(rows[:2], tmp_path / "sx" / "train.jsonl")
    write_jsonl(rows[2:4], tmp_path / "sx" / "extra.jsonl")
    write_jsonl(rows[4:], tmp_path / "sx" / "test.jsonl")
    assert len(load_records(str(tmp_path / "sx"))) == 2
    assert "extra.jsonl in no split" in capsys.readouterr().out


def test_the_refusal_of_an_absent_split_names_the_files_in_none(tmp_path):
    rows = math_problems(6)
    write_jsonl(rows[:4], tmp_path / "sy" / "math_problems.jsonl")
    write_jsonl(rows[4:], tmp_path / "sy" / "eval_problems.jsonl")
    with pytest.raises(ValueError, match=r"in no split: math_problems.jsonl\); data.split='train' is none of them"):
        load_records(str(tmp_path / "sy"))


def test_datasets_split_slicing_is_said_unsupported(tmp_path):
    write_jsonl(math_problems(2), tmp_path / "sx" / "train.jsonl")
    write_jsonl(math_problems(2, seed=1), tmp_path / "sx" / "test.jsonl")
    with pytest.raises(ValueError, match=r"slicing \(train\[:4\], train\+test\) is not read here: data.max_samples"):
        load_records(str(tmp_path / "sx"), split="train[:4]")


def test_a_json_file_of_columns_or_splits_is_said_as_such(tmp_path):
    rows = [{"question": r["question"], "answer": r["answer"]} for r in math_problems(3)]
    shapes = {"pandas": ({k: {str(i): r[k] for i, r in enumerate(rows)} for k in rows[0]}, "columns"),
              "lists": ({k: [r[k] for r in rows] for k in rows[0]}, "columns"),
              "splits": ({"train": rows[:2], "test": rows[2:]}, "splits")}
    for name, (data, what) in shapes.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"{name}.json: one JSON object of {what}"):
            load_records(str(tmp_path / f"{name}.json"))
    one = {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}
    (tmp_path / "one.json").write_text(json.dumps(one))  # one record as a file: read as before
    assert load_records(str(tmp_path / "one.json")) == [one]


def test_a_model_folder_as_chat_template_names_its_template_file(tmp_path):
    from looplm.hf.finetune import chat_template

    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match=r"is a folder: give its template file \(.*chat_template.jinja"):
        chat_template(str(tmp_path))
    (tmp_path / "chat_template.jinja").unlink()  # (round 45: a folder without one was told to give it)
    with pytest.raises(ConfigError, match=r"is a folder that holds no chat template"):
        chat_template(str(tmp_path))


def test_an_unreachable_hub_revision_is_named(monkeypatch):
    """model.revision=v1.0 for a model cached at main only: the refusal named the model, not the revision."""
    from looplm.hf.finetune import check_model_type

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^revision 'v1.0' of nobody-r39/none is neither"):
        check_model_type("nobody-r39/none", "v1.0")
