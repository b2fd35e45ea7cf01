"""Round 34's answer readings: a bracket the marker's dress took from a product of brackets, and a Decimal
infinity as a gold answer."""

from decimal import Decimal

from looplm.hf.answers import extract_answer, gold_answer, is_correct


def test_a_marker_answer_keeps_the_bracket_its_dress_took():
    assert extract_answer("#### (3)(4)") == "(3)(4)"  # was 3)(4)
    assert extract_answer("#### (1,000)(2)") == "(1,000)(2)"
    assert extract_answer("#### (3)*(4)") == "(3)*(4)"
    assert extract_answer("#### (42)") == "42" and extract_answer("#### (1,000)") == "1000"  # dress, still
    assert extract_answer("#### (42) + (8)") == "42"


def test_a_decimal_infinity_gold_is_read_as_a_float_infinity_is():
    inf = extract_answer("#### inf")
    assert is_correct(inf, gold_answer(float("inf")))
    assert is_correct(inf, gold_answer(Decimal("Infinity")))  # str() wrote "Infinity", never matched
    assert is_correct(inf, Decimal("Infinity")) and not is_correct(inf, Decimal("-Infinity"))
