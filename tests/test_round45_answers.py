"""Round 45 (probe round 43's HF answer findings 2 and 11): an AMC choice with its one number after the answer phrase
or the `####` marker (`The final answer is $\\textbf{(B)}\\ 5$`, "The answer is (C) 42.", `#### (B) 5`) was read as
its letter alone, wrong for a numeric gold (AMC23's answer column) while the same text in a box was right; and the
`B. 5` form was text in a box (right for neither B nor 5) and its letter alone after the phrase."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct

PAIRS = [
    ("Final Answer: The final answer is $\\textbf{(B)}\\ 5$. I hope it is correct.", "B", "5"),
    ("The answer is (C) 42.", "C", "42"),
    ("Answer: (C) 42", "C", "42"),
    ("#### (B) 5", "B", "5"),
    ("#### $\\textbf{(B)}\\ 5$", "B", "5"),  # (was 5: wrong for a gold B)
    ("#### B) 5", "B", "5"),
    ("The answer is **(C) 42**.", "C", "42"),
    ("The answer is $\\text{(C)}\\ 42$.", "C", "42"),
    ("The answer is (\\text{B})\\ 5.", "B", "5"),
    ("The answer is option (B) 5, since 5 > 4.", "B", "5"),
    ("The answer is (B) \\frac{3}{4}.", "B", "0.75"),
    ("The answer is C. 42", "C", "42"),
    ("#### C. 42", "C", "42"),
    ("\\boxed{B. 5}", "B", "5"),
    ("\\boxed{\\textbf{(B)}\\ 5}", "B", "5"),  # the box, as it was
]


@pytest.mark.parametrize(("text", "letter", "number"), PAIRS)
def test_an_amc_pair_matches_its_letter_or_its_number(text, letter, number):
    said = extract_answer(text)
    assert is_correct(said, gold_answer(number)), (text, said)
    assert is_correct(said, gold_answer(letter)), (text, said)
    assert is_correct(said, gold_answer(f"\\textbf{{({letter})}}\\ {number}")), (text, said)
    other = "A" if letter != "A" else "E"
    assert not is_correct(said, gold_answer(other)) and not is_correct(said, gold_answer("7")), (text, said)


@pytest.mark.parametrize(("gold", "right", "wrong"), [("B. 5", "(B) 5", "(C) 6"), ("B. 5", "5", "6"),
                                                      ("B. 5", "B", "C"), ("C. 42", "42", "D. 41")])
def test_a_gold_written_letter_period_number_is_the_pair(gold, right, wrong):
    assert is_correct(right, gold_answer(gold)) and not is_correct(wrong, gold_answer(gold))


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is (C).", "C"),  # a letter alone: as before
    ("The answer is B.", "B"),
    ("The answer is (C) 42 because 6 * 7 = 42.", "C"),  # more than the pair in its clause: the letter, as before
    ("The answer is (A) 2 or (B) 3.", "A"),
    ("The answer is (B) 5, 6.", "B"),  # a list after the letter is no pair
    ("The answer is C. 42 is too many.", "C"),
    ("The answer is (B) 2\\sqrt{3}.", "B"),
    ("The answer is B.5", "0.5"),  # no space after the period: a decimal, not a choice
    ("The answer is 2. 5 apples", "2"),  # a digit is no choice letter
    ("\\boxed{2. }", "2"),
    ("The answer is I. 5", "I"),  # only A-E with a period
])
def test_what_is_no_pair_reads_as_before(text, want):
    assert extract_answer(text) == want


def test_no_pair_form_is_a_number_nor_a_letter_it_does_not_state():
    assert not is_correct("B.5", gold_answer("B")) and not is_correct("F. 5", gold_answer("5"))
