"""Round 35 (HF evaluation side): answers, a run's system prompt in analyze/eval-lm, a checkpoint shared without its
optimizer state or with an edited config, lm-eval's task patterns, and minor refusals."""

from __future__ import annotations

import pytest

from looplm.hf.answers import extract_answer, gold_answer, is_correct, to_number


@pytest.mark.parametrize("completion, gold", [
    ("\\boxed{x^{2}+7x+10}", "x^2+7x+10"),
    ("\\boxed{3x^2-5}", "3x^{2}-5"),
    ("\\boxed{\\frac{x^2}{2}}", "\\frac{x^{2}}{2}"),
    ("\\boxed{e^{x}}", "e^x"),
    ("\\boxed{\\pi r^{2}}", "\\pi r^2"),
    ("\\boxed{a_{1}}", "a_1"),
    ("The answer is $x^{2}+1$.", "x^2+1"),
])
def test_one_character_script_braced_or_bare_is_the_same(completion, gold):
    # `x^2` and `x^{2}` typeset the same, as `\sqrt2` and `\sqrt{2}` do: both spellings were graded different
    assert is_correct(extract_answer(completion), gold_answer(gold))


def test_scripts_still_differ_and_powers_still_compute():
    assert not is_correct(extract_answer("\\boxed{x^3}"), gold_answer("x^2"))
    assert not is_correct(extract_answer("\\boxed{a_{2}}"), gold_answer("a_1"))
    assert not is_correct(extract_answer("\\boxed{x^{12}}"), gold_answer("x^1"))
    assert to_number("2^{10}") == 1024 and to_number("2^10") == 1024
    assert is_correct(extract_answer("\\boxed{2^{10}}"), gold_answer("1024"))
    assert is_correct(extract_answer("\\boxed{x^{2}/3}"), gold_answer("x^2/3"))
