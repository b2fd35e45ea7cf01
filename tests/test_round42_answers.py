"""Round 42 (probe round 40's HF answer findings): a degree mark with its scale's letter glued to it (`18°C`), an
expression in math with words after its `$` (`$x^2$ square units`), an expression of variables alone (`b - a`,
`y = -x`), a variable's equation then its value after a comma ("2x = 3, so x = 1.5"), and a gold whose marker or box
states no answer (`\\boxed{}`, `#### $$`)."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is 18°C.", "18"),  # each was the text `18C` (or `-4C`, `98.6F`, `** 18C`), wrong for a gold 18
    ("#### 18°C", "18"),
    ("\\boxed{18°C}", "18"),
    ("<answer>18°C</answer>", "18"),
    ("Answer: 18°C", "18"),
    ("**Final answer:** 18°C", "18"),
    ("The answer is **18°C**.", "18"),
    ("The answer is −4°C.", "-4"),
    ("#### 98.6°F", "98.6"),
    ("The answer is 18°C (64.4°F).", "18"),
    ("The answer is $18^{\\circ}C$.", "18"),
    ("The answer is 30°C, 150°C.", "30, 150"),  # two temperatures: the list, as `30^\circ,150^\circ` is
])
def test_a_degree_mark_takes_its_scales_letter(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("text", ["The answer is 18 °C.", "The answer is 18°.", "The answer is 18° C.",
                                  "The answer is 18°Celsius."])
def test_other_temperatures_still_read(text):
    assert extract_answer(text) == "18"


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is $x - 1$ dollars.", "x - 1"),  # each kept the words after its `$`: 'x - 1 dollars'
    ("The answer is $2n$ people.", "2n"),
    ("The answer is $n^2$ ways.", "n^2"),
    ("The answer is $x^2$ square units.", "x^2"),
    ("The answer is $6x$ dollars", "6x"),
    ("The answer is $x + 1$ apples", "x + 1"),
    ("The answer is $12 - x$ apples.", "12 - x"),
    ("The final answer is $x^2$ square units. I hope it is correct.", "x^2"),
    ("The answer is \\(x - 1\\) dollars.", "x - 1"),
    ("#### $x - 1$ dollars", "x - 1"),  # the marker's math read no expression at all: its last number, -1
    ("#### $2x + 3$", "2x + 3"),
])
def test_an_expression_in_math_ends_at_its_dollar(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is b - a.", "b - a"),  # each was None (no digit: no answer at all)
    ("The answer is y - x.", "y - x"),
    ("The answer is m - n.", "m - n"),
    ("The answer is y = -x.", "-x"),
    ("The answer is f(x) = -x.", "-x"),
    ("The answer is f(x) = x.", "x"),
    ("The answer is -x.", "-x"),
    ("The answer is x.", "x"),  # a letter, a word and prose read as they did
    ("The answer is yes.", "yes"),
    ("The answer is B because there are 4 choices.", "B"),
    ("The answer is a lot more than 5.", "5"),
    ("It is 7. The answer is a b c.", "7"),
    ("It is 7. The answer is x (apples).", "7"),
    ("The answer is no - wait, 5", "5"),
])
def test_an_expression_of_variables_alone_is_the_answer(text, want):
    assert extract_answer(text) == want
    assert is_correct(extract_answer(text), gold_answer(f"\\boxed{{{want}}}"))


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is 2x - 3 = 0, so x = 1.5", "1.5"),  # each was the whole clause, text
    ("The answer is 2x = 3, so x = 1.5", "1.5"),
    ("The answer is x + 2 = 4, so x = 2.", "2"),
    ("the answer is 4x - 8 = 0 so x = 2", "2"),  # (as without the comma it was)
    ("The answer is x = 5, y = 7.", "x = 5, y = 7"),  # two variables set: two answers, text
    ("The answer is x = 3 or x = -3.", "x = 3 or x = -3"),
    ("the answer is 5 + 3 = 8, so 8 * 2 = 16", "16"),
])
def test_one_variable_set_after_a_comma_is_the_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("gold", ["\\boxed{}", "Solution text.\n#### $$", "So \\boxed{ } is it.", "Work.\n#### **"])
def test_a_gold_whose_marker_or_box_states_none_is_refused(gold):
    with pytest.raises(ValueError, match="missing value"):  # was None: every prediction graded wrong
        gold_answer(gold)


def test_golds_that_state_an_answer_still_read():
    assert gold_answer("Work.\n#### 72") == "72" and gold_answer("\\boxed{B}") == "B"
    assert gold_answer("The answer is e^" * 3) is None  # no marker or box: nothing refused, as before


@pytest.mark.parametrize(("text", "want"), [
    ("Work.\n#### b - a", "b - a"),  # each was None: the marker read only numbers, words and choice letters
    ("Work.\n#### $b - a$", "b - a"),
    ("Work.\n#### y = -x", "-x"),
    ("Work.\n#### $y = -x$", "-x"),
    ("Work.\n#### f(x) = -x", "-x"),
])
def test_the_marker_reads_an_expression_of_variables_alone(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize(("text", "want"), [("#### Solution\nThe work.", None), ("#### B", "B"), ("#### x", "x"),
                                            ("#### A B\nThe work.", None), ("#### Step 1\n#### 42", "42")])
def test_marker_headings_choices_and_words_read_as_before(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("text", ["Work.\n#### x = 5, y = 7", "Work.\n#### x = 3 or x = -3"])
def test_the_marker_keeps_several_answers_whole(text):
    """Text, as after the phrase (the docs' `x = 5, y = 7`): the marker read none, and the last number, 7 or -3,
    was graded."""
    assert extract_answer(text) == text.split("#### ")[1]


@pytest.mark.parametrize("gold", ["<answer>18</answer>", "<think>9*2</think><answer>18</answer>", "<think>x</think>18",
                                  "18<|im_end|>", "18 <|eot_id|>", "18</s>", " <answer>18</answer>"])
def test_a_one_line_gold_with_tags_reads_as_a_completion_does(gold):
    """Each was a gold of its literal text (the plain one-line rule ran before the tag rules): no completion, not
    even the gold itself, matched it, and a write_lm_eval_task task of such golds scored every row 0."""
    assert gold_answer(gold) == "18"
    assert is_correct(extract_answer(gold), gold_answer(gold)) and is_correct("18", gold_answer(gold))


@pytest.mark.parametrize("gold", ["<answer></answer>", "<think>x</think>", "<|im_end|>"])
def test_a_gold_of_tags_alone_is_refused_as_missing(gold):
    with pytest.raises(ValueError, match="a missing value"):
        gold_answer(gold)
