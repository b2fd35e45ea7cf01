"""GSM8K-style answer extraction (looplm.hf.answers needs no transformers)."""

from fractions import Fraction

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct, last_boxed, normalize, to_number


@pytest.mark.parametrize("text, want", [
    # The GSM8K marker wins, even with later numbers, commas, dollars and a trailing period.
    ("Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72", "72"),
    ("So the total is $1,234.\n#### $1,234.\n\nQuestion: next one has 99", "1234"),
    ("#### -17", "-17"),
    ("#### 0.50", "0.5"),
    # \boxed{} (the last one), nested braces and fractions.
    ("First \\boxed{3}, wait, actually \\boxed{5}.", "5"),
    ("The probability is \\boxed{\\frac{1}{4}}", "0.25"),
    ("\\boxed{ 1,000 }", "1000"),
    ("So x = \\boxed{x^2+1}", "x^2+1"),
    # "The answer is" phrases; the last one counts.
    ("I think the answer is 12. No: the final answer is 15 apples.", "15"),
    ("Answer: 3/4", "0.75"),
    # Fallback: the last number.
    ("He pays 5 + 3 = 8 dollars, then gets 2 back, so 6", "6"),
    ("50% of them", "50%"),  # a percent stays one: is_correct reads it as 50 or 0.5
    # a negative fraction, LaTeX's other fractions, its escaped percent, and the typographic minus sign
    ("\\boxed{-\\frac{1}{2}}", "-0.5"), ("\\boxed{\\dfrac12}", "0.5"), ("\\boxed{-\\tfrac{-3}{4}}", "0.75"),
    ("\\boxed{25\\%}", "25%"), ("It fell to \u22123 degrees. #### \u22123", "-3"),
    ("no digits here", None),
    ("", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_normalize_and_compare():
    assert normalize("1,234.50") == "1234.5" and normalize(" 7 ") == "7" and normalize("$5.") == "5"
    assert normalize("3/4") == "0.75" and normalize("abc.") == "abc"
    assert is_correct("72", "72.0") and is_correct("1,000", "1000") and is_correct("0.333333333", "1/3")
    assert not is_correct("71", "72") and not is_correct(None, "1") and not is_correct("1", None)
    assert is_correct("x^2+1", " x^2+1 ")
    assert gold_answer("Janet has 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18") == "18"
    assert last_boxed("\\boxed{a{b}c} and \\fbox{d}") == "d" and last_boxed("\\boxed{unclosed") is None


def test_what_a_grader_counts_right():
    """A gold `\\boxed{-\\frac{1}{2}}` stayed LaTeX text, so -0.5 scored 0; `#### 25%` scored wrong against GSM8K's
    unit-less `#### 25`; a typographic minus was read as a plus (−3 right for 3); and integers a million apart by
    one were equal within the relative tolerance."""
    assert is_correct(extract_answer("so #### -0.5"), gold_answer("Thus \\boxed{-\\frac{1}{2}}"))
    for said in ("So the discount is #### 25%", "The answer is 25%.", "\\boxed{25\\%}"):
        assert is_correct(extract_answer(said), gold_answer("#### 25")), said
    assert is_correct("25%", "0.25") and is_correct("25%", "25%") and not is_correct("25", "0.25")
    assert not is_correct(extract_answer("#### \u22123"), gold_answer("#### 3"))
    assert is_correct(extract_answer("#### \u22123"), gold_answer("#### -3"))
    assert not is_correct("999999", "1000000") and not is_correct("100000001", "100000000")
    assert is_correct("0.333333333", "1/3") and is_correct("1000000", "1,000,000.0")



def test_what_a_number_is_and_what_is_no_marker():
    """A Markdown heading `#### Step 1` (or a `####` in code) was the answer marker, ahead of a later box; a list
    `\\boxed{5, 7}` was glued into 57; `1.5e3`, `2^10`, `3:5` and `2:45 PM` were cut to their first number (3:5 was
    right for 3:4); a box's LaTeX (`1{,}000`, `10\\,000`, `42 \\text{ cm}`, `42^\\circ`, `3\\frac{1}{2}`) never matched
    the number; "the answer is 5 - 3 = 2" was 5."""
    gold = gold_answer("#### 42")
    for said in ("#### Step 1: add\n3 + 4 = 7\n#### Step 2: multiply\n7 * 6 = 42\n\\boxed{42}",
                 "## Solution\n#### Step 1\nWe compute 40 + 2 = 42.\nThe answer is 42.",
                 "```python\nprint('#### 7')\n```\nThe answer is 42", "The answer is 50 - 8 = 42.", "#### $42."):
        assert is_correct(extract_answer(said), gold), said
    # a grouped number kept its decimals only in a box (#### 1,234.5 was 1234), and a list after the marker or the
    # phrase was its first number
    assert extract_answer("#### 1,234.5") == extract_answer("So it costs $1,234.50.") == "1234.5"
    assert extract_answer("#### 5, 7") == extract_answer("The answer is 5, 7.") == "5, 7"
    assert extract_answer("The answer is 1{,}234") == "1234" and extract_answer("the answer is 3, and") == "3"
    for said, wrong in (("\\boxed{5, 7}", "#### 57"), ("#### 12,34", "#### 1234"), ("#### 1234", "#### 1,234.5"),
                        ("#### 5", "The answer is 5, 7"),
                        ("The answer is 1.5e3", "#### 1.5"),
                        ("#### 2^10", "#### 2"), ("The answer is 3:5", "#### 3:4"), ("#### 2:45 PM", "#### 2:30"),
                        ("the answer is 1,5", "#### 15"), ("The answer is 1.234,56", "#### 1.234")):
        assert not is_correct(extract_answer(said), gold_answer(wrong)), said
    for said, right in (("The answer is 1.5e3", "#### 1500"), ("#### 2^10", "#### 1024"),
                        ("#### 1.2 x 10^5", "#### 120000"), ("The answer is 2:30 PM.", "So at \\boxed{2:30}"),
                        ("\\boxed{1000}", "\\boxed{1{,}000}"),
                        ("\\boxed{10000}", "So \\boxed{10\\,000}."), ("\\boxed{42}", "\\boxed{42 \\text{ cm}}"),
                        ("\\boxed{42}", "\\boxed{42^\\circ}"), ("\\boxed{42}", "\\boxed{\\textbf{42}}"),
                        ("\\boxed{3.5}", "\\boxed{3\\frac{1}{2}}"), ("#### -0.75", "\\boxed{\\frac{3}{-4}}"),
                        ("#### -3.5", "\\boxed{-3\\frac{1}{2}}"), ("The answer is 1\u202f234", "#### 1,234")):
        assert is_correct(extract_answer(said), gold_answer(right)), said


def test_latex_outside_a_box_dates_mixed_numbers_and_the_next_line():
    """Outside a box `$\\frac{3}{4}$` was 3, `#### \\frac{3}{4}` a heading (4), `10\\,000` 10 and `#### 25\\%` 25;
    `1 234,5` (thin spaces) was 1234, `3/4/5` and the date `12/25/2023` 0.75 and 0.48, the mixed number `3 1/2`
    3; an answer on the line after "Answer:" or a bare `####` lost to a later number, and `x = 5, y = 7` was 7."""
    for said, gold in (("the answer is $\\frac{3}{4}$", "#### 0.75"), ("#### \\frac{3}{4}", "#### 0.75"),
                       ("the answer is $-\\frac{1}{2}$", "#### -0.5"), ("The answer is 10\\,000.", "#### 10000"),
                       ("#### 25\\%", "#### 0.25"), ("#### 3 1/2", "#### 3.5"),
                       ("the answer is 2 3/4 cups", "#### 2.75"),
                       ("The answer is:\n42\n\nIt took 3 steps.", "#### 42"),
                       ("**Final answer:**\n\n42 apples (after 3 days)", "#### 42"), ("#### \n42\nthen 3", "#### 42"),
                       ("\\boxed{3\\frac{1}{2}}", "#### 3 1/2"), ("#### 0.0000000001", "#### 1e-10")):
        assert is_correct(extract_answer(said), gold_answer(gold)), said
    for said, wrong in (("the answer is $\\frac{3}{4}$", "#### 3"), ("#### \\frac{3}{4}", "#### 4"),
                        ("The answer is 10\\,000.", "#### 10"), ("#### 1\u2009234,5", "#### 1234"),
                        ("#### 3/4/5", "#### 0.75"), ("the answer is 12/25/2023", "#### 0.48"),
                        ("#### 3 1/2", "#### 3"), ("#### 5 6/3", "#### 5"), ("Answer: x = 5, y = 7", "#### 7"),
                        ("#### 0.0000000001", "#### 0.1")):
        assert not is_correct(extract_answer(said), gold_answer(wrong)), said
    assert extract_answer("#### 3/4/5") == "3/4/5" and extract_answer("Answer: x = 5, y = 7") == "x = 5, y = 7"


def test_huge_exponents_are_text_and_never_built():
    """`#### 1e5000` raised Python's integer-string limit (ValueError), `1e400/3` an OverflowError in float(), and
    `1e999999999` computed for minutes: one such completion ended a whole eval-lm run."""
    for said in ("#### 1e5000", "the answer is 1e999999999", "#### 1e300^400", "#### 10^9999", "#### 1e-999"):
        got = extract_answer(said)
        assert got == said.split()[-1], said  # the text as written
        assert not is_correct(got, "1") and is_correct(got, got)
    third = extract_answer("#### 1e400/3")  # a number past a float: no OverflowError
    assert is_correct(third, gold_answer("#### 1e400/3")) and not is_correct(third, "1")
    assert is_correct("1e400/3", "1e400/3") and not is_correct("1e400/3", "1e400/7")
    assert is_correct(extract_answer("#### 2^-1000"), "2^-1000") and to_number("2^-1000") == Fraction(1, 2**1000)
    assert normalize("1e20/3") == "33333333333333333333.333333333333333"
    assert is_correct(extract_answer("1e20/3"), gold_answer("1e20/3"))
    # fifteen significant digits in all made 1234567890123456.5 the integer 1234567890123460 (and so "correct")
    assert normalize("1234567890123456.5") == "1234567890123456.5"
    assert not is_correct(extract_answer("#### 1234567890123456.5"), "1234567890123460")


def test_a_numbers_dress_units_with_powers_display_math_and_which_side_of_an_equals():
    """`#### **42**` (and `$-42$`, `(42)`, `+42`, `€42`, `####: 42`) lost to the text's last number; a box's unit
    with a power (`5\\text{ cm}^2`) was read as 25; display math or a list after "Answer:" was skipped or read as
    -42 or 1; `\\frac{ 3 }{ 4 }`, `\\frac 34`, `\\frac{3.5}{2}` and `\\frac{1,000}{4}` were read as their numerator
    (or 34); `2½`, `12 1/2%`, `50 percent`, `Answer: 45 = 15 * 3` and `3-1/2` were 2, 12.5, 50, 15 and 3; a
    non-integer within 1e-6 relative of an integer gold counted as it (1000000.9 for 1000000)."""
    right = [("Tom has 6 bags of 7 apples.\n#### **42**\nso 7 per bag", "42"), ("#### $-42$\nThen 7 more", "-42"),
             ("#### (42)\nso 7", "42"), ("#### `42`\nso 7", "42"), ("#### +42\nso 7", "42"), ("#### €42\nso 7", "42"),
             ("####: 42\nso 7", "42"), ("#### = 42\nso 7", "42"), ("So the area is \\boxed{5\\text{ cm}^2}.", "5"),
             ("\\boxed{12\\text{ cm}^3}", "12"), ("\\boxed{5 \\text{ m}^{2}}", "5"), ("\\boxed{5\\,\\mathrm{cm}}", "5"),
             ("\\boxed{5 \\mathrm{~cm}^2}", "5"), ("\\boxed{\\text{5}}", "5"), ("\\boxed{+5}", "5"),
             ("\\boxed{{5}}", "5"),
             ("The answer is:\n$$\n42\n$$\nCheck: 6*7=42, ok 7", "42"),
             ("The final answer is:\n\\[\n42\n\\]\nsince 7", "42"),
             ("Answer:\n- 42 apples\n", "42"), ("Answer:\n1. 42\n", "42"),
             ("The answer is $\\frac{ 3 }{ 4 }$.", "0.75"),
             ("The answer is $\\frac 34$.", "0.75"), ("The answer is $\\frac{3.5}{2}$.", "1.75"),
             ("The answer is $\\frac{1,000}{4}$.", "250"), ("\\boxed{\\displaystyle\\frac{1}{2}}", "0.5"),
             ("The answer is 2½ cups.", "2.5"), ("The answer is ½", "0.5"), ("The answer is 12 1/2%.", "0.125"),
             ("The answer is 50 percent.", "0.5"), ("Answer: 45 = 15 * 3", "45"), ("the answer is 5 - 3 = 2", "2")]
    for said, gold in right:
        assert is_correct(extract_answer(said), gold), said
    for said, wrong in (("So the area is \\boxed{5\\text{ cm}^2}.", "25"), ("The answer is $\\frac 34$.", "34"),
                        ("The answer is $\\frac{3.5}{2}$.", "3.5"), ("The answer is 2½ cups.", "2"),
                        ("Answer: 45 = 15 * 3", "15"), ("The answer is 3-1/2 cups.", "3"),
                        ("The answer is 2023-12-25.", "2023"),
                        ("Answer:\n1. 42\n", "1"), ("Answer:\n- 42 apples\n", "-42")):
        assert not is_correct(extract_answer(said), wrong), said
    assert not is_correct("1000000.9", "1000000") and is_correct("42.0", "42") and is_correct("0.3333333", "1/3")


def test_a_numeric_gold_is_its_own_answer():
    """A dataset's numeric answer column (AMC23's 27.0, SVAMP's ints) raised at `.strip()`, but only once a
    prediction held a number (a weak model hid it); gold_answer(27) was a TypeError."""
    assert is_correct(extract_answer("The answer is 27."), 27.0) and is_correct("27", 27) and not is_correct("26", 27)
    assert gold_answer(27.0) == "27" and gold_answer(0.5) == "0.5" and is_correct("1/2", 0.5)
    with pytest.raises(TypeError, match="an answer must be text or a number"):
        is_correct("1", [1])


def test_more_dress_more_phrases_text_in_a_box_and_sums():
    """`#### \\(42\\)`, `[42]`, `{42}`, `~42`, `₹42` lost to the last number, as did `**Answer**: 42` and "The
    correct answer is 42"; `\\boxed{B}` was wrong for a gold `\\boxed{\\text{B}}`; `#### 5 - 3`, `2**10`, `1_000`
    and "3 x 4" were read as their first number."""
    for said in ("#### \\(42\\)\nso 7", "#### \\[42\\]\nso 7", "#### {42}\nso 7", "#### [42]\nso 7", "#### ~42\nso 7",
                 "#### ₹42\nso 7", "**Answer**: 42\nthen 7", "The correct answer is 42. Also 7",
                 "My final answer is 42.\n7 steps"):
        assert is_correct(extract_answer(said), "42"), said
    assert is_correct(extract_answer("\\boxed{B}"), gold_answer("So \\boxed{\\text{B}}"))
    for said, wrong in (("#### 5 - 3", "5"), ("#### 2**10", "2"), ("#### 1_000", "1"), ("the answer is 3 x 4", "3")):
        assert not is_correct(extract_answer(said), wrong), said


def test_percents_compared_as_percents_and_no_rounding_to_an_integer():
    """Every pairing of a percent's number and fraction made `25%` right for a gold `0.25%`, `50%` for `5000%` and
    `2500%` for 25; normalize rounded 0.99999999999999999 to "1" (and 41.99999999999999999 to "42"), so through
    extract_answer a non-integer was graded exactly equal to an integer."""
    for pred, gold in (("25%", "0.25%"), ("0.25%", "25%"), ("50%", "5000%"), ("2500%", "25"), ("2500", "25%"),
                       ("25", "2500%")):
        assert not is_correct(pred, gold), (pred, gold)
    for pred, gold in (("25%", "25"), ("25%", "0.25"), ("100%", "1"), ("25", "25%"), ("0.25", "25%"), ("25%", "25%"),
                       ("50.0%", "50%"), ("-50%", "-0.5")):
        assert is_correct(pred, gold), (pred, gold)
    for said in ("0.9999999999999999", "0.99999999999999999", "41.99999999999999999", "1.000000000000000001"):
        got = extract_answer("#### " + said)
        assert got == said and not is_correct(got, str(round(float(said)))), said
    assert normalize("2/3") == "0.6666666666666667" and normalize("1.50") == "1.5" and normalize("0.5%") == "0.5%"


def test_a_degenerate_completion_is_read_in_one_pass():
    """Each bare `####` line searched the rest of the text for its answer line (20,000 of them: 52 s), and a run
    of 100,000 digits was tried as a mixed number's whole part from each of its digits (minutes)."""
    assert extract_answer("####\n" * 20_000 + "#### 42\n") == "42"
    assert extract_answer("####\n" * 20_000 + "(" * 50_000) is None
    assert extract_answer("#### Step 1\n" * 10_000 + "\\boxed{7}") == "7"
    digits = "1" * 100_000
    assert extract_answer(digits) == digits and extract_answer("the answer is " + digits + " apples") == digits
    assert extract_answer("a" + " " * 100_000 + "5") == "5"


def test_numbers_read_whole_signs_and_powers():
    """An en dash, a figure dash or a small or fullwidth hyphen-minus was dropped (`#### –42` right for 42); `1'234`,
    no-break or en spaces between digit groups, `(-2)^2`, `(42)^2`, `10²`, `3·10^2`, `5'6"`, `3/-4`, `4x10` and a
    zero-width space were read as their first part; `50 %` and `$50\\,\\%$` lost their percent; `-3^2` was 9."""
    for said, want in (("#### –42", "-42"), ("#### ‒42", "-42"), ("#### －42", "-42"), ("#### ﹣42", "-42"),
                       ("It fell to –3 degrees.", "-3"), ("#### 10–15", "10-15"), ("#### —42", "42"),
                       ("#### 1'234", "1234"), ("#### 1’234’567", "1234567"), ("#### 1\u00a0234.5", "1234.5"),
                       ("#### 1\u2002000", "1000"), ("#### 7\u200b2", "72"), ("#### (-2)^2", "4"),
                       ("#### (42)^2", "1764"), ("#### 10²", "100"), ("#### 2³ = 8", "8"), ("The answer is 5²", "25"),
                       ("\\boxed{(-2)^3}", "-8"), ("#### 3·10^2", "300"), ("#### 5'6\"", "5'6\""),
                       ("#### 3/-4", "3/-4"), ("#### 4x10", "4x10"), ("#### 1'2345", "1'2345"),
                       ("#### 50 %", "50%"), ("The answer is 50\u00a0%.", "50%"), ("So $50\\,\\%$ of them", "50%"),
                       ("#### -3^2", "-9"), ("\\boxed{-2^2}", "-4"), ("#### -2^3", "-8")):
        assert extract_answer(said) == want, said
    assert not is_correct(extract_answer("#### –42"), "42") and is_correct("–42", "-42") and is_correct("1'234", "1234")
    assert is_correct(extract_answer("#### 50 %"), "0.5") and not is_correct(extract_answer("#### -3^2"), "9")
    assert to_number("-3^2") == -9 and to_number("5'6") is None and to_number("1\u00a0234") == 1234


def test_numbered_headings_words_choices_equations_in_a_box_and_hedges():
    """`#### 1. Setting up` (a numbered heading) was the marker, so the gold and the answer were the step number 1;
    "the answer is B because there are 4 choices" was 4 and "twelve, not 11" 11 (the first number after the phrase,
    or the text's last); `#### B` was None; `\\boxed{x = 5}` was the text "x = 5"; `#### 42 or 43` was 42."""
    assert gold_answer("#### 1. Setting up\nWe have x+1=3, so x = 2.\n#### 2. Conclusion\nThus \\boxed{2}") == "2"
    assert gold_answer("#### 1) Find the total\nThe total is 12.\n\nTherefore the answer is \\boxed{12}") == "12"
    assert extract_answer("#### 1. First, add 3 and 4: 7.\n#### 2. Then double it: 14.\nThe answer is 14.") == "14"
    assert extract_answer("#### **3. Solve**\n\\boxed{9}") == "9" and extract_answer("#### 42 apples\nso 7") == "42"
    for said, want in (("The answer is B because there are 4 choices.", "B"), ("Of 5 options, the answer is C.", "C"),
                       ("The answer is twelve, not 11.", "twelve"), ("#### B\nthere are 4", "B"), ("#### (C)", "C"),
                       ("The answer is (D) 42", "(D) 42"), ("Answer: **yes**, since 3 > 2", "yes"),
                       ("the answer is that we add 3 and 4, so 7", "3"),  # no word or letter of its own: as before
                       ("The answer is thus, 42.", "42"), ("6 * 7 = 42. The answer is correct.", "42"),
                       ("The answer is A total of 42 apples.", "42"), ("The answer is below:\n42", "42")):
        assert extract_answer(said) == want, said
    assert not is_correct(extract_answer("The answer is B because there are 4 choices."), "4")
    for said, want in (("\\boxed{x = 5}", "5"), ("\\boxed{P(A) = 0.5}", "0.5"), ("\\boxed{45 = 15 \\times 3}", "45"),
                       ("\\boxed{x = 5, y = 7}", "x = 5, y = 7"), ("\\boxed{y = 2x + 1}", "y = 2x + 1"),
                       ("\\boxed{x >= 5}", "x >= 5")):
        assert extract_answer(said) == want, said
    for said in ("#### 42 or 43", "The answer is 42 or 43.", "#### 42 and 43", "The answer is either 42 or 43",
                 "#### 42, or 43"):
        assert not is_correct(extract_answer(said), "42"), said
    assert extract_answer("The answer is 42 and the rest is 3") == "42" and extract_answer("#### 42 or so") == "42"


def test_a_plain_gold_is_itself_and_text_compares_loosely():
    """A MATH/AMC `answer` column with no marker, box or phrase was graded as its last number (`x^2+1` as 1, so a
    completion answering 1 was right) or None (`B`, `yes`: nothing was ever right); text answers were compared case-,
    space- and spelling-sensitively (`yes` wrong for `\\text{Yes}`, `(3, 5)` for `(3,5)`, `(B)` for `B`), and the
    phrase dropped a tuple's brackets."""
    for gold, want in (("x^2+1", "x^2+1"), ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{3}}{2}"), ("(3,5)", "(3,5)"),
                       ("B", "B"), ("yes", "yes"), ("\\pi", "\\pi"), ("6 \\text{ inches}^2", "6"), ("27.0", "27"),
                       ("Tom has 3.\n#### 42", "42")):
        assert gold_answer(gold) == want, gold
    assert not is_correct(extract_answer("So the answer is 1."), gold_answer("x^2+1"))
    assert is_correct(extract_answer("\\boxed{B}"), gold_answer("B"))
    for said, gold in (("The answer is yes.", "\\boxed{\\text{Yes}}"), ("\\boxed{b}", "\\boxed{B}"),
                       ("\\boxed{(3, 5)}", "\\boxed{(3,5)}"), ("\\boxed{x^2 + 1}", "\\boxed{x^2+1}"),
                       ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\boxed{\\frac{\\sqrt{3}}{2}}"),
                       ("\\boxed{B}", "\\boxed{\\text{(B)}}"), ("\\boxed{(B)}", "\\boxed{B}"),
                       ("Final Answer: The final answer is $(3,5)$. I hope it is correct.", "(3,5)")):
        assert is_correct(extract_answer(said), gold_answer(gold)), said
    assert not is_correct(extract_answer("\\boxed{(3, 5)}"), "3,5") and not is_correct("(B)", "C")


def test_verdicts_negations_and_inequalities_after_the_phrase():
    """"The answer is verified." (confirmed, valid, ...) was the answer "verified"; a last "the answer is correct"
    threw away the answer an earlier phrase stated (the text's last number, 3, was read); "the answer isn't 5" was 5;
    "x ≤ 5" and "5 ± 2" were 5."""
    for w in ("confirmed", "verified", "valid", "consistent", "reasonable", "accurate", "final", "checked", "sound"):
        assert extract_answer(f"So 6 * 7 = 42 apples. The answer is {w}.") == "42", w
    for said in ("The answer is 42. I checked it with 3 different methods, and the answer is correct.",
                 "So the answer is 42.\nIs the answer correct? I verified it in 2 ways: yes, the answer is right.",
                 "Answer: 42\nWe used 3 steps; the answer is below the limit of 100.",
                 "The answer isn't 5; it's 42.", "Wait, the answer is not 20. It's 42.", "The answer is clear: 42."):
        assert extract_answer(said) == "42", said
    for said in ("The answer is x ≤ 5.", "The answer is x >= 5.", "The answer is x < 5.", "The answer is x ≠ 5.",
                 "The answer is 5 ± 2.", "The answer is $x \\le 5$."):
        assert not is_correct(extract_answer(said), "5"), said
    assert extract_answer("The answer is x ≤ 5.") == "x ≤ 5"


def test_an_expression_after_the_phrase_or_marker_is_text():
    """"The answer is $2\\sqrt{3}$" was 2 (right for a gold 2), `4π` 4, `e^2` 2, `3x + 2` 3, `y = 2x + 3` 2: the first
    number of an expression; now the expression is compared as text, as a box's is."""
    for said, want in (("The answer is $2\\sqrt{3}$.", "2\\sqrt{3}"), ("The answer is 4π.", "4π"),
                       ("The answer is e^2.", "e^2"), ("The answer is x^2.", "x^2"),
                       ("The answer is 3x + 2.", "3x + 2"), ("So the final answer is $y = 2x + 3$.", "y = 2x + 3"),
                       ("The answer is $\\log_2 8$.", "\\log_2 8"), ("#### 2\\sqrt{3}", "2\\sqrt{3}"),
                       ("The answer is $\\frac{\\sqrt{3}}{2}$.", "\\frac{\\sqrt{3}}{2}")):
        assert extract_answer(said) == want, said
    assert not is_correct(extract_answer("The answer is $2\\sqrt{3}$."), gold_answer("#### 2"))
    assert is_correct(extract_answer("Final Answer: The final answer is $2\\sqrt{3}$. I hope it is correct."),
                      gold_answer("\\boxed{2\\sqrt{3}}"))
    assert extract_answer("The answer is 42 apples (3 x 14).") == "42"


def test_marker_headings_equals_and_words():
    """Numbered headings other than `#### 1. Word` (`1.1 Setting up`, `1 - Setting up`, `1 Setting up`, ...) were the
    answer (the first marker wins: the step number was graded); `#### 5 - 3 = 2` was the text `5 - 3 = 2` and `#### 20%
    of 50 = 10` 20%, where the phrase and the box read what it comes to; `#### yes` was the text's last number (and
    `gold_answer("#### yes")` None). A capitalised word alone is an answer only on the last line (`#### Solution`
    above the working is a heading)."""
    for head in ("1.1 Setting up the equation", "2.3. Compute the total", "1 - Setting up", "1 – Setting up",
                 "1 Setting up", "1/ Setting up"):
        assert extract_answer(f"#### {head}\n3x = 126\n#### 42") == "42", head
    for said, want in (("#### 5 - 3 = 2", "2"), ("#### 3 * 4 = 12", "12"), ("#### 20% of 50 = 10", "10"),
                       ("#### 12 + 30 = 42 apples", "42"), ("Tom is 3 years older.\n#### yes", "yes"),
                       ("We count 7 days.\n#### Tuesday", "Tuesday"), ("There are 12 of them.\n#### twelve", "twelve"),
                       ("#### Solution\nwe get 42", "42"), ("#### 5 ± 2", "5 ± 2"), ("#### 42 apples", "42")):
        assert extract_answer(said) == want, said
    assert gold_answer("#### yes") == "yes"
    assert is_correct(extract_answer("The answer is Yes."), gold_answer("#### yes"))


def test_chains_of_steps_and_calculator_annotations():
    """A chain after the phrase ("5 + 3 = 8, so 8 * 2 = 16") was taken for several answers (the whole line as text),
    and GSM8K's calculator annotations `<<9*2=18>>18` were read as `18>>18`: correct completions graded wrong."""
    for said, want in (("Answer: 5 + 3 = 8, so 8 * 2 = 16", "16"), ("Answer: 3 + 4 = 7, and 7 * 2 = 14.", "14"),
                       ("The answer is 5 + 3 = 8; 8 * 2 = 16.", "16"),
                       ("Answer: 16 (since 5 + 3 = 8, and 8 * 2 = 16)", "16"),
                       ("Answer: First 5 + 3 = 8, then 8 * 2 = 16, so 16.", "16"),
                       ("So the answer is 9 * 2 = $<<9*2=18>>18.", "18"),
                       ("Answer: 16 - 3 - 4 = <<16-3-4=9>>9 eggs", "9"),
                       ("The answer is x = 3 or x = -3.", "x = 3 or x = -3"), ("Answer: x = 5, y = 7", "x = 5, y = 7")):
        assert extract_answer(said) == want, said


def test_bullets_unit_powers_and_scales():
    """A list's `- 42` and "Total - 12" were read as -42 and -12; a unit's power outside a box ("6 cm^2") was the
    answer, 2 (right for a gold 2); "$1.2 billion" and "5k" were 1.2 and 5; `25\\text{\\%}` lost its percent."""
    for said, want in (("**Answer**\n- 42", "42"), ("Total:\n- 42", "42"), ("Apples:\n- 12 here\n- 30 there", "30"),
                       ("Summary\n* Monday - 15 miles\n* Tuesday - 27 miles", "27"), ("Total - 12 km", "12"),
                       ("The area is 6 cm^2.", "6"), ("The area is $6\\text{ cm}^2$.", "6"),
                       ("So the area of the garden is 48 ft^2", "48"), ("The speed is 9.8 m/s^2.", "9.8"),
                       ("The answer is $5k.", "5000"), ("The answer is 1.2M dollars.", "1200000"),
                       ("The answer is $1.2 billion.", "1200000000"), ("The answer is 3 thousand.", "3000"),
                       ("\\boxed{1.5\\text{ million}}", "1500000"), ("\\boxed{25\\text{\\%}}", "25%"),
                       ("The answer is $\\pi - 2$.", "\\pi - 2"), ("It fell to -3 degrees", "-3")):
        assert extract_answer(said) == want, said
    assert not is_correct(extract_answer("The area is 6 cm^2."), gold_answer("#### 2"))
    assert is_correct(extract_answer("\\boxed{25\\text{\\%}}"), "0.25")


def test_choices_hedges_and_spelled_signs():
    """"option B", `$\\text{(B)}$`, `#### Option B`, `#### B) 42`, "Answer: C. 42", "A because" were a number of the
    text (or 42); an AMC box `\\textbf{(C)}\\ 42` matched neither C nor 42; hedges ("42 or maybe 43", "42 (or 43)",
    "between 42 and 43", "42 to 43", "10 – 15") were 42 or 10, "x = 3 or x = -3" -3, while one answer written two
    ways ("1/8 or 12.5%") was a hedge; "negative 5" was 5."""
    for said, want in (("4 choices.\nThe answer is option B.", "B"), ("12 cases.\nThe answer is choice (C).", "C"),
                       ("3 options.\nFinal Answer: The final answer is $\\text{(B)}$. I hope it is correct.", "B"),
                       ("All 4 options.\n#### Option B", "B"), ("All 4 options.\nAnswer: Option C", "C"),
                       ("All 4 options.\n#### B) 42", "(B) 42"), ("All 4 options.\nAnswer: C. 42", "(C) 42"),
                       ("The answer is A because 3 > 2.", "A"), ("The answer is A total of 42 apples.", "42"),
                       ("The answer is negative 5.", "-5"), ("The answer is minus 5.", "-5"), ("#### negative 5", "-5"),
                       ("5 minus 3 is 2", "2"), ("The answer is 1/8 or 12.5%.", "12.5%"), ("#### 3/4 or 0.75", "0.75")):
        assert extract_answer(said) == want, said
    for said in ("The answer is 42 or maybe 43.", "The answer is 42 or possibly 43.", "The answer is 42 (or 43).",
                 "The answer is between 42 and 43.", "The answer is 42 to 43.", "The answer is 42 – 43 apples.",
                 "#### 42 – 43", "\\boxed{x=42 \\text{ or } x=-3}", "The answer is x = 42 or x = -3."):
        assert not is_correct(extract_answer(said), "42") and not is_correct(extract_answer(said), "-3"), said
    amc = extract_answer("\\boxed{\\textbf{(C)}\\ 42}")
    assert is_correct(amc, 42.0) and is_correct(amc, "C") and not is_correct(amc, "B") and not is_correct(amc, 41)
    assert is_correct(extract_answer("The answer is 1/2, or 50%."), "0.5") and is_correct("12.5%", "12.5")


def test_program_output_and_reasoning_blocks():
    """A tool-integrated completion's ```output block was left out as code (the prose's 3 was graded), and a reasoning
    model's superseded "the answer is 20" inside <think> beat what it said after </think>."""
    assert extract_answer("We need 3 steps.\n```python\nprint(6*7)\n```\n```output\n42\n```") == "42"
    assert extract_answer("```python\nprint('#### 7')\n```\nThe answer is 42") == "42"
    said = "<think>\nI think the answer is 20.\nWait: nine times two is 18.\n</think>\nJanet makes $18 per day."
    assert extract_answer(said) == "18" and extract_answer("<think>the answer is 20</think>") is None


def test_new_cues_read_in_one_pass():
    """Each of 20,000 phrases on one line read the rest of it, and a long run of letters or spaces was scanned from
    each of its positions (minutes each)."""
    for said in ("The answer is e^" * 20_000, "#### " + "a" * 100_000, "x" * 100_000, "The answer is (" + "," * 100_000,
                 "#### 1" + " " * 100_000 + "a", "The answer is x" + " " * 100_000 + "^2", "ab - 1 " * 30_000):
        extract_answer(said), gold_answer(said)


def test_labelled_answers_and_a_box_without_braces():
    """ "Answer (in dollars): 18", "Final answer - 18" and "Answer → 18" were no answer phrase, so the text's last
    number won ($2 -> 2); `\\boxed5` took the next `{...}` anywhere after it."""
    for text, want in (("Final Answer (in dollars): 18\nExplanation: 16 - 3 - 4 = 9 eggs, sold at $2 each.", "18"),
                       ("Answer (rounded to the nearest cent): $12.35\nWe used 3 decimal places.", "12.35"),
                       ("Final answer - 18 (she sells 9 eggs at $2 each)", "18"),
                       ("Answer → 18 (9 eggs at $2)", "18"),
                       ("The answer is \\boxed5. The set {1,2} is irrelevant.", "5"),
                       ("so \\boxed 42.", "42")):
        assert extract_answer(text) == want, text


def test_amc_answers_hedged_choices_and_golds_with_a_unit_word():
    """Round-28 regressions: a leading `(X)` was taken off any prediction, so `\\boxed{(A)\\ (B)\\ (C)}` (every option)
    was right for any letter and "(A) or (B)" for A; an AMC gold `\\textbf{(C)}\\ 42` matched nothing, not even
    itself; a plain gold with a unit word ("10 dollars", `$x = 5$`) was kept whole, so the number never matched."""
    every = extract_answer("\\boxed{(A)\\ (B)\\ (C)\\ (D)\\ (E)}")
    assert not any(is_correct(every, letter) for letter in "ABCDE")
    assert not is_correct(extract_answer("The answer is (A) or (B)."), "A")
    amc = gold_answer("\\boxed{\\textbf{(C)}\\ 42}")
    for said, right in (("\\boxed{\\textbf{(C)}\\ 42}", True), ("C", True), ("42", True), ("(C)", True),
                        ("D", False), ("41", False), ("\\boxed{\\textbf{(D)}\\ 41}", False)):
        assert is_correct(extract_answer(said) if "\\" in said else said, amc) is right, said
    for gold, said in (("10 dollars", "The answer is 10 dollars."), ("5 apples", "#### 5"), ("$8$ days", "8"),
                       ("$x = 5$", "x = 5"), ("6 cm^2", "\\boxed{6 \\text{ cm}^2}")):
        assert is_correct(extract_answer(said), gold_answer(gold)) and gold_answer(gold) != gold, gold
    assert extract_answer("\\boxed{18 dollars}") == "18" and extract_answer("\\boxed{45 minutes}") == "45"
    assert gold_answer("x^2+1") == "x^2+1" and gold_answer("yes") == "yes"  # still read whole


def test_the_correct_option_or_choice_is_the_answer_phrase():
    """ "The correct option is (B)." extracted nothing (no number, no "answer" in it) and "So the right option is B,
    since 3 of the 4 fit." the 4; "the answer is (B)" was read. Every "the correct/right/final answer/option/choice
    is" is the phrase."""
    for text in ("The correct option is (B).", "The correct answer is (B).", "The correct choice is B.",
                 "So the right option is B, since 3 of the 4 fit.", "The final choice is (B) because 12 > 10.",
                 "Final choice is B.", "The correct answer choice is (B).", "Thus, the answer option is B."):
        assert extract_answer(text) == "B", text
    assert extract_answer("The correct option is 42, as 6 * 7 = 42 and not 41.") == "42"
    assert extract_answer("The correct option is not (B); it is C because 2 > 1.") != "B"


def test_a_bare_one_character_latex_argument_is_that_argument_braced():
    """`\\boxed{2\\sqrt2}` was wrong for a gold `2\\sqrt{2}` (compared as text, character by character)."""
    for said, gold in (("\\boxed{2\\sqrt2}", "2\\sqrt{2}"), ("The answer is $\\sqrt3$.", "\\sqrt{3}"),
                       ("\\boxed{\\frac{\\sqrt3}2}", "\\frac{\\sqrt{3}}{2}"),
                       ("\\boxed{\\dfrac\\pi 2}", "\\frac{\\pi}{2}"),
                       ("\\boxed{\\frac 1x}", "\\frac{1}{x}"), ("\\boxed{\\sqrt[3]2}", "\\sqrt[3]{2}"),
                       ("\\boxed{3\\sqrt 5}", "3\\sqrt{5}"), ("\\boxed{\\binom52}", "\\binom{5}{2}")):
        assert is_correct(extract_answer(said), gold_answer(gold)), said
    for said, gold in (("\\boxed{2\\sqrt2}", "2\\sqrt{3}"), ("\\boxed{\\sqrt23}", "\\sqrt{23}"),
                       ("\\boxed{\\frac{\\sqrt3}2}", "\\frac{\\sqrt{2}}{3}")):
        assert not is_correct(extract_answer(said), gold_answer(gold)), said
    assert not is_correct("\\sqrt[" * 20_000 + "2", "\\sqrt{2}")  # in one pass (a root's index is short)


@pytest.mark.parametrize("text, gold", [
    ("She has 42 apples.\n\n**Answer:** 42", "42"),
    ("Therefore, the final answer is $\\boxed{42}$. I hope it is correct.", "42"),
    ("48 - 6 = 42. So she has 42 apples left.", "42"),
    ("The answer is: 42", "42"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac34"),
    ("Janet sells 16 - 3 - 4 = 9 eggs * $2 = $18 per day.\n\nThe answer is $18.", "18"),
    ("**Final Answer**\n\\[\n\\boxed{18}\n\\]", "18"),
    ("So, Janet makes **$18** every day at the farmers' market.", "18"),
    ("The final answer is $\\boxed{\\text{(B)}}$.", "B"),
    ("Each friend gets 12 / 4 = 3 cookies.\n\nAnswer: Each friend gets 3 cookies.", "3"),
    # a fraction and its rounding: the fraction (the rounding, the last number, was read)
    ("So the probability is 1/6 ≈ 0.167.", "1/6"),
    ("The probability is $\\frac{1}{6} \\approx 0.17$.", "\\frac{1}{6}"),
    ("so \\boxed{\\frac16 \\approx 0.167}", "1/6"),
    ("We need 125/3 = 41.67 ≈ 42 buses, so the number of buses is 41.67 ≈ 42.", "42"),  # a decimal's: the rounding
])
def test_completions_as_instruction_tuned_models_end_them(text, gold):
    assert is_correct(extract_answer(text), gold_answer(gold)), (text, extract_answer(text))


def test_degrees_are_the_number_after_the_phrase_and_the_marker_too():
    """`^\\circ` (braced or not) and `°` are degrees wherever they stand: `$90^\\circ$` after the phrase and
    `#### 90^\\circ` were the text `90^\\circ`, wrong for a gold `90^\\circ` (read as 90) or 90; only a box dropped
    the mark."""
    for said, gold in (("The answer is $90^\\circ$.", "90^\\circ"), ("#### 90^\\circ", "90"),
                       ("Final Answer: The final answer is $45^\\circ$. I hope it is correct.", "45^\\circ"),
                       ("The answer is $90^{\\circ}$.", "90"), ("\\boxed{90^\\circ}", "90^\\circ"),
                       ("The angle is 30°.", "30"), ("\\boxed{30°}", "30^{\\circ}"), ("#### 120 ^ {\\circ}", "120")):
        assert is_correct(extract_answer(said), gold_answer(gold)), (said, extract_answer(said))
    assert not is_correct(extract_answer("The answer is $90^\\circ$."), "45")
    assert extract_answer("\\boxed{f \\circ g}") == "f \\circ g"  # composition is no degree mark (it was `f  g`)


def test_the_phrase_reads_latex_with_no_number_and_a_matrix_whole():
    """The answer phrase before LaTeX that writes no number (`$\\pi$`, `$-\\infty$`, `$\\frac{a}{b}$`, `$-i$`,
    `\\mbox{yes}`) stated none, so the text's last number (or None) was read, and a matrix after it was its first
    entry: MATH's "Final Answer: The final answer is $X$" (Minerva) now grades as `\\boxed{X}` does."""
    minerva = "Final Answer: The final answer is ${}$. I hope it is correct."
    for gold in ("\\pi", "-\\infty", "\\frac{a}{b}", "-i", "\\emptyset", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
                 "\\{1, 2\\}", "x = \\frac{\\pi}{2}"):
        for said in (minerva.format(gold), f"The area is 4 units, so the answer is ${gold}$.",
                     f"The answer is \\({gold}\\)."):
            assert extract_answer(said) == extract_answer(f"\\boxed{{{gold}}}"), said
            assert is_correct(extract_answer(said), gold_answer(gold)), said
    assert extract_answer("The answer is \\mbox{yes}.") == "yes"
    assert extract_answer("The answer is therefore $\\pi$, not 3.") == "\\pi"
    # a number in a span is read as before; `$5, and ... $3` is money, not a span
    assert extract_answer(minerva.format("18")) == "18" and extract_answer(minerva.format("\\frac{3}{4}")) == "0.75"
    assert extract_answer("The answer is $5, and he paid $3 more.") == "5"
    assert not is_correct(extract_answer(minerva.format("\\pi")), gold_answer("4"))


def test_a_matrix_compares_whatever_its_spacing():
    """LaTeX's space `\\ ` was dropped before `\\\\` (a row break) was seen: `1 \\\\ 2` became `1 \\2`, and the same
    matrix written `1\\\\2` was graded wrong."""
    gold = gold_answer("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}")
    for said in ("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}", "\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}",
                 "\\boxed{\\begin{pmatrix}1\\\\ 2\\end{pmatrix}}", "\\boxed{\\begin{pmatrix} 1\\\\2 \\end{pmatrix}}"):
        assert is_correct(extract_answer(said), gold), said
    assert is_correct("\\begin{pmatrix}1\\\\ 2\\end{pmatrix}", "\\begin{pmatrix}1 \\\\2\\end{pmatrix}")
    assert not is_correct(extract_answer("\\boxed{\\begin{pmatrix}1\\\\2\\end{pmatrix}}"),
                          gold_answer("\\begin{pmatrix}1 & 2\\end{pmatrix}"))
    assert not is_correct("\\begin{pmatrix}12\\end{pmatrix}", gold)  # the row break still counts


@pytest.mark.parametrize("said, gold, right", [
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True), ("\\boxed{\\sqrt2/2}", "\\dfrac{\\sqrt2}{2}", True),
    ("The answer is $(1+\\sqrt{5})/2$.", "\\frac{1+\\sqrt{5}}{2}", True),
    ("\\boxed{-\\sqrt{3}/2}", "-\\frac{\\sqrt{3}}{2}", True), ("\\boxed{\\pi/4}", "\\frac{\\pi}{4}", True),
    ("\\boxed{e^{\\pi/2}}", "e^{\\frac{\\pi}{2}}", True), ("\\boxed{1/x + 1/y}", "\\frac1x+\\frac1y", True),
    # never after ^ or _, inside a product, a chain or a factorial, nor between unequal terms
    ("\\boxed{x^2/3}", "x^{\\frac{2}{3}}", False), ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{3}}{2}", False),
    ("\\boxed{1/2x}", "\\frac{1}{2x}", False), ("\\boxed{a/b/c}", "a/\\frac{b}{c}", False),
    ("\\boxed{n/2!}", "\\frac{n}{2}!", False),
])
def test_a_quotient_of_two_whole_terms_is_the_fraction_it_typesets(said, gold, right):
    """`\\sqrt{2}/2` was wrong for a gold `\\frac{\\sqrt{2}}{2}` (compared as text), as were `(1+\\sqrt{5})/2` and
    `\\pi/4`. A slash between two whole terms is read as `\\frac`, so no answer that means something else matches."""
    assert is_correct(extract_answer(said), gold_answer(gold)) == right
