"""Round-34 chat findings: the arguments-form probe reads the record's own calls, JSON-string arguments that
json.loads reads but are no JSON, a capitalised role beside null content, text between <think> blocks, and a
template name lm-eval never passes on."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import DroppedPart, encode_chat, to_messages  # noqa: E402

from .hf_fixtures import name_templates, save_tiny_base, tiny_chat_tokenizer  # noqa: E402

# DeepSeek's way with arguments (a string, concatenated) and Mistral's with ids (9 characters, else it raises)
IDS = ("{%- for m in messages %}{%- if m.role == 'assistant' and m.tool_calls %}{%- for tc in m.tool_calls %}"
       "{%- if tc.id is not defined or tc.id|length != 9 %}{{ raise_exception('Tool call IDs should be alphanumeric "
       "strings with length 9!') }}{%- endif %}{{ '<|im_start|>assistant\\n<call>' + tc.function.name + ' ' + "
       "tc.function.arguments + '</call><|im_end|>\\n' }}{%- endfor %}{%- else %}{{ '<|im_start|>' + m.role + '\\n'"
       " + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
       "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
# a template that takes arguments as an object only (it walks their items)
ITEMS = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}{% for tc in m.tool_calls or [] %}"
         "<call>{{ tc.function.name }}{% for k, v in tc.function.arguments.items() %} {{ k }}={{ v }}{% endfor %}"
         "</call>{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen3's assistant branch: the reasoning is what precedes the first </think> after its last <think>, the answer
# what follows the last </think>
QWEN3 = ("{% for m in messages %}{% if m.role == 'assistant' and '</think>' in m.content %}"
         "{% set r = m.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
         "{% set c = m.content.split('</think>')[-1].lstrip('\\n') %}"
         "<|im_start|>assistant\n<think>\n{{ r.strip('\\n') }}\n</think>\n\n{{ c }}<|im_end|>\n{% else %}"
         "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def call_record(arguments: str, call_id: str = "abc123def") -> dict:
    return {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}]},
        {"role": "tool", "content": "20C"}, {"role": "assistant", "content": "It is 20."}]}


def targets(tok, enc) -> str:
    return tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])


def test_the_arguments_probe_renders_the_records_own_calls(tok):
    """The probe was a call of looplm's own, with no id: a template that requires one failed on it, the failure
    counted as "writes arguments with tojson", the string became an object and the record, which the template
    renders as given, was refused ("can only concatenate str (not dict)"). Now the record's calls are the probe."""
    enc = encode_chat(tok, to_messages(call_record('{"city": "Paris"}')), IDS)
    assert targets(tok, enc) == '<call>get_weather {"city": "Paris"}</call><|im_end|>It is 20.<|im_end|>'
    # a template that fails on the strings but renders objects gets objects (the string's form is the question)
    enc = encode_chat(tok, to_messages(call_record('{"city": "Paris"}')), ITEMS)
    assert "<call>get_weather city=Paris</call>" in targets(tok, enc)


@pytest.mark.parametrize("arguments, said", [
    ('{"x": NaN}', "holds NaN, which is no JSON value"),
    ('{"x": [1, -Infinity]}', "holds -Infinity, which is no JSON value"),
    ('{"city": "A", "city": "B"}', 'has the key "city" twice in one object'),
    ('{"a": {"k": 1, "k": 2}}', 'has the key "k" twice in one object'),
])
def test_string_arguments_json_loads_reads_but_are_no_json_are_refused(arguments, said):
    """json.loads read NaN as a float (trained as `NaN`, no JSON, under tojson templates) and kept the last of two
    values of a key in silence."""
    with pytest.raises(ValueError) as e:
        to_messages(call_record(arguments))
    assert str(e.value).startswith(f"messages[1].tool_calls[0] has `arguments` whose JSON {said}")


def test_a_capitalised_role_beside_null_content_is_named_for_its_role():
    """`Assistant` with null content beside tool_calls was blamed on its content (the message for a missing
    `content`), not on its role's case as with `"content": ""`."""
    for content in (None, ""):
        record = call_record('{"city": "Paris"}')
        record["messages"][1].update(role="Assistant", content=content)
        with pytest.raises(ValueError, match=r"^messages\[1\]\.role 'Assistant': roles are lower case"):
            to_messages(record)


def test_text_between_think_blocks_is_not_called_reasoning(tok):
    """Qwen3's template keeps the first <think> block and what follows the last </think>: the answer between two
    blocks is dropped, rightly refused, but the message called it "the reasoning in the assistant's content"."""
    two = [{"role": "user", "content": "2+3?"},
           {"role": "assistant", "content": "<think>a</think>\n\n#### 5\n<think>b</think>c"}]
    with pytest.raises(DroppedPart) as e:
        encode_chat(tok, two, QWEN3)
    said = str(e.value)
    assert said.startswith("the chat template drops the text outside the <think> blocks of an assistant's content "
                           "(before the last </think>): '#### 5' is not in the conversation it renders")
    assert "one <think>...</think> block at the start of its content" in said
    assert "reasoning in the assistant's content (its <think> block)" not in said
    # the second block's reasoning, said as in a content with two blocks
    two[1]["content"] = "<think>a</think><think>b</think>c"
    with pytest.raises(DroppedPart, match=r"drops the reasoning in an assistant's content with 2 <think> blocks: "
                                          r"'b' is not"):
        encode_chat(tok, two, QWEN3)
    # one block is kept whole, as before
    enc = encode_chat(tok, [two[0], {"role": "assistant", "content": "<think>a</think>\n\n#### 5"}], QWEN3)
    assert targets(tok, enc) == "<think>\na\n</think>\n\n#### 5<|im_end|>"


def test_lm_eval_says_it_does_not_pass_the_template_name_on(tok, tmp_path):
    """`--apply_chat_template rag` on a tokenizer with named templates (none "default") was told "which to use is
    not said": the user said it, but lm-eval checks the name and never passes it to the tokenizer."""
    from looplm.errors import UserError
    from looplm.hf.lm_eval_adapter import LoopedLM

    m = save_tiny_base(tmp_path / "m", tok)
    name_templates(m)
    with pytest.raises(UserError) as e:
        LoopedLM(pretrained=str(m), device="cpu").apply_chat_template([{"role": "user", "content": "hi"}])
    said = str(e.value)
    assert "does not pass a name given to --apply_chat_template on to the tokenizer" in said
    assert "which to use is not said" not in said and "write the one to use to chat_template.jinja" in said
    assert json.loads((m / "tokenizer_config.json").read_text())["chat_template"][0]["name"] == "rag"
