"""Round 38: an `<answer>` block read whole, DeepSeek's full-width special tokens, HTML `<sup>`/`<sub>`."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct


@pytest.mark.parametrize(("text", "gold", "right"), [
    ("<answer>C</answer>", "C", True),  # a choice letter was None
    ("<answer>(3, 5)</answer>", "(3,5)", True),  # a tuple was its last number, 5
    ("<answer>x^2+1</answer>", "x^2+1", True),
    ("<answer>\\sqrt{2}</answer>", "\\sqrt{2}", True),
    ("<answer>\\pi</answer>", "\\pi", True),
    ("<think>..</think><answer>\\sqrt{3}</answer>", "3", False),  # graded right for 3
    ("<answer>2\\pi</answer>", "2", False),
    ("<answer>10^{3}</answer>", "3", False),
    ("<answer>**18**</answer>", "18", True),
    ("<answer>18 dollars</answer>", "18", True),
    ("<answer>The answer is 18.</answer>", "18", True),  # prose in the block: read by the completion rules
    ("<answer>\\boxed{(3, 5)}</answer>", "(3,5)", True),
])
def test_answer_block_is_read_whole(text, gold, right):
    assert is_correct(extract_answer(text), gold_answer(gold)) is right


@pytest.mark.parametrize("text", ["#### 18<｜end▁of▁sentence｜>", "#### 18 <｜end▁of▁sentence｜>",
                                  "The answer is 18<｜end▁of▁sentence｜>",
                                  "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>The answer is 18."
                                  "<｜end▁of▁sentence｜>"])
def test_deepseek_special_tokens_are_left_out(text):
    assert extract_answer(text) == "18"


@pytest.mark.parametrize(("text", "want"), [
    ("The area is 18 cm<sup>2</sup>.", "18"),  # the tag ended the answer: 2
    ("The answer is 2<sup>10</sup> = 1024.", "1024"),
    ("The answer is 18 m<sup>2</sup>.", "18"),
    ("Water is H<sub>2</sub>O, so the answer is 7.", "7"),
])
def test_html_scripts_are_latex_scripts(text, want):
    assert extract_answer(text) == want
