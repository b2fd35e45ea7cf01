"""Round 46 (answers): a unit in brackets after one number (ASDiv's gold `9 (apples)`) is dress, in a gold, a box,
after the phrase and after the marker alike; and true/false that end their clause are the answer a phrase states."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct


@pytest.mark.parametrize("gold", ["9 (apples)", "12 (cm)", "5.0 (dollars)", "9 (red apples)", "18 (\\text{dollars})",
                                  "12 (sq. ft.)", "6 (\\text{cm}^2)", "#### 9 (apples)", "\\boxed{9 (apples)}"])
def test_a_gold_with_its_unit_in_brackets_is_its_number(gold):
    """ASDiv stores every answer as `9 (apples)`: it was the text '9 (apples)' (`18 (\\text{dollars})` was '18 ()'),
    so a task built from it graded every completion wrong, even "The answer is 9 (apples).", which reads 9."""
    want = gold.split("(")[0].split("{")[-1].strip(" #")
    said = gold_answer(gold)
    assert is_correct(said, want) and to_plain(said) == to_plain(want), (gold, said)
    completion = f"So the answer is {want}."
    assert is_correct(extract_answer(completion), said), (gold, completion)


def to_plain(s: str) -> str:
    return str(float(s))


@pytest.mark.parametrize("said", ["\\boxed{18\\,(\\mathrm{cm})}", "\\boxed{18\\ (\\text{dollars})}",
                                  "\\boxed{18 (\\text{dollars})}", "\\boxed{18~(\\text{dollars})}",
                                  "The answer is $18\\ (\\text{dollars})$.", "The answer is 18 (\\text{dollars}).",
                                  "#### 18\\,(\\mathrm{cm})", "\\boxed{18 (apples)}", "The answer is 18 (apples).",
                                  "#### 18 (apples)", "\\boxed{\\$18 (\\text{dollars})}"])
def test_a_bracketed_unit_after_the_number_is_dress_in_a_box_and_after_the_phrase(said):
    """LaTeX's unit dropped from its brackets left them behind: `\\boxed{18\\,(\\mathrm{cm})}` was `18()` and
    `\\boxed{18 (\\text{dollars})}` `18 ()`, text wrong for the gold 18."""
    assert extract_answer(said) == "18", said
    assert is_correct(extract_answer(said), gold_answer("18 (dollars)"))


@pytest.mark.parametrize("said, want", [("\\boxed{(3, 5)}", "(3, 5)"), ("\\boxed{(x-3)(x+2)}", "(x-3)(x+2)"),
                                        ("\\boxed{f(x)}", "f(x)"), ("\\boxed{2(ab)}", "2(ab)"),
                                        ("\\boxed{3 (x)}", "3 (x)"), ("\\boxed{42 (or more)}", "42 (or more)"),
                                        ("\\boxed{[2, 5)}", "[2, 5)"), ("\\boxed{(B) 5}", "(B) 5"),
                                        ("\\boxed{x + 2 (cm)}", "x + 2 (cm)"), ("The answer is (3, 5).", "(3, 5)")])
def test_what_is_no_unit_in_brackets_is_kept(said, want):
    """A tuple, a product, a function, a one-letter bracket, a hedge, an interval, an AMC pair and an expression keep
    their brackets: only a unit word after one number is dress."""
    assert extract_answer(said) == want, said
    assert gold_answer(want) == want or "(or " in want  # ("42 (or more)" is prose as a gold: its number, as it was)


def test_a_long_box_ending_in_a_unit_is_read_quickly():
    """The unit is found from the end, with no scan over the box (a long run of spaces before it)."""
    assert extract_answer("\\boxed{18" + " " * 50_000 + "(apples)}") == "18"
    assert extract_answer("\\boxed{" + "1 " * 20_000 + "(apples)}") is not None


@pytest.mark.parametrize("said, want", [("91 = 7 * 13, so it is not prime.\nAnswer: False", "False"),
                                        ("The answer is False.", "False"), ("The answer is True.", "True"),
                                        ("Final answer: False", "False"), ("**Answer:** False", "False"),
                                        ("The answer is: true", "true"), ("The answer is true.", "true"),
                                        ("The final answer is True. I hope it is correct.", "True"),
                                        ("**Final answer:**\nTrue", "True"), ("The answer is false, since 91 = 7 * 13.",
                                                                              "false"),
                                        ("The answer is **True**.", "True"), ("#### False", "False"),
                                        ("\\boxed{False}", "False")])
def test_true_or_false_that_ends_its_clause_is_the_answer(said, want):
    """true/false were verdicts after every phrase ("the answer is correct"): "Answer: False" and Minerva's "The final
    answer is True. I hope it is correct." read as None, wrong for a True/False gold, while `#### False` was False."""
    assert extract_answer(said) == want, said
    assert is_correct(extract_answer(said), gold_answer(want.capitalize()))
    assert not is_correct(extract_answer(said), gold_answer("False" if want.lower() == "true" else "True"))


@pytest.mark.parametrize("said", ["So 6 * 7 = 42. The answer is correct.", "So 6 * 7 = 42. The answer is verified.",
                                  "Answer: 42\nso the answer is true to the question asked.",
                                  "The answer is 42, and the answer is true for every n.", "The answer is clear: 42."])
def test_verdicts_still_state_no_answer(said):
    """correct/verified judge, as do true/false with more words after them in their clause: the earlier phrase (or
    the number after the verdict's colon) is read."""
    assert extract_answer(said) == "42", said


def test_true_false_align_with_yes_no():
    """yes/no already answered ("The answer is No." is No); true/false now read the same way, in the same places."""
    minerva = "The final answer is {}. I hope it is correct."
    for yes, true in (("The answer is No.", "The answer is False."), ("Answer: yes", "Answer: true"),
                      (minerva.format("Yes"), minerva.format("True")), ("The answer is no.", "The answer is false.")):
        assert extract_answer(yes) is not None and extract_answer(true) is not None, (yes, true)
