"""Round 36, HF data: Alpaca records' `input` in fine-tuning, local folders whose README.md names configs, the split
analyze reads, and conversations whose roles are ShareGPT's or Gemini's."""

import pytest

pytest.importorskip("transformers")

from looplm.hf.data import build_examples  # noqa: E402

from .hf_fixtures import tiny_chat_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def test_finetune_joins_an_alpaca_records_input_to_its_instruction(tok):
    """data.prompt_field=instruction / response_field=output (the pair looplm advises for Alpaca data) trained
    "Summarize the passage." -> summary without the passage; analyze joined it. Both read the prompt one way now."""
    rows = [{"instruction": "Summarize the passage.", "input": "The quick brown fox jumps.", "output": "A fox jumps."},
            {"instruction": "What is 2 times 5?", "input": "", "output": "It is 10."}]
    examples, stats = build_examples(rows, tok, 256, fmt="prompt_response", prompt_field="instruction",
                                     response_field="output")
    assert stats.kept == 2
    texts = [tok.decode(e.input_ids) for e in examples]
    assert "Summarize the passage.\n\nThe quick brown fox jumps.<|im_end|>" in texts[0]
    assert "What is 2 times 5?<|im_end|>" in texts[1]
    with pytest.raises(ValueError, match="input must be a string"):
        build_examples([{**rows[0], "input": 3}], tok, 256, prompt_field="instruction", response_field="output")
