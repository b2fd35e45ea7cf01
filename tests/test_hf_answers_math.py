"""Answer extraction of MATH-style LaTeX (`,\\!` separators, interval unions, coefficients, degrees, AMC letters) and
bad inputs to the grading API (looplm.hf.answers; the older cases are in test_hf_answers.py)."""

import time

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct, to_number


@pytest.mark.parametrize("text", [r"The final answer is $10,\!000$. I hope it is correct.", r"#### 10,\!000",
                                  r"The answer is $\$10,\!000$.", r"The total is $10,\!000$.", r"\boxed{10,\!000}"])
def test_maths_thousands_separator_is_the_comma_everywhere(text):
    """MATH writes `10,\\!000`: only a box dropped the `\\!` (elsewhere it was text, or the last group, 000)."""
    assert extract_answer(text) == "10000" and is_correct(extract_answer(text), gold_answer(r"10,\!000"))
    assert extract_answer(r"The answer is $1,\!000,\!000$.") == "1000000"


@pytest.mark.parametrize("text, gold", [
    (r"The final answer is $3 + 4i$. I hope it is correct.", "3+4i"),
    (r"The final answer is $5 - 2x$. I hope it is correct.", "5-2x"),
    (r"The answer is $1 + 2n$, so we are done.", "1+2n"), (r"The final answer is 7 + 2x, as required.", "7+2x")])
def test_an_expression_after_the_phrase_ends_with_its_clause_or_math_span(text, gold):
    """`3 + 4i` took the rest of the line ("3 + 4i. I hope it is correct"): never right."""
    assert is_correct(extract_answer(text), gold_answer(gold)) and "hope" not in extract_answer(text)


@pytest.mark.parametrize("text, gold", [
    (r"The final answer is $(-\infty,-2)\cup(3,\infty)$. I hope it is correct.", r"(-\infty,-2)\cup(3,\infty)"),
    (r"The answer is $(-\infty, 1] \cup [3, \infty)$.", r"(-\infty,1]\cup[3,\infty)"),
    (r"The final answer is $[1,2)\cup(3,4]$. I hope it is correct.", r"[1,2)\cup(3,4]"),
    ("The answer is (-∞, -2) ∪ (3, ∞).", "(-∞,-2)∪(3,∞)"),
    (r"#### (-\infty, -2) \cup (3, \infty)", r"(-\infty,-2)\cup(3,\infty)")])
def test_a_union_of_intervals_is_read_whole(text, gold):
    """The phrase's tuple rule cut `(a,b)\\cup(c,d)` to its first interval; the marker stated none (its 3 was read)."""
    assert is_correct(extract_answer(text), gold_answer(gold))


@pytest.mark.parametrize("said, gold", [(r"\boxed{3\pi/4}", r"\frac{3\pi}{4}"), (r"The answer is $2\pi/3$.",
                                        r"\frac{2\pi}{3}"), (r"\boxed{2\sqrt{2}/3}", r"\frac{2\sqrt{2}}{3}"),
                                        (r"\boxed{3\sqrt{2}/2}", r"\dfrac{3\sqrt2}{2}"),
                                        (r"\boxed{3x/4}", r"\frac{3x}{4}")])
def test_a_numerators_coefficient_is_part_of_its_term(said, gold):
    """`3\\pi/4` kept its slash (a coefficient was no whole term): wrong for `\\frac{3\\pi}{4}`."""
    assert is_correct(extract_answer(said), gold_answer(gold))
    assert not is_correct(extract_answer(r"\boxed{1/2\pi}"), gold_answer(r"\frac{1}{2\pi}"))  # half pi, as typeset


def test_a_degree_mark_ends_its_number():
    """`30^\\circ,150^\\circ` (two angles) lost its marks first and was read as the number 30150."""
    gold = gold_answer(r"30^\circ,150^\circ")
    for said in (r"\boxed{30^\circ,150^\circ}", r"\boxed{30^\circ, 150^\circ}", r"The answer is $30^\circ,150^\circ$.",
                 r"#### 30°, 150°"):
        assert is_correct(extract_answer(said), gold), said
    assert not is_correct(extract_answer(r"\boxed{30150}"), gold)
    assert extract_answer(r"\boxed{45^\circ,135^\circ}") != "45135"


@pytest.mark.parametrize("text, want", [(r"The answer is $-\$5$.", "-5"), (r"Final answer: $-\$12.50$", "-12.5"),
                                        (r"The final answer is $-\$5$. I hope it is correct.", "-5")])
def test_a_negative_dollar_amount_in_math_after_the_phrase(text, want):
    """`$-\\$5$` is `$-$5$` once `\\$` is read: the span `$-$` was the answer, "-"."""
    assert extract_answer(text) == want


@pytest.mark.parametrize("said", [r"\boxed{\text{(C)}\ 42}", r"\boxed{\text{(C) }42}", r"\boxed{\mathrm{(C)}\ 42}"])
def test_an_amc_choice_in_text_keeps_its_letter(said):
    """The box dropped `\\text{(C)}` as a unit: 42 alone, wrong for MATH's gold `\\text{(C)}` (and for C)."""
    assert is_correct(extract_answer(said), gold_answer(r"\text{(C)}")) and is_correct(extract_answer(said), "C")
    assert is_correct(extract_answer(said), "42") and not is_correct(extract_answer(said), gold_answer(r"\text{(D)}"))
    assert is_correct(extract_answer(r"\boxed{\text{(E) }\frac{1}{2}}"), gold_answer("E"))


def test_a_scale_after_the_math_and_rounding_after_an_expression():
    """`$4.5$ million` was 4.5; `\\sqrt{2} \\approx 1.414` kept its rounding (never right for `\\sqrt{2}`)."""
    for said in (r"The answer is $4.5$ million.", r"The answer is \(4.5\) million.", r"The answer is $\$4.5$ million."):
        assert extract_answer(said) == "4500000", said
    for said, gold in ((r"The answer is $\sqrt{2} \approx 1.414$.", r"\sqrt{2}"), (r"\boxed{2\sqrt{3} \approx 3.46}",
                       r"2\sqrt{3}"), (r"The answer is $2\pi \approx 6.28$.", r"2\pi"), (r"The answer is $e^2 \approx "
                       r"7.389$.", "e^2"), (r"The answer is $\frac{1}{3} \approx 0.\overline{3}$.", r"\frac{1}{3}")):
        assert is_correct(extract_answer(said), gold_answer(gold)), said
    assert extract_answer("It takes 41.67 ≈ 42 buses") == "42"  # a decimal's rounding is the answer


def test_a_missing_gold_and_bad_types_are_refused_clearly():
    """A NaN gold (pandas' null) was "nan", right for a model's "NaN"; `extract_answer(42)` and a 5000-digit gold
    raised Python's own errors."""
    for bad in (lambda: gold_answer(float("nan")), lambda: is_correct("nan", "nan"),
                lambda: is_correct("NaN", float("nan"))):
        with pytest.raises(ValueError, match="missing"):
            bad()
    with pytest.raises(TypeError, match="extract_answer reads a completion's text, got int 42"):
        extract_answer(42)
    with pytest.raises(ValueError, match="digits"):
        gold_answer(10**5000)
    assert gold_answer(10**500) == "1" + "0" * 500 and extract_answer(None) is None


@pytest.mark.parametrize("text, gold", [
    ("The answer is: (1,-2,3)", "(1,-2,3)"), ("The final answer is: (3, 5)", "(3,5)"),
    ("The answer is: [2, 5)", "[2,5)"), ("The answer is: $(3, 5)$", "(3,5)"),
    (r"The answer is: (-\infty, 2) \cup (3, \infty)", r"(-\infty,2)\cup(3,\infty)"),
    ("#### (3, 5)", "(3,5)"), ("#### $(3, 5)$", "(3,5)"), ("#### (-2, 3)", "(-2,3)"), ("#### [2, 5)", "[2,5)"),
    ("#### (3,5)", "(3,5)"), ("#### (1,-2,3)", "(1,-2,3)"), (r"#### (-\infty, 2]", r"(-\infty,2]"),
    (r"#### \((3, 5)\)", "(3,5)"), (r"#### \left(-\frac{1}{2}, 3\right)", r"\left( -\frac{1}{2}, 3 \right)"),
    ("The answer is x = (3, 5).", "(3,5)"), ("#### (a, b) = (3, 5)", "(3,5)"), ("#### x \\in [3, 5)", "[3,5)")])
def test_a_tuple_or_interval_keeps_its_brackets_after_the_marker_and_a_colon(text, gold):
    """The marker's dress took a tuple's `(` (`#### (3, 5)` was `3, 5)`), and "The answer is: " (MetaMath's) read its
    first number on: text equal to nothing."""
    assert is_correct(extract_answer(text), gold_answer(gold)) and not is_correct(extract_answer(text), "3")
    # a bracket around one number is still its dress
    assert [extract_answer(t) for t in ("#### (42)", "#### [42]", r"#### \(42\)", "#### (-2)^2")] == ["42"] * 3 + ["4"]
    assert extract_answer("The answer is (3, 5) because it is.") == "(3, 5)"
    assert not is_correct(extract_answer("The answer is a = (3, 5), b = (1, 2)."), "(3,5)")  # two answers


@pytest.mark.parametrize("text, gold", [
    (r"The final answer is $3^{2/3}$. I hope it is correct.", r"3^{2/3}"), (r"The answer is $2^{1/3}$.", r"2^{1/3}"),
    (r"The final answer is $4^{-1/2}$. I hope it is correct.", r"4^{-1/2}"), (r"#### 2^{1/3}", r"2^{1/3}"),
    (r"#### (2)^{1/3}", r"(2)^{1/3}"), (r"The answer is (2)^{1/3}.", r"(2)^{1/3}")])
def test_a_fractional_exponent_keeps_its_braces(text, gold):
    """A power's `\\{?-?\\d+\\}?` read `2^{1` as 2 and cut its `/3}` off (`2^{1/3`), or divided by it: `(2)^{1/3}`
    was 2/3."""
    assert extract_answer(text) == gold_answer(gold) == gold and not is_correct(extract_answer(text), "2/3")
    assert extract_answer(r"\boxed{2^{1/3}}") == r"2^{1/3}" and extract_answer(r"#### 2^{10}") == "1024"
    assert to_number("2^{10}") == 1024 and to_number("2^{10") is None and to_number("2^10}") is None


@pytest.mark.parametrize("said", [r"\boxed{(\text{C})}", r"\boxed{(\mathrm{C})}", r"\boxed{\text{C) } 42}",
                                  r"\boxed{(\text{C})\ 42}"])
def test_an_amc_letter_in_text_inside_brackets_is_the_letter(said):
    """`(\\text{C})` lost its text as a unit: `()`; `\\text{C) } 42` was 42 alone."""
    assert is_correct(extract_answer(said), gold_answer(r"\text{(C)}")) and is_correct(extract_answer(said), "C")
    assert not is_correct(extract_answer(said), "D") and extract_answer(r"\boxed{5\text{ cm}}") == "5"


@pytest.mark.parametrize("said, gold", [
    (r"\boxed{\frac{4}{3}\pi}", r"\frac{4\pi}{3}"), (r"\boxed{\frac{32}{3}\pi}", r"\frac{32\pi}{3}"),
    (r"\boxed{\frac{4\pi}{3}}", r"\frac{4}{3}\pi"), (r"\boxed{\frac{1}{2}\sqrt{3}}", r"\frac{\sqrt{3}}{2}"),
    (r"The answer is $-\dfrac{1}{2}\pi$.", r"-\frac{\pi}{2}"), (r"\boxed{\frac{3}{2}x}", r"\frac{3x}{2}")])
def test_a_fractions_factor_after_it_is_its_numerators(said, gold):
    """MATH writes `\\frac{4\\pi}{3}`, models `\\frac{4}{3}\\pi`: compared as text, they differed."""
    assert is_correct(extract_answer(said), gold_answer(gold))
    # a factor that does not end its term stays where it is
    assert not is_correct(extract_answer(r"\boxed{\frac{1}{2}x^2}"), gold_answer(r"\frac{x}{2}"))
    assert not is_correct(extract_answer(r"\boxed{\frac{4}{3}\pi r^3}"), gold_answer(r"\frac{4\pi}{3}"))


@pytest.mark.parametrize("said, gold", [
    (r"\boxed{x \in [2, 5]}", "[2,5]"), (r"The final answer is $x \in (-\infty, -2) \cup (3, \infty)$.",
                                         r"(-\infty,-2)\cup(3,\infty)"),
    (r"The answer is x \in [2, 5].", "[2,5]"), (r"#### x \in [2, 5]", "[2,5]"), (r"\boxed{x = \pi}", r"\pi"),
    ("**Final Answer:** $x \\in [2, 5]$", "[2,5]"), (r"\boxed{y = 2x + 3}", "2x+3")])
def test_a_variable_set_to_the_answer_is_no_part_of_it(said, gold):
    """`\\boxed{x = 5}` was 5, but `x \\in [2, 5]` and `x = \\pi` kept their variable: wrong for `[2,5]`, `\\pi`."""
    assert is_correct(extract_answer(said), gold_answer(gold))
    assert not is_correct(extract_answer(said), gold_answer("(2,5)"))
    # two bindings are several answers, compared whole
    assert not is_correct(extract_answer(r"\boxed{x = 3 \text{ or } x = -3}"), "3")
    assert is_correct(extract_answer(r"\boxed{x = 3 \text{ or } x = -3}"), gold_answer(r"x=3 \text{ or } x=-3"))


@pytest.mark.parametrize("text", [r"The answer is $30^\circ$ and $150^\circ$.", r"The answer is $30$ or $150$."])
def test_a_hedge_of_two_math_spans_is_no_one_answer(text):
    """Each answer in its own math: the closing `$` ended the list, and the first, 30, was the answer."""
    assert not is_correct(extract_answer(text), "30") and not is_correct(extract_answer(text), "150")
    assert is_correct(extract_answer(r"The answer is $1/8$ or $12.5\%$."), "0.125")  # one answer two ways
    assert extract_answer(r"The answer is $42$, which we add 3 and 4.") == "42"


def test_a_markers_dress_is_read_in_one_pass():
    """The dress's `\\s*` after its own spaces tried every split of a run of spaces: 20,000 took 8 s."""
    start = time.perf_counter()
    for text in ("#### (" + " " * 20000 + "x", "#### " + " " * 20000 + "x", "#### (" + " " * 20000 + "- x"):
        extract_answer(text)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("text", ["#### (1,000)", "#### ($1,000)", "#### (1,000 dollars)", "#### [1,000]",
                                  "#### (1,000) apples", "#### $ (1,000)", "#### $(1,000)$", "The answer is: (1,000)",
                                  "The answer is: ($1,000)", "Answer: (1,000)", "The answer is (1,000).",
                                  r"\boxed{(1,000)}"])
def test_a_grouped_number_in_brackets_is_one_number(text):
    """Round 32's tuples took any bracket holding a comma: `#### (1,000)` (one number by the comma rule) was the
    tuple `(1,000)`, wrong for the gold 1000."""
    assert extract_answer(text) == "1000" and is_correct(extract_answer(text), gold_answer("1000"))
    assert [extract_answer(f"#### {t}") for t in ("(12,345)", "(1,000,000)", "(-1,000)", "(1,234.5)")] == [
        "12345", "1000000", "-1000", "1234.5"]
    # a pair stays a pair: a spaced comma, a group of other than three digits, a first group 0, a decimal's comma
    for pair in ("(3, 5)", "(1,23)", "(1, 000)", "[0,100]", "(2.5,100)", "(1,000, 2)", "(1,0000)"):
        assert extract_answer(f"#### {pair}") == pair and extract_answer(f"The answer is: {pair}") == pair
    # the same writing is read alike as a gold, after the phrase and in a box
    assert gold_answer("(2,100)") == extract_answer("The answer is: (2,100)") == extract_answer(r"\boxed{(2,100)}")


def test_a_hedge_of_tuples_is_no_one_answer_and_spaced_exponent_braces():
    """`(0, 1) or (1, 0)` was graded by its first tuple (as `42 or 43` is not); `2^{ 10 }` was 2."""
    for text in ("The answer is: (0, 1) or (1, 0)", "#### (0, 1) or (1, 0)", "#### (0, 1), (1, 0)"):
        assert not is_correct(extract_answer(text), gold_answer("(0,1)")), text
        assert not is_correct(extract_answer(text), gold_answer("(1,0)")), text
    assert is_correct(extract_answer("#### (0, 1), (1, 0)"), gold_answer("(0,1), (1,0)"))
    assert not is_correct(extract_answer("The answer is a = (3, 5), b = (1, 2)."), "(3,5)")  # still two answers
    assert extract_answer("#### 2^{ 10 }") == extract_answer("The answer is $2^{ 10 }$.") == "1024"
    assert to_number("2^{ 10 }") == 1024 and extract_answer("#### (2)^{ 10 }") == "1024"


def test_a_decimal_is_a_number():
    """`gold_answer(Decimal("0.5"))` (a database's or an exact column) was "an answer must be text or a number"."""
    from decimal import Decimal

    assert gold_answer(Decimal("0.5")) == "0.5" and gold_answer(Decimal("1E+3")) == "1000"
    assert is_correct(extract_answer("#### 1/2"), Decimal("0.50")) and not is_correct("0.6", Decimal("0.5"))
    for nan in (Decimal("NaN"), Decimal("sNaN")):
        with pytest.raises(ValueError, match="NaN"):
            gold_answer(nan)
