"""What an answer phrase states in words rather than in a number (standard library only; `looplm.hf.answers` reads
the numbers and the order of cues): a word or a choice letter (`twelve`, `B`, `option C`), an expression of variables
alone (`b - a`, `-x`), an AMC choice with its one number (`(B) 5`), a verdict that states none ("the answer is
correct."), or a unit in brackets after one number, which is its dress (ASDiv's `9 (apples)`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from looplm.hf.latex import clause

# words that judge rather than answer ("the answer is correct/verified."): such a phrase states no answer, unless a
# number follows the word's punctuation ("is clear: 42"); an earlier phrase that states one is read
VERDICTS = frozenset("correct incorrect right wrong clear obvious simple confirmed verified valid consistent "
                     "reasonable accurate final checked sound true false above below".split())
# ... except true/false that end their clause, as yes/no do: a true/false question's answer ("Answer: False", "The
# answer is True.", "The final answer is True. I hope it is correct." were None, while `#### False` was False); with
# more words after it in its clause ("the answer is true to the question") it still judges
BOOLEANS = frozenset(("true", "false"))
# words that point rather than answer ("the answer is thus 42", "the answer is here:"): the number after is read
# (and lead-ins before a comma, "Answer: Well, 42", now that a word ending its clause is the answer)
NOT_ANSWERS = VERDICTS - BOOLEANS | frozenset("here this that it thus therefore hence then so now well overall finally "
                                              "approximately roughly about around exactly basically ultimately "
                                              "altogether indeed actually also".split())
# a word's clause ends at `.,;!?` and a space or the end, an em dash, a spaced bracket of working ("B (3 + 4 = 7)";
# "twelve (12)" is 12, `x(x-1)` and "x (apples)" no word) or a colon not before a number ("Total: 42" is a label): a
# number in a later clause ("Yes, 97 is prime.", "no. 91 = 7 x 13", "Paris. 3 million live there") is no answer (it
# was read)
ENDS = (r"[*_`$)\]}'\"”’]*(?:[.,;!?]+(?:\s|$)|\s*$|\s*—|\s+\((?=[^()\n]*\d)(?!\s*[-$]?\.?\d[\d,.]*%?\s*\))"
        r"|:\s+(?![-$]?\.?\d))")
# a unit word in brackets, its LaTeX text wrapper and power too: `apples`, `\text{dollars}`, `\mathrm{cm}^2`, `sq. ft`
# (two letters at least, so `2 (x)` stays a product; and no hedge, `42 (or more)`)
_UNIT = re.compile(r"\s*(?:\\(?:text|textrm|mathrm|mbox)\{\s*)?(?!(?:or|and|to|not|plus|minus|times)\b)[A-Za-z]{2,}"
                   r"(?:[ .'/-]+[A-Za-z]+)*\.?\s*\}?(?:\s*\^\s*(?:\{\s*\d\s*\}|\d))?\s*")


# an AMC choice and its one number: `(B) 5`, `B) 5`, `\textbf{(B)}\ 5`, `(\text{B})\ 5`, `option (B) 5`, and `B. 5`
# (a capital A-E, its period and a space: `B.5` and `2. 5` are no choice), dressed (`**(C) 42**`, `$...$`), up to its
# clause's end: "(C) 42 because" or "(A) 2 or (B) 3" is no pair (the letter is read, as it was)
_TEXT = r"(?:\\(?:text|textbf|mathrm|mbox)\{\s*)?"
_CHOICE_PAIR = re.compile(
    rf"[\s*_`$:]*(?:(?i:option|choice)\s*)?{_TEXT}[(\[]?{_TEXT}(?:([A-Z])\s*\}}?\s*[)\]]|([A-E])(?:[.:]|\s*—)(?=\s))"
    r"(?:[\s*_`$~}]|\\[ ,;:!])*(-?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?%?)"
    r"[*_`$}]*(?=[.,;!?]*\s*$|[.,;!?]+\s+(?![-$]?\.?\d))")  # (a list after it, "(C) 1, 2", is none)


def choice_pair(tail: str) -> str | None:
    """The AMC choice and its one number that a phrase's `tail` or a marker's line opens with, as `(B) 5` (`B. 5` and
    `\\textbf{(B)}\\ 5` too), or None: kept whole, as a box keeps it, so that its letter or its number is right (the
    letter alone was read: wrong for AMC23's numeric gold 5, while `\\boxed{\\textbf{(B)}\\ 5}` was right)."""
    m = _CHOICE_PAIR.match(tail)
    return f"({m[1] or m[2]}) {m[3]}" if m else None


def yes_no(line: str) -> re.Match | None:
    """yes/no/true/false that open a marker's `line` and end their clause (`#### No, 91 = 7 x 13` was 13)."""
    return re.match(rf"[*_`$]*((?i:yes|no|true|false))(?={ENDS})", line)


def verdict(tail: str) -> bool:
    """Whether a phrase's `tail` judges rather than answers ("is correct.", "is verified"), unless a number follows
    the word's punctuation ("is clear: 42"); true/false judge only with more words after them in their clause ("is
    true to the question"): ending it ("Answer: False", "The answer is true.", "is True, since ..."), they answer."""
    lead = re.match(r"[\s*_`$:]*([^\W\d_]+)", tail)
    if not lead or lead.group(1).lower() not in VERDICTS:
        return False
    rest = tail[lead.end():]
    if lead.group(1).lower() in BOOLEANS and re.match(ENDS, rest):
        return False
    return not re.match(r"[*_`$]*[.,:;!?]\s*-?\$?\.?\d", rest)


def unit_dropped(s: str, number: Callable[[str], bool]) -> str:
    """`s` without a unit in brackets that follows one number after a space (ASDiv's gold `9 (apples)` was the text
    `9 (apples)`, wrong for every completion, its own form too; `\\boxed{18\\,(\\mathrm{cm})}` was `18()`), as
    `9 apples` and `(1,000 dollars)` are that number; `number` says whether what is left is one. A tuple `(3, 5)`,
    `(x-3)(x+2)`, `f(x)`, `2(ab)` or `(B) 5` is kept. Read from the end, no regex scan: a box may be long."""
    body = s.rstrip().removesuffix(".").rstrip()
    start = body.rfind("(")
    if not body.endswith(")") or start < 1 or not _UNIT.fullmatch(body[start + 1:-1]):
        return s
    lead = body[:start]
    spaced = lead[-1].isspace() or lead[-1] == "~" or lead[-2:-1] == "\\" and lead[-1] in ",;:! "
    return lead if spaced and number(lead) else s


def stated_word(tail: str) -> str | None:
    """The answer a phrase states in a word or a choice letter ("the answer is B because there are 4 choices", "the
    answer is twelve, not 11"), or None. Without this the phrase (or the marker) went on to the first number after it,
    or the text's last one: 4, 11. A word counts when punctuation or the line's end follows it, but not when a
    number follows that punctuation ("the answer is thus, 42"); a capital letter alone also before a lowercase word
    ("B because", unless it is the article or pronoun A or I) or in a choice's bracket ("B) 42")."""
    m = re.match(r"[\s*_`$(\[{'\"“‘:]*((?i:option|choice)\s*)?[(\[]?(?:\\(?:text|textbf|mathrm)\{[(\[]?)?([^\W\d_]+)"
                 r"([*_`$)\]}'\"”’]*)", tail)
    if not m or m.group(2).lower() in NOT_ANSWERS:
        return None
    word, rest = m.group(2), tail[m.end():]
    if len(word) == 1 and re.match(r"\s*(?:,\s*)?(?:or|and)\s+[(\[]?[A-Z](?![a-z])", rest):  # "(A) or (B)": a hedge,
        return tail.strip().rstrip(".")  # compared as text (it was credited for A)
    # yes/no/true/false or a choice letter ends its clause before a number of the reason ("Yes, 97 is prime"); any
    # other word only before no number: a lead-in ("Clearly, 18", "approx. 18", "Rs. 500") is no answer
    loose = word.lower() in BOOLEANS | {"yes", "no"} or (len(word) == 1 and word.isupper())
    if re.match(ENDS, rest) if loose else re.match(r"[*_`$)\]}'\"”’]*(?:[.,;!?]+(?:\s+(?![-$]?\.?\d)|$)|\s*$)", rest):
        return word
    # "option B", `\text{(B)}`, "B) 42", "C. 42", "A because": a choice (A or I before any other word are words)
    choice = len(word) == 1 and word.isupper()
    return word if choice and (m.group(1) or ")" in m.group(3) or re.match(r"[.:]\s+[-$]?\.?\d", rest)
                               or re.match(r"\s+(?:because|since|as)\b", rest)
                               or word not in "AI" and re.match(r"\s+[a-z]", rest)) else None


def variables(side: str) -> str | None:
    """The expression of one-letter variables alone that `side` (a phrase's tail, or the side of its `=`) opens its
    clause with (`b - a`, `-x` of `y = -x`, `x` of `f(x) = x`), or None. It is text, as `x - 1` is: with no digit in
    it the phrase stated none (None), and the text's last number, or nothing, was read."""
    said = clause(side).strip(" *_`")
    return said if re.fullmatch(r"[-(\s]*[A-Za-z](?:[\s()]*[-+*/^][\s()-]*[A-Za-z])*[\s)]*", said) else None


_WRAP = r"\\(?:text|textrm|mathrm|mbox)\{"
_SPACE = r"(?:[ \t~]|\\[,;:! ]){0,3}"
_POW = r"[ \t]*\^[ \t]*(?:\{\s*-?\s*\d+\s*\}|-?\d)"
# a number's units after it: each a wrapped word with its power, the next after a space, `\,` or a `/`
_RUN = rf"(?<=\d){_SPACE}(?:{_WRAP}(?=[^{{}}\d]*[A-Za-z])[^{{}}\d]*\}}(?:{_POW})?{_SPACE}/?{_SPACE}){{1,6}}"
_UNIT_WORD = re.compile(rf"{_WRAP}([^{{}}]*)\}}(?:{_POW})?")


def latex_units(s: str) -> str:
    """LaTeX that writes a number's unit or ordinal, as one `\\text{..}` unit that `looplm.hf.answers` drops: a
    rate in pieces, `50 \\text{ km}/\\text{h}`, `\\frac{\\text{km}}{\\text{h}}`, `\\$12/\\text{hour}` (they left
    `50 /`, compared as text); a unit's power, negative ones too (`2\\,\\text{s}^{-1}` was 2^{-1}, 0.5); an ordinal's
    superscript, `5^{\\text{th}}` (it was `5^{}`)."""
    s = re.sub(rf"(?<=\d)\s*\^\s*\{{\s*{_WRAP}\s*(?:st|nd|rd|th)\s*\}}\s*\}}", "", s)  # 21^{\text{st}} is 21
    s = re.sub(rf"\\[dt]?frac\{{\s*{_WRAP}([^{{}}\d]+)\}}\s*\}}\{{\s*{_WRAP}([^{{}}\d]+)\}}\s*\}}",
               r"\\text{\1/\2}", s)  # \frac{\text{km}}{\text{h}}
    s = re.sub(rf"(?<=\d)[ \t]*/[ \t]*(?={_WRAP}[^{{}}\d]*[A-Za-z])", " ", s)  # 12/\text{hour}: per hour
    # the run of units after a number as one unit word, powers dropped (each a unit's)
    return re.sub(_RUN, lambda m: " \\text{" + "/".join(w.strip(" ~") for w in _UNIT_WORD.findall(m[0])) + "}", s)
