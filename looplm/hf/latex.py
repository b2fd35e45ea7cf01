"""LaTeX as the plain text an answer is compared as (standard library only; `looplm.hf.answers` reads numbers).

`unbox` writes a box's content as the answer it typesets (spacing, units and emphasis dropped, an AMC choice
`\\text{(C)}` kept as `(C)`); `text_key` is the key two non-numeric answers are compared by: case and spaces aside,
`\\dfrac` as `\\frac`, a bare one-character argument braced (`\\sqrt2` as `\\sqrt{2}`), a quotient of whole terms
as `\\frac` (`3\\pi/4` as `\\frac{3\\pi}{4}`), a bracketed choice letter as the letter.
"""

from __future__ import annotations

import re

# a LaTeX command's argument: {..} (one level of braces inside, {\sqrt{3}}), a command (\pi) or one character
_ARG = r"\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|[A-Za-z0-9]"
# (a root's index is short, `\sqrt[3]`: an unbounded one scanned the rest of the text from each `\sqrt[`, seconds)
_ONE_ARG = re.compile(rf"\\(sqrt|overline|bar|hat|vec)(?![A-Za-z])(\[[^\][]{{1,8}}\])?\s*({_ARG})")
_TWO_ARGS = re.compile(rf"\\(frac|binom)(?![A-Za-z])\s*({_ARG})\s*({_ARG})")
# `a/b` of two whole terms (a number, letter, \pi, root or group) is \frac{a}{b}; never after ^ or _ (`x^2/3`)
_TERM = r"\d+(?:\.\d+)?|[A-Za-z]|\\pi(?![A-Za-z])|\\sqrt(?:\[[^\][]{1,8}\])?\{[^{}]*\}|\{[^{}]*\}|\([^()]*\)"
# and a numerator's coefficient with it: `3\pi/4` was no `\frac{3\pi}{4}` (never a denominator's: `1/2\pi` is half pi)
_COEF = r"\d+(?:\\pi(?![A-Za-z])|\\sqrt(?:\[[^\][]{1,8}\])?\{[^{}]*\}|[A-Za-z](?![A-Za-z]))"
_SLASH = re.compile(rf"(?<![\w^_\\.}})/])({_COEF}|{_TERM})\s*/\s*({_TERM})(?![\w^_{{(.!/])")


def unbox(boxed: str) -> str:
    """A box's LaTeX as the plain answer it typesets (units and spacing dropped; `_latex` ran on it already)."""
    s = _drop_spaces(boxed, r"~")  # LaTeX's spaces, between digits or not
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{\s*(or|and)\s*\}", r" \1 ", s)  # x=3 \text{ or } x=-3 was -3
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm|textbf|mathbf|bm)\{\s*([-\d.,/]+)\s*\}", r"\1", s)  # \text{5} is 5
    s = re.sub(r"\\(?:textbf|mathbf|bm)\{([^{}]*)\}", r"\1", s)  # emphasis around the answer
    # an AMC choice `\text{(C)}\ 42` is its letter, as `\textbf{(C)}` is (it was dropped as a unit: 42 alone)
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{\s*(\([A-Z]\))\s*\}", r"\1 ", s)
    # a unit after the number, with its power: 5\text{ cm}^2 was read as 5^2
    plain = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{[^{}]*\}(?:\s*\^\s*(?:\{\s*\d+\s*\}|\d))?", "", s).strip()
    s = plain or re.sub(r"\\(?:text|mbox|textrm|mathrm)\{([^{}]*)\}", r"\1", s)  # all text: \text{B} is B
    while re.fullmatch(r"\{[^{}]*\}", s):  # {5}
        s = s[1:-1].strip()
    return re.sub(r"^\+(?=\s*[\d.])", "", s)  # +5


def _drop_spaces(s: str, also: str) -> str:
    """`s` without LaTeX's spaces (`\\,`, `\\ `, ...) and what `also` matches, a row break `\\\\` kept whole (`1 \\\\ 2`
    lost its break's second half, read with the space as `\\ `: a matrix's spacing counted)."""
    return re.sub(rf"(\\\\)|\\[,!;: ]|{also}", lambda m: m.group(1) or "", s)


def text_key(s: str) -> str:
    """Normalized text as compared: case, inner spaces and `\\text{}` dress aside, `\\dfrac`/`\\tfrac` as
    `\\frac`, a choice letter in brackets as the letter
    (`yes` was wrong for `\\text{Yes}`, `(3, 5)` for `(3,5)`, `(B)` for `B`)."""
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    # a one-character argument written bare is that argument braced, as LaTeX typesets it (`2\sqrt2` was wrong for
    # `2\sqrt{2}`, `\frac{\sqrt3}2` for `\frac{\sqrt{3}}{2}`)
    s = _ONE_ARG.sub(lambda m: f"\\{m[1]}{m[2] or ''}{_braced(m[3])}", s)
    s = _TWO_ARGS.sub(lambda m: f"\\{m[1]}{_braced(m[2])}{_braced(m[3])}", s)
    # `\sqrt{2}/2` was wrong for `\frac{\sqrt{2}}{2}`, `(1+\sqrt{5})/2` for `\frac{1+\sqrt{5}}{2}`
    s = _SLASH.sub(lambda m: "\\frac" + "".join("{" + (t[1:-1] if t[0] in "({" else t) + "}" for t in m.groups()), s)
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = _drop_spaces(s, r"\s+").lower()
    m = re.fullmatch(r"[(\[]([a-z])[)\]]\.?", s)
    return m.group(1) if m else s


def _braced(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"
