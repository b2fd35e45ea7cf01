"""Round 46 found that round 45's rule ("a word ending its clause is the answer, whatever number follows") read
lead-ins as the answer: "Answer: Clearly, 18." was `Clearly`, "approx. 18." `approx`. The rule now holds for
yes/no/true/false and choice letters only; any other word is the answer only before no number (so "The answer is
Paris. 3 million ..." reads its number, as before round 45: a known limit, docs/hf.md)."""

from __future__ import annotations

import pytest

from looplm.hf.answers import extract_answer


@pytest.mark.parametrize(("completion", "answer"), [
    ("Answer: Clearly, 18.", "18"), ("The answer is approx. 18.", "18"), ("The answer is Rs. 500", "500"),
    ("Answer: Okay, 18", "18"), ("Answer: Consequently, 18.", "18"), ("Answer: Sure, 18.", "18"),
    ("Answer: First, 18 eggs", "18"), ("Answer: Simplifying, 18.", "18"),
    # what round 45 fixed still holds
    ("Answer: Yes, 97 is prime.", "Yes"), ("The answer is no. 91 = 7 x 13.", "no"),
    ("The answer is B (3 + 4 = 7).", "B"), ("The answer is twelve, not 11", "twelve"),
    ("The answer is Paris.", "Paris"),
])
def test_a_lead_in_before_a_number_is_no_answer(completion, answer):
    assert extract_answer(completion) == answer
