"""Bad inputs of the HF side said in one line: config text with a lone surrogate, parts of a conversation a chat
template drops (turns of any role, tool_calls of another shape, function_call, reasoning), an out-of-range
prefix_token_id, and lm-eval's hf model asked to load an Ouro model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import TemplateError, encode_chat, to_messages  # noqa: E402
from looplm.hf.data import build_examples  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ChatML that writes only the roles it knows (as Qwen2.5's drops `function`), and the assistant's content only
KNOWN = ("{% for m in messages %}{% if m.role in ['system', 'user', 'assistant', 'tool'] %}<|im_start|>{{ m.role }}"
         "\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def ft_yaml(base, data, **more) -> str:
    """A one-step finetune config; `more`'s data settings as JSON strings (YAML reads their escapes)."""
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in more.items())
    return (f"model:\n  name_or_path: {base}\ndata:\n  source: {data}\n  max_length: 64\n{extra}"
            "train:\n  steps: 1\n  batch_size: 2\n")


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


@pytest.fixture(scope="module")
def base(tmp_path_factory, tok):
    return save_tiny_base(tmp_path_factory.mktemp("refusals") / "base", tok)


def test_a_turn_of_a_role_the_template_drops_is_refused_whatever_the_role(tok):
    """Only system/developer/user/tool turns were checked: a `function` (OpenAI legacy), `ipython` (Llama) or
    `observation` turn the template dropped was trained on without a word."""
    for role in ("function", "ipython", "observation"):
        turns = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Checking."},
                 {"role": role, "content": "20 degrees"}, {"role": "assistant", "content": "It is 20."}]
        with pytest.raises(TemplateError, match=rf"drops the {role} turn \('20 degrees' .* writes {role} turns"):
            encode_chat(tok, turns, KNOWN)
        assert encode_chat(tok, turns).n_targets > 0  # ChatML writes every role


def test_tool_calls_that_are_no_list_of_objects_are_refused_with_the_record():
    """A JSON string or one object (stringified exports) passed the check, which marked lists only: every
    template dropped the call and the record was kept."""
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    for bad in ('[{"type": "function"}]', call, [call, "x"]):
        rec = {"messages": [{"role": "user", "content": "Weather?"},
                            {"role": "assistant", "content": "", "tool_calls": bad},
                            {"role": "tool", "content": "20"}, {"role": "assistant", "content": "It is 20."}]}
        with pytest.raises(ValueError, match=r"messages\[1\]\.tool_calls must be a list of objects"):
            to_messages(rec)
    rec["messages"][1]["tool_calls"] = None  # a parquet column's fill: absent
    assert to_messages(rec)
    rec["messages"][1]["function_call"] = '{"name": "get_weather"}'
    with pytest.raises(ValueError, match=r"messages\[1\]\.function_call must be an object \(name, arguments\)"):
        to_messages(rec)
    rec["messages"][1]["function_call"] = None
    assert to_messages(rec)


def test_a_function_call_or_reasoning_the_template_drops_is_refused(tok):
    """An assistant's `function_call` and `reasoning_content` were dropped by ChatML (and Qwen2.5's template) and
    the reply trained without them."""
    fc = {"role": "assistant", "content": "Let me check.",
          "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    with pytest.raises(ValueError, match=r"record 0: the chat template drops the function call .*'get_weather'.*"
                                         r"write it as `tool_calls`"):
        build_examples([{"messages": [{"role": "user", "content": "Weather?"}, fc,
                                      {"role": "assistant", "content": "It is 20."}]}], tok, 512)
    think = [{"role": "user", "content": "2+3?"},
             {"role": "assistant", "content": "#### 5", "reasoning_content": "2 and 3 make 5."}]
    with pytest.raises(TemplateError, match=r"drops the assistant.s reasoning \(`reasoning_content`\): .2 and 3 "
                                            r"make 5.. is not"):
        encode_chat(tok, think)
    # a template that writes it: the reasoning is trained on
    shown = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>"
             "{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    enc = encode_chat(tok, think, shown)
    assert "make 5" in tok.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])


def test_system_prompt_and_chat_template_with_a_lone_surrogate_are_one_line(base, tmp_path, capsys):
    """A lone surrogate in data.system_prompt or data.chat_template was the tokenizer's TypeError traceback."""
    from looplm.cli import main as cli

    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n')
    for key, value in (("system_prompt", "a\ud800b"), ("chat_template", "{% for m in messages %}\ud800{{ m.content }}"
                                                                         "{% endfor %}")):
        cfg = tmp_path / f"{key}.yaml"
        cfg.write_text(ft_yaml(base, data, **{key: value}))
        capsys.readouterr()
        assert cli(["finetune", "--config", str(cfg), "--out", str(tmp_path / key), "--no-progress"]) == 2
        assert f"data.{key} holds a lone surrogate escape" in capsys.readouterr().err
        assert not (tmp_path / key).exists()


def test_a_system_prompt_the_template_refuses_is_named_not_the_first_record(base, tmp_path, capsys):
    """A template that refuses system turns (Gemma 2's) named the first record, which had no system turn."""
    from looplm.cli import main as cli

    (tmp_path / "t.jinja").write_text("{% if messages[0].role == 'system' %}{{ raise_exception('System role not "
                                      "supported') }}{% endif %}" + KNOWN)
    data = tmp_path / "chat.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}\n')
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(ft_yaml(base, data, chat_template=str(tmp_path / "t.jinja"), system_prompt="Be brief."))
    capsys.readouterr()
    assert cli(["finetune", "--config", str(cfg), "--out", str(tmp_path / "ft"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.system_prompt: the chat template fails to render" in err and "chat.jsonl:1" not in err


def test_a_tokenizers_own_template_named_chatml_is_the_one_used(tok):
    from looplm.hf.finetune import chat_template

    assert chat_template("chatml", {"chatml": "{{ mine }}", "default": "x"}) == "{{ mine }}"
    assert "<|im_start|>" in chat_template("chatml", {"default": "x"})


def test_a_prefix_token_id_outside_the_vocabulary_is_one_line(base):
    """lm-eval's prefix_token_id passed through: 99999 was an IndexError in the embedding, -5 a TypeError in the
    tokenizer's decode, both tracebacks at the first rolling request."""
    pytest.importorskip("lm_eval")
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import LoopedLM

    for bad, said in ((99999, "99999"), (-5.0, "-5"), ("x", "'x'")):
        with pytest.raises(UserError, match=rf"prefix_token_id must be a token id of the tokenizer \(0\.\.319\), "
                                            rf"got {said}$"):
            LoopedLM(pretrained=str(base), device="cpu", prefix_token_id=bad)
    assert LoopedLM(pretrained=str(base), device="cpu", prefix_token_id=3).prefix_token_id == 3


def test_lm_evals_hf_model_on_an_ouro_model_says_to_use_the_looplm_model(base, tmp_path):
    """transformers said to upgrade it, which does not help."""
    pytest.importorskip("lm_eval")
    write_jsonl(math_problems(2), tmp_path / "math.jsonl")
    write_lm_eval_tasks(tmp_path / "tasks", tmp_path / "math.jsonl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "looplm.hf.lm_eval_adapter", "run", "--model", "hf", "--model_args",
                        f"pretrained={base}", "--tasks", "tiny_math_mc", "--include_path", "tasks", "--limit", "1",
                        "--device", "cpu"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("run it with --model looplm")


def test_config_values_of_the_wrong_type_name_their_field_and_a_stray_num_loops_is_read():
    """LooplmConfig(d_model="32") said "'>=' not supported between instances of 'str' and 'int'" (no field);
    OuroConfig(num_loops=8) was kept and ignored (the model ran total_ut_steps=4) without a word: it is now
    Ouro's total_ut_steps (round 46)."""
    from looplm.hf.configuration_ouro import OuroConfig
    from looplm.hf.looplm_hf import LooplmConfig

    for key, bad, kind in (("d_model", "32", "an integer"), ("bias", 1, "true or false"), ("dropout", "0", "a number")):
        with pytest.raises(ValueError, match=rf"^invalid looplm model config: {key} must be {kind}, got {bad!r}$"):
            LooplmConfig(**{key: bad})
    assert LooplmConfig(dropout=0).model_config().dropout == 0
    assert OuroConfig(num_loops=8).total_ut_steps == 8


def test_write_split_refuses_a_bool_count(tmp_path):
    from looplm.hf.mathdata import write_split

    with pytest.raises(ValueError, match="n_train must be a non-negative integer, got True"):
        write_split(tmp_path / "d", True, 2)
    assert not (tmp_path / "d").exists()


def test_the_load_check_runs_one_loop_whatever_the_configs_depth(tmp_path, monkeypatch):
    """The finite-logits check of a load ran the config's default depth: a model directory whose total_ut_steps is
    200000 (or an export with --loops 1000000) stalled eval-lm, analyze and finetune for minutes before any work."""
    from looplm.hf.finetune import load_pretrained
    from looplm.hf.modeling_ouro import OuroForCausalLM

    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    base = save_tiny_base(tmp_path / "m", tiny_chat_tokenizer(), total_ut_steps=200000)
    seen = []
    forward = OuroForCausalLM.forward
    monkeypatch.setattr(OuroForCausalLM, "forward", lambda self, *a, **k: seen.append(k.get("num_loops")) or
                        forward(self, *a, **k))
    load_pretrained(str(base))
    assert seen == [1]


# Llama 3.1's way with a turn that has tool_calls: only the call is written, not the assistant's text beside it
CALL_ONLY = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{{ m.tool_calls[0].function.name }}"
             "{{ m.tool_calls[0].function.arguments | tojson }}{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def test_an_assistants_text_the_template_drops_is_refused_with_the_record(tok):
    """The drop check marked every part of a conversation but the assistant's content: Llama 3.1's template writes
    only the call of a turn with tool_calls, and "Let me look that up." (OpenAI's, ToolACE's, Hermes' usual shape)
    was trained away without a word; so was a weight-0 assistant turn (context) that a template leaves out."""
    turns = [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": "Let me look that up.", "tool_calls": [CALL]},
             {"role": "tool", "content": "20 degrees"}, {"role": "assistant", "content": "It is 20."}]
    with pytest.raises(TemplateError, match=r"^record 0: the chat template drops the text of an assistant turn with "
                                            r"tool calls: 'Let me look that up.' is not in the conversation it "
                                            r"renders, .*writes an assistant's text beside its tool calls"):
        build_examples([{"messages": turns}], tok, 512, chat_template=CALL_ONLY)
    turns[1]["content"] = ""  # the call alone: the template writes all of it
    assert build_examples([{"messages": turns}], tok, 512, chat_template=CALL_ONLY)[1].kept == 1
    last_only = KNOWN.replace("{% if m.role in", "{% if (m.role != 'assistant' or loop.last) and m.role in")
    context = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Thinking.", "weight": 0},
               {"role": "user", "content": "And?"}, {"role": "assistant", "content": "4"}]
    with pytest.raises(TemplateError, match=r"drops the assistant turn \('Thinking.' is not in the conversation"):
        encode_chat(tok, context, last_only)


# DeepSeek-R1's assistant branch (Jan 2025), ChatML tags: only what follows </think> is written
R1 = ("{% for m in messages %}{% if m.role == 'assistant' %}{% set c = m.content %}{% if '</think>' in c %}"
      "{% set c = c.split('</think>')[-1] %}{% endif %}<|im_start|>assistant\n{{ c }}<|im_end|>\n{% else %}"
      "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
      "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def targets(tok, enc) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])


def test_reasoning_in_the_content_is_checked_in_its_think_structure(tok, tmp_path):
    """R1-style templates keep only what follows </think>: the drop check marked the whole content with one
    sentinel (no </think> in it), so records whose reasoning the template cut (a `messages` turn, an OpenR1
    `solution`) were trained and analyzed without it; and the refusal of a `reasoning_content` advised putting the
    reasoning in the content, the form those templates cut in silence."""
    from looplm.hf.data import load_records

    said = "<think>\n2 and 3 make 5.\n</think>\n\n#### 5"
    convo = {"messages": [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": said}]}
    f = write_jsonl([convo, {"problem": "What is 2+3?", "solution": said}], tmp_path / "think.jsonl")
    drops = (r"the chat template drops the reasoning in the assistant's content \(its <think> block\): '2 and 3 make "
             r"5\.' is not in the conversation it renders, .*keep only what follows </think>\), or remove the <think> "
             r"blocks to train on the answers alone$")
    with pytest.raises(TemplateError, match=rf"think\.jsonl:1: {drops}"):
        build_examples(load_records(str(f)), tok, 256, chat_template=R1)
    with pytest.raises(TemplateError, match=rf"think\.jsonl:1: {drops}"):  # the solution field too
        build_examples(load_records(str(write_jsonl([{"problem": "2+3?", "solution": said}], f))), tok, 256,
                       chat_template=R1)
    assert "2 and 3 make 5." in targets(tok, encode_chat(tok, convo["messages"]))  # ChatML writes it: target
    one = "<think>a</think>b"  # the structure, not the text: no white space around the pieces
    assert targets(tok, encode_chat(tok, [convo["messages"][0], {"role": "assistant", "content": one}])) == \
        one + "<|im_end|>"
    answer = {"messages": [convo["messages"][0], {"role": "assistant", "content": "#### 5"}]}
    assert build_examples([answer], tok, 256, chat_template=R1)[1].kept == 1
    answer["messages"][1]["reasoning_content"] = "2 and 3 make 5."
    with pytest.raises(TemplateError, match=r"drops the assistant's reasoning \(`reasoning_content`\).*; this template "
                                            r"also cuts a <think> block from the content, so moving the reasoning "
                                            r"there does not help$"):
        encode_chat(tok, to_messages(answer), R1)
    with pytest.raises(TemplateError, match=r"or write it into the content as a <think>\.\.\.</think> block before "
                                            r"the answer, which this template keeps$"):
        encode_chat(tok, to_messages(answer))


# Qwen2.5's and Llama 3.1's way with a call: `arguments | tojson`; DeepSeek's: the arguments string concatenated
TOJSON = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for c in m.tool_calls or [] %}"
          "<tool_call>{\"name\": \"{{ c.function.name }}\", \"arguments\": {{ c.function.arguments | tojson }}}"
          "</tool_call>{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
          "{% endif %}")
CONCAT = TOJSON.replace("{{ c.function.arguments | tojson }}}", "{{ '' + c.function.arguments }}}")


def test_openai_tool_calls_json_string_arguments_and_no_content(tok):
    """OpenAI's own format: a turn that only calls tools has `content` null (or none), refused as a malformed
    message; its `arguments` are a JSON string, which `| tojson` templates (Qwen2.5's, Llama 3.1's) wrote quoted and
    escaped, so the model learned double-encoded calls, while the refusal of a call without arguments offered "a
    JSON string"."""
    args = '{"city": "Paris", "days": 3}'
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}

    def rec(turn):
        return {"messages": [{"role": "user", "content": "Weather in Paris?"}, turn,
                             {"role": "tool", "tool_call_id": "call_1", "content": "20"},
                             {"role": "assistant", "content": "It is 20."}]}

    for turn in ({"role": "assistant", "content": "", "tool_calls": [call]},
                 {"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "assistant", "tool_calls": [call]}):
        assert to_messages(rec(turn))[1]["content"] == ""
        assert targets(tok, encode_chat(tok, to_messages(rec(turn)), TOJSON)).startswith(
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}</tool_call>')
        # a template that writes the string as it is keeps it; one that drops the call is still refused
        assert f"\"arguments\": {args}}}</tool_call>" in targets(tok, encode_chat(tok, to_messages(rec(turn)), CONCAT))
        with pytest.raises(TemplateError, match=r"drops the tool calls"):
            encode_chat(tok, to_messages(rec(turn)))
    for bad in ("Paris", "[1, 2]", ""):
        call["function"]["arguments"] = bad
        with pytest.raises(ValueError, match=r"^record 0: messages\[1\]\.tool_calls\[0\] has `arguments` that are a "
                                             r"string but no JSON object \(OpenAI's format"):
            build_examples([rec({"role": "assistant", "content": None, "tool_calls": [call]})], tok, 512)
    with pytest.raises(ValueError, match=r"must be an object with string `role` and `content`"):  # no calls: no text
        to_messages(rec({"role": "assistant", "content": None, "tool_calls": []}))


def test_reasoning_that_is_no_string_is_refused_with_the_record(tok):
    """A list, object or number under reasoning_content/reasoning/thinking passed the drop check (it marked strings
    only): ChatML dropped it, Qwen3's template wrote an empty think block."""
    for key in ("reasoning_content", "reasoning", "thinking"):
        for bad, shown in ((["2 and 3", "make 5"], r'\["2 and 3", "make 5"\]'), ({"text": "x"}, r'\{"text": "x"\}'),
                           (5, "5")):
            rec = {"messages": [{"role": "user", "content": "2+3?"},
                                {"role": "assistant", "content": "#### 5", key: bad}]}
            with pytest.raises(ValueError, match=rf"^record 0: messages\[1\]\.{key} must be a string \(the "
                                                 rf"assistant's reasoning\), got {shown}$"):
                build_examples([rec], tok, 512)
    rec["messages"][1]["thinking"] = None  # a parquet column's fill: absent
    assert to_messages(rec)


def test_record_shapes_no_template_can_write_name_the_record_not_the_template(tok):
    """`tool_calls: []` (JSON exports fill the key on plain turns) made Llama 3.1's template raise "only supports
    single tool-calls"; a call with `parameters` for `arguments` was "Undefined is not JSON serializable" (blamed
    on the template); a `function` given as a JSON string, or a call without a name, was dropped by ChatML unchecked
    (the check marks calls by their names), and so was a tool definition whose `function` is a string."""
    strict = CALL_ONLY.replace("{% if m.tool_calls %}", "{% if 'tool_calls' in m %}")  # any key is a call (Llama)
    plain = {"messages": [{"role": "user", "content": "2+3?"},
                          {"role": "assistant", "content": "#### 5", "tool_calls": []}]}
    assert "tool_calls" not in to_messages(plain)[1]
    assert build_examples([plain], tok, 512, chat_template=strict)[1].kept == 1

    def turn(call, key="tool_calls"):
        return {"messages": [{"role": "user", "content": "Weather?"},
                             {"role": "assistant", "content": "", key: [call] if key == "tool_calls" else call},
                             {"role": "tool", "content": "20"}, {"role": "assistant", "content": "It is 20."}]}

    fn = CALL["function"]
    for rec, said in (
            (turn({"type": "function", "function": {"name": "get_weather", "parameters": {"city": "Paris"}}}),
             r"messages\[1\]\.tool_calls\[0\] has `parameters` where a call has `arguments` \(.*\)"),
            (turn({"type": "function", "function": {"name": "get_weather"}}),
             r"messages\[1\]\.tool_calls\[0\] has no `arguments` \(an object, or a JSON string of one; \{\} for "
             r"none\)"),
            (turn({"type": "function", "function": json.dumps(fn)}),
             r"messages\[1\]\.tool_calls\[0\] has a `function` that is no object \(name, arguments\)"),
            (turn({"type": "function", "function": {**fn, "name": " "}}),
             r"messages\[1\]\.tool_calls\[0\] has no name \(a non-empty string\)"),
            (turn({"arguments": "{}"}, "function_call"), r"messages\[1\]\.function_call has no name \(.*\)"),
            ({**turn(CALL), "tools": [{"type": "function", "function": "get_weather"}]},
             r"tools\[0\] has a `function` that is no object \(name, parameters\)")):
        with pytest.raises(ValueError, match=rf"^record 0: {said}, got "):
            build_examples([rec], tok, 512)
    flat = turn({"name": "get_weather", "arguments": {"city": "Paris"}})  # the flat form is a call too
    assert to_messages({**flat, "tools": [{"name": "get_weather", "parameters": {}}]})


def test_a_template_that_drops_the_test_conversations_turn_says_it_was_the_test(tok):
    """analyze (and finetune) try the template on a two-turn conversation first: a template that drops the user
    turn was said as "'1' is not in the conversation it renders", the test's text taken for a record's."""
    from looplm.hf.chat import end_of_turn_token

    drop_user = KNOWN.replace("['system', 'user', 'assistant', 'tool']", "['assistant']")
    with pytest.raises(TemplateError, match=r"^on a test conversation \(user turn '1', assistant turn '2'\), the "
                                            r"chat template drops the user turn \('1' is not in"):
        end_of_turn_token(tok, drop_user)


def test_mathdata_refuses_a_seed_count_or_fraction_of_the_wrong_type(tmp_path):
    """seed=None drew other problems on every call (the docstring: the same for the same seed); max_gen_toks=True
    wrote a task of 1 token; fraction="0.5" was Python's TypeError; a test file that is no text was a raw
    UnicodeDecodeError."""
    from looplm.hf.mathdata import math_problems, write_lm_eval_task, write_split

    for seed in (None, "1", 1.0, True):
        with pytest.raises(ValueError, match=r"^seed must be an integer, got "):
            math_problems(1, seed=seed)
    import numpy as np

    assert math_problems(2, seed=np.int64(3)) == math_problems(2, seed=3)
    with pytest.raises(ValueError, match=r"^fraction must be a number between 0 and 1, got '0.5'$"):
        write_split(tmp_path / "d", 2, 2, fraction="0.5")
    train, test = write_split(tmp_path / "d", 2, 2)
    with pytest.raises(ValueError, match=r"^max_gen_toks must be a positive integer, got True$"):
        write_lm_eval_task(tmp_path / "t", test, max_gen_toks=True)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"bin.jsonl is not a text file of problems \(write it with write_split\)$"):
        write_lm_eval_task(tmp_path / "t", tmp_path / "bin.jsonl")
    assert not (tmp_path / "t").exists()
