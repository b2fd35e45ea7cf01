"""Round 36 (HF eval): special-token text and tags after an answer, one relation symbol however written, an empty
gold refused, and the adapter's chat prompt rendered as training rendered it (date, system prompt)."""

from __future__ import annotations

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct

# a decode() that keeps special tokens, and GRPO-style tags: the answer is 18 in each
TAGGED = ["#### 18<|im_end|>", "#### 18 <|im_end|>", "The answer is 18.<|im_end|><|endoftext|><|endoftext|>",
          "The answer is 18<|eot_id|>", "#### 18</s>", "Answer: 18</s>",
          "<reasoning>The answer is 18.</reasoning><answer>18</answer>",
          "<reasoning>the answer is 17</reasoning>\n<answer>18</answer>", "\\boxed{18}<|im_end|>",
          "Gemma says #### 18<end_of_turn>"]


@pytest.mark.parametrize("text", TAGGED)
def test_special_tokens_and_tags_end_the_answer(text: str) -> None:
    assert is_correct(extract_answer(text), gold_answer("18")), extract_answer(text)


def test_answer_block_is_the_answer() -> None:
    assert extract_answer("The answer is 17.\n<answer>18</answer>") == "18"  # the phrase before it was read: 17
    assert extract_answer("<answer>The answer is (3, 5)</answer><|im_end|>") == "(3, 5)"
    assert extract_answer("<answer></answer> so 12") == "12"  # an empty block is no answer: the text is read
    assert extract_answer("x < 5 and y > 3 so 7") == "7"  # a comparison is no tag


@pytest.mark.parametrize("pred, gold", [
    ("\\boxed{x \\leq 3}", "x \\le 3"), ("\\boxed{x \\le 3}", "x \\leq 3"), ("The answer is x ≤ 3.", "x \\leq 3"),
    ("\\boxed{x \\geq 3}", "x \\ge 3"), ("\\boxed{x\\geq2}", "x ≥ 2"), ("\\boxed{x \\neq 3}", "x \\ne 3"),
    ("\\boxed{x \\lt 3}", "x < 3"), ("\\boxed{x \\gt 3}", "x > 3")])
def test_one_relation_however_written(pred: str, gold: str) -> None:
    assert is_correct(extract_answer(pred), gold_answer(gold))


def test_different_relations_stay_different() -> None:
    assert not is_correct(extract_answer("\\boxed{x \\leq 3}"), gold_answer("x \\ge 3"))
    assert not is_correct(extract_answer("\\boxed{x \\ne 3}"), gold_answer("x \\le 3"))


@pytest.mark.parametrize("gold", ["", "   ", "#### ", "####"])
def test_empty_gold_refused(gold: str) -> None:
    with pytest.raises(ValueError, match="missing value"):
        gold_answer(gold)
    if "#" not in gold:  # is_correct reads a gold as given: blank is missing
        with pytest.raises(ValueError, match="missing value"):
            is_correct("18", gold)
