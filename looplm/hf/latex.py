"""LaTeX as the plain text an answer is compared as (standard library only; `looplm.hf.answers` reads numbers).

`unbox` writes a box's content as the answer it typesets (spacing, units and emphasis dropped, an AMC choice
`\\text{(C)}` kept as `(C)`); `text_key` is the key two non-numeric answers are compared by: case and spaces aside,
`\\dfrac` as `\\frac`, `\\le`/`\\leq`/`≤` (and the other relations) as one symbol, `π`, `√2`, `∞`, `x²` as `\\pi`,
`\\sqrt{2}`, `\\infty`, `x^{2}`, a bare one-character argument braced (`\\sqrt2` as `\\sqrt{2}`, `x^2` as `x^{2}`), a
quotient of whole terms as `\\frac` (`3\\pi/4` as `\\frac{3\\pi}{4}`, `\\frac{4}{3}\\pi` as `\\frac{4\\pi}{3}`), a
bracketed choice letter as the letter, a variable, function or indexed name set to the answer (`x \\in [2,5]`, `x =
\\pi`, `p(x) = x^2`, `S_n = n^2`) aside; a currency in a box (`€18`) is dress, as `\\$` is. `last_boxed` finds a box's
content and `interval_at` the tuple or interval an answer opens with; `markup` reads a completion's tags (special-token
text, an `<answer>` block, HTML-like tags), `final_text` the text after a reasoning draft (`</think>`, gpt-oss's
analysis channel); `clause` and `symbolic` tell an expression answer (`3x + 2`, `x - 1`) from a number,
`expression` where it ends.
"""

from __future__ import annotations

import bisect
import re

# a LaTeX command's argument: {..} (one level of braces inside, {\sqrt{3}}), a command (\pi) or one character
_ARG = r"\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+|[A-Za-z0-9]"
# (a root's index is short, `\sqrt[3]`: an unbounded one scanned the rest of the text from each `\sqrt[`, seconds)
_ONE_ARG = re.compile(rf"\\(sqrt|overline|bar|hat|vec)(?![A-Za-z])(\[[^\][]{{1,8}}\])?\s*({_ARG})")
_TWO_ARGS = re.compile(rf"\\(frac|binom)(?![A-Za-z])\s*({_ARG})\s*({_ARG})")
# a superscript or subscript is an argument too: `x^2` typesets as `x^{2}`, `a_1` as `a_{1}` (an escaped `\_` is none)
_SCRIPT = re.compile(rf"(?<!\\)([\^_])\s*({_ARG})")
# `a/b` of two whole terms (a number, letter, \pi, root or group) is \frac{a}{b}; never after ^ or _ (`x^2/3`)
_TERM = r"\d+(?:\.\d+)?|[A-Za-z]|\\pi(?![A-Za-z])|\\sqrt(?:\[[^\][]{1,8}\])?\{[^{}]*\}|\{[^{}]*\}|\([^()]*\)"
# and a numerator's coefficient with it: `3\pi/4` was no `\frac{3\pi}{4}` (never a denominator's: `1/2\pi` is half pi)
_FACTOR = r"\\pi(?![A-Za-z])|\\sqrt(?:\[[^\][]{1,8}\])?\{[^{}]*\}|[A-Za-z](?![A-Za-z])"
_SLASH = re.compile(rf"(?<![\w^_\\.}})/])(\d+(?:{_FACTOR})|{_TERM})\s*/\s*({_TERM})(?![\w^_{{(.!/])")
# a fraction's factor after it is its numerator's, `\frac{4}{3}\pi` as `\frac{4\pi}{3}` (MATH's way), when it ends a
# term: never `\frac{1}{2}x^2`, `\frac{4}{3}\pi r^3`, nor after a factor (`2\frac{1}{3}\pi`, a mixed number)
_FRAC_FACTOR = re.compile(rf"(?<![\w^_}}\\])\\frac\{{(\d+)\}}(\{{[^{{}}]+\}})\s*({_FACTOR})(?=\s*(?:$|[-+,;=)\]}}]))")
# a variable (or a tuple of them) set to the answer, `x \in [2,5]`, `x = \pi`, `(a, b) = (1, 2)`, is no part of it, as
# `\boxed{x = 5}` is 5; one binding only (`x = 3 or x = -3` is two answers)
_SETS = r"(?:=|\\in(?![A-Za-z])|∈)"
# (a function's or indexed name too, `p(x) =`, `f^{-1}(x) =`, `S_n =`: `\boxed{p(x) = x^2 - 1}` was wrong for x^2-1)
_NAME = r"[A-Za-z](?:_(?:\{[^{}]*\}|\w))?(?:\^(?:\{[^{}]*\}|\w))?(?:\([A-Za-z\d\s,]*\))?"
_VARIABLE = rf"(?:{_NAME}|\([A-Za-z](?:\s*,\s*[A-Za-z])+\))"
_BINDING = re.compile(rf"\s*{_VARIABLE}\s*{_SETS}(?!.*{_SETS})", re.DOTALL)
# a tuple or interval `(3,5)`, `[1, 2)`, and a union of them `(-\infty,-2)\cup(3,\infty)` (it was cut to its first),
# read past an answer's dress, `**`, `$`, `:`, `\(`, and the variable set to it
_UNION = r"\s*(?:\\cup(?![A-Za-z])|∪)\s*"
_INTERVAL = r"[(\[][^()\[\]\n,]*,[^()\[\]\n]*[)\]]"
_SPAN = rf"{_INTERVAL}(?:{_UNION}{_INTERVAL})*"
# (and a list or hedge of them, `(0, 1) or (1, 0)`, read whole as "42 or 43" is: its first tuple was the answer)
_INTERVALS = re.compile(rf"(?:[\s*_`$:=]|\\[(\[])*(?:{_VARIABLE}\s*{_SETS}\s*)?"
                        rf"({_SPAN}(?:[\s$]*(?:,|\s(?:or|and)\s)[\s$]*{_SPAN})*)")
# a comma inside a grouped number separates nothing: `1,000` (a first group of 1-3 digits, then groups of exactly
# three, no space) is one number, as the number rule reads it, so `(1,000)` is dress around 1000 as `(42)` is around
# 42 (`#### (1,000)` was a tuple); `(3, 5)`, `(1,23)`, `(1, 000)`, `(2.5,100)` are tuples, and `[0,100]` (no one
# writes 100 so) the interval
_GROUP_COMMAS = re.compile(r"(?<![\d,.])[1-9]\d{0,2}(?:,\d{3})+(?!\d|,\d)")

# special-token text a decode() keeps (ChatML's `<|im_end|>`, Llama's `<|eot_id|>`, `</s>`, Gemma's `<end_of_turn>`,
# DeepSeek's `<｜end▁of▁sentence｜>` with full-width bars, U+FF5C), and an HTML-like tag (`<reasoning>`, `</answer>`):
# glued to the number, `#### 18<|im_end|>` was `18<|im_end|>` (and DeepSeek's, R1-Distill's, kept its token)
_SPECIAL = re.compile(r"<\|[^<>|\n]{1,60}\|>|<｜[^<>｜\n]{1,60}｜>"
                      r"|</?(?:s|eos|bos|pad|unk|mask|eot|end_of_turn|start_of_turn)>")
_TAG = re.compile(r"</?[A-Za-z][\w-]{0,30}/?>")
# HTML's superscript and subscript are LaTeX's `^{..}` and `_{..}`: as tags they ended the answer, and "18
# cm<sup>2</sup>" was 2, "2<sup>10</sup> = 1024" 2
_SCRIPT_TAG = re.compile(r"<(sup|sub)>([^<>\n]{1,30})</\1>", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL | re.IGNORECASE)
# Unicode superscripts after a letter, digit or bracket are LaTeX's power: `10²` is `10^{2}`, `x²` `x^{2}`
_SUPER = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_SUPERSCRIPT = re.compile(r"(?<=[\w)}])⁻?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
# and plain-text math its LaTeX: `4π`, `√2`, `3√(x+1)`, `(−∞, 3]` were never equal to `4\pi`, `\sqrt{2}`, ...
_UNICODE_MATH = re.compile(r"√\s*(?:\(([^()]*)\)|(\d+(?:\.\d+)?|[A-Za-z](?![A-Za-z])))?|π|∞")
# a leading approximation sign in a box (`\boxed{\approx 18.3}`, `\boxed{x \approx 1.41}`) is dress, as `#### ≈18.3`'s
_APPROX = re.compile(r"^\s*(?:[A-Za-z]\s*)?(?:\\approx|\\sim|≈|∼)(?![A-Za-z])\s*(?=[-$]?\.?\d)")


# what makes an expression of a number: 2\\sqrt{3}, 4π, \\log_2 8 (was 2, 4, 2)
_SYMBOLS = re.compile(r"\\(?:sqrt|pi|log|ln|sin|cos|tan|cot|sec|csc|exp|[dt]?frac|infty|theta|alpha|beta|binom|lfloor"
                      r"|lceil|overline)(?![A-Za-z])|[π√∞]")
# gpt-oss's (harmony) final channel, its special tokens kept or stripped (`analysis...assistantfinal...`): the
# analysis channel before it is a draft, as a `<think>` is (its `\boxed{20}` outranked the final "The answer is 18.")
_FINAL = re.compile(r"<\|channel\|>\s*final\s*(?:<\|constrain\|>[^<>\n]*)?<\|message\|>"
                    r"|assistantfinal")
_ANALYSIS = re.compile(r"\s*(?:<\|start\|>\s*assistant\s*)?(?:<\|channel\|>\s*)?analysis")


def final_text(text: str) -> str:
    """The text after the last `</think>`, or after gpt-oss's last final-channel marker (`<|channel|>final<|message|>`,
    or `assistantfinal` when special tokens were stripped and the text opens with its `analysis` channel); else
    `text`."""
    text = text[text.rfind("</think>") + len("</think>"):] if "</think>" in text else text
    marks = [m for m in _FINAL.finditer(text) if m[0] != "assistantfinal" or _ANALYSIS.match(text)]
    return text[marks[-1].end():] if marks else text


def superscripts(s: str) -> str:
    """`s` with its Unicode superscripts (after a letter, digit or bracket) as LaTeX's `^{..}`."""
    return _SUPERSCRIPT.sub(lambda m: "^{" + m[0].translate(_SUPER) + "}", s)


def _unicode_math(m: re.Match) -> str:
    if m[0] in "π∞":
        return "\\pi " if m[0] == "π" else "\\infty "
    arg = m[1] if m[1] is not None else m[2]
    return "\\sqrt" + ("" if arg is None else "{" + arg + "}")


def markup(text: str) -> tuple[str, bool]:
    """`text` without special-token text, the content of its last `<answer>...</answer>` block when it has one (a
    GRPO-style `<reasoning>the answer is 17</reasoning><answer>18</answer>` answers 18), and each other tag a line
    break, so a tag ends the answer on its line (`The answer is 18.</reasoning>` was `18.</reasoning>`), but
    `<sup>2</sup>` as `^{2}`; and whether it is a block's content (which may be the answer whole, as a box's is)."""
    text = _SCRIPT_TAG.sub(lambda m: ("^{" if m[1].lower() == "sup" else "_{") + m[2] + "}", _SPECIAL.sub("\n", text))
    blocks = [b for b in _ANSWER_TAG.findall(text) if b.strip()]
    return _TAG.sub("\n", blocks[-1] if blocks else text), bool(blocks)


def next_line(text: str, end: int, wordy: list[int], limit: int | None = None) -> tuple[int, str]:
    """Where the answer after `end` starts, and its line: the rest of the line from `end`, or, when that holds no
    letter or digit ("**Final answer:**" then the answer below it), the next line that does (display math's `$$`
    or `\\[` alone is no answer), without a list's marker. `wordy`: where each line with a letter or digit starts
    (found once: searching the rest of the text from each of 20,000 bare `####` lines took 52 s). `limit`: where the
    line is cut (the next phrase on it: each of 20,000 phrases on one line read the rest of it, minutes)."""
    stop = text.find("\n", end)
    cut = len(text) if stop < 0 else stop
    cut = cut if limit is None else min(cut, limit)
    if stop < 0 or re.search(r"\w", text[end:cut]):
        return end, text[end:cut]
    i = bisect.bisect_left(wordy, stop + 1)
    if i == len(wordy):
        return len(text), ""
    stop = text.find("\n", wordy[i])
    line = text[wordy[i]:] if stop < 0 else text[wordy[i]:stop]
    return wordy[i], re.sub(r"^\s*(?:[-*•+]|\d+[.)])\s+(?=\S)", "", line)  # a list's bullet or number: "- 42", "1. 42"

# (the command's name, or the symbol or ASCII spelling, to the one symbol LaTeX typesets)
_RELATIONS = {"le": "≤", "leq": "≤", "leqslant": "≤", "<=": "≤", "ge": "≥", "geq": "≥", "geqslant": "≥", ">=": "≥",
              "ne": "≠", "neq": "≠", "!=": "≠", "lt": "<", "gt": ">"}
_RELATION = re.compile(r"\\(leqslant|geqslant|leq|geq|neq|le|ge|ne|lt|gt)(?![A-Za-z])|<=|>=|!=")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + re.match(r"\\(?:boxed|fbox)\s*", text[start:]).end()
    if text[i:i + 1] != "{":  # `\boxed5`, `\boxed 42`: its argument is what follows (the next `{` anywhere was read)
        bare = re.match(r"[\w.,]+", text[i:])
        return bare.group(0).rstrip(".,") or None if bare else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def interval_at(tail: str) -> str | None:
    """The tuple, interval or union of intervals that opens `tail` (a phrase's or a marker's) past its dress, `:` and
    `$` included, and the variable set to it (`x \\in [2, 5]` is `[2, 5]`, as `x = 5` is 5), or a list or hedge of
    them; None if none does, or if a bracket holds one number (`(1,000)`: its dress). (The marker and "The answer
    is: " lost the opening bracket, `3, 5)`, to the number rule, and a union its rest.)"""
    m = _INTERVALS.match(tail)
    if m is None or not all("," in _GROUP_COMMAS.sub("", i) for i in re.findall(_INTERVAL, m.group(1))):
        return None  # a bracket around one number, `(1,000)`, `($1,000)`, `(1,000 dollars)`: its dress
    # (one of several, `a = (1, 2), b = (3, 4)`, is no answer: they are compared whole)
    several = re.match(rf"[\s$]*(?:,|\s(?:and|or)\s)\s*{_VARIABLE}\s*{_SETS}", tail[m.end():])
    return None if several else m.group(1)


def unbox(boxed: str) -> str:
    """A box's LaTeX as the plain answer it typesets (units, spacing, math delimiters and a leading `\\approx` dropped;
    `_latex` ran on it already)."""
    # (math delimiters inside: `<answer>\(18\)</answer>`, read as a box, was `\(18\)`, as `$18$` was 18)
    s = re.sub(r"(?<!\\)\\[()\[\]]", "", boxed)
    s = _drop_spaces(_APPROX.sub("", s, count=1), r"~")  # LaTeX's spaces, between digits or not
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{\s*(or|and)\s*\}", r" \1 ", s)  # x=3 \text{ or } x=-3 was -3
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm|textbf|mathbf|bm)\{\s*([-\d.,/]+)\s*\}", r"\1", s)  # \text{5} is 5
    s = re.sub(r"\\(?:textbf|mathbf|bm)\{([^{}]*)\}", r"\1", s)  # emphasis around the answer
    # an AMC choice `\text{(C)}\ 42` is its letter, as `\textbf{(C)}` is (it was dropped as a unit: 42 alone), and
    # `\text{B) } 42`, `(\text{C}) 42` too
    s = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{\s*\(?([A-Z])\)\s*\}"
               r"|\(\s*\\(?:text|mbox|textrm|mathrm)\{\s*([A-Z])\s*\}\s*\)", lambda m: f"({m[1] or m[2]}) ", s)
    # a unit after the number, with its power: 5\text{ cm}^2 was read as 5^2
    plain = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{[^{}]*\}(?:\s*\^\s*(?:\{\s*\d+\s*\}|\d))?", "", s).strip()
    # a unit is dropped from what it follows: with no letter or digit left, the text was the answer (`\text{B}` is B,
    # `(\text{C})` (C): it was `()`)
    s = plain if re.search(r"\w", plain) else re.sub(r"\\(?:text|mbox|textrm|mathrm)\{([^{}]*)\}", r"\1", s)
    while re.fullmatch(r"\{[^{}]*\}", s):  # {5}
        s = s[1:-1].strip()
    s = re.sub(r"[€£¥₹]\s*(?=-?\.?\d)|(?<=\d)\s*[€£¥₹]", "", s)  # a currency, as `\$`: `\boxed{€18}` was text
    return re.sub(r"^\+(?=\s*[\d.])", "", s)  # +5


def _drop_spaces(s: str, also: str) -> str:
    """`s` without LaTeX's spaces (`\\,`, `\\ `, ...) and what `also` matches, a row break `\\\\` kept whole (`1 \\\\ 2`
    lost its break's second half, read with the space as `\\ `: a matrix's spacing counted)."""
    return re.sub(rf"(\\\\)|\\[,!;: ]|{also}", lambda m: m.group(1) or "", s)


def text_key(s: str) -> str:
    """Normalized text as compared: case, inner spaces and `\\text{}` dress aside, `\\dfrac`/`\\tfrac` as
    `\\frac`, Unicode math as its LaTeX, a choice letter in brackets as the letter, a variable set to the answer aside
    (`yes` was wrong for `\\text{Yes}`, `(3, 5)` for `(3,5)`, `(B)` for `B`, `x \\in [2,5]` for `[2,5]`)."""
    s = re.sub(r"\\[dt]frac", r"\\frac", _UNICODE_MATH.sub(_unicode_math, superscripts(s)))
    # one relation, however written: `x \leq 3` was wrong for `x \le 3` and `x ≤ 3`
    s = _RELATION.sub(lambda m: _RELATIONS[m[1] or m[0]], s)
    s = s[m.end():] if (m := _BINDING.match(s)) and s[m.end():].strip() else s
    # a one-character argument written bare is that argument braced, as LaTeX typesets it (`2\sqrt2` was wrong for
    # `2\sqrt{2}`, `\frac{\sqrt3}2` for `\frac{\sqrt{3}}{2}`)
    s = _ONE_ARG.sub(lambda m: f"\\{m[1]}{m[2] or ''}{_braced(m[3])}", s)
    s = _TWO_ARGS.sub(lambda m: f"\\{m[1]}{_braced(m[2])}{_braced(m[3])}", s)
    # `\sqrt{2}/2` was wrong for `\frac{\sqrt{2}}{2}`, `(1+\sqrt{5})/2` for `\frac{1+\sqrt{5}}{2}`
    s = _SLASH.sub(lambda m: "\\frac" + "".join("{" + (t[1:-1] if t[0] in "({" else t) + "}" for t in m.groups()), s)
    # (`\frac{4}{3}\pi` was wrong for `\frac{4\pi}{3}`, `\frac{1}{2}\sqrt{3}` for `\frac{\sqrt{3}}{2}`)
    s = _FRAC_FACTOR.sub(lambda m: "\\frac{" + ("" if m[1] == "1" else m[1]) + m[3] + "}" + m[2], s)
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\{([^{}]*)\}", r"\1", s)
    s = _SCRIPT.sub(lambda m: m[1] + _braced(m[2]), s)  # (`x^{2}` was wrong for `x^2`, `a_{1}` for `a_1`)
    s = _drop_spaces(s, r"\s+").lower()
    m = re.fullmatch(r"[(\[]([a-z])[)\]]\.?", s)
    return m.group(1) if m else s


def _braced(arg: str) -> str:
    return arg if arg.startswith("{") else "{" + arg + "}"


def clause(s: str) -> str:
    """`s` up to its sentence's end (the text an expression answer is compared as)."""
    return re.split(r"[.;](?:\s|$)|,\s", s)[0]


def expression(s: str) -> str:
    """An expression answer's text: its math span when `s` opens with one (`$x^2$ square units` is `x^2`: the words
    after its `$` were kept), else `s` up to its clause's end."""
    m = re.match(r"[\s*_`:]*(?:\$\$?|\\\()([^$\n]+?)(?:\$|\\\))", s)
    return m.group(1) if m else clause(s)


def symbolic(line: str, num: re.Match) -> bool:
    """Whether the number `num` is part of an expression in `line` (2\\sqrt{3}, 4π, e^2, x^2, 3x + 2, x + 2): read
    whole, as text; its first number was the answer."""
    # (a minus after a letter is the expression's, not the number's sign: `x - 1` was -1, `(x-3)(x+2)` -3)
    before, after = line[:num.start() + num.group(0).startswith("-")], line[num.end():]
    return bool(_SYMBOLS.search(clause(line))
                or re.search(r"(?<![A-Za-z])[A-Za-z]\s*(?:[-+*/^_]\s*\{?|\()\s*$", before)
                or re.match(r"[A-Za-z](?![A-Za-z])|\s*[-+*/^]\s*(?:[A-Za-z](?![A-Za-z])|\\)", after))
