"""A special token's name inside a record's text (`<|im_end|>` in a question) is read by the tokenizer as that
token, a turn marker in the middle of a turn; the data line said nothing of it."""

import pytest

pytest.importorskip("transformers")

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
