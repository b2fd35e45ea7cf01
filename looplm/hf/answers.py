"""GSM8K-style final-answer extraction and comparison (standard library only).

`extract_answer` reads a model's completion in the order a grader should trust its cues (fenced code blocks are
left out first: a `####` or a number in code is no answer):
1. the GSM8K marker `#### <answer>`: the first one whose line starts with a number (a Markdown heading
   `#### Step 1: ...` is no marker);
2. the last LaTeX `\\boxed{...}` (balanced braces, so `\\boxed{\\frac{1}{2}}` works);
3. the last "the answer is <x>" / "answer: <x>" phrase (after an `=` on that line, the number after the last one:
   "the answer is 5 - 3 = 2" is 2);
4. otherwise the last number in the text (the "flexible" fallback).

A number is what it writes whole: `1,234.5` (commas only in groups of three), `1 234` with thin or narrow spaces,
`1.5e3`, `2^10`, `1.2 x 10^5`, `3/4`, `25%`, `$5`. Anything else that looks like one is compared as text, never cut
to its first part: `3:5` (a ratio or a time), `5, 7` (a list), `12,34`, `1.234,56`. A typographic minus (U+2212) is
a minus. In a box, LaTeX's `{,}`, `\\,`, `\\%`, `\\$`, `^\\circ`, `\\text{ unit}`, `\\textbf{..}`, `\\frac`, `\\dfrac`,
`\\tfrac`, `\\frac12` and mixed numbers `3\\frac{1}{2}` are read as the number they typeset.

`normalize` gives a canonical string ("$1,234.50" -> "1234.5", "3/4" -> "0.75", "50.0%" -> "50%"), and
`is_correct` compares numerically when both sides are numbers: integers exactly, others within
|a - b| <= 1e-6 · max(1, |b|), and a percent as its number or its fraction ("25%" is right for a gold 25, GSM8K's
unit-less answer to a "what percent" question, and for 0.25); else as normalized text.
"""

from __future__ import annotations

import re
from fractions import Fraction

_GROUPED = r"\d{1,3}(?:,\d{3})+|\d{1,3}(?:[\u2009\u202f]\d{3})+"  # 1,234,567 and 1 234 567 with thin spaces
_THIN = r"\d{1,3}(?:[\u2009\u202f]\d{3})+(?:\.\d+)?"
_PLAIN = r"\d[\d,.]*\d|\d"  # a run of digits, commas and points: read whole, parsed (or not) by to_number
_POWER = r"(?:\s*(?:x|×|\\times|\\cdot)\s*10)?\^\{?-?\d+\}?"  # 2^10, 1.2 x 10^5, 3 \times 10^{-2}
_NUM = (rf"-?\$?\s*(?:{_THIN}|{_PLAIN}|\.\d+)(?:[eE][-+]?\d+)?(?:{_POWER})?(?::\d+)*(?:\s*/\s*\d+)?%?")
_NUM_RE = re.compile(_NUM)
_MARK_RE = re.compile(r"####[ \t]*(.+)")
_PHRASE_RE = re.compile(r"the\s+(?:final\s+)?answer\s+is|answer\s*[:=]", re.IGNORECASE)
_FENCE_RE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_FRAC_RE = re.compile(r"(-?)(\d+)?\\[dt]?frac(?:\{(-?\d+)\}|(\d))(?:\{(-?\d+)\}|(\d))")
_VALID = re.compile(rf"-?(?:(?:{_GROUPED})(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


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


def _unbox(boxed: str) -> str:
    """A box's LaTeX as the plain answer it typesets (units and spacing dropped, fractions written a/b)."""
    s = boxed.replace("{,}", ",").replace("\\%", "%").replace("\\$", "$")
    s = re.sub(r"\\[,!;: ]", "", s)  # LaTeX's thin and other spaces (10\,000)
    s = re.sub(r"\^\{?\\circ\}?|\\circ", "", s)  # degrees
    s = re.sub(r"\\(?:textbf|mathbf|mathrm|bm)\{([^{}]*)\}", r"\1", s)  # emphasis around the answer
    plain = re.sub(r"\\(?:text|mbox|textrm)\{[^{}]*\}", "", s).strip()  # a unit after the number
    s = plain or s
    frac = _FRAC_RE.fullmatch(s.replace(" ", ""))
    if frac:
        sign, whole = frac.group(1), frac.group(2)
        num, den = Fraction(frac.group(3) or frac.group(4)), Fraction(frac.group(5) or frac.group(6))
        if den == 0:
            return s
        x = (Fraction(whole) if whole else 0) + abs(num / den) * (1 if whole else (1 if num / den >= 0 else -1))
        x = -x if sign == "-" else x
        return f"{x.numerator}/{x.denominator}" if x.denominator != 1 else str(x.numerator)
    return s


def _whole(num: re.Match, line: str) -> str:
    """The number `num` found in `line`, or the list it begins ("5, 7": compared as text, never as its first
    number)."""
    lst = re.match(rf"{_NUM}(?:\s*,\s*{_NUM})+", line[num.start():])
    return lst.group(0) if lst and re.match(r"\s*,\s", line[num.end():]) else num.group(0)


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see the module docstring for the order of cues), or None."""
    if not text:
        return None
    # the minus sign of typeset text (read as +3 before), and LaTeX's grouping comma outside a box too
    text = _FENCE_RE.sub("\n", text.replace("\u2212", "-").replace("{,}", ","))
    for m in _MARK_RE.finditer(text):
        line = m.group(1).strip()
        num = _NUM_RE.match(line)
        if num:  # a marker followed by anything else is a heading
            return normalize(_whole(num, line))
    boxed = last_boxed(text)
    if boxed is not None:
        boxed = _unbox(boxed)
        num = _first_number(boxed)
        only_number = num is not None and re.fullmatch(r"\s*" + re.escape(num) + r"\s*\.?\s*", boxed)
        return normalize(num if only_number else boxed)
    phrases = list(_PHRASE_RE.finditer(text))
    if phrases:
        tail = text[phrases[-1].end() :].split("\n", 1)[0]
        tail = tail.rsplit("=", 1)[-1]  # "the answer is 5 - 3 = 2": what it comes to
        num = _NUM_RE.search(tail)
        if num is not None:
            return normalize(_whole(num, tail))
    num = _last_number(text)
    return normalize(num) if num is not None else None


def gold_answer(solution: str) -> str | None:
    """The reference answer of a GSM8K solution ("... #### 72"), or of a \\boxed{} solution (NuminaMath)."""
    return extract_answer(solution)


def to_number(s: str) -> Fraction | None:
    """The number `s` writes ("25%" is 1/4, "2^10" is 1024), or None when it writes none, or more than one."""
    t = s.strip().replace("\u2212", "-").rstrip(".,").replace("$", "").replace("\u2009", "").replace("\u202f", "")
    t = re.sub(r"^(-?)\s+", r"\1", t)  # "- 5", "$ 5"
    pct = t.endswith("%")
    t = t.removesuffix("%").strip()
    m = re.fullmatch(rf"({_VALID.pattern})(?:\s*(?:x|×|\\times|\\cdot)\s*10)?\^\{{?(-?\d+)\}}?", t)
    try:
        if m:  # a power: a^k, or a x 10^k
            base = Fraction(m.group(1).replace(",", ""))
            k = int(m.group(2))
            if abs(k) > 400:  # no answer; and 10^100000 is no number to build
                return None
            x = base * Fraction(10) ** k if re.search(r"(?:x|×|\\times|\\cdot)\s*10\^", t) else base**k
        elif "/" in t:
            a, b = (p.strip() for p in t.split("/", 1))
            if not (_VALID.fullmatch(a) and re.fullmatch(r"\d+", b)):
                return None
            x = Fraction(a.replace(",", "")) / Fraction(b)
        elif _VALID.fullmatch(t):
            x = Fraction(t.replace(",", ""))
        else:
            return None
    except (ValueError, ZeroDivisionError, OverflowError):
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
