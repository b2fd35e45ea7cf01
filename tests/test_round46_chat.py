"""Round 46 (from probe round 44, HF side): chat data and chat templates.

- a chat template with no `add_generation_prompt` branch and an assistant header (`ASSISTANT: `) trained the header
  as part of every reply, without a note (generation prompts end before it);
- OpenAI Responses-API content parts (`input_text`, `output_text`) were refused as "no text part";
- LLaMA-Factory's `history` as one string and a `system` that is no string were dropped without a note;
- plain `{"text": ...}` records were told to check or rename fields they do not have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import TemplateError, encode_chat, end_of_turn_token, to_messages  # noqa: E402

NO_PROMPT = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}\n{% elif m['role'] == "
             "'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}")
# the same turns with the header written by the generation prompt: the target starts after it
WITH_PROMPT = NO_PROMPT + "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
# no generation prompt and no header: the reply follows the user turn's own end, so nothing is left out
NO_HEADER = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}\nASSISTANT:{% elif "
             "m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}")
CONVO = [{"role": "user", "content": "What is 9*2?"}, {"role": "assistant", "content": "18"},
         {"role": "user", "content": "And 9*3?"}, {"role": "assistant", "content": "27"}]


def _targets(tok, template: str) -> str:
    enc = encode_chat(tok, CONVO, template)
    return tok.decode([i for i, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != -100])


def test_a_header_the_generation_prompt_leaves_out_is_refused_not_trained():
    from .hf_fixtures import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer()
    eos = tok.eos_token
    for fn in (lambda: encode_chat(tok, CONVO, NO_PROMPT), lambda: end_of_turn_token(tok, NO_PROMPT)):
        with pytest.raises(TemplateError, match=r"writes no generation prompt .* opens an assistant turn with "
                                                r"'ASSISTANT: ', so that header would be trained .*add an "
                                                r"`\{% if add_generation_prompt %\}` branch"):
            fn()  # (was: "ASSISTANT: 18<eos>" the target)
    assert _targets(tok, WITH_PROMPT).replace(eos, "|") == "18|27|"
    assert _targets(tok, NO_HEADER).replace(eos, "|").replace(" ", "") == "18|27|"
    assert end_of_turn_token(tok, NO_HEADER) == tok.eos_token_id


def test_finetune_refuses_a_template_whose_header_the_generation_prompt_leaves_out(tmp_path: Path):
    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    (tmp_path / "t.jinja").write_text(NO_PROMPT)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"messages": CONVO}) + "\n" for _ in range(4)))
    (tmp_path / "ft.yaml").write_text(f"model:\n  name_or_path: {tmp_path}/base\ndata:\n  source: {tmp_path}/d.jsonl\n"
                                      f"  chat_template: {tmp_path}/t.jinja\n  max_length: 128\ntrain:\n  steps: 1\n"
                                      "  batch_size: 2\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "looplm", "finetune", "--config", str(tmp_path / "ft.yaml"), "--out",
                        str(tmp_path / "ft"), "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: data.chat_template=") and "'ASSISTANT: '" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()


def test_responses_api_text_parts_are_joined():
    record = {"messages": [
        {"role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "What is "}, {"type": "text", "text": "1+1?"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "2"}]}]}
    assert to_messages(record) == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What is 1+1?"},
                                   {"role": "assistant", "content": "2"}]
    image = {"messages": [{"role": "user", "content": [{"type": "input_image", "image_url": "x.png"}]},
                          {"role": "assistant", "content": "a"}]}
    with pytest.raises(ValueError, match=r"messages\[0\].content is a list of parts with one that is no text part"):
        to_messages(image)


def test_llama_factory_history_and_system_of_the_wrong_type_are_refused():
    fields = {"prompt_field": "instruction", "response_field": "output"}
    with pytest.raises(ValueError, match=r"^history must be a list of \[user, assistant\] pairs of strings .*got str "
                                         r"\"User: What is 1\+1\?"):
        to_messages({"instruction": "q", "output": "a", "history": "User: What is 1+1?\nAssistant: 2"}, **fields)
    with pytest.raises(ValueError, match=r"^system must be a string .*got int 5"):
        to_messages({"instruction": "q", "output": "a", "system": 5}, **fields)
    for extra in ({"history": "", "system": None}, {"history": None, "system": ""}):  # none: nothing is lost
        assert to_messages({"instruction": "q", "output": "a", **extra}, **fields) == [
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_plain_text_records_are_told_finetune_reads_no_plain_text():
    from looplm.hf.analysis import _fields
    from looplm.hf.data_hints import field_hint

    records = [{"text": "Sam has 2 apples and buys 3 more. #### 5"}, {"text": "Mia has 1 egg. #### 1"}]
    hint = field_hint(records, {})
    assert hint.startswith("the records are plain `text` (no prompt and reply)") and "data.task=text" in hint, hint
    assert "rename" not in hint and "check the records' shape" not in hint
    with pytest.raises(ValueError, match=r"plain `text`.*`looplm train` with data.task=text"):
        _fields(records[0])
    # a record with a prompt/response pair beside its text is read by the pair, not told about text
    assert _fields({"text": "x", "question": "q", "answer": "a"})["prompt_field"] == "question"
