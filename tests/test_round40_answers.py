"""Round 40: a superscript before a spaced minus (`x² - 1`), a variable minus a number (`x - 1`, `(x-3)(x+2)`) as the
expression it is, a function or indexed name set to the answer (`p(x) = ...`, `S_n = ...`), a currency in a box or an
`<answer>` block, and gpt-oss's (harmony) final channel."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct


def _right(text: str, gold: str) -> bool:
    return is_correct(extract_answer(text), gold_answer(gold))


@pytest.mark.parametrize(("text", "gold"), [
    ("\\boxed{x² - 1}", "x^2-1"),  # was 'x^{2}: 1' (the "word - 12" rewrite took x² for a word)
    ("The answer is x² - 1.", "x^2-1"),
    ("\\boxed{x³ - 1}", "x^3-1"),
    ("\\boxed{x² + 1}", "x^2+1"),
    ("\\boxed{x²-1}", "x^2-1"),
])
def test_a_superscript_before_a_spaced_minus_is_the_expression(text, gold):
    assert _right(text, gold)


@pytest.mark.parametrize(("text", "gold"), [
    ("The final answer is $x - 1$. I hope it is correct.", "x-1"),  # was -1
    ("The answer is n - 1.", "n-1"),
    ("Final Answer: The final answer is $a-2$. I hope it is correct.", "a-2"),
    ("The final answer is $(x-3)(x+2)$. I hope it is correct.", "(x-3)(x+2)"),
    ("The answer is (x - 1)(x + 1).", "(x-1)(x+1)"),
    ("The final answer is $x(x-1)$. I hope it is correct.", "x(x-1)"),
    ("The final answer is $(x-1)^2$.", "(x-1)^2"),
    ("The final answer is $-x - 1$.", "-x-1"),
    ("#### x - 1", "x-1"),
    ("#### x + 1", "x+1"),
    ("#### (x-3)(x+2)", "(x-3)(x+2)"),
    ("The answer is x − 1.", "x-1"),
    ("The final answer is $y = x - 1$. I hope it is correct.", "x-1"),
    ("The answer is $|x - 1|$.", "|x-1|"),
    ("\\boxed{x - 1}", "x-1"),
])
def test_a_variable_minus_a_number_is_the_expression(text, gold):
    assert _right(text, gold)


@pytest.mark.parametrize("text", ["The final answer is $x - 1$. I hope it is correct.", "#### x - 1",
                                  "The answer is (x-1)(x+1)."])
def test_a_variable_minus_a_number_is_no_negative_number(text):
    assert not _right(text, "-1")


@pytest.mark.parametrize(("text", "said"), [
    ("#### -5", "-5"), ("The answer is -3.", "-3"), ("The answer is x = -3.", "-3"), ("The answer is 5 - 3 = 2", "2"),
    ("#### x = 5", "5"),
])
def test_a_negative_number_stays_one(text, said):
    assert extract_answer(text) == said


@pytest.mark.parametrize(("text", "gold"), [
    ("\\boxed{p(x) = x^2 - 1}", "x^2-1"),
    ("\\boxed{f^{-1}(x) = \\frac{x-3}{2}}", "\\frac{x-3}{2}"),
    ("\\boxed{g(x)=\\sqrt{x}}", "\\sqrt{x}"),
    ("\\boxed{S_n = n^2}", "n^2"),
    ("\\boxed{a_{n+1} = 2a_n}", "2a_n"),
    ("The final answer is $p(x) = 2x^2 + 1$. I hope it is correct.", "2x^2+1"),
    ("\\boxed{f(x, y) = x + y}", "x+y"),
    ("\\boxed{f(x) = 3}", "3"),
    ("\\boxed{y = x^2 - 1}", "x^2-1"),
])
def test_a_function_or_indexed_name_set_to_the_answer_is_set_aside(text, gold):
    assert _right(text, gold)


@pytest.mark.parametrize("text", ["\\boxed{€18}", "\\boxed{£18}", "\\boxed{¥18}", "\\boxed{₹18}", "\\boxed{18€}",
                                  "\\boxed{€ 18}", "<answer>€18</answer>", "<answer> 18 € </answer>", "#### €18",
                                  "The answer is €18."])
def test_a_currency_in_a_box_or_block_is_dress(text):
    assert _right(text, "18")


def test_a_currency_in_a_box_with_groups():
    assert extract_answer("\\boxed{£1,200}") == "1200"
    assert extract_answer("\\boxed{-€5}") == "-5"


@pytest.mark.parametrize("text", [
    "<|channel|>analysis<|message|>Maybe it is \\boxed{20}? No: 9*2 = 18.<|end|><|start|>assistant<|channel|>final"
    "<|message|>The answer is 18.<|return|>",  # was 20 (the analysis channel's box)
    "<|start|>assistant<|channel|>analysis<|message|>\\boxed{20}?<|end|><|start|>assistant<|channel|>final"
    "<|message|>#### 18",
    "analysisMaybe it is \\boxed{20}? No: 9*2 = 18.assistantfinalThe answer is 18.",  # special tokens stripped
    "<think>\\boxed{20}</think><|channel|>analysis<|message|>\\boxed{20}<|end|><|channel|>final<|message|>18",
])
def test_gpt_oss_final_channel_is_read_after_its_analysis(text):
    assert extract_answer(text) == "18"


def test_assistantfinal_is_a_marker_only_after_an_analysis_channel():
    # prose that happens to hold the word is no harmony output: its box is read
    assert extract_answer("The word assistantfinal is odd. \\boxed{20}") == "20"
    assert extract_answer("I did some analysis here: \\boxed{20}. assistantfinal output: 18") == "20"
