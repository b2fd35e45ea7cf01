"""n-digit addition with the answer written reversed (least significant digit first), then EOS.

`1234+5678=` -> target `2196` + EOS (6912 reversed). Reversal lets a causal model emit each digit after the
carries it depends on, which is what makes the task learnable by a small looped model.

Held-out split: a fixed 1% slice of all operand pairs, chosen by a hash of the unordered pair, is reserved
for testing. Training draws reject reserved pairs, so no training step can ever see a test problem (or its
commuted twin), whatever the seed or step count.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..arguments import check_count, check_optional_count, strict_int
from ..records import read_rows
from .base import Batch, make_batch
from .tokenizers import EOS, PAD, CharTokenizer

__all__ = ["EOS", "PAD", "AdditionTask", "CharTokenizer", "make_batch", "read_addition_jsonl"]


def _pair_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """splitmix64 of the unordered pair: a well-mixed, platform-independent uint64 per pair."""
    lo, hi = np.minimum(a, b).astype(np.uint64), np.maximum(a, b).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (lo << np.uint64(32)) ^ hi
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


TEST_FRACTION = 100  # 1 pair in 100 is reserved for testing


def is_reserved(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_pair_hash(np.asarray(a), np.asarray(b)) % np.uint64(TEST_FRACTION)) == 0


class AdditionTask:
    """The task interface (looplm.tasks): seeded training batches, a held-out split, a tokenizer."""

    size = None  # generated on the fly: no epochs
    scored_by = "exact_match"

    def __init__(self, digits: int = 4, tokenizer: CharTokenizer | None = None, max_len: int | None = None,
                 test_seed: int = 1234, test_size: int = 1000):
        # checked as the config checks them: a string digits was a '<=' TypeError, and test_size=0 an IndexError
        # from numpy in held_out
        digits, test_size, test_seed = (check_count(k, v, lo) for k, v, lo in (
            ("digits", digits, 1), ("test_size", test_size, 1), ("test_seed", test_seed, 0)))
        if not 1 <= digits <= 9:
            raise ValueError(f"digits must be in 1..9, got {digits}")
        self.digits = digits
        self.lo, self.hi = 10 ** (digits - 1), 10**digits - 1
        self.tok = tokenizer or CharTokenizer()
        self.max_len, self.test_seed, self.test_size = max_len, test_seed, test_size
        self.eos_id, self.pad_id = EOS, PAD

    def check_split_size(self, n: int) -> None:
        space = (self.hi - self.lo + 1) ** 2
        # At most half the expected slice: drawing more would take ever longer as distinct pairs run out.
        limit = space // (2 * TEST_FRACTION)
        if n > limit:
            raise ValueError(f"{n} held-out problems are too many for {self.digits}-digit operands: at most {limit} "
                             f"(half the reserved slice of about {space // TEST_FRACTION} pairs); lower "
                             "data.test_size and train.eval_size")

    @property
    def seq_len(self) -> int:
        """Model input length: prompt `a+b=` plus the answer (up to digits+1) plus EOS, minus one."""
        return (2 * self.digits + 2) + (self.digits + 1) + 1 - 1

    def prompt(self, a: int, b: int) -> str:
        return f"{a}+{b}="

    def prompt_note(self, prompt: str) -> str | None:
        """generate's note for a prompt that is not one of this task's problems (the model answers any prompt)."""
        m = re.fullmatch(r"([0-9]+)\+([0-9]+)=", prompt)
        if m and all(x == str(int(x)) and self.lo <= int(x) <= self.hi for x in m.groups()):
            return None
        return (f"note: {prompt!r} is not a {self.digits}-digit addition problem: the model was trained on a+b= with "
                f"{self.digits}-digit operands only")

    @staticmethod
    def target(a: int, b: int) -> str:
        return str(a + b)[::-1]

    # --- data ---------------------------------------------------------------------------------------------
    def sample_pairs(self, n: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n training pairs, uniform over operands, never from the reserved test slice."""
        a = torch.randint(self.lo, self.hi + 1, (n,), generator=gen).numpy()
        b = torch.randint(self.lo, self.hi + 1, (n,), generator=gen).numpy()
        bad = is_reserved(a, b)
        while bad.any():  # ~1% per round; a handful of rounds at most
            k = int(bad.sum())
            a[bad] = torch.randint(self.lo, self.hi + 1, (k,), generator=gen).numpy()
            b[bad] = torch.randint(self.lo, self.hi + 1, (k,), generator=gen).numpy()
            bad = is_reserved(a, b)
        return a, b

    def test_pairs(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The first n distinct reserved pairs in a seeded random order: the fixed held-out split."""
        self.check_split_size(n)
        gen = torch.Generator().manual_seed(seed)
        seen: set[tuple[int, int]] = set()
        out: list[tuple[int, int]] = []
        while len(out) < n:
            a = torch.randint(self.lo, self.hi + 1, (65536,), generator=gen).numpy()
            b = torch.randint(self.lo, self.hi + 1, (65536,), generator=gen).numpy()
            keep = is_reserved(a, b)
            for x, y in zip(a[keep].tolist(), b[keep].tolist(), strict=True):
                if (x, y) not in seen:
                    seen.add((x, y))
                    out.append((x, y))
                    if len(out) == n:
                        break
        arr = np.array(out, dtype=np.int64)
        return arr[:, 0], arr[:, 1]

    def encode_problems(self, a: np.ndarray | list[int], b: np.ndarray | list[int], max_len: int | None = None
                        ) -> Batch:
        """Teacher-forcing batch for problems (a_i, b_i); `max_len` is the model's position table size."""
        seqs, plens = [], []
        for x, y in zip(list(a), list(b), strict=True):
            try:  # (int() cut 1.7 to 1: the problem "1+3=" was encoded without a word)
                x, y = strict_int(x), strict_int(y)
            except TypeError:
                raise TypeError(f"problems are pairs of integers, got {x!r:.40} and {y!r:.40}") from None
            p = self.tok.encode(self.prompt(x, y))
            seqs.append(p + self.tok.encode(self.target(x, y)) + [EOS])
            plens.append(len(p))
        if not seqs:  # (max() of nothing)
            raise ValueError("no problems to encode")
        return make_batch(seqs, plens, max_len)

    def train_batch(self, n: int, gen: torch.Generator, step: int = 0) -> Batch:
        """n fresh problems from the data stream `gen` (`step` is unused: the stream is the state)."""
        n = check_count("n", n, 1)  # (0 was max() of nothing, a negative n numpy's error)
        if not isinstance(gen, torch.Generator):  # (5 was torch's list of randint overloads)
            raise TypeError(f"gen must be a torch.Generator, got {type(gen).__name__}")
        return self.encode_problems(*self.sample_pairs(n, gen), max_len=self.max_len)

    def test_batch(self, n: int, seed: int, max_len: int | None = None) -> Batch:
        return self.encode_problems(*self.test_pairs(n, seed), max_len=max_len)

    def held_out(self, n: int) -> Batch:
        """The first n problems of the reserved held-out split (at most its test_size)."""
        n = check_count("n", n, 1)
        return self.test_batch(min(n, self.test_size), self.test_seed, self.max_len)

    def load_eval(self, path: str, n: int | None) -> Batch:
        """Problems from a file in the authors' JSONL format (`read_addition_jsonl`)."""
        n = check_optional_count("n", n, 1)  # n=-1 sliced [:-1], leaving out the last row
        a, b = read_addition_jsonl(path)
        for i, (x, y) in enumerate(zip(a[:n], b[:n], strict=True)):  # named, in a file of thousands
            need = len(self.tok.encode(self.prompt(x, y))) + len(self.tok.encode(self.target(x, y)))
            if self.max_len is not None and need > self.max_len:
                raise ValueError(f"{path}: problem {i + 1} ({x}+{y}) needs {need} positions but the model has "
                                 f"max_seq_len={self.max_len}; it is too long for this model")
        return self.encode_problems(a[:n], b[:n], self.max_len)

    @staticmethod
    def format_answer(text: str) -> str:
        return text[::-1]  # the model writes the sum least-significant digit first


def read_addition_jsonl(path: str | Path) -> tuple[list[int], list[int]]:
    """Rows `{"num1": int, "num2": int, "answer": int}` (other keys ignored): the authors' test-file format.

    Every problem is checked; a bad row raises ValueError naming file:line, so nothing is silently dropped.
    """
    path = Path(path)
    a, b = [], []
    for where, row in read_rows(path):
        missing = [k for k in ("num1", "num2", "answer") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        for k in ("num1", "num2", "answer"):
            v = row[k]
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{where}: {k} must be an integer, got {v!r}")
            if v < 0:
                raise ValueError(f"{where}: {k} must be non-negative, got {v}")
        if row["num1"] + row["num2"] != row["answer"]:
            raise ValueError(f"{where}: answer {row['answer']} != {row['num1']} + {row['num2']}")
        a.append(row["num1"])
        b.append(row["num2"])
    if not a:
        raise ValueError(f"{path}: no problems (the file is empty)")
    return a, b
