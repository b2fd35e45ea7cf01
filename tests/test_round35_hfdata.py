"""Round 35, HF data: template files with a BOM, turn ends generation cannot stop at, hub-snapshot data folders,
examples past the position table, templates that write today's date, the Llama 3.1 reasoning advice, and minors."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.config import Config, ConfigError  # noqa: E402
from looplm.hf.chat import CHATML_TEMPLATE, DroppedPart, encode_chat, to_messages  # noqa: E402
from looplm.hf.data import build_examples, load_records  # noqa: E402
from looplm.hf.finetune import chat_template, load_tokenizer, no_stop  # noqa: E402
from looplm.hf.tokenizer import train_chat_tokenizer  # noqa: E402
from looplm.train import fit  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def _cfg(base, data, **data_kw):
    return Config.from_dict({"model": {"name_or_path": str(base)},
                             "data": {"source": str(data), "max_length": 256, **data_kw},
                             "train": {"steps": 2, "batch_size": 2, "threads": 1, "log_every": 1}})


def test_a_template_file_with_a_bom_is_read_without_it(tok, tmp_path):
    """Notepad's "UTF-8 with BOM": U+FEFF opened every example and every later prompt, and stayed in the
    checkpoint's template, for data.chat_template and the model folder's chat_template.jinja alike."""
    f = tmp_path / "bom.jinja"
    f.write_bytes(b"\xef\xbb\xbf" + CHATML_TEMPLATE.encode())
    assert chat_template(str(f)) == CHATML_TEMPLATE
    base = save_tiny_base(tmp_path / "base", tok)
    (base / "chat_template.jinja").write_bytes(b"\xef\xbb\xbf" + CHATML_TEMPLATE.encode())
    loaded = load_tokenizer(str(base))
    assert loaded.chat_template == CHATML_TEMPLATE
    text = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith("<|im_start|>user")


def test_a_turn_end_that_is_no_special_token_and_no_eos_is_noted(tok, tmp_path, capsys):
    """ChatML on a tokenizer without <|im_end|>: the reply ended in text pieces, never eos, and the fine-tune's
    generate() ran to max_new_tokens, without a word. Now a note (stop strings still stop such a model)."""
    text_end = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}[END]\n{% endfor %}"
                "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert "'[END]'" in no_stop(tok, text_end) and "special token" in no_stop(tok, text_end)
    with_eos = text_end.replace("[END]", "{{ eos_token }}")
    assert no_stop(tok, with_eos) is None
    base = save_tiny_base(tmp_path / "base", tok)
    data = write_jsonl(math_problems(4), tmp_path / "m.jsonl")
    fit(_cfg(base, data, chat_template=text_end), tmp_path / "r", progress=False)
    assert "note: the chat template ends an assistant turn with '[END]'" in capsys.readouterr().out
    fit(_cfg(base, data), tmp_path / "r2", progress=False)  # ChatML with <|im_end|> special: no note
    assert "note: the chat template" not in capsys.readouterr().out


def test_a_hub_snapshot_folder_is_read_by_split_as_datasets_reads_it(tmp_path):
    """`hf download openai/gsm8k --local-dir`: main/train-00000-of-00001.* beside main/test-...; read whole, its
    test split was trained on, data.split=train accepted in silence."""
    rows = math_problems(6)
    write_jsonl(rows[:4], tmp_path / "hub" / "main" / "train-00000-of-00001.jsonl")
    write_jsonl(rows[4:], tmp_path / "hub" / "main" / "test-00000-of-00001.jsonl")
    assert [r["question"] for r in load_records(str(tmp_path / "hub"))] == [r["question"] for r in rows[:4]]
    assert [r["question"] for r in load_records(str(tmp_path / "hub"), split="test")] == [
        r["question"] for r in rows[4:]]
    with pytest.raises(ValueError, match=r"split it as datasets.load_dataset does \(test: test-00000-of-00001.jsonl; "
                                         r"train: train-00000-of-00001.jsonl\); data.split='validation'"):
        load_records(str(tmp_path / "hub"), split="validation")
    # a folder whose names say no split is read whole, and takes no data.split (as before)
    write_jsonl(rows[:2], tmp_path / "plain" / "a.jsonl")
    write_jsonl(rows[2:], tmp_path / "plain" / "b.jsonl")
    assert len(load_records(str(tmp_path / "plain"))) == 6
    with pytest.raises(ValueError, match="read whole"):
        load_records(str(tmp_path / "plain"), split="test")


def test_examples_past_an_ouro_models_position_table_are_refused(tok, tmp_path):
    """The export path refused them (learned positions); Ouro's rotary ones ran on, untrained past the table."""
    base = save_tiny_base(tmp_path / "base", tok, max_position_embeddings=32)
    data = write_jsonl(math_problems(4), tmp_path / "m.jsonl")
    with pytest.raises(ConfigError, match=r"tokens but .* has 32 positions, and no example fits in them: the "
                                          "records are longer than the model can read"):
        fit(_cfg(base, data), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


DATED = ('{%- if not date_string is defined %}{%- set date_string = strftime_now("%H:%M:%S.%f") %}{%- endif %}'
         "<|im_start|>system\nToday: {{ date_string }}<|im_end|>\n" + CHATML_TEMPLATE)


def test_a_template_that_writes_todays_date_renders_a_fixed_one(tok):
    """Llama 3.2/3.3's templates write strftime_now when no date_string is given: the same data encoded on
    another day (here: another microsecond) was another digest, and a resume was refused as changed data."""
    convo = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    first = encode_chat(tok, convo, DATED)
    assert all(encode_chat(tok, convo, DATED) == first for _ in range(3))
    assert "Today: 26 Jul 2024" in tok.decode(first.input_ids)


# writes only the call of an assistant turn with tool_calls (Llama 3.1's does so), drops reasoning_content
CALLS_ONLY = ("{% for m in messages %}{% if m.tool_calls %}<call>{{ m.tool_calls[0].function.name }}"
              "{{ m.tool_calls[0].function.arguments | tojson }}</call>\n"
              "{% else %}<{{ m.role }}>{{ m.content }}</end>\n{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_the_reasoning_advice_is_tried_on_the_turn_it_is_about(tok):
    """On a turn with tool calls the template writes no content: "write it into the content as a <think> block,
    which this template keeps" (tested on a plain turn) led to a second refusal."""
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
    convo = [{"role": "user", "content": "Weather?"},
             {"role": "assistant", "content": "", "reasoning_content": "I should call the tool.", "tool_calls": [call]},
             {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "It is sunny."}]
    with pytest.raises(DroppedPart) as e:
        encode_chat(tok, convo, CALLS_ONLY)
    assert "reasoning_content" in str(e.value) and "which this template keeps" not in str(e.value)
    assert "moving the reasoning there does not help" in str(e.value)
    plain = [convo[0], {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Think."}]
    with pytest.raises(DroppedPart, match="which this template keeps"):
        encode_chat(tok, plain, CALLS_ONLY)


def test_sharegpt_records_are_named(tok):
    share = {"conversations": [{"from": "human", "value": "1+1?"}, {"from": "gpt", "value": "2"}]}
    with pytest.raises(ValueError, match="ShareGPT's from/value turns must become role/content"):
        to_messages(share, messages_field="conversations")
    with pytest.raises(ValueError, match="ShareGPT `conversations`"):
        build_examples([share], tok, 256)


def test_an_unclosed_think_block_is_refused():
    """Qwen3's template trained a truncated trace as an answer beside an empty <think></think> block."""
    convo = {"messages": [{"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "<think>I reason but never close. The answer is 4"}]}
    with pytest.raises(ValueError, match="opens a <think> block it never closes"):
        to_messages(convo)
    closed = json.loads(json.dumps(convo))
    closed["messages"][1]["content"] = "<think>I reason.</think>The answer is 4"
    assert to_messages(closed)


def test_train_chat_tokenizer_takes_texts_and_template_names():
    with pytest.raises(TypeError, match=r"iterable of texts .* got str; pass \[text\]"):
        train_chat_tokenizer("one long text", 400)
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string, got NoneType"):
        train_chat_tokenizer([None, "a"], 400)
    assert train_chat_tokenizer(["a b"], 300, chat_template="chatml").chat_template == CHATML_TEMPLATE
    with pytest.raises(ValueError, match="chatml or a Jinja template"):
        train_chat_tokenizer(["a b"], 300, chat_template="chatmll")


