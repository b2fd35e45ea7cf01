"""GSM8K-style synthetic math word problems in chat format, a held-out split that never meets training, and a
local lm-eval task that scores them.

A problem is a short story (collections, shops, bus routes, road trips, savings) whose quantity changes 1 to 4
times by addition, subtraction or multiplication by a small number; every intermediate value is an integer in
[1, 999]. The worked solution shows each step as `a + b = c` (or `-`, `*`) and ends with `#### N`, GSM8K's
answer line, so `looplm.hf.answers` reads it. Records carry `messages` (user: the question, assistant: the
solution), the format `looplm finetune` trains on, and lm-eval prompts with the same user turn through the
chat template.

Which side of the split a problem falls on is a hash of its question (`looplm.tasks.base.held_out_by_hash`),
so it does not depend on the seed or on how many problems are drawn.

This module needs neither transformers nor lm-eval.
"""

from __future__ import annotations

import glob
import json
import math
import numbers
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..arguments import strict_int
from ..errors import UserError
from ..tasks.base import held_out_by_hash
from .flags import check_flag

HELD_OUT_FRACTION = 0.2
MAX_VALUE = 999  # the default bound: every intermediate value stays below 1000
_SALT = "looplm.hf.mathdata/v1"  # changing a template changes questions anyway; the salt names the split rule
_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_PEOPLE = (("Mia", "she", "her", "her"), ("Tom", "he", "him", "his"), ("Ana", "she", "her", "her"),
           ("Ben", "he", "him", "his"), ("Lena", "she", "her", "her"), ("Omar", "he", "him", "his"),
           ("Sara", "she", "her", "her"), ("Raj", "he", "him", "his"), ("Yuki", "she", "her", "her"),
           ("Leo", "he", "him", "his"))


@dataclass(frozen=True)
class _Theme:
    """Sentence templates for one kind of story. Fields: {who}/{Who} (the actor, capitalized at a sentence's
    start), {they}/{They}, {them}, {their} (its pronouns), {unit}, {v} (the start), {b} (an amount added or
    taken), {k} x {m} (groups), {times} (a multiplier in words). An empty tuple means the theme has no such
    step."""

    actors: tuple[tuple[str, str, str, str, tuple[str, ...]], ...]  # (who, they, them, their, units)
    start_range: tuple[int, int]
    amount_max: int
    start: tuple[str, ...]
    start_groups: tuple[str, ...]
    add: tuple[str, ...]
    sub: tuple[str, ...]
    scale: tuple[str, ...]
    group_add: tuple[str, ...]
    group_sub: tuple[str, ...]
    questions: tuple[str, ...]


def _people(units: tuple[str, ...]) -> tuple[tuple[str, str, str, str, tuple[str, ...]], ...]:
    return tuple((*p, units) for p in _PEOPLE)


_THEMES = (
    _Theme(  # people and their collections
        actors=_people(("marbles", "stickers", "stamps", "seashells", "postcards", "toy cars")),
        start_range=(5, 120), amount_max=60,
        start=("{Who} has {v} {unit}.", "{Who} owns a collection of {v} {unit}.",
               "{Who} starts the week with {v} {unit}."),
        start_groups=("{Who} has {k} boxes with {m} {unit} in each box.",
                      "{Who} keeps {unit} in {k} jars, {m} in every jar."),
        add=("{They} finds {b} more {unit}.", "A friend gives {them} {b} {unit}.",
             "{They} buys {b} {unit} at a market."),
        sub=("{They} gives {b} {unit} to a friend.", "{They} loses {b} {unit}.", "{They} trades away {b} {unit}."),
        scale=("By the end of the month {they} has {times} as many {unit} as before.",
               "After a swap meet {they} has {times} as many {unit} as before."),
        group_add=("{They} buys {k} packs of {unit} with {m} in each pack.",
                   "Each of {k} friends gives {them} {m} {unit}."),
        group_sub=("{They} gives {m} {unit} to each of {k} cousins.",),
        questions=("How many {unit} does {who} have now?", "How many {unit} does {who} have in the end?"),
    ),
    _Theme(  # shops and their stock
        actors=(("the bakery", "it", "it", "its", ("muffins", "bread rolls", "cookies")),
                ("the toy shop", "it", "it", "its", ("puzzles", "kites", "teddy bears")),
                ("the fruit stand", "it", "it", "its", ("apples", "oranges", "pears")),
                ("the bookshop", "it", "it", "its", ("notebooks", "comic books", "maps"))),
        start_range=(20, 200), amount_max=80,
        start=("{Who} has {v} {unit} in the morning.", "At opening time {who} has {v} {unit} on its shelves."),
        start_groups=("{Who} receives {k} crates with {m} {unit} in each crate.",),
        add=("A delivery brings {b} more {unit}.", "The owner puts out {b} more {unit}."),
        sub=("Customers buy {b} {unit}.", "{Who} sells {b} {unit} before noon."),
        scale=("After a big delivery {who} has {times} as many {unit} as before.",
               "By noon the owner has restocked {who} with {times} as many {unit} as before."),
        group_add=("A truck brings {k} boxes of {unit} with {m} in each box.",),
        group_sub=("{k} customers each buy {m} {unit}.",),
        questions=("How many {unit} does {who} have at closing time?", "How many {unit} does {who} have now?"),
    ),
    _Theme(  # passengers on a route
        actors=tuple((f"the {v}", "it", "it", "its", ("passengers",)) for v in ("bus", "train", "ferry", "tram")),
        start_range=(5, 90), amount_max=40,
        start=("{Who} leaves the first stop with {v} passengers.", "There are {v} passengers on {who}."),
        start_groups=("{k} groups of {m} tourists board {who} at the first stop.",),
        add=("At the next stop {b} people get on.", "{b} more passengers board at the market."),
        sub=("At the next stop {b} people get off.", "{b} passengers leave at the museum."),
        scale=("At the main square so many people get on that there are {times} as many passengers as before.",
               "After the football match {who} carries {times} as many passengers as before."),
        group_add=("At the school {k} classes of {m} students get on.",),
        group_sub=("At the park {k} families of {m} people get off.",),
        questions=("How many passengers are on {who} now?", "How many passengers are on {who} at the last stop?"),
    ),
    _Theme(  # a road trip: the distance still to drive
        actors=_people(("kilometers",)),
        start_range=(100, 600), amount_max=150,
        start=("{Who} is driving to a city {v} kilometers away.", "{Who} plans a trip of {v} kilometers."),
        start_groups=("{Who}'s trip has {k} parts of {m} kilometers each.",),
        add=("A road closure adds a detour of {b} kilometers.", "{They} takes a wrong turn that adds {b} kilometers."),
        sub=("{They} drives {b} kilometers before lunch.", "After a break {they} drives another {b} kilometers."),
        scale=(),
        group_add=("Road works add {k} detours of {m} kilometers each.",),
        group_sub=("{They} drives for {k} hours at {m} kilometers per hour.",),
        questions=("How many kilometers does {who} still have to drive?",),
    ),
    _Theme(  # savings
        actors=_people(("dollars",)),
        start_range=(10, 300), amount_max=90,
        start=("{Who} has {v} dollars.", "{Who} has saved {v} dollars."),
        start_groups=("{Who} saves {m} dollars a week for {k} weeks.",),
        add=("{They} earns {b} dollars walking dogs.", "{Their} grandmother gives {them} {b} dollars."),
        sub=("{They} spends {b} dollars on a book.", "{They} pays {b} dollars for lunch."),
        scale=("{They} keeps saving until {they} has {times} as much money as before.",
               "{They} wins a prize that makes {their} savings {times} as large."),
        group_add=("{They} earns {m} dollars a day for {k} days.",),
        group_sub=("{They} buys {k} tickets that cost {m} dollars each.",),
        questions=("How many dollars does {who} have now?", "How many dollars does {who} have at the end?"),
    ),
)

_SOLUTION = {  # one line per arithmetic step; {a} is the running value, {c} the result
    "start": ("Start: {v} {unit}.", "At first: {v} {unit}."),
    "product": ("{k} groups of {m}: {k} * {m} = {c} {unit}.", "{k} times {m}: {k} * {m} = {c} {unit}."),
    "add": ("Adding {b}: {a} + {b} = {c} {unit}.", "{b} more: {a} + {b} = {c} {unit}."),
    "sub": ("Taking away {b}: {a} - {b} = {c} {unit}.", "{b} fewer: {a} - {b} = {c} {unit}."),
    "scale": ("{Times} as many: {a} * {k} = {c} {unit}.",),
}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _render(rng: random.Random, templates: tuple[str, ...], fields: dict[str, Any], used: set[str]) -> str:
    """One of `templates`, filled in; a template already used in this problem only when all of them are."""
    fresh = [t for t in templates if t not in used]
    t = rng.choice(fresh or list(templates))
    used.add(t)
    return _cap(t.format(**fields))


def _groups(rng: random.Random, limit: int) -> tuple[int, int] | None:
    """k groups of m (2 <= k <= 9, 2 <= m <= 12) with k * m <= limit, or None when none fits."""
    if limit < 4:
        return None
    k = rng.randint(2, min(9, limit // 2))
    return k, rng.randint(2, min(12, limit // k))


def _problem(rng: random.Random, n_steps: int, max_value: int = MAX_VALUE) -> dict[str, Any]:
    theme = rng.choice(_THEMES)
    who, they, them, their, units = rng.choice(theme.actors)
    unit = rng.choice(units)
    base = {"who": who, "Who": _cap(who), "they": they, "They": _cap(they), "them": them, "their": their,
            "Their": _cap(their), "unit": unit}
    story, lines = [], []
    told, shown = set(), set()  # templates used so far in the question and in the solution
    left = n_steps
    if theme.start_groups and left >= 1 and rng.random() < 0.3:
        k, m = _groups(rng, min(135, max_value))
        value = k * m
        story.append(_render(rng, theme.start_groups, {**base, "k": k, "m": m}, told))
        lines.append(_render(rng, _SOLUTION["product"], {**base, "k": k, "m": m, "c": value}, shown))
        left -= 1
    else:
        lo, hi = theme.start_range
        if hi > max_value:  # a smaller bound narrows the range from the top, keeping some room to grow
            hi = max_value
            lo = min(lo, hi // 2)
        value = rng.randint(lo, hi)
        story.append(_render(rng, theme.start, {**base, "v": value}, told))
        lines.append(_render(rng, _SOLUTION["start"], {**base, "v": value}, shown))
    while left > 0:
        room, spare = max_value - value, value - 1  # keep every value in [1, max_value]
        moves = [op for op, ok in (("add", room >= 1), ("sub", spare >= 1),
                                   ("scale", bool(theme.scale) and 2 * value <= max_value),
                                   ("group_add", bool(theme.group_add) and left >= 2 and room >= 4),
                                   ("group_sub", bool(theme.group_sub) and left >= 2 and spare >= 4)) if ok]
        op = rng.choice(moves)
        a = value
        if op in ("add", "sub"):
            b = rng.randint(1, min(theme.amount_max, room if op == "add" else spare))
            value = a + b if op == "add" else a - b
            story.append(_render(rng, getattr(theme, op), {**base, "b": b}, told))
            lines.append(_render(rng, _SOLUTION[op], {**base, "a": a, "b": b, "c": value}, shown))
            left -= 1
        elif op == "scale":
            k = rng.randint(2, min(5, max_value // value))
            value = a * k
            story.append(_render(rng, theme.scale, {**base, "times": _TIMES[k]}, told))
            lines.append(_render(rng, _SOLUTION["scale"], {**base, "a": a, "k": k, "c": value,
                                                          "Times": _cap(_TIMES[k])}, shown))
            left -= 1
        else:  # k groups of m, then added or taken away: two steps
            k, m = _groups(rng, room if op == "group_add" else spare)
            p = k * m
            value = a + p if op == "group_add" else a - p
            story.append(_render(rng, getattr(theme, op), {**base, "k": k, "m": m}, told))
            lines.append(_render(rng, _SOLUTION["product"], {**base, "k": k, "m": m, "c": p}, shown))
            sign = "add" if op == "group_add" else "sub"
            lines.append(_render(rng, _SOLUTION[sign], {**base, "a": a, "b": p, "c": value}, shown))
            left -= 2
    story.append(_render(rng, theme.questions, base, told))
    question = " ".join(story)
    answer = "\n".join(lines + [f"#### {value}"])
    return {"question": question, "answer": answer, "steps": n_steps, "target": str(value),
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _check_steps(steps: tuple[int, int]) -> tuple[int, int]:
    try:  # (int() cut (1.9, 2.7) to (1, 2) and read "1" as 1)
        lo, hi = (strict_int(s) for s in steps)
    except (TypeError, ValueError):
        raise ValueError(f"steps must be a (min, max) pair of integers, got {steps!r}") from None
    if not 1 <= lo <= hi <= 8:
        raise ValueError(f"steps must satisfy 1 <= min <= max <= 8, got {steps!r}")
    return lo, hi


def _integer(name: str, v: Any, lo: int = 0, hi: int | None = None) -> int:
    """`v` as an int in [lo, hi], numpy's and torch's integers too (every argument alike: `math_problems` took
    np.int64(2) and `write_split` refused it), never a bool (True made one problem) nor a float; else ValueError."""
    try:
        n = strict_int(v)
    except TypeError:
        n = None
    if n is None or n < lo or hi is not None and n > hi:
        want = f"an integer in [{lo}, {hi}]" if hi is not None else "a non-negative integer"
        raise ValueError(f"{name} must be {want}, got {v!r:.80}")
    return n


def _fraction(v: Any, closed: bool) -> float:
    """A held-out fraction as a float: a number in [0, 1] (`closed`) or (0, 1), a Decimal too (it was refused)."""
    x = float(v) if isinstance(v, numbers.Real | Decimal) and not isinstance(v, bool) else math.nan
    if not (0 <= x <= 1 if closed else 0 < x < 1):  # (NaN is neither)
        raise ValueError(f"fraction must be a number {'in [0, 1]' if closed else 'between 0 and 1'}, got {v!r:.80}")
    return x


def _stream(seed: int, steps: tuple[int, int], max_value: int = MAX_VALUE) -> Iterator[dict[str, Any]]:
    lo, hi = _check_steps(steps)  # here, not in the generator, so a bad request fails at the call
    # Below 10 the themes' amounts and groups have no room; above 9,999 the solutions' numbers leave GSM8K's range.
    max_value = _integer("max_value", max_value, 10, 9999)
    try:  # (None seeded from the clock: other problems on every call, not "the same for the same seed")
        seed = strict_int(seed)
    except TypeError:
        raise ValueError(f"seed must be an integer, got {seed!r:.80}") from None
    if seed < 0:  # random.Random takes |seed|: -1 drew seed 1's problems
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    rng = random.Random(seed)

    def gen() -> Iterator[dict[str, Any]]:
        while True:
            yield _problem(rng, rng.randint(lo, hi), max_value)

    return gen()


def math_problems(n: int, seed: int = 0, steps: tuple[int, int] = (1, 4), max_value: int = MAX_VALUE
                  ) -> list[dict[str, Any]]:
    """n word problems with `steps[0]`..`steps[1]` arithmetic steps each, every value in [1, max_value], the
    same for the same seed (a smaller max_value, e.g. 99, makes two-digit arithmetic for small models).

    Each record: `question`, `answer` (the worked solution, ending `#### N`), `steps`, `target` ("N") and
    `messages` (a user and an assistant turn), ready for `looplm finetune`."""
    n = _integer("n", n)
    stream = _stream(seed, steps, max_value)
    return [next(stream) for _ in range(n)]


def is_held_out(question: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """Whether a question belongs to the held-out (test) side: a hash of its text, whatever seed drew it."""
    # (1.5 held out every question and -1 none, in silence; a fraction of 0 or 1 is a deliberate all-or-nothing)
    return held_out_by_hash(question, _fraction(fraction, closed=True), _SALT)


def split(records: list[dict[str, Any]], fraction: float = HELD_OUT_FRACTION
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) by `is_held_out` on each record's question."""
    is_held_out("", fraction)  # a bad fraction is refused with no records too
    train, test = [], []
    for r in records:
        (test if is_held_out(r["question"], fraction) else train).append(r)
    return train, test


def _write(path: Path, text: str) -> Path:
    """`text` as the file at `path`, written aside and renamed into place: an existing file, or a symlink, is
    replaced, never written through (a `test.jsonl` linked to a file outside the folder was overwritten there)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        part.write_text(text)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def _check_outputs(folder: Path, outputs: list[Path], overwrite: bool, what: str) -> None:
    """Refuse, before any of `outputs` is written, a folder that is a file, an output that is a folder, and (without
    `overwrite`) one that exists: the files are renamed into place one by one, so a late failure left the first
    replaced beside no second, and named the hidden temp file."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; write the {what} into a folder")
    folders = [p for p in outputs if p.is_dir()]
    if folders:
        raise IsADirectoryError(f"{folders[0]} is a folder; remove it, or write the {what} into another folder")
    there = [p for p in outputs if p.exists()]
    if there and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, there))} already exist; pass overwrite=True to replace them, or "
                              f"write the {what} into another folder")


_WINDOW = 10_000  # write_split measures how often the stream still finds a new question over this many draws


def _hopeless(found: int, left: int, want: dict[bool, int], got: dict[bool, list]) -> bool:
    """Whether the questions still wanted cannot come from the draws `left`, at the rate the last window found them
    (`found` in `_WINDOW` draws). Draws are independent and every kept question is one fewer to find, so that rate
    only falls: a request past the question space drew 100 times its size before it was refused (48 s for 20,000
    test questions of one step below 10, and 40 minutes for a million)."""
    return found * left < sum(max(0, want[s] - len(got[s])) for s in want) * _WINDOW


def write_split(folder: str | Path, n_train: int, n_test: int, seed: int = 0, steps: tuple[int, int] = (1, 4),
                fraction: float = HELD_OUT_FRACTION, max_value: int = MAX_VALUE,
                overwrite: bool = False) -> tuple[Path, Path]:
    """Write `train.jsonl` (n_train problems) and `test.jsonl` (n_test held-out problems) into `folder`; return
    their paths. Problems are drawn from one seeded stream and sent to the side `is_held_out` says, without
    repeats, so no test question is ever a training question, for any seed. Existing files are replaced only
    with `overwrite` (a task written over the earlier test file would score other problems).

    The folder as data.source gives train.jsonl only (split by file name as `datasets.load_dataset` splits it)."""
    overwrite = check_flag("overwrite", overwrite)  # ("no" is a true value: it replaced them)
    folder = Path(folder)
    _check_outputs(folder, [folder / "train.jsonl", folder / "test.jsonl"], overwrite, "split")
    n_train, n_test = _integer("n_train", n_train), _integer("n_test", n_test)
    fraction = _fraction(fraction, closed=False)  # ("0.5" was Python's TypeError from the comparison)
    want = {False: n_train, True: n_test}
    got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    seen: set[str] = set()
    stream = _stream(seed, steps, max_value)
    budget = 100 * (n_train + n_test) + 1000  # the question space is far larger; this only bounds a bad request
    drawn = found = 0  # found: new questions kept in this window of draws
    while any(len(got[s]) < want[s] for s in want):
        window_end = drawn > 0 and drawn % _WINDOW == 0
        if drawn == budget or window_end and _hopeless(found, budget - drawn, want, got):
            raise ValueError(f"drew {drawn} problems but found only {len(got[False])} train and {len(got[True])} "
                             f"test questions without repeats; ask for fewer or widen steps")
        if window_end:
            found = 0
        r = next(stream)
        drawn += 1
        side = is_held_out(r["question"], fraction)
        if len(got[side]) < want[side] and r["question"] not in seen:
            seen.add(r["question"])
            got[side].append(r)
            found += 1
    folder.mkdir(parents=True, exist_ok=True)
    return _write_jsonl(got[False], folder / "train.jsonl"), _write_jsonl(got[True], folder / "test.jsonl")


_UTILS = '''"""Scoring for the {name} task: the completion's final answer (looplm.hf.answers) against the gold one."""
from looplm.hf.answers import extract_answer, gold_answer, is_correct


def process_results(doc, results):
    return {{"exact_match": float(is_correct(extract_answer(results[0]), gold_answer(doc["answer"])))}}
'''

STOP_STRINGS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")


def _check_golds(test_jsonl: str | Path, text: str) -> None:
    """Every record's gold read as scoring will read it (ValueError naming file:line): a null or list answer in a
    later record was a traceback from inside lm-eval, after all the generation had run. A blank line in a file whose
    answers are both text and numbers is refused too: datasets' json loader (lm-eval's) reads each alone, but not
    both (pyarrow fails on the mixed types, and its pandas fallback on the blank line)."""
    from .answers import gold_answer

    kinds, blank = set(), None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            blank = blank or n
            continue
        try:
            gold = json.loads(line)["answer"]
            gold_answer(gold)
        except (ValueError, TypeError, KeyError) as e:
            why = "no answer field" if isinstance(e, KeyError) else str(e)
            raise ValueError(f"{test_jsonl}:{n}: not a problem with a usable gold answer ({why}); fix or drop "
                             "the record") from None
        kinds.add(type(gold) is str)
    if blank and len(kinds) > 1:
        raise ValueError(f"{test_jsonl}:{blank}: a blank line in a file whose answers are both text and numbers, "
                         "which lm-eval's loader (datasets' json) cannot read; drop the blank lines, or write every "
                         "answer as text")


def check_task_golds(yaml_path: str | Path | None, name: str) -> None:
    """The golds of a task write_lm_eval_task wrote (its YAML at `yaml_path`), read again before the task runs
    (UserError naming the task and file:line): its data edited afterwards was refused when scored, after all the
    generation, naming neither. Any other task is left to lm-eval."""
    if not yaml_path:
        return
    try:  # (its scoring module reads doc["answer"] as looplm's gold, whatever edits the YAML had)
        yaml = Path(yaml_path).read_text()
        scored = 'gold_answer(doc["answer"])' in Path(yaml_path).with_name(f"{name}_utils.py").read_text()
    except (OSError, UnicodeDecodeError):
        return
    data = re.search(r"^    test: (.+)$", yaml, re.M)
    if f"process_results: !function {name}_utils.process_results" not in yaml or data is None or not scored:
        return
    try:  # (the path as written: a JSON string, glob-escaped)
        test_jsonl = Path(re.sub(r"\[(.)\]", r"\1", json.loads(data.group(1))))
        text = test_jsonl.read_text(encoding="utf-8-sig")
    except (ValueError, OSError):  # (unreadable data is said by lm-eval's own loading, as for any task)
        return
    try:
        _check_golds(test_jsonl, text)
    except ValueError as e:
        raise UserError(f"task {name}: {e}") from None


def write_lm_eval_task(folder: str | Path, test_jsonl: str | Path, name: str = "looplm_math",
                       max_gen_toks: int = 256, overwrite: bool = False) -> str:
    """A local lm-eval generation task over `test_jsonl` (records of `write_split`): `<name>.yaml` and
    `<name>_utils.py` in `folder` (pass it as `include_path`). The prompt is the question alone, meant as the
    user turn of the chat template (`apply_chat_template=True`, as in fine-tuning); decoding is greedy and stops
    at ChatML's end-of-turn; `exact_match` compares the final answers. Returns the task name. Existing files (a
    task edited by hand) are replaced only with `overwrite`."""
    overwrite = check_flag("overwrite", overwrite)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"task name must be a Python identifier (it names the scoring module), got {name!r}")
    if isinstance(max_gen_toks, bool) or not isinstance(max_gen_toks, int) or max_gen_toks < 1:  # (True: 1 token)
        raise ValueError(f"max_gen_toks must be a positive integer, got {max_gen_toks!r}")
    data = Path(test_jsonl).resolve()
    if not data.is_file():
        raise ValueError(f"{test_jsonl} is not a file (write it with write_split)")
    try:  # (a UTF-8 BOM, as Windows tools write it, is read by datasets' json loader: skipped here too)
        text = data.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{test_jsonl} is not a text file of problems (write it with write_split)") from None
    if not text.strip():  # a task over no problems cannot run
        raise ValueError(f"{test_jsonl} holds no problems (write_split with n_test > 0)")
    try:  # (a task's own YAML was taken as its data: lm-eval then failed on it, far from here)
        first = json.loads(text.lstrip().split("\n", 1)[0])
    except ValueError:
        first = None
    if not (isinstance(first, dict) and {"question", "answer"} <= first.keys()):
        raise ValueError(f"{test_jsonl} is not a JSONL file of problems (records with question and answer; write it "
                         "with write_split)")
    _check_golds(test_jsonl, text)
    folder = Path(folder)
    outputs = [folder / f for f in (f"{name}.yaml", f"{name}_utils.py")]
    if data in (p.resolve() for p in outputs):  # overwrite=True replaced the data with the task that reads it
        raise ValueError(f"{test_jsonl} is this task's own file; name the task otherwise, or write it into another "
                         "folder")
    _check_outputs(folder, outputs, overwrite, "task")
    folder.mkdir(parents=True, exist_ok=True)
    q = json.dumps  # a JSON string is a valid YAML scalar, whatever the path holds
    yaml = "\n".join([
        f"task: {name}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {q(glob.escape(str(data)))}",  # datasets reads it as a glob: `run[1]` would be `run1`
        "test_split: test",
        "output_type: generate_until",
        f"doc_to_text: {q('{{question}}')}",
        f"doc_to_target: {q('{{answer}}')}",
        f"process_results: !function {name}_utils.process_results",
        "metric_list:",
        "  - metric: exact_match",
        "    aggregation: mean",
        "    higher_is_better: true",
        "generation_kwargs:",
        f"  until: {q(list(STOP_STRINGS))}",
        "  do_sample: false",
        "  temperature: 0.0",
        f"  max_gen_toks: {max_gen_toks}",
        "num_fewshot: 0",
        "metadata:",
        "  version: 1.0",
    ]) + "\n"
    _write(outputs[0], yaml)
    _write(outputs[1], _UTILS.format(name=name))
    return name
