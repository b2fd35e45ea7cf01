"""What every task hands the trainer, the sweep and the diagnostics: a `Batch` of token ids, next-token
targets and a real-token mask.

Nothing outside a task knows its padding id or its prompt format: the mask says which positions are real
tokens, and `targets` says which positions are scored (the next token there, `IGNORE` elsewhere).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .tokenizers import EOS, PAD

IGNORE = -100  # cross_entropy's ignore_index: a position that is not scored


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long; padding on the right
    targets: torch.Tensor  # (B, T) long: the next token where the position is scored, IGNORE elsewhere
    mask: torch.Tensor  # (B, T) bool: real tokens (True) vs padding

    def __post_init__(self) -> None:
        # Checked here, where every reader's batch passes: parts of different shapes were scored by diagnose (two
        # problems with one row of targets, one counted right) and failed inside torch's indexing in sweep.
        parts = {"input_ids": self.input_ids, "targets": self.targets, "mask": self.mask}
        for name, t in parts.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"Batch.{name} must be a torch.Tensor, got {type(t).__name__}")
        # int32 or float targets failed inside torch's cross-entropy ("expected target dtype to be Long")
        wrong = [f"{n} {parts[n].dtype}" for n, ok in (("input_ids", (torch.int64, torch.int32)),
                                                       ("targets", (torch.int64,))) if parts[n].dtype not in ok]
        if wrong:
            raise TypeError(f"a Batch's input_ids must be int64 (or int32) token ids and its targets int64, got "
                            f"{', '.join(wrong)}")
        shapes = {name: tuple(t.shape) for name, t in parts.items()}
        if len(set(shapes.values())) > 1 or self.input_ids.dim() != 2:
            raise ValueError("a Batch's input_ids, targets and mask must share one (batch, positions) shape, got "
                             + ", ".join(f"{name} {list(v)}" for name, v in shapes.items()))
        # Every reader takes a row's real tokens to come first (causal attention, positions from 0, rows() trimming
        # to the longest row): a left-padded batch (as HF tokenizers pad for generation) was scored wrong, no error.
        real = self.mask != 0
        late = (real[:, 1:] & ~real[:, :-1]).any(1).nonzero().flatten()
        if len(late):
            raise ValueError(f"a Batch is right-padded: each row's real tokens (mask True) must come first, then its "
                             f"padding; row {int(late[0])} has a real token after padding (left padding?)")

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.targets.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, sl: slice) -> Batch:
        """A slice of the samples, trimmed to the longest real sequence among them (right padding only)."""
        m = self.mask[sl]
        width = max(1, int(m.sum(1).max())) if m.numel() else 1
        return Batch(self.input_ids[sl, :width], self.targets[sl, :width], m[:, :width])

    def by_length(self) -> Batch:
        """The same samples, shortest first (stable), so micro-batches cut from it in order pad little. A batch's
        loss is a sum over its samples, so their order does not change it."""
        order = torch.argsort(self.mask.sum(1), stable=True)
        return Batch(self.input_ids[order], self.targets[order], self.mask[order])


def make_batch(seqs: list[list[int]], prompt_lens: list[int], max_len: int | None = None) -> Batch:
    """Right-pad full sequences into (inputs, targets); loss only where the target is an answer token.

    Right padding is safe under causal attention: a position never sees the pads after it.
    """
    T = max(len(s) for s in seqs) - 1
    if max_len is not None and T > max_len:
        raise ValueError(f"a problem needs {T} positions but the model has max_seq_len={max_len}; "
                         "its prompt and answer are too long for this model")
    inp = torch.full((len(seqs), T), PAD, dtype=torch.long)
    tgt = torch.full((len(seqs), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, (s, p) in enumerate(zip(seqs, prompt_lens, strict=True)):
        s_t = torch.tensor(s, dtype=torch.long)
        inp[i, : len(s) - 1] = s_t[:-1]
        tgt[i, p - 1 : len(s) - 1] = s_t[p:]
        mask[i, : len(s) - 1] = True
    return Batch(inp, tgt, mask)



def held_out_by_hash(key: str, fraction: float, salt: str = "") -> bool:
    """Whether `key` belongs to the held-out part of a seeded hash split: the same on every machine and in every
    run, so training can reject it wherever it comes from."""
    h = int.from_bytes(hashlib.blake2b((salt + "\0" + key).encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction


def encode_answers(tok, prompts: list[str], answers: list[str], max_len: int | None = None) -> Batch:
    """Prompt -> answer problems as a teacher-forcing batch: `prompt answer <eos>`, scored on the answer and the
    end token (so a greedy answer is right only if it stops there)."""
    seqs, plens = [], []
    for p, a in zip(prompts, answers, strict=True):
        ids = tok.encode(p)
        seqs.append(ids + tok.encode(a) + [EOS])
        plens.append(len(ids))
    return make_batch(seqs, plens, max_len)


class ReadOnUse:
    """A task over files whose data attributes (`_read_on_use`) are read by `_read()` when first asked for: a
    task built from a saved tokenizer for `generate` or `sweep --data` then opens no training file."""

    _read_on_use: tuple[str, ...] = ()

    def _read(self) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str):  # only for attributes not set yet
        if name in type(self)._read_on_use:
            self._read()
            return object.__getattribute__(self, name)
        raise AttributeError(name)
