"""GSM8K-style final-answer extraction and comparison (standard library only).

`extract_answer` reads a model's completion in the order a grader should trust its cues:
1. the GSM8K marker `#### <answer>` (the first one: what follows it is the answer line);
2. the last LaTeX `\\boxed{...}` (balanced braces, so `\\boxed{\\frac{1}{2}}` works);
3. the last "the answer is <x>" / "answer: <x>" phrase;
4. otherwise the last number in the text (the "flexible" fallback).
`normalize` turns "$1,234.50", "1234.5", "  -7 ", "50.0%" or "3/4" into a canonical string ("50%" keeps its
sign), and `is_correct` compares numerically when both sides are numbers: integers exactly, others within
|a - b| <= 1e-6 · max(1, |b|), and a percent as its number or its fraction ("25%" is right for a gold 25, GSM8K's
unit-less answer to a "what percent" question, and for 0.25); else as normalized text. A typographic minus
(U+2212) is a minus, and LaTeX's `\\%`, `\\$`, `-\\frac{1}{2}`, `\\dfrac` and `\\tfrac` are read in a box.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUM = r"-?\$?\s*\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?|-?\$?\s*\.\d+%?"
_NUM_RE = re.compile(_NUM)
_MARK_RE = re.compile(r"####\s*(.+)")
_PHRASE_RE = re.compile(r"the\s+(?:final\s+)?answer\s+is|answer\s*[:=]", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def _first_number(s: str) -> str | None:
    m = _NUM_RE.search(s)
    return m.group(0) if m else None


def _last_number(s: str) -> str | None:
    found = _NUM_RE.findall(s)
    return found[-1] if found else None


_FRAC_RE = re.compile(r"(-?)\\[dt]?frac(?:\{(-?\d+)\}|(\d))(?:\{(\d+)\}|(\d))")


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see the module docstring for the order of cues), or None."""
    if not text:
        return None
    text = text.replace("\u2212", "-")  # the minus sign of typeset text: read as +3 before
    m = _MARK_RE.search(text)
    if m:
        line = m.group(1).strip()
        return normalize(_first_number(line) or line)
    boxed = last_boxed(text)
    if boxed is not None:
        boxed = boxed.replace("\\%", "%").replace("\\$", "$")  # LaTeX's escaped units
        frac = _FRAC_RE.fullmatch(boxed.replace(" ", ""))
        if frac:
            sign, num, den = frac.group(1), frac.group(2) or frac.group(3), frac.group(4) or frac.group(5)
            return normalize(f"{'-' if (sign == '-') != num.startswith('-') else ''}{num.lstrip('-')}/{den}")
        num = _first_number(boxed)
        only_number = num is not None and re.fullmatch(r"\s*" + re.escape(num) + r"\s*\.?\s*", boxed)
        return normalize(num if only_number else boxed)
    phrases = list(_PHRASE_RE.finditer(text))
    if phrases:
        tail = text[phrases[-1].end() :].split("\n", 1)[0]
        num = _first_number(tail)
        if num is not None:
            return normalize(num)
    num = _last_number(text)
    return normalize(num) if num is not None else None


def gold_answer(solution: str) -> str | None:
    """The reference answer of a GSM8K solution ("... #### 72"), or of a \\boxed{} solution (NuminaMath)."""
    return extract_answer(solution)


def to_number(s: str) -> Fraction | None:
    """The number `s` writes ("25%" is 1/4), or None."""
    t = s.strip().replace(",", "").replace("$", "").replace(" ", "").replace("\u2212", "-")
    if t.endswith("."):
        t = t[:-1]
    pct = t.endswith("%")
    if pct:
        t = t[:-1]
    try:
        x = Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    return x / 100 if pct else x


def normalize(s: str) -> str:
    """A canonical form: numbers as integers or reduced decimals ("1,234.50" -> "1234.5", "3/4" -> "0.75"),
    other text stripped of surrounding space, a trailing period and `$`."""
    s = s.strip()
    x = to_number(s)
    if x is None:
        return s.rstrip(".").replace("$", "").strip()
    pct = _is_percent(s)
    if pct:  # kept as a percent: whether the gold means 25 or 0.25 is is_correct's to decide
        x *= 100
    if x.denominator == 1:
        out = str(x.numerator)
    else:
        d = float(x)
        out = repr(round(d, 10)).rstrip("0").rstrip(".") if abs(d) < 1e15 else str(d)
    return out + "%" if pct else out


def _is_percent(s: str) -> bool:
    return s.strip().rstrip(".").endswith("%")


def _same(a: Fraction, b: Fraction) -> bool:
    if a.denominator == b.denominator == 1:  # integers exactly: 999999 is no answer for 1000000
        return a == b
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


def is_correct(prediction: str | None, gold: str | None) -> bool:
    """Numeric equality when both parse as numbers (integers exactly, others within a relative 1e-6, a percent
    read as its number or its fraction); otherwise exact normalized text."""
    if prediction is None or gold is None:
        return False
    a, b = to_number(prediction), to_number(gold)
    if a is not None and b is not None:
        ways_a = [a, a * 100] if _is_percent(prediction) else [a]
        ways_b = [b, b * 100] if _is_percent(gold) else [b]
        return any(_same(x, y) for x in ways_a for y in ways_b)
    return normalize(prediction) == normalize(gold)
