"""Round 39: math delimiters in an `<answer>` block or a box, a variable set to a fraction, Unicode math (π, √, ∞,
x²), a box's leading approximation sign, `B) 42` as a choice, an empty box or block."""

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct
from looplm.hf.latex import text_key


def _right(text: str, gold: str) -> bool:
    return is_correct(extract_answer(text), gold_answer(gold))


@pytest.mark.parametrize(("text", "gold"), [
    # inline math delimiters in a block or a box are dress
    ("<answer>\\(18\\)</answer>", "18"),  # was '\(18\)'
    ("<answer> \\( \\frac{3}{4} \\) </answer>", "\\frac{3}{4}"),
    ("<answer>\\[18\\]</answer>", "18"),
    ("<think>9*2=18</think>\n<answer>\\(\\sqrt{2}\\)</answer>", "\\sqrt{2}"),
    ("<answer>\\(x = 5\\)</answer>", "5"),
    ("<answer>\\(\\text{B}\\)</answer>", "B"),
    ("\\boxed{\\(\\frac{3}{4}\\)}", "0.75"),
    # a variable set to a fraction is the fraction
    ("\\boxed{x = \\frac{1}{2}}", "\\frac{1}{2}"),  # was 'x = 1/2' (1/2 taken for the calculation 1 / 2)
    ("\\boxed{k = \\dfrac{7}{3}}", "\\frac{7}{3}"),
    ("\\boxed{x = -\\frac{3}{2}}", "-\\frac{3}{2}"),
    ("\\boxed{x = 2\\frac{1}{2}}", "\\frac{5}{2}"),
    ("The final answer is $\\boxed{x = \\frac{1}{2}}$. I hope it is correct.", "0.5"),
    ("<answer>x = \\frac12</answer>", "0.5"),
    ("The answer is \\(x = \\frac{1}{2}\\).", "0.5"),
    ("\\boxed{x = 0.5}", "\\frac{1}{2}"),
    ("\\boxed{x = 5}", "5"),
])
def test_math_delimiters_are_dress_and_a_variable_set_to_a_fraction_is_the_fraction(text, gold):
    assert _right(text, gold)


@pytest.mark.parametrize(("text", "gold", "right"), [
    ("The answer is 4π.", "4\\pi", True),
    ("\\boxed{2π}", "2\\pi", True),
    ("The answer is √2.", "\\sqrt{2}", True),
    ("The answer is 3√3.", "3\\sqrt{3}", True),
    ("The answer is √(x+1).", "\\sqrt{x+1}", True),
    ("\\boxed{∞}", "\\infty", True),
    ("The answer is -∞.", "-\\infty", True),  # was None
    ("The answer is (−∞, 3].", "(-\\infty,3]", True),
    ("The answer is π/2.", "\\frac{\\pi}{2}", True),
    ("\\boxed{x²+1}", "x^2+1", True),
    ("The answer is x² + 1.", "x^2+1", True),
    ("The answer is x² + 1.", "1", False),  # was read as 1
    ("The answer is 18 m².", "18", True),  # a unit's power stays the unit's
    ("#### 10²", "100", True),
])
def test_unicode_math_is_its_latex(text, gold, right):
    assert _right(text, gold) is right


def test_text_key_maps_unicode_math():
    assert text_key("4π") == text_key("4\\pi")
    assert text_key("√12") == text_key("\\sqrt{12}")
    assert text_key("x⁻¹") == text_key("x^{-1}")
    assert text_key("(−∞, 3]".replace("−", "-")) == text_key("(-\\infty, 3]")


@pytest.mark.parametrize(("text", "gold"), [
    ("\\boxed{\\approx 18.3}", "18.3"), ("\\boxed{\\sim 18}", "18"), ("\\boxed{x \\approx 1.41}", "1.41"),
])
def test_a_leading_approximation_sign_in_a_box_is_dress(text, gold):
    assert _right(text, gold)


@pytest.mark.parametrize("text", ["<answer>B) 42</answer>", "\\boxed{B) 42}"])
def test_a_choice_letter_with_a_closing_bracket_is_the_choice(text):
    assert _right(text, "B")
    assert _right(text, "42")
    assert not _right(text, "C")


@pytest.mark.parametrize("text", ["\\boxed{}", "<answer>$$</answer>", "<answer>.</answer>", "<answer>" * 5000])
def test_an_empty_box_or_block_is_no_answer(text):
    assert extract_answer(text) is None
