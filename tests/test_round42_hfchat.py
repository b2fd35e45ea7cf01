"""Chat data: a special token's name inside a record's text (`<|im_end|>` in a question) is read by the tokenizer as
that token, a turn marker in the middle of a turn, and the data line said nothing of it; a Dolly record's `context`
was left out of its prompt; a template that is not prefix-stable (Qwen3's) was refused with no cause or way
forward."""

import pytest

pytest.importorskip("transformers")

from looplm.hf.chat import TemplateError, encode_chat  # noqa: E402
from looplm.hf.data import build_examples  # noqa: E402

from .hf_fixtures import math_problems, tiny_chat_tokenizer  # noqa: E402


def test_records_with_a_special_tokens_text_are_counted_and_named():
    tok = tiny_chat_tokenizer()
    recs = math_problems(4)
    recs[1] = {**recs[1], "problem": recs[1]["problem"] + " <|im_end|>"}
    recs[3] = {"messages": [{"role": "user", "content": "Say <|im_start|>."},
                            {"role": "assistant", "content": "<|im_start|>"}]}
    _, stats = build_examples(recs, tok, 512)
    assert (stats.special_text, stats.special_token) == (2, "<|im_end|>")
    assert stats.summary(512, "drop").endswith(
        "; 2 with a special token's text in a turn ('<|im_end|>': read as that token, not as text; edit those records "
        "if it is meant as text)")
    assert stats.to_json()["special_text"] == 2


def test_plain_records_get_no_such_note():
    _, stats = build_examples(math_problems(4), tiny_chat_tokenizer(), 512)
    assert stats.special_text == 0 and stats.summary(512, "drop") == "data: 4 of 4 records kept"


def test_a_dolly_records_context_is_joined_to_its_instruction():
    """Dolly's records are instruction / context / response: read by data.prompt_field=instruction, the passage in
    `context` was left out (Alpaca's `input` is joined), so "Summarize this." trained without what to summarize."""
    tok = tiny_chat_tokenizer()
    rows = [{"instruction": "Summarize the passage.", "context": "The quick brown fox jumps.", "response": "A fox.",
             "category": "summarization"},
            {"instruction": "What is 2 times 5?", "context": "", "response": "It is 10.", "category": "open_qa"}]
    examples, stats = build_examples(rows, tok, 256, fmt="prompt_response", prompt_field="instruction",
                                     response_field="response")
    texts = [tok.decode(e.input_ids) for e in examples]
    assert stats.kept == 2
    assert "Summarize the passage.\n\nThe quick brown fox jumps.<|im_end|>" in texts[0]
    assert "What is 2 times 5?<|im_end|>" in texts[1]


# Qwen3's rule, cut down: an empty thinking block only in the assistant turns after the last user turn
QWEN3_LIKE = ("{%- set ns = namespace(last=-1) %}{%- for m in messages %}{%- if m['role'] == 'user' %}"
              "{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}{%- for m in messages %}<|im_start|>"
              "{{ m['role'] }}\n{% if m['role'] == 'assistant' and loop.index0 > ns.last %}<think>\n\n</think>\n\n"
              "{% endif %}{{ m['content'] }}<|im_end|>\n{%- endfor %}"
              "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_text_and_the_ways_forward():
    tok = tiny_chat_tokenizer()
    convo = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
             {"role": "user", "content": "And times 3?"}, {"role": "assistant", "content": "12"}]
    with pytest.raises(TemplateError) as e:
        encode_chat(tok, convo, chat_template=QWEN3_LIKE)
    said = str(e.value)
    assert "'<think>\\n\\n</think>\\n\\n4<|im_end|>' becomes '4<|im_end|><|im_start|>user\\nAnd times 3?'" in said
    assert said.endswith("split such conversations into one record per assistant turn (each ending at it), or use a "
                         "template that writes earlier turns as it writes the last one")
    assert encode_chat(tok, convo[:2], chat_template=QWEN3_LIKE).n_targets > 0  # the first way forward works
