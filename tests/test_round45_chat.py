"""Round 45 (from probe round 43, HF side): chat data and chat templates.

- a tokenizer without ChatML's tokens and without byte fallback (Unigram/Metaspace with <unk>) read `<|im_end|>` as
  <unk> pieces, and the last <unk> was taken for the template's turn end (generation stopped at every <unk>);
- LLaMA-Factory's Alpaca `system` and `history` were dropped without a note;
- to_messages/load_records took arguments of the wrong type (a raw torch error, a content of 5, None fields);
- OpenAI content parts were refused with an error cut mid-record;
- data.chat_template=default on a tokenizer with one template named no way out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import CHATML_TEMPLATE, TemplateError, end_of_turn_token, to_messages  # noqa: E402
from looplm.hf.data import load_records  # noqa: E402

LLAMA2 = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n"
          "<</SYS>>\n\n{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% elif m['role'] == "
          "'assistant' %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")


def unk_tokenizer():
    """A researcher's own Unigram/Metaspace tokenizer: specials <unk>, <s>, </s>, no byte fallback, no '|' or '<'."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [f"Sam has {i} apples and buys {i + 3} more. How many apples? First {i} + 3 = {i + 3}. #### {i + 3}"
             for i in range(60)]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"],
                                                           unk_token="<unk>", show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = LLAMA2
    return fast


def test_chatml_turn_end_as_unknown_token_is_refused_not_taken_for_the_turn_end():
    tok = unk_tokenizer()
    assert "<unk>" in tok.convert_ids_to_tokens(tok("<|im_end|>", add_special_tokens=False)["input_ids"])
    with pytest.raises(TemplateError, match=r"unknown token '<unk>'.*learn to end its replies with that token"):
        end_of_turn_token(tok, CHATML_TEMPLATE)  # (was 0, <unk>)
    # the tokenizer's own template: <unk> in its context ([INST]) is only read, and its turn end is </s>, spelled
    assert end_of_turn_token(tok) == tok.eos_token_id


def test_finetune_refuses_chatml_on_a_tokenizer_that_reads_its_turn_end_as_unk(tmp_path: Path):
    from .hf_fixtures import save_tiny_base

    tok = unk_tokenizer()
    save_tiny_base(tmp_path / "spm", tok, pad_token_id=None, bos_token_id=1, eos_token_id=2)
    rows = [{"question": f"Sam has {i} apples and buys 3 more. How many apples?", "answer": f"#### {i + 3}"}
            for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ft.yaml").write_text(f"model:\n  name_or_path: {tmp_path}/spm\ndata:\n  source: {tmp_path}/d.jsonl\n"
                                      "  prompt_field: question\n  response_field: answer\n  chat_template: chatml\n"
                                      "  max_length: 128\ntrain:\n  steps: 1\n  batch_size: 2\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "looplm", "finetune", "--config", str(tmp_path / "ft.yaml"), "--out",
                        str(tmp_path / "ft"), "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: data.chat_template='chatml': it ends an assistant turn with characters")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()


def test_llama_factory_system_and_history_are_earlier_turns():
    record = {"instruction": "What is 2+3?", "input": "", "output": "5", "system": "You are a tutor.",
              "history": [["What is 1+1?", "2"], ["And 2+2?", "4"]]}
    assert to_messages(record, prompt_field="instruction", response_field="output") == [
        {"role": "system", "content": "You are a tutor."},
        {"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And 2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]
    # the record's own system turn stands in place of data.system_prompt, as a conversation's does
    said = to_messages(record, prompt_field="instruction", response_field="output", system_prompt="Be brief.")
    assert said[0] == {"role": "system", "content": "You are a tutor."} and len(said) == 7
    # empty ones add nothing (a history that is no list is refused: tests/test_round46_chat.py)
    for extra in ({"history": [], "system": ""}, {"history": "", "system": None}):
        assert to_messages({"instruction": "q", "output": "a", **extra}, prompt_field="instruction",
                           response_field="output") == [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]
    with pytest.raises(ValueError, match=r"history\[0\] must be a \[user, assistant\] pair of strings"):
        to_messages({"instruction": "q", "output": "a", "history": [["only one"]]}, prompt_field="instruction",
                    response_field="output")


def test_llama_factory_history_is_trained_on(tmp_path: Path):
    from looplm.hf.data import build_examples

    from .hf_fixtures import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    record = {"instruction": "What is 2+3?", "output": "5", "history": [["What is 1+1?", "2"]]}
    (enc,), stats = build_examples([record], tok, 256, prompt_field="instruction", response_field="output")
    text = tok.decode(enc.input_ids)
    assert "What is 1+1?" in text and "What is 2+3?" in text
    targets = tok.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])
    assert targets.replace("<|im_end|>", "|") == "2|5|"


def test_api_argument_types_are_checked(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in range(4)))
    for seed in ("1", None, 1.5, True):
        with pytest.raises(TypeError, match=r"^seed must be an integer"):
            load_records(str(data), seed=seed, subset="random", max_samples=3)
    record = {"question": "q", "answer": "a"}
    with pytest.raises(TypeError, match=r"^system_prompt must be a str or None, got int 5"):
        to_messages(record, prompt_field="question", response_field="answer", system_prompt=5)
    with pytest.raises(TypeError, match=r"^prompt_field must be a str, got NoneType"):
        to_messages(record, prompt_field=None, response_field="answer")
    with pytest.raises(ValueError, match=r"^response_field must differ from prompt_field \(both 'question'\)"):
        to_messages(record, prompt_field="question", response_field="question")


def test_openai_content_parts_are_joined_and_other_parts_refused():
    record = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is "},
                                                        {"type": "text", "text": "1+1?"}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "2"}]}]}
    assert to_messages(record) == [{"role": "user", "content": "What is 1+1?"}, {"role": "assistant", "content": "2"}]
    record["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": "x.png"}})
    with pytest.raises(ValueError, match=r"^messages\[0\]\.content is a list of parts with one that is no text part "
                                         r".*write the content as one string"):
        to_messages(record)


def test_named_template_on_a_tokenizer_with_one_template():
    from looplm.config import ConfigError
    from looplm.hf.finetune import chat_template

    for name in ("default", "tool_use"):
        with pytest.raises(ConfigError, match=f"data.chat_template='{name}': the tokenizer has no named chat "
                                              "templates .* leave data.chat_template out to use its own template"):
            chat_template(name, None)
    assert chat_template("default", {"default": "{{ x }}"}) == "{{ x }}"
