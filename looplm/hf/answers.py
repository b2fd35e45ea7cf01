"""GSM8K-style final-answer extraction and comparison (standard library only).

`extract_answer` reads a model's completion in the order a grader should trust its cues (fenced code blocks and GSM8K's
`<<9*2=18>>` annotations are left out first: a `####` or a number in code is no answer, but an `output` code block is
the program's result and is read; with a `</think>` (or gpt-oss's final channel: `<|channel|>final<|message|>`, or
`assistantfinal` in text that opens with `analysis`), only the text after the last one is read, and of an
`<answer>...</answer>` block only its content, read whole as a box's when it is one plain answer (`<answer>C</answer>`,
`<answer>\\(\\sqrt{3}\\)</answer>`), else by these rules (`<answer>The answer is 18.</answer>`); special-token text,
`<|im_end|>`, `</s>`, `<｜end▁of▁sentence｜>`, is left out, `<sup>2</sup>` is `^{2}`, and another tag ends its line's
answer; a fraction's or an expression's rounding, `1/6 ≈ 0.167`, `\\sqrt{2} \\approx 1.414`, too):
1. the GSM8K marker `#### <answer>`: the first one whose line starts with a number (a Markdown heading
   `#### Step 1: ...` or a numbered one, `#### 1. Setting up`, `#### 2) Find`, `#### 1.1 Setting up`, `#### 1 - Setup`,
   `#### 1 Setting up`, is no marker; `#### **42**`, `#### $-42$`, `#### (42)`, `####: 42` are markers (a bracket is
   dress only around one number, `(1,000)`, `($1,000)`, `(1,000 dollars)` too: `#### (3, 5)` and `(1,23)` are
   tuples, as after the phrase and in a box; a unit word in brackets after one number, ASDiv's `9 (apples)` and
   `18\\,(\\mathrm{cm})`, is dress in a gold, a box and after the phrase too, not `2(ab)` or `3 (x)`); an `=` on it
   as in the phrase: `#### 5 - 3 = 2` is 2), or is a choice
   letter alone (`#### B`), or an expression that opens with a variable (`#### x - 1`) or of variables alone
   (`#### b - a`), or a word alone that is lowercase, yes/no/true/false, or on the text's last line (`#### yes`,
   `#### Tuesday`; `#### Solution` above the working is a heading); a marker alone on its line reads the next line
   that holds a letter or digit;
2. the last LaTeX `\\boxed{...}` (balanced braces, so `\\boxed{\\frac{1}{2}}` works; `\\boxed{x = 5}` is 5,
   `\\boxed{x = \\frac{1}{2}}` 1/2, `\\boxed{\\approx 18.3}` 18.3; `$`, `\\(..\\)` and a currency, `€18`, in it
   are dress; an empty one is none);
3. the last "the answer is <x>" / "answer: <x>" phrase (and "the correct, right or final option or choice is <x>", "the
   answer choice is <x>"; after an `=` on that line, the number after the last one: "the answer is 5 - 3 = 2" is 2,
   "45 = 15 * 3" is 45; "x = 5, y = 7" and "x = 3 or x = -3" are text, a chain "5 + 3 = 8, so 8 * 2 = 16" its last
   step, 16, as "2x = 3, so x = 1.5" is 1.5); a word or a choice letter it states is that answer, as text ("the answer
   is B because there are 4 choices", "twelve, not 11", "option B"), a number in a later clause none ("Yes, 97 is
   prime.", "No. 91 = 7 x 13", "B (3 + 4 = 7)"; "twelve (12)" is 12, "Total: 42" 42), but an AMC choice with its one
   number up to its clause's end is the pair as a box's (`(C) 42`, `C. 42`, `C: 42`, `\\textbf{(B)} 5`); a phrase
   that ends its line ("**Final answer:**") reads the next line that holds a letter or digit (past `$$` or `\\[`),
   without a list's `- ` or `1. `;
   an inequality or margin (`x ≤ 5`, `5 ± 2`) or an expression (`2\\sqrt{3}`, `4π`, `e^2`, `3x + 2`, `x - 1`, `b - a`,
   `(x-3)(x+2)`, after the marker too) is text, up to its clause's end or its math's `$` (`$3 + 4i$. I hope it is
   correct.` is `3 + 4i`, `$x^2$ square units` is `x^2`), as is a tuple, an interval or a union of them with its
   brackets (`(3, 5)`, `[2, 5)`, `(-\\infty,-2)\\cup(3,\\infty)`, after the marker or "answer is:" too; `x \\in [2, 5]`
   is `[2, 5]`; a list or hedge of them whole, `(0, 1) or (1, 0)`), and LaTeX right after the phrase that writes no
   number, read whole as a box's content (`$\\pi$`, `\\(-\\infty\\)`, `$\\frac{a}{b}$`, `\\mbox{yes}`, a matrix;
   MATH's "The final answer is $X$" is `\\boxed{X}`); a verdict ("the answer is correct/verified.") or a negation ("the
   answer isn't 5") states none, and the phrase before it is read; true/false that end their clause are the answer,
   as yes/no are ("Answer: False", "The answer is true.", "The final answer is True. I hope it is correct."; so a
   confirmation "the answer is true." after a number reads true: write "correct"), but judge with more words after
   them in their clause ("the answer is true to the question");
4. otherwise the last number in the text (the "flexible" fallback).

A number is what it writes whole: `1,234.5` (commas only in groups of three, so `(2,100)` is 2100: the pair is
`(2, 100)`), `1 234` with thin, narrow, no-break or en spaces, `1'234` (Swiss), `1.5e3`, `2^10` (and `2^{10}`,
`2^{ 10 }`, `10²`, `(-2)^2`; `-3^2` is -9; `2^{1/3}` is text), `1.2 x 10^5` (and `3·10^2`), `3/4`, the mixed
number `3 1/2` (and `2½`), `25%` (and `25 %`, `25 percent`, `25\\text{\\%}`), `$5`, a scale (`5k`, `1.2M`, `1.2
billion`, `3 thousand`); a unit's power is the unit's (`6 cm^2`, `6\\,\\text{s}^{-1}` are 6), and neither a list's
bullet (`- 42`) nor a spaced dash after a word (`Total - 12`) is a minus. Anything else that looks like one is compared
as text, never cut to its first part: `3:5` (a ratio or a time), `5, 7` and `42 or 43` (a list, a hedge), `12,34`,
`1.234,56`, `1 234,5`, `3/4/5`, `12/25/2023` and `2023-12-25` (dates), `10-15`, `3-1/2`, `5'6"`, `3/-4`, `4x10`, and
hedges (`42 or maybe 43`, `42 (or 43)`, `between 42 and 43`, `42 to 43`, `10 – 15`), but one answer written two ways is
that number (`1/8 or 12.5%`); "negative 5" and "minus 5" are -5. A typographic minus (U+2212) is a minus, as are a
figure or en dash and a small or fullwidth hyphen-minus right before a digit (an em dash is punctuation: "the total—42",
`18 — 9 eggs` is 18).
LaTeX is read as the number it typesets, in a box or not: `{,}`, MATH's `1,\\!080`, `\\,`, `\\%`, `\\$`, `\\frac`,
`\\dfrac`, `\\tfrac`, `\\frac12`, `\\frac 34`, `\\frac{3.5}{2}`, mixed numbers `3\\frac{1}{2}`, degrees (`^\\circ`,
`^{\\circ}`, `°`: `90^\\circ` is 90; the mark ends its number: `30^\\circ,150^\\circ` is the list `30, 150`, `18°C`
is 18), a rate in pieces (`50 \\text{ km}/\\text{h}` is 50), an ordinal (`5^{\\text{th}}`), a scale after the math
(`$4.5$ million`), and in a box an AMC choice `\\text{(C)}\\ 42` (as `\\textbf{(C)}`, `(\\text{C})`, `\\text{C) }42`,
`B) 42`, `C. 42`, `C: 42`, `C — 42`: a capital A-E, its period and a space; after the phrase and the marker too), a unit
`\\text{ cm}^2` or `\\mathrm{cm}`, `\\textbf{..}`, `\\text{5}`, `{5}`, `+5`.
A number past 10^400 (or a nonzero one below 10^-400) is no answer anyone writes: it is compared as text, and never
built (`1e999999999` would take minutes and gigabytes).

`normalize` gives a canonical string ("$1,234.50" -> "1234.5", "3/4" -> "0.75", "50.0%" -> "50%"; a non-integer never
as an integer), and `is_correct` compares numerically when both sides are numbers: exactly when either is an integer
(1000000.9 is no 1000000), others within |a - b| <= 1e-6 · max(1, |b|); a percent against a plain number as its number
("25%" is right for a gold 25, GSM8K's unit-less answer to a "what percent" question) or, against a proportion (-1 to
1), its fraction (right for 0.25; 2500% is not 25); two percents as they are (25% is no 0.25%); else as normalized
text, case and inner spaces aside, as `latex.text_key` reads LaTeX (a matrix's row break `\\\\` kept whole;
`\\dfrac` as `\\frac`, `(B)` as `B`, `\\sqrt2` as `\\sqrt{2}`, `a_1` as `a_{1}`, `\\sqrt{2}/2` and `3\\pi/4` as
fractions, `\\frac{4}{3}\\pi` as `\\frac{4\\pi}{3}`, `\\le`, `\\leq` and `≤` as one symbol; `π`, `√2`, `∞`, `x²` as
`\\pi`, `\\sqrt{2}`, `\\infty`, `x^{2}` (`x² - 1` as `x^{2} - 1`); a variable, a function or an indexed name set to the
answer aside, `x \\in [2,5]` as `[2,5]`, `x = \\pi` as `\\pi`, `p(x) = x^2 - 1` as `x^2 - 1`, `S_n = n^2` as `n^2`). A
gold that is NaN, the text "nan" or empty (a missing value) is refused with a ValueError, as is one whose marker or box
states none (`\\boxed{}`, `#### $$`) and an integer of thousands of digits; a number may be a Decimal; a completion that
is no text is a TypeError. `gold_answer` reads a solution as a completion, but a plain one-line answer (MATH's
`x^2+1`, `(3,5)`, `B`) as a whole, as a box's content.
"""

from __future__ import annotations

import bisect
import math
import numbers
import re
from decimal import Decimal, localcontext
from fractions import Fraction

from looplm.hf.answer_forms import choice_pair, latex_units, stated_word, unit_dropped, variables, verdict, yes_no
from looplm.hf.latex import (
    clause,
    expression,
    final_text,
    interval_at,
    last_boxed,
    markup,
    next_line,
    superscripts,
    symbolic,
    text_key,
    unbox,
)

_SEP = "[\u00a0\u2002-\u200a\u202f'’]"  # digit groups' spaces (no-break, en, thin, narrow) and the Swiss ' and ’
_GROUPED = rf"\d{{1,3}}(?:,\d{{3}})+|\d{{1,3}}(?:{_SEP}\d{{3}})+"  # 1,234,567, 1 234 567 (thin spaces), 1'234'567
_THIN = rf"\d{{1,3}}(?:{_SEP}\d{{3}})+(?:\.\d+)?"
_PLAIN = r"\d[\d,.]*\d|\d"  # a run of digits, commas and points: read whole, parsed (or not) by to_number
_MIXED = r"\d+[ \t]+\d+/\d+(?![\d/])"  # 3 1/2: tried first, or it would be read as 3
_TIMES = r"(?:x|×|\\times|\\cdot|·|⋅|\*)"
# an exponent, its braces balanced: `2^{1/3}` was read as `2^{1` (its `/3}` cut off or, in `(2)^{1/3}`, divided: 2/3)
_EXPONENT = r"\^(?:\{\s*-?\d+\s*\}|-?\d+)"  # (spaces in its braces: `2^{ 10 }` was 2)
_POWER = rf"(?:\s*{_TIMES}\s*10)?{_EXPONENT}"  # 2^10, 1.2 x 10^5, 3 \times 10^{-2}, 3·10^2
# a sign or a currency may stand apart from its digits ("- 5", "$ 5"); nothing else may (a `\s*` at the start made
# every position of a long run of spaces scan the whole run)
_NUM = (rf"(?:-\s*)?(?:\$\s*)?(?:{_MIXED}%?|(?:{_THIN}|{_PLAIN}|\.\d+)(?:[eE][-+]?\d+)?(?:{_POWER})?(?::\d+)*"
        rf"(?:\s*/\s*\d+)?%?)")
_NUM_RE = re.compile(_NUM)
_MARK_RE = re.compile(r"####[ \t]*(.*)")
# (the/my/correct ..., **Answer**:); "the answer isn't 5" / "is not 20" states no answer (5, 20 were read)
# (also a labelled answer, "Answer (in dollars): 18", and "Final answer - 18" / "Answer → 18": the text's last number
# won over them)
# ("the correct option is (B)", "the right choice is B", "the answer choice is (B)" are the answer phrase: they stated
# none, and the text's last number was read)
_PHRASE_RE = re.compile(r"\b(?:answer(?:\s+(?:option|choice))?|(?:correct|right|final)\s+(?:option|choice))\s+is"
                        r"(?!n['’]t\b|\s+not\b)|\banswer\W{0,3}?\s*[:=]|\banswer\s*\([^()\n]{1,60}\)\s*"
                        r"[:=]|\banswer[ \t]+(?:-|–|—|→|->|=>)[ \t]*(?=\S)", re.IGNORECASE)
_FENCE_RE = re.compile(r"```(?:output[ \t]*\n(.*?)|.*?)(?:```|\Z)", re.DOTALL)
_WORDY_RE = re.compile(r"^[^\n]*\w", re.MULTILINE)  # a line that holds a letter or digit
_FRAC_ARG = r"(?:\{\s*(-?[\d,.]+)\s*\}|\s*(\d))"  # {3}, { 3.5 }, {1,000}, or one bare digit (\frac12, \frac 34)
# (?<!\d): a mixed number's whole part is tried from its first digit only (from every digit of a run of 100,000
# digits, each trying the rest of the run, took minutes); a letter's coefficient stays LaTeX: `\frac{3}{2}x` as `3/2x`
# reads as 3/(2x)
_FRAC_RE = re.compile(rf"(-?)(?<!\d)(\d+)?\\[dt]?frac{_FRAC_ARG}{_FRAC_ARG}(?![A-Za-z])")
_VULGAR = dict(zip("½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞", ["1/2", "1/3", "2/3", "1/4", "3/4", "1/5", "2/5", "3/5", "4/5", "1/6", "5/6",
                                         "1/8", "3/8", "5/8", "7/8"], strict=True))
# (x)^k with a plain or fractional x, computed where it stands: `(-2)^2` was -2 (the marker's `(` is dress) and
# `(42)^2` 42; never after a letter, a digit or a bracket (f(2)^2, 3(2)^2 are no such number)
# (its exponent's braces balanced: `(2)^{1/3}` was `(2)^{1` computed, 2/3)
_PAREN_POW = re.compile(r"(?<![\w)\]}.])(-?)\(\s*(-?[\d.,]+(?:/\d+)?)\s*\)"
                        r"\^(?:\{\s*(-?\d{1,4})\s*\}|(-?\d{1,4})(?!\d))")
_DASHES = re.compile(r"[\u2012\u2013\ufe63\uff0d](?=\$?\.?\d)")  # figure/en dash, small and fullwidth hyphen-minus
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")  # zero-width: `7\u200b2` reads as 72, as it looks
_DIGITS = 400  # the largest power of ten a number may have (and the smallest, negated) to be read as one
_VALID = re.compile(rf"-?(?:(?:{_GROUPED})(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
# a bracket is a number's dress only around that number alone, `#### (42)`: stripped before a tuple's first number or
# a base's, `#### (3, 5)` and `(2)^{1/3}`, it left `3, 5)` and `2)^{1/3}`
# (each space run scanned once: a `\s*` after the dress's own spaces tried every split of 20,000 spaces, seconds)
_DRESS = (r"(?:[\s*_`$:=+€£¥₹~]|(?:[(\[{]|\\[(\[])(?=[\s$]*(?:-[\s$]*)?\.?\d[^\s()\[\]{}]*?[\s$*]*\\?[)\]}](?!\s*\^)))+"
          r"(?=(?:-[\s$]*)?\.?\d)")
_SCALE = {"thousand": "e3", "k": "e3", "million": "e6", "m": "e6", "billion": "e9", "b": "e9", "bn": "e9",
          "trillion": "e12"}
_COMPARE = re.compile(r"[<>≤≥≠±∓]|\\(?:le|ge|leq|geq|neq|ne|lt|gt|pm|mp)\b")  # x ≤ 5, 5 ± 2: no 5


def _first_number(s: str) -> str | None:
    return m.group(0) if (m := _NUM_RE.search(s)) else None


def _last_number(s: str) -> str | None:
    return found[-1] if (found := _NUM_RE.findall(s)) else None


def _signs(s: str) -> str:
    """Minus signs as `-`: U+2212 anywhere, and a figure or en dash or a small or fullwidth hyphen-minus right before
    a digit (`#### –42` was read as 42, the marker line being a heading); zero-width characters dropped."""
    return _DASHES.sub("-", _INVISIBLE.sub("", s.replace("\u2212", "-")))


def _fraction_text(x: Fraction) -> str:
    return f"{x.numerator}/{x.denominator}" if x.denominator != 1 else str(x.numerator)


def _latex(text: str) -> str:
    """LaTeX that typesets a number, written as plain text (in a box or not): `$\\frac{3}{4}$` was read as 3 and
    `10\\,000` as 10 outside a box. A fraction of integers becomes `a/b` (a mixed `3\\frac{1}{2}` its value, 7/2)."""
    s = _signs(text).replace("{,}", ",").replace("\\%", "%").replace("\\$", "$")
    s = superscripts(s)  # (first: a unit's power is dropped below, `18 m²` is 18; `10²` was 10, `x² + 1` 1)
    s = latex_units(s)  # `\text{km}/\text{h}`, `\text{s}^{-1}`, `5^{\text{th}}`: units and ordinals, not arithmetic
    s = re.sub(r"\\(?:displaystyle|textstyle|left|right)\b", "", s)
    # degrees are the number: `$90^\circ$` after the phrase or `#### 90^\circ` was the text `90^\circ`, never right
    # for a gold 90 (only a box dropped the mark). The mark ends its number: `30^\circ,150^\circ` (two angles) was 30150
    # (and takes its scale's letter glued to it, `18°C`, `98.6°F`: it was the text `18C`, as `18 °C` is 18)
    s = re.sub(r"(?:(?:\{\})?\^\s*(?:\{\s*\\circ\s*\}|\\circ(?![A-Za-z]))|(?<=\d)\s*\\circ(?![A-Za-z])|°)"
               r"(?:[CF](?![A-Za-z]))?(\s*,\s*(?=[-+]?\.?\d))?", lambda m: ", " if m.group(1) else "", s)
    s = re.sub(r"\\(?:text|mathrm)\{\s*(%|(?:thousand|million|billion|trillion)\b)\s*\}", r" \1", s)  # 25\text{\%}
    # a scale: "$1.2 billion" and "5k" were 1.2 and 5 (the number's first part)
    # (also past the math's end, `$4.5$ million`, `\(4.5\) million`: the delimiter stays after the scale)
    s = re.sub(r"(\d)(\$|\\\))?[ \t]*(thousand|million|billion|trillion)\b|(?<=\d)(k|K|M|B|bn)\b",
               lambda m: (m.group(1) or "") + _SCALE[(m.group(3) or m.group(4)).lower()] + (m.group(2) or ""), s)
    # a unit's power belongs to the unit: "6 cm^2", "$6\text{ cm}^2$", "9.8 m/s^2" were read as 2
    s = re.sub(r"(\d[ \t]*(?:\\(?:text|mathrm)\{[^{}\n]*\}|[ \t](?:[kcmµ]?m|[km]?g|ft|in|yd|mi|s|inch(?:es)?|feet|foot"
               r"|met(?:er|re)s?|units?)(?:/[a-z]+)?))[ \t]*\^[ \t]*(?:\{\s*\d+\s*\}|\d)", r"\1", s)
    # MATH's thousands separator `1,\!080` (and `1,\,080`) is the comma: only a box dropped the `\!`
    s = re.sub(r"(?<=\d),(?:\\[,!;: ])+(?=\d{3}(?!\d))", ",", s)
    s = re.sub(r"(?<=\d)\\[,!;: ](?=\d)", "", s)  # LaTeX's thin and other spaces inside a number (10\,000)
    s = re.sub(r"(?<=\d)(?:[^\S\n]|\\[,!;: ]){1,3}%", "%", s)  # `50 %`, `50\,\%`: the number's percent, not 50
    s = re.sub(r"(\d)\s*(?:percent|per cent)\b", r"\1%", s, flags=re.IGNORECASE)  # "50 percent" is 50%
    s = re.sub(r"(?<![\w.])(?<!\d\s)(?:negative|minus)\s+(?=\$?\.?\d)", "-", s, flags=re.IGNORECASE)  # "negative 5"
    s = re.sub(f"(\\d?)([{''.join(_VULGAR)}])",  # 2½ is 2 1/2
               lambda m: (m.group(1) + " " if m.group(1) else "") + _VULGAR[m.group(2)], s)

    def frac(m: re.Match) -> str:
        parts = [m.group(3) or m.group(4), m.group(5) or m.group(6)]
        if not all(_VALID.fullmatch(p) for p in parts) or Fraction(parts[1].replace(",", "")) == 0:
            return m.group(0)
        num, den = (Fraction(p.replace(",", "")) for p in parts)
        x = num / den
        if m.group(2):  # a mixed number: its whole part and the fraction's size, the sign in front of both
            x = Fraction(m.group(2)) + abs(x)
        return _fraction_text(-x if m.group(1) else x)

    def power(m: re.Match) -> str:
        base = to_number(m.group(2))
        x = None if base is None else _power(base, int(m.group(3) or m.group(4)))
        return m.group(0) if x is None else _fraction_text(-x if m.group(1) else x)

    return _PAREN_POW.sub(power, _FRAC_RE.sub(frac, s))


def _whole(num: re.Match, line: str) -> str:
    """The number `num` found in `line`, or the list it begins ("5, 7", "42 or 43"), or the token it begins when that
    goes on as no number does ("1 234,5", "3/4/5", "12/25/2023", `5'6"`, `3/-4`): compared as text, never as its
    first part."""
    rest = line[num.end():]
    if re.search(r"\bbetween\s+\$?$", line[:num.start()], re.IGNORECASE):  # "between 42 and 43" was 42
        return clause(line[num.start():])
    # a list, or a hedge of two answers (42 or 43, 42 or maybe 43, 42 (or 43), 42 to 43, 10 – 15; 42 and 43 when they
    # open the answer, not "we add 3 and 4"; each in its math, `$30$ and $150$`, was 30): no one number, unless every
    # one is the same number (1/8 or 12.5%)
    alt = rf"\$?(?:\s*,\s*(?:or\s+)?|\s+or\s+(?:[a-z]+\s+)?|\s*\(\s*or\s+|\s+to\s+|\s*–\s*|\s+and\s+){_NUM}\)?"
    lst = re.match(rf"{_NUM}(?:{alt})+", line[num.start():])
    hedge = r"\s+or\s" if re.search(r"\w", line[:num.start()]) else r"\s+(?:or|and)\s"
    if lst and re.match(rf"\$?(?:\s*,\s|{hedge}|\s*\(\s*or\s|\s+to\s|\s*–)", rest):
        said = _NUM_RE.findall(lst.group(0))
        values = {to_number(x) for x in said}
        if len(values) == 1 and None not in values:  # one answer written two ways: the percent, if one is
            return next((x for x in said if _is_percent(x)), said[0])
        return _opened(line, num.start(), lst.group(0))
    if re.match(r"[^\s\w=—]*\d", rest):  # glued on by a symbol (3-1/2, 2023-12-25, 10-15, 1'2345, 5'6", 3/-4; not —)
        return _opened(line, num.start(), re.match(r"\s*[^ \t\n]+", line[num.start():]).group(0))
    if re.match(r"\s*(?:\*\*|[-+*/×÷^_·⋅]|x|\\times|\\cdot)\s*\(?\d", rest):  # 5 - 3, 2**10, 1_000, 3 x 4, 4x10
        # up to its clause's end or its math span's `$`: `$3 + 4i$. I hope it is correct.` took the rest of the line
        return _opened(line, num.start(), re.split(r"\$(?!\s*\.?\d)", clause(line[num.start():]))[0].strip())
    return num.group(0)


def _opened(line: str, start: int, said: str) -> str:
    """`said`, read from `start` in `line`, with the bracket before it that it closes: `x = (3, 5)` was `3, 5)` and
    `(2)^{1/3}` `2)^{1/3}`, text equal to nothing."""
    j = len(line[:start].rstrip())
    unclosed = sum(map(said.count, ")]")) > sum(map(said.count, "(["))
    return line[j - 1:start] + said if unclosed and j and line[j - 1] in "([" else said


def _side(s: str) -> str | None:
    """Of `a = b`, the side that is the answer: what it comes to ("5 - 3 = 2" is 2), or the side that is a number
    ("45 = 15 * 3" is 45); None for several answers ("x = 5, y = 7", "x = 3 or x = -3"); of a chain of steps ("5 + 3 =
    8, so 8 * 2 = 16": no variable is set) the last one's result (the whole line was text); `s` when it holds no `=`,
    or one of `<=`, `>=`, `!=`, `==` (`x >= 5` is no 5)."""
    # (two variables set, not one: "2x - 3 = 0, so x = 1.5" was text whole, while without its comma it is 1.5)
    if (s.count("=") > 1 and re.search(r"[,;]|\b(?:and|or)\b", s)
            and len(re.findall(r"(?<![\w\\])[^\W\d_]\w*(?:\([^()]*\))?\s*=", s)) > 1):
        return None
    if re.search(r"[<>!=]=|=[<>=]", s):
        return s
    sides = s.split("=")
    return sides[0] if len(sides) > 1 and _sum(sides[-1]) and not _sum(sides[0]) else sides[-1]


def extract_answer(text: str) -> str | None:
    """The final answer of a completion (see the module docstring for the order of cues), or None."""
    if not isinstance(text, str) and text is not None:  # (42 raised "argument of type 'int' is not iterable")
        raise TypeError(f"extract_answer reads a completion's text, got {type(text).__name__} {text!r:.40}")
    if not text:
        return None
    # a reasoning model's draft (its "the answer is 20" in <think>, gpt-oss's analysis channel) is superseded by what
    # it says after </think> (or in its final channel)
    text, block = markup(final_text(text))
    # an `<answer>` block's content is the answer whole, as a box's is (`<answer>\\sqrt{3}</answer>` was 3); one
    # with prose, a marker, a phrase or a box in it (`<answer>The answer is 18.</answer>`) is read as a completion
    if block and (said := _plain_answer(text)) is not None:
        return said
    # code is no answer, but a ```output block is the program's result (tool-integrated completions): it is read
    text = _FENCE_RE.sub(lambda m: "\n" + m.group(1) + "\n" if m.group(1) is not None else "\n", text)
    text = re.sub(r"<<[^<>\n]*>>", "", text)  # GSM8K's <<9*2=18>>18 was `18>>18`
    # a list's bullet ("- 42") and a spaced dash after a word ("Total - 12") are no minus signs (-42, -12 were read)
    text = re.sub(r"(?m)^([ \t]*)[-*•+][ \t]+(?=\S)", r"\1", text)
    # (from a word's start only, and not after a LaTeX command's `\\`: `\\pi - 2` is an expression; from every letter of
    # a run of 100,000, each scanning the rest of the run, it took minutes; superscripts are powers first, as
    # _latex reads them: `x² - 1` was `x^{2}: 1`)
    text = _latex(re.sub(r"(?<![\w\\])([^\W\d_]{2,})[ \t]+[-–][ \t]+(?=\$?\d)", r"\1: ", superscripts(text)))
    # a fraction's or an expression's rounding after it ("1/6 ≈ 0.167", `\\frac{1}{6} \\approx 0.17`, `\\sqrt{2}
    # \\approx 1.414`, `2\\pi \\approx 6.28`, `e^2 ≈ 7.389`) is left out: the answer is the exact value (the rounding,
    # the text's last number, was read: wrong for a gold 1/6 or \\sqrt{2}). A decimal's rounding is kept: "41.67 ≈ 42
    # buses" is 42
    text = re.sub(r"(/\d+|\}|\\pi|π|√\d+|\^\d+)[ \t]*(?:≈|\\approx(?![A-Za-z]))[ \t]*\$?-?\.?\d[\d,.]*"
                  r"(?:\\overline\{\d+\})?%?", r"\1", text)
    wordy = [m.start() for m in _WORDY_RE.finditer(text)]
    read = -1
    for m in _MARK_RE.finditer(text):
        at, line = next_line(text, m.start(1), wordy)
        if at == read:  # bare markers before one line: it was read (and is no answer) already
            continue
        read = at
        said = _marker_answer(line.strip(), bisect.bisect_right(wordy, at) == len(wordy))
        if said is not None:
            return said
    boxed = last_boxed(text)
    if boxed is not None and (said := _box_answer(boxed)) is not None:  # (an empty box states none)
        return said
    # the last phrase that states an answer: "The answer is 42. I checked 3 ways: the answer is correct." was 3
    phrases = list(_PHRASE_RE.finditer(text))
    for i in reversed(range(len(phrases))):
        limit = phrases[i + 1].start() if i + 1 < len(phrases) else None
        said = _phrase_answer(next_line(text, phrases[i].end(), wordy, limit)[1])
        if said is not None:
            return said
    num = _last_number(text)
    return normalize(num) if num is not None else None


def _box_answer(boxed: str) -> str | None:
    """A box's answer: its one number, else its text (`\\boxed{x = 5}` is 5, as "the answer is x = 5" is); None for
    an empty one (`\\boxed{}`, `<answer>$$</answer>` were ''); a unit in brackets after its number is dress."""
    boxed = unbox(unit_dropped(boxed, lambda lead: to_number(unbox(lead)) is not None))  # `9 (apples)` is 9
    if not boxed.strip(" .$"):
        return None
    side = _side(boxed) or boxed
    # a bracket around one number is its dress, as after the marker and the phrase (`(1,000)` is 1000, as `#### (1,000)`
    # is: a gold `(2,100)` was text, wrong for "The answer is: (2,100)")
    inner = re.fullmatch(r"\s*[(\[]([^()\[\]]*)[)\]]\s*", side)
    side = inner.group(1) if inner and interval_at(side) is None else side
    num = _first_number(side)
    # a number and a plain unit word (`18 dollars`, `6 cm^2`: a GSM8K gold is the bare number) is the number
    only_number = num is not None and re.fullmatch(r"\s*" + re.escape(num) + r"(?:\s+[A-Za-z]+(?:\s*\^\s*\{?\d\}?)?)?"
                                                   r"\s*\.?\s*", side)
    return normalize(num if only_number else boxed)


def _marker_answer(line: str, last: bool) -> str | None:
    """The answer a `####` line states, or None for a heading (`#### Step 1`, `#### 1.1 Setting up`, `#### Solution`).
    `last`: no line with a letter or digit follows (`#### Tuesday` at the end is an answer, `#### Solution` is not)."""
    tup = interval_at(line)  # `#### (-\infty, -2) \cup (3, \infty)` was 3, `#### (3, 5)` `3, 5)`
    if tup is not None:
        return normalize(tup)
    if (pair := choice_pair(line)) is not None:  # `#### (B) 5`: as after the phrase (B was read, `$\textbf{(B)}\ 5$` 5)
        return pair
    # the number's dress: #### **42**, #### $-42$, #### (42), #### `42`, #### +42, #### €42, ####: 42, #### = 42
    raw, line = line, re.sub("^" + _DRESS, "", line)  # (and \(42\), [42], {42})
    # a numbered heading, no answer (as `#### Step 1` is none): `#### 1. Setting up`, `#### 2) Find`, and `1.1 Setting
    # up`, `2.3. Compute`, `1 - Setting up`, `1 Setting up`, `1/ Setting up` (their step number was the answer)
    if re.match(r"\d+[.):]\s+[^\W\d_]|\d+(?:\.\d+)*\.?(?:\s*(?:[.):/]|[-–—]))?\s+[A-Z][a-z]", line):
        return None
    num = _lead_number(line)
    if "=" in line and not _COMPARE.search(line):  # `#### 5 - 3 = 2` is 2, as the phrase's and the box's
        side = _side(line)
        if side is None:  # (`#### x = 5, y = 7`, several answers, was None, then the last number, 7)
            return normalize(line)
        if num:
            raw = side.strip()
            line = re.sub("^" + _DRESS, "", raw)
            num = _lead_number(line)
    # (and an expression that opens with a variable, `#### x - 1`, `#### $x - 1$`: its last number, -1, was read)
    expr = None if num else re.match(r"[-(|$]*[A-Za-z](?![A-Za-z])", line) and _NUM_RE.search(line)
    if num and (_COMPARE.search(line) or symbolic(line, num)) or expr and symbolic(line, expr):  # `#### 5 ± 2` 5
        return normalize(expression(line))
    if num:  # (with the dress's bracket when the answer closes it: `#### (3)(4)` was `3)(4)`)
        return normalize(_opened(raw, len(raw) - len(line) + num.start(), _whole(num, line)))
    # `#### B`: a choice, as \boxed{B} is; and `#### Option B`, `#### B) 42` (the last number was read)
    choice = re.match(r"[*_`$(\[{]*(?:(?i:option|choice)\s*[(\[]?)?([A-Z])(?:[*_`$)\]}.]*$|[)\]:.]\s*[-$]?\.?\d)", line)
    if choice:
        return choice.group(1)
    # a word alone (`#### yes`, `#### Tuesday` at the end): lowercase, yes/no/true/false, or on the last line; a
    # capitalised word with more text after it is taken for a heading (`#### Solution`)
    word = re.fullmatch(r"[*_`$]*([^\W\d_]+)[*_`$]*\.?", line) or yes_no(line)  # (`#### No, 91 = 7 x 13` too)
    if word and (word.group(1)[0].islower() or word.group(1).lower() in ("yes", "no", "true", "false") or last):
        return word.group(1)
    side = _side(expression(line))  # `#### b - a`, `#### $y = -x$`: as after the phrase (they were None)
    return None if side is None else variables(side)


def _lead_number(line: str) -> re.Match | None:
    """The number a marker's line opens with, or the one after a bracket that is no dress (`(2)^{1/3}`)."""
    return _NUM_RE.match(line, 1 if line[:1] in "([" else 0)


def _phrase_answer(tail: str) -> str | None:
    """The answer a phrase's `tail` states, or None when it states none ("is correct.", "is below the limit")."""
    tup = interval_at(tail)  # (3,5) was 3,5: a tuple keeps its brackets
    if tup is not None:
        return normalize(tup)
    if verdict(tail):
        return None
    word = choice_pair(tail) or stated_word(tail)  # (`(B) 5` whole, as a box's: its letter alone was wrong for 5)
    if word is not None:
        return word
    math = _math_after(tail)
    if math is not None:  # `$\\pi$`, `$-\\infty$`, a matrix: read whole, as a box's content (a number is read below)
        said = _box_answer(math)
        if said is not None and to_number(said) is None:
            return said
    side = _side(tail)
    if side is None:  # "x = 5, y = 7": several answers
        return normalize(tail)
    num = _NUM_RE.search(side)
    if _COMPARE.search(side) or num is not None and symbolic(side, num):  # x ≤ 5, 5 ± 2, 3x + 2: as text
        return normalize(expression(tail))
    return variables(side) if num is None else normalize(_whole(num, side))


def _math_after(tail: str) -> str | None:
    """The LaTeX a phrase's `tail` opens with: a math span (`\\(-\\infty\\)`, a `$...$` with a command or no digit:
    `$5 and $6` is money), or a bare command with no digit in its clause (`\\pi.`, `\\mbox{yes}`). Such an answer was
    none (the text's last number was read), and a matrix its first entry."""
    lead = r"[\s*_:]*(?:(?:thus|therefore|hence|so|then|now)\b[\s,:]*)?"
    m = re.match(lead + r"(?:\$\$?([^$\n]+?)\$|\\[(\[]([^\n]+?)\\[)\]])", tail, re.IGNORECASE)
    if m:
        # (a span of a sign alone is no answer: `$-\$5$` is `$-$5$` once `\$` is read, and was "-")
        return m[2] or (m[1] if "\\" in m[1] or not re.search(r"\d", m[1]) and m[1].strip() not in "-+" else None)
    m = re.match(lead + r"(-?(?:\\[A-Za-z]|∞).*)", tail, re.IGNORECASE)  # (`-∞.` stated none)
    return clause(m.group(1)) if m and not re.search(r"\d", clause(m.group(1))) else None


def _sum(side: str) -> bool:
    """Whether one side of an `=` is a calculation ("15 * 3") rather than the number it comes to."""
    # (a fraction is a number: `x = 1/2` was read as `x`, the other side of the "calculation" 1 / 2)
    return to_number(side) is None and bool(re.match(rf"\s*{_NUM}\s*(?:[-+*/×x÷^·⋅]|\\times|\\cdot)\s*\(?\d", side))


def gold_answer(solution: str | float) -> str | None:
    """The reference answer of a GSM8K solution ("... #### 72"), or of a \\boxed{} solution (NuminaMath); a number
    (a dataset's numeric answer column, AMC23's 27.0) is its own answer, as is a plain one-line answer with no marker,
    box or phrase (MATH's `x^2+1`, `(3,5)`, `B`, `yes`: read as a box's content; it was its last number, or None),
    once its tags and special tokens are read as a completion's (`<answer>18</answer>` and `18<|im_end|>` are 18)."""
    text = _text(solution)
    if not text.replace("####", "").strip():  # an empty answer cell (a parquet/CSV fill) graded every prediction wrong
        raise ValueError(f"the gold answer is {text!r} (a missing value?): give the reference answer")
    # its tags and special tokens read as a completion's are (`<answer>18</answer>`, `<think>..</think>18`,
    # `18<|im_end|>` were golds of their literal text, which no completion, not even the gold itself, matched)
    body, _ = markup(final_text(text))
    said = _plain_answer(body) if body.strip() else None
    said = extract_answer(text) if said is None else said
    if said is None and (_MARK_RE.search(text) or last_boxed(text) is not None or not body.strip()):  # `\boxed{}`,
        # `#### $$`, `<answer></answer>`: None, so all wrong
        raise ValueError(f"the gold answer is {text!r:.80} (a missing value?): give the reference answer")
    return said


def _plain_answer(text: str) -> str | None:
    """A plain one-line answer (no marker, box, phrase or prose) read whole as a box's content (MATH's `x^2+1`,
    `(3,5)`, `B`, `**18**`), else None."""
    bare = re.sub(r"\\[A-Za-z]+", "", text)  # LaTeX commands are no prose
    if ("\n" in text.strip() or _MARK_RE.search(text) or _PHRASE_RE.search(text) or last_boxed(text) is not None
            or re.search(r"(?<![A-Za-z])[A-Za-z]{2,}\s+[A-Za-z]{2,}", bare)):
        return None
    return _box_answer(_latex(re.sub(r"(?<!\\)\$", "", text.strip().strip("*`"))))  # `$x = 5$`: math delimiters


def _text(x: str | float) -> str:
    """A numeric answer as text (a float or int column failed at .strip(), only once a prediction held a number;
    a Decimal, a database's exact column, was refused as no number: it is its own digits, "0.50", "1E+3")."""
    if isinstance(x, bool) or not isinstance(x, (str, numbers.Real, Decimal)):
        raise TypeError(f"an answer must be text or a number, got {type(x).__name__} {x!r:.40}")
    if isinstance(x, str):
        return x
    # a missing numeric gold (pandas reads a null as NaN) was "nan": right for a model's "NaN" (numpy's float32 too)
    if x.is_nan() if isinstance(x, Decimal) else not isinstance(x, numbers.Integral) and math.isnan(x):
        raise ValueError("an answer is NaN (a missing value?): give a number or text")
    if isinstance(x, numbers.Integral) and abs(int(x)).bit_length() > 13000:  # (str() refuses past 4300 digits)
        raise ValueError(f"an answer is an integer of about {int(abs(int(x)).bit_length() * 0.30103)} digits: no "
                         f"answer has that many (a number past 10^{_DIGITS} is compared as text)")
    # (Decimal's infinity writes "Infinity", which the prediction "inf" a float infinity's text matched did not)
    return repr(float(x)) if isinstance(x, float) or isinstance(x, Decimal) and x.is_infinite() else str(x)


def _power(base: Fraction, k: int) -> Fraction | None:
    """base**k, or None when it is past any number an answer writes (10^100000 is no number to build)."""
    if base == 0:
        return None if k < 0 else base**k
    return None if abs(k) * math.log10(max(abs(base.numerator), base.denominator)) > _DIGITS else base**k


def to_number(s: str) -> Fraction | None:
    """The number `s` writes ("25%" is 1/4, "2^10" is 1024), or None when it writes none, or more than one."""
    t = _signs(s.strip()).rstrip(".,").replace("$", "")
    t = re.sub(rf"(?<=\d){_SEP}(?=\d)", ",", t)  # 1 234 (thin or no-break spaces), 1'234: groups, checked as 1,234
    t = re.sub(r"^(-?)\s+", r"\1", t)  # "- 5", "$ 5"
    pct = t.endswith("%")
    t = t.removesuffix("%").strip()
    if any(len(e) > 3 or int(e) > _DIGITS for e in re.findall(r"[eE][-+]?(\d+)", t)):
        return None  # 1e999999999: Fraction would build the integer (minutes, gigabytes)
    m = re.fullmatch(rf"(-?)({_VALID.pattern})(?:\s*{_TIMES}\s*10)?\^(?:\{{\s*(-?\d+)\s*\}}|(-?\d+))", t)
    mixed = re.fullmatch(r"(-?)(\d+)[ \t]+(\d+)/(\d+)", t)
    try:
        if m:  # a power: a^k, or a x 10^k; the sign after the power (-3^2 is -9, and was 9)
            base = Fraction(m.group(2).replace(",", ""))
            k = m.group(3) or m.group(4)
            ten = re.search(rf"{_TIMES}\s*10\^", t)
            x = None if len(k.lstrip("-")) > 4 else base * Fraction(10) ** int(k) if ten else _power(base, int(k))
            if x is None:
                return None
            x = -x if m.group(1) else x
        elif mixed:  # 3 1/2 is 3.5; 5 6/3 is no way to write a number
            whole, num, den = (int(g) for g in mixed.groups()[1:])
            if not 0 < num < den:
                return None
            x = (whole + Fraction(num, den)) * (-1 if mixed.group(1) else 1)
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
    x = x / 100 if pct else x
    if x and not Fraction(1, 10**_DIGITS) <= abs(x) <= 10**_DIGITS:
        return None
    return x


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
    # the integer part whole and fifteen significant digits after it, in decimal arithmetic: a float overflows
    # past 1e308, rounding to ten places made 1e-10 "1e-1", and fifteen digits in all made 1234567890123456.5 the
    # integer 1234567890123460, which then compared exactly equal to that integer. A non-integer that rounds to an
    # integer (0.99999999999999999 to 1) gets the digits its denominator needs: it was graded as that integer.
    out = str(x.numerator)
    if x.denominator != 1:
        whole = len(str(abs(x.numerator) // x.denominator))
        for digits in (15, x.denominator.bit_length() * 3 // 10 + 2):  # (bit_length: str() stops at 4300 digits)
            with localcontext() as c:
                c.prec = whole + digits
                d = (Decimal(x.numerator) / Decimal(x.denominator)).normalize()
            if d != d.to_integral_value():
                break
        out = format(d, "g")
    return out + "%" if pct else out


def _is_percent(s: str) -> bool:
    return s.strip().rstrip(".").endswith("%")


def _same(a: Fraction, b: Fraction) -> bool:
    if a.denominator == 1 or b.denominator == 1:  # an integer exactly: 999999 (or 1000000.9) is no 1000000
        return a == b
    return abs(a - b) <= Fraction(1, 10**6) * max(1, abs(b))  # exactly: floats overflow past 1e308


def is_correct(prediction: str | None, gold: str | float | None) -> bool:
    """Numeric equality when both parse as numbers (integers exactly, others within a relative 1e-6, a percent
    against a plain number read as its number or, for a proportion, its fraction); otherwise exact normalized text.
    A number (a dataset's numeric answer column) is read as its text."""
    if prediction is None or gold is None:
        return False
    prediction, gold = _text(prediction), _text(gold)
    if gold.strip().lower() in ("nan", ""):  # a missing gold as str() writes it, or empty: no prediction is right
        raise ValueError(f"the gold answer is {gold!r} (a missing value?): give the reference answer")
    # an AMC answer `\textbf{(C)}\ 42` (a choice letter and one number, on either side): its letter or its number.
    # Only a number after the letter: `(A) (B) (C)` (every option boxed) or `(A) or (B)` was credited for A
    p, g = _amc(prediction), _amc(gold)
    if p and g:
        return p[0] == g[0] or is_correct(p[1], g[1])
    if p or g:
        return any(is_correct(*pair) for pair in ([(x, gold) for x in p] if p else [(prediction, x) for x in g]))
    a, b = to_number(prediction), to_number(gold)
    if a is not None and b is not None:
        ways_a, ways_b = [a], [b]
        # a percent against a plain number: as its number (25% for GSM8K's unit-less 25) or, against a proportion
        # (-1 to 1), its fraction (25% for 0.25). Every pairing made 25% right for 0.25% and 2500% for 25 (its
        # fraction); two percents are compared as they are.
        if _is_percent(prediction) and not _is_percent(gold):
            ways_a = [a * 100] + ([a] if abs(b) <= 1 else [])
        elif _is_percent(gold) and not _is_percent(prediction):
            ways_b = [b * 100] + ([b] if abs(a) <= 1 else [])
        return any(_same(x, y) for x in ways_a for y in ways_b)
    return text_key(normalize(prediction)) == text_key(normalize(gold))


def _amc(s: str) -> tuple[str, str] | None:
    """(letter, number) of an AMC answer "(C) 42" (`C. 42` too: `\\boxed{B. 5}` was text, wrong for B and 5), or None"""
    m = re.fullmatch(r"\s*(?:\(?([A-Z])\)|([A-E])\.(?=\s))\s*(\S+?)\.?\s*", s)  # (`B) 42` as `(B) 42`: it was text)
    return (m[1] or m[2], m[3]) if m and to_number(m[3]) is not None else None
