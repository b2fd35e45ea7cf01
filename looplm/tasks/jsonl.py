"""Your own prompt -> answer data: rows `{"prompt": str, "answer": str}` of a JSONL file (the field names are
`data.prompt_field` / `data.answer_field`), scored by exact match of the greedy answer.

The character vocabulary is built from every row the task reads (training and held-out) and saved with the
checkpoint, so a held-out character the training rows lack cannot stop a run at its first evaluation. The
held-out split is a separate file (`data.test_path`) or a seeded hash split of the rows (`data.test_fraction`,
keyed on the prompt, so a duplicated prompt never lands on both sides).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..arguments import check_count, check_optional_count
from ..records import check_text, read_rows, wrong_type
from .base import Batch, ReadOnUse, encode_answers, held_out_by_hash
from .tokenizers import EOS, PAD, CharTokenizer

FIELDS_NAMED = "data.prompt_field / data.answer_field name the fields"


def load_scored_rows(tok: Any, path: str | Path, fields: tuple[str, str], n: int | None, max_len: int | None,
                     wrong: Callable[[str, str], str | None] | None = None, named: str = FIELDS_NAMED) -> Batch:
    """The first n (prompt, answer) rows of a user's JSONL file as a batch, each row checked with its file:line:
    its characters against the vocabulary, its length against the positions, and (`wrong`, for a task whose
    answer follows from its prompt) its answer: `wrong(prompt, answer)` says what is wrong, or None. `named`: what
    a missing field's message says names the fields."""
    where: list[str] = []
    prompts, answers = read_pairs(path, *fields, where, named)
    for q, a, at in zip(prompts[:n], answers[:n], where, strict=False):
        try:
            need = len(tok.encode(q)) + len(tok.encode(a))  # + the end token - the shift
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from None
        if max_len is not None and need > max_len:
            raise ValueError(f"{at}: the prompt and answer need {need} positions but the model has "
                             f"max_seq_len={max_len}")
        why = wrong(q, a) if wrong is not None else None
        if why:
            raise ValueError(f"{at}: {why}")
    return encode_answers(tok, prompts[:n], answers[:n], max_len)


def read_pairs(path: str | Path, prompt_field: str, answer_field: str, where: list[str] | None = None,
               named: str = FIELDS_NAMED) -> tuple[list[str], list[str]]:
    """(prompts, answers) of a JSONL file; a bad row raises ValueError naming file:line. `where`, if given, is
    extended with each row's file:line. `named`: what names the fields (a task with fixed fields says so: pointed
    at data.prompt_field, chain and parity then refused that key)."""
    p = Path(path)
    prompts, answers = [], []
    for at, row in read_rows(p):
        for f in (prompt_field, answer_field):
            if f not in row:
                raise ValueError(f"{at}: field {f!r} is missing ({named}); the row has {sorted(row)}")
            if not isinstance(row[f], str):  # the field is there: its value is what is wrong
                raise ValueError(f"{at}: field {f!r} must be a string, got {wrong_type(row[f])}")
            try:
                check_text(row[f], f)
            except ValueError as e:
                raise ValueError(f"{at}: {e}") from None
        if not row[answer_field]:
            raise ValueError(f"{at}: empty answer")
        if not row[prompt_field]:  # the answer is predicted from the prompt's last token: there must be one
            raise ValueError(f"{at}: empty prompt")
        prompts.append(row[prompt_field])
        answers.append(row[answer_field])
        if where is not None:
            where.append(at)
    if not prompts:
        raise ValueError(f"{p}: no rows (the file is empty)")
    return prompts, answers


class JsonlTask(ReadOnUse):
    """The task interface (looplm.tasks) over a prompt -> answer JSONL file."""

    _read_on_use = ("train", "test", "size", "fingerprint", "seq_len")

    scored_by = "exact_match"
    eos_id, pad_id = EOS, PAD

    def __init__(self, path: str, prompt_field: str = "prompt", answer_field: str = "answer", test_path: str = "",
                 test_fraction: float = 0.05, seed: int = 0, max_len: int | None = None,
                 tokenizer: CharTokenizer | None = None, lazy: bool = False):
        """`tokenizer`: the one saved with the checkpoint a run continues or a command reads. `lazy` (with it): the
        rows are read only when they are needed, so scoring a file of one's own or generating works without
        the training files."""
        self.fields = (prompt_field, answer_field)
        self.paths = [path, *([test_path] if test_path else [])]
        self.max_len = max_len
        self._spec = (path, test_path, test_fraction, seed)
        if tokenizer is not None:
            self.tok = tokenizer
        if not (lazy and tokenizer is not None):
            self._read()

    def _read(self) -> None:
        path, test_path, test_fraction, seed = self._spec
        prompt_field, answer_field = self.fields
        max_len = self.max_len
        tokenizer = self.__dict__.get("tok")
        where: list[str] = []
        prompts, answers = read_pairs(path, prompt_field, answer_field, where)
        if test_path:
            if Path(test_path).resolve() == Path(path).resolve():
                raise ValueError(f"data.test_path {test_path} is data.path itself: the held-out score would be on "
                                 "training rows; give a separate file, or leave test_path empty for a hash split")
            self.train = (prompts, answers)
            test_where: list[str] = []
            self.test = read_pairs(test_path, prompt_field, answer_field, test_where)
            seen = set(prompts)
            shared = [w for q, w in zip(self.test[0], test_where, strict=True) if q in seen]
            if shared:  # a held-out score on rows the model trains on would pass for generalization
                raise ValueError(f"data.test_path: {len(shared)} of its {len(test_where)} prompts are also training "
                                 f"prompts in {path} (first: {shared[0]}); the held-out score would be on training "
                                 "rows: remove them from one file")
            where += test_where
        else:
            test = [held_out_by_hash(p, test_fraction, f"jsonl/{seed}") for p in prompts]
            self.train = ([p for p, t in zip(prompts, test, strict=True) if not t],
                          [a for a, t in zip(answers, test, strict=True) if not t])
            self.test = ([p for p, t in zip(prompts, test, strict=True) if t],
                         [a for a, t in zip(answers, test, strict=True) if t])
        if not self.train[0] or not self.test[0]:
            raise ValueError(f"{path}: the split leaves {len(self.train[0])} training and {len(self.test[0])} held-out "
                             "rows; give more rows, another data.test_fraction, or data.test_path")
        # A saved tokenizer is reused (a resume, a sweep); else the characters of all rows, held-out ones included.
        rows = self.train[0] + self.train[1] + self.test[0] + self.test[1]
        self.tok = tokenizer or CharTokenizer("".join(sorted(set("".join(rows)))))
        unknown = sorted(set("".join(rows)) - set(self.tok.stoi))
        if unknown:  # a saved vocabulary: found now, not at the batch that first draws such a row
            shown = ", ".join(repr(c) for c in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            raise ValueError(f"{path}: character(s) {shown} are not in the vocabulary of the model this run "
                             "continues (its checkpoint, or train.init_from)")
        self.seq_len = 0  # the longest row's positions: what a batch is padded to at most
        for q, a, at in zip(prompts + (self.test[0] if test_path else []),
                            answers + (self.test[1] if test_path else []), where, strict=True):
            need = len(self.tok.encode(q)) + len(self.tok.encode(a))  # + the end token - the shift
            if max_len is not None and need > max_len:  # found now, with the row, not at the step that draws it
                raise ValueError(f"{at}: the prompt and answer need {need} positions but model.max_seq_len="
                                 f"{max_len}; shorten the row or raise max_seq_len")
            self.seq_len = max(self.seq_len, need)
        self.size = len(self.train[0])
        # what was read, so a resume or a held-out sweep can tell that the rows are still the same
        digest = hashlib.sha256(json.dumps([self.train, self.test], ensure_ascii=True).encode()).hexdigest()
        # and the split as sets of rows: the hash split keys on each prompt, so reordered rows (a shuffle, sort -u)
        # give the same split, which a held-out sweep and the lineage check accept (a resume, drawing batches by
        # row index, does not)
        split = [sorted(zip(*part, strict=True)) for part in (self.train, self.test)]
        self.fingerprint = {"sha256": digest, "rows": len(prompts) + (len(self.test[0]) if test_path else 0),
                            "split_sha256": hashlib.sha256(json.dumps(split, ensure_ascii=True).encode()).hexdigest()}

    @property
    def vocab_size(self) -> int:
        return self.tok.vocab_size

    def train_batch(self, n: int, gen: torch.Generator, step: int = 0) -> Batch:
        n = check_count("n", n, 1)  # (0 was max() of nothing, a negative n torch's "negative dimension")
        idx = torch.randint(0, self.size, (n,), generator=gen).tolist()
        return encode_answers(self.tok, [self.train[0][i] for i in idx], [self.train[1][i] for i in idx],
                              self.max_len)

    def held_out(self, n: int) -> Batch:
        """The first n held-out rows (all of them if there are fewer)."""
        n = check_count("n", n, 1)  # n=-1 sliced [:-1], leaving out the last row
        return encode_answers(self.tok, self.test[0][:n], self.test[1][:n], self.max_len)

    def load_eval(self, path: str, n: int | None) -> Batch:
        """Rows of a file of one's own, each checked against the vocabulary and the positions with file:line."""
        n = check_optional_count("n", n, 1)  # n=-1 sliced [:-1], leaving out the last row
        return load_scored_rows(self.tok, path, self.fields, n, self.max_len)

    def format_answer(self, text: str) -> str:
        return text
