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
