"""Size-graded algorithmic tasks, generated on the fly, whose larger instances need more computation: the test
for whether more loops solve harder problems than training saw (trained on sizes min_size..max_size, swept on
any size the model's positions allow).

- `parity`: a string of `size` bits, then `=`; the answer is their parity (one digit). No local rule gives it:
  every bit matters, so a fixed-depth network needs depth that grows with the length.
- `chain`: two chains of `size` hops of variable copies, each from its own digit, their facts shuffled together,
  then a query for the end of one: `c=b;d=3;a=7;e=d;b=a;f=e;?c=` -> `7`. Resolving it means following the chain
  hop by hop (or by pointer doubling); with a single chain, "the only digit in the prompt" would answer without
  following anything.

Each task holds out a fixed slice of its problems, chosen by a hash of the problem, and training rejects that
slice, so no training step can see a test problem. For tiny sizes (parity with a few bits) the slice can be
nearly empty; the test then draws from what there is.
"""

from __future__ import annotations

import random
import string

import torch

from ..arguments import check_count, check_optional_count
from .base import IGNORE, Batch, encode_answers, held_out_by_hash
from .tokenizers import EOS, PAD, CharTokenizer

TEST_FRACTION = 0.1
DRAW_MISSES = 2000


class SizedTask:
    """The task interface (looplm.tasks), plus `sized_batch(size, n)`: n held-out problems of one size."""

    scored_by = "exact_match"
    eos_id, pad_id = EOS, PAD
    size = None  # generated on the fly: no epochs
    name = ""
    chars = ""

    least = 1  # the smallest size the task has problems of (held out and for training)

    def __init__(self, min_size: int, max_size: int, test_size: int, test_seed: int, max_len: int | None = None):
        # checked as the config checks them: sizes past each other or below the task's least were accepted
        min_size, max_size, test_size, test_seed = (check_count(k, v, lo) for k, v, lo in (
            ("min_size", min_size, self.least), ("max_size", max_size, 1), ("test_size", test_size, 1),
            ("test_seed", test_seed, 0)))
        max_len = check_optional_count("max_len", max_len, 1)  # (32.5 was taken)
        if min_size > max_size:
            raise ValueError(f"min_size {min_size} is above max_size {max_size}; need min_size <= max_size")
        self.min_size, self.max_size = min_size, max_size
        self.test_size, self.test_seed, self.max_len = test_size, test_seed, max_len
        self.tok = CharTokenizer(self.chars)
        need = self.positions(max_size)
        if max_len is not None and need > max_len:
            raise ValueError(f"size {max_size} ({self.name}) needs {need} positions but model.max_seq_len={max_len}")

    @property
    def seq_len(self) -> int:
        """Model input length of the largest training instance."""
        return self.positions(self.max_size)

    @property
    def vocab_size(self) -> int:
        return self.tok.vocab_size

    # --- what a task defines --------------------------------------------------------------------------------
    def problem(self, rng: random.Random, size: int) -> tuple[str, str]:
        raise NotImplementedError

    def positions(self, size: int) -> int:
        """Model positions a problem of this size needs (prompt + answer + end, minus one)."""
        raise NotImplementedError

    # --- sampling ---------------------------------------------------------------------------------------------
    def _draw(self, rng: random.Random, size: int, held_out: bool) -> tuple[str, str]:
        got = self._try_draw(rng, size, held_out)
        if got is not None:
            return got
        fix = ""
        if held_out:  # a tiny size (parity of 1 or 2 bits) has too few problems to hold any out: say where to start
            first = next((s for s in range(size + 1, size + 64)
                          if self._try_draw(random.Random(s), s, True) is not None), None)
            fix = f"; the smallest size with held-out problems is {first}: start the sizes (--sizes) there" \
                if first is not None else ""
        raise ValueError(f"{self.name}: no {'held-out' if held_out else 'training'} problem of size {size}{fix}")

    def _try_draw(self, rng: random.Random, size: int, held_out: bool) -> tuple[str, str] | None:
        for _ in range(10_000):
            p, a = self.problem(rng, size)
            if held_out_by_hash(p, TEST_FRACTION, self.name) == held_out:
                return p, a
        return None

    def train_batch(self, n: int, gen: torch.Generator, step: int = 0) -> Batch:
        n = check_count("n", n, 1)  # (0 was max() of nothing)
        # One Python RNG seeded from the torch stream: the batch is a function of the saved generator state.
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))
        pairs = [self._draw(rng, rng.randint(self.min_size, self.max_size), False) for _ in range(n)]
        return encode_answers(self.tok, [p for p, _ in pairs], [a for _, a in pairs], self.max_len)

    def sized_batch(self, size: int, n: int, strict: bool = True) -> Batch:
        """n distinct held-out problems of one size (the same ones in every run). A small size has few (parity
        of 6 bits: 64 strings, about 6 held out): then strict raises, and otherwise the batch holds all there
        are. Drawing with replacement would score the same few problems n times and report n."""
        # checked as held_out's n: 2.5 drew 3 problems, True 1, and 0 was max() of nothing
        size, n = check_count("size", size, 1), check_count("n", n, 1)
        need = self.positions(size)
        if self.max_len is not None and need > self.max_len:
            raise ValueError(f"size {size} needs {need} positions but the model has max_seq_len={self.max_len}")
        rng = random.Random(f"{self.name}/{self.test_seed}/{size}")
        pairs: dict[str, str] = {}
        misses = 0  # draws in a row that found no new problem: past DRAW_MISSES, the slice is exhausted
        while len(pairs) < n and misses < DRAW_MISSES:
            p, a = self._draw(rng, size, True)
            misses = misses + 1 if p in pairs else 0
            pairs.setdefault(p, a)
        if len(pairs) < n and strict:
            raise ValueError(f"size {size} ({self.name}) has only {len(pairs):,} distinct held-out problems; ask for "
                             "at most that many (--n), or leave --n out: each size then gives all it has, up to "
                             "data.test_size")
        return encode_answers(self.tok, list(pairs), list(pairs.values()), self.max_len)

    def held_out(self, n: int) -> Batch:
        """The held-out split: min(n, test_size) problems spread evenly over the training sizes. A size with fewer
        distinct problems than its share (parity of few bits) gives all it has, and the others take the rest, so
        the split holds test_size problems wherever the sizes allow, and a count it reports is one it can give."""
        n = check_count("n", n, 1)
        sizes = list(range(self.min_size, self.max_size + 1))
        quota = _shares(min(n, self.test_size), sizes)
        spent: set[int] = set()  # sizes that gave fewer than their share: all they have
        while True:  # sized_batch(s, k) is the first k of sized_batch(s, k + 1): growing a share keeps the others
            parts = {s: self.sized_batch(s, k, strict=False) for s, k in quota.items() if k}
            got = {s: len(parts[s]) if s in parts else 0 for s in sizes}
            spent |= {s for s in sizes if got[s] < quota[s]}
            short = sum(quota[s] - got[s] for s in sizes)
            room = [s for s in sizes if s not in spent]
            if not short or not room:
                break
            quota = {s: got[s] for s in sizes}
            for s, extra in _shares(short, room).items():
                quota[s] += extra
        parts = [parts[s] for s in sizes if s in parts and len(parts[s])]
        width = max(b.input_ids.shape[1] for b in parts)

        def pad(t: torch.Tensor, v: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)

        return Batch(torch.cat([pad(b.input_ids, PAD) for b in parts]),
                     torch.cat([pad(b.targets, IGNORE) for b in parts]), torch.cat([pad(b.mask, False) for b in parts]))

    def format_answer(self, text: str) -> str:
        return text

    def solve(self, prompt: str) -> str | None:
        """The answer of a prompt of this task (None: the prompt is not one of its problems)."""
        raise NotImplementedError

    def prompt_note(self, prompt: str) -> str | None:
        """generate's note for a prompt that is not one of this task's problems (the model answers any prompt)."""
        if self.solve(prompt) is None:
            return f"note: {prompt!r} is not a {self.name} problem: the model was trained on {self.name} problems only"
        return None

    def load_eval(self, path: str, n: int | None) -> Batch:
        """Problems of the user's own in a JSONL file of {"prompt", "answer"} rows, each checked with its
        file:line; an answer is what the prompt's problem gives (a wrong gold answer would be scored as right)."""
        n = check_optional_count("n", n, 1)  # n=-1 sliced [:-1], leaving out the last row
        from .jsonl import load_scored_rows

        def wrong(prompt: str, answer: str) -> str | None:
            right = self.solve(prompt)
            if right is None:
                return f"{prompt!r} is not a {self.name} problem"
            return None if answer == right else f"answer {answer!r} is wrong: {prompt!r} gives {right!r}"

        return load_scored_rows(self.tok, path, ("prompt", "answer"), n, self.max_len, wrong,
                                f'the {self.name} task reads fixed {{"prompt", "answer"}} rows')


def _shares(n: int, sizes: list[int]) -> dict[int, int]:
    """n split as evenly as it goes over `sizes`, the remainder to the first ones."""
    return {s: n // len(sizes) + (i < n % len(sizes)) for i, s in enumerate(sizes)}


class ParityTask(SizedTask):
    name = "parity"
    chars = "01="
    least = 6  # fewer bits have too few problems for a held-out slice of every size (data.min_size says the same)

    def problem(self, rng: random.Random, size: int) -> tuple[str, str]:
        bits = "".join(rng.choice("01") for _ in range(size))
        return bits + "=", str(bits.count("1") % 2)

    def positions(self, size: int) -> int:
        return size + 1 + 1 + 1 - 1

    def solve(self, prompt: str) -> str | None:
        bits = prompt.removesuffix("=")
        if not bits or not prompt.endswith("=") or set(bits) - {"0", "1"}:
            return None
        return str(bits.count("1") % 2)


class ChainTask(SizedTask):
    name = "chain"
    chars = string.ascii_lowercase + string.digits + "=;?"

    def problem(self, rng: random.Random, size: int) -> tuple[str, str]:
        names = rng.sample(string.ascii_lowercase, 2 * (size + 1))
        values = rng.sample(string.digits, 2)
        facts = []
        for c in range(2):  # two chains, disjoint letters, different roots
            ch = names[c * (size + 1):(c + 1) * (size + 1)]
            facts += [f"{ch[0]}={values[c]};"] + [f"{ch[i]}={ch[i - 1]};" for i in range(1, size + 1)]
        rng.shuffle(facts)
        q = rng.randrange(2)
        return "".join(facts) + f"?{names[q * (size + 1) + size]}=", values[q]

    def positions(self, size: int) -> int:
        if size > 12:
            raise ValueError(f"chain size {size} needs {2 * (size + 1)} distinct letters; at most 12 hops")
        return 8 * (size + 1) + 3 + 1 + 1 - 1

    def solve(self, prompt: str) -> str | None:
        """Follow the queried variable's chain of `x=y;` facts to its digit (None: not a chain problem)."""
        body, _, query = prompt.rpartition("?")
        if not query.endswith("=") or len(query) != 2 or not query[0].islower() or not body.endswith(";"):
            return None  # (a query must name a letter: `?5=` would answer itself)
        pairs = [f.split("=", 1) for f in body[:-1].split(";")]
        # every fact `x=y` (a letter bound to a letter or a digit), each letter bound once: a fact of another form,
        # or a letter bound twice, is no chain problem (the last binding would have been taken silently)
        if any(len(f) != 2 or len(f[0]) != 1 or not f[0].islower() or len(f[1]) != 1 for f in pairs) or \
                len({f[0] for f in pairs}) < len(pairs):
            return None
        facts = dict(pairs)
        at, seen = query[0], set()
        while at in facts and at not in seen:
            seen.add(at)
            at = facts[at]
        return at if at.isdigit() and len(at) == 1 else None
