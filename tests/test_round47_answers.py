"""Round 47: a word answer before a clause that opens with a number, a unit's negative power, a rate in LaTeX pieces,
an em dash after the answer, ordinal superscripts, and `C: 42` / `C — 42` as AMC pairs."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct


@pytest.mark.parametrize(("text", "want"), [
    ("Answer: Yes, 97 is prime.", "Yes"),  # each was the number of the next clause or sentence
    ("The answer is no, 91 is not prime.", "no"),
    ("The answer is no. 91 = 7 x 13.", "no"),
    ("Final answer: **No**, 91 = 7 × 13.", "No"),
    ("#### No, 91 = 7 x 13", "No"),
    ("The answer is True, 97 is prime.", "True"),
    ("Answer: False (91 = 7 × 13)", "False"),
    ("The answer is Yes; 97 is prime.", "Yes"),
    ("The answer is No — 91 = 7 x 13.", "No"),
    ("The answer is B (3 + 4 = 7).", "B"),
    ("The answer is B; 3 + 4 = 7.", "B"),
])
def test_a_word_that_ends_its_clause_is_the_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is thus, 42.", "42"),  # a lead-in word, a label or a number in brackets: the number, as before
    ("Answer: Well, 42", "42"),
    ("Answer: Total: 42", "42"),
    ("The answer is twelve (12).", "12"),
    ("It is 7. The answer is x (apples).", "7"),
    ("the answer is that we add 3 and 4, so 7", "3"),  # a documented heuristic, left alone
    ("The answer is True because 97 has no divisors.", "97"),  # true with more words in its clause judges (docs)
    ("The answer is 6 * 7 = 42. The answer is correct.", "42"),
])
def test_a_number_after_a_lead_in_or_label_is_still_read(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize(("text", "want"), [
    (r"\boxed{2\,\text{s}^{-1}}", "2"),  # 0.5: the unit's power was the number's
    (r"\boxed{9.8\,\text{m}\,\text{s}^{-2}}", "9.8"),
    (r"\boxed{1.5\,\text{g}\,\text{cm}^{-3}}", "1.5"),
    (r"\boxed{60\,\text{km}\,\text{h}^{-1}}", "60"),
    (r"<answer>2\,\text{s}^{-1}</answer>", "2"),
    (r"\boxed{2 \text{ s}^{-1}}", "2"),  # `2 ^{-1}`
    (r"\boxed{4\,\text{m}\,\text{s}^{2}}", "4"),
])
def test_a_units_negative_power_is_the_units(text, want):
    assert extract_answer(text) == want


def test_a_gold_with_a_units_negative_power():
    gold = gold_answer(r"2\,\text{s}^{-1}")
    assert gold == "2" and is_correct(extract_answer(r"\boxed{2}"), gold)
    assert not is_correct(extract_answer("The answer is 0.5"), gold)


@pytest.mark.parametrize("text", [
    r"\boxed{50 \text{ km}/\text{h}}", r"The answer is $50 \text{ km}/\text{h}$.",  # `50 /` (text)
    r"The final answer is $50\,\text{km}/\text{h}$. I hope it is correct.", r"\boxed{50\,\mathrm{km}/\mathrm{h}}",
    r"\boxed{50 \, \frac{\text{km}}{\text{h}}}", r"<answer>50 \text{ km}/\text{h}</answer>",
])
def test_a_rate_in_latex_pieces_is_its_number(text):
    assert extract_answer(text) == "50"


def test_other_rates_in_pieces_and_a_gold():
    assert extract_answer(r"\boxed{18 \text{ dollars}/\text{hour}}") == "18"
    assert extract_answer(r"\boxed{\$12/\text{hour}}") == "12"
    assert extract_answer(r"\boxed{0.5 \text{ m}/\text{s}^2}") == "0.5"
    assert gold_answer(r"50 \text{ km}/\text{h}") == "50"


@pytest.mark.parametrize("text", [
    "The answer is 18 — 9 eggs at $2 each.", "Answer: 18 — 9 eggs sold at $2 each", "#### 18 — 9 eggs at $2",
    "The answer is 18—9 eggs at $2.",  # each was `18 — 9`, a range
])
def test_an_em_dash_after_the_number_ends_its_clause(text):
    assert extract_answer(text) == "18"


def test_an_en_dash_between_numbers_is_still_a_range():
    assert extract_answer("The answer is 10 – 15.") == "10 – 15"
    assert extract_answer("#### 10–15") == "10-15"


@pytest.mark.parametrize(("text", "want"), [
    (r"\boxed{5^{\text{th}}}", "5"), (r"\boxed{21^{\text{st}}}", "21"),  # `5^{}`
    (r"The final answer is $5^{\text{th}}$.", "5"),
])
def test_an_ordinal_superscript_is_the_number(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("text", ["The answer is C: 42", "The answer is: C — 42"])
def test_a_choice_with_a_colon_or_em_dash_and_its_number_is_a_pair(text):
    said = extract_answer(text)  # `C` and `42`: each wrong for the other gold
    assert is_correct(said, "C") and is_correct(said, 42) and not is_correct(said, "B")
