"""Tasks: what a run trains on and is scored by.

A task gives the trainer seeded training batches (`train_batch(n, gen, step) -> Batch`), a held-out split it
never draws from (`held_out(n) -> Batch`), its tokenizer (`tok`, with `eos_id` and `pad_id`; saved with every
checkpoint), `size` (training examples, or None for data generated on the fly), how it is scored (`scored_by`:
exact match of the greedy answer, or perplexity), `load_eval(path, n)` for a file of the user's own test
problems, and `format_answer(text)` for printing. A `Batch` carries token ids, next-token targets (IGNORE
where a position is not scored) and a real-token mask, so nothing outside a task needs its padding id or
prompt format. Size-graded tasks (parity, chain) add `sized_batch(size, n)`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from . import tokenizers
from .addition import AdditionTask, read_addition_jsonl
from .base import IGNORE, Batch
from .jsonl import JsonlTask
from .sized import ChainTask, ParityTask
from .text import TextTask
from .tokenizers import CharTokenizer


def make_task(cfg: Config, tokenizer: Any = None) -> Any:
    """The task of a looplm model's run (`data.task`), checked against the model's vocabulary and positions.
    `tokenizer`: the one saved with the run's checkpoint (a file's vocabulary is not rebuilt)."""
    d, m = cfg.data, cfg.model
    try:
        if d.task == "addition":
            task = AdditionTask(d.digits, max_len=m.max_seq_len, test_seed=d.test_seed, test_size=d.test_size)
        elif d.task == "jsonl":
            task = JsonlTask(d.path, d.prompt_field, d.answer_field, d.test_path, d.test_fraction, d.test_seed,
                             m.max_seq_len, tokenizer)
        elif d.task == "text":
            task = TextTask(d.path, d.window, d.test_fraction, d.tokenizer, d.bpe_vocab, m.max_seq_len, tokenizer)
        else:
            task = {"parity": ParityTask, "chain": ChainTask}[d.task](d.min_size, d.max_size, d.test_size,
                                                                      d.test_seed, m.max_seq_len)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None
    vocab = task.tok.vocab_size
    if m.vocab_size and vocab > m.vocab_size:
        raise ConfigError(f"model.vocab_size={m.vocab_size} is smaller than the task's vocabulary ({vocab}); "
                          "set it to 0 to use the task's")
    if d.task == "addition" and task.seq_len > m.max_seq_len:
        raise ConfigError(f"model.max_seq_len={m.max_seq_len} is too short for {d.digits}-digit addition, which "
                          f"needs {task.seq_len}")
    return task


def with_task_vocab(cfg: Config, task: Any) -> Config:
    """`cfg` with model.vocab_size = 0 replaced by the task's vocabulary size."""
    if cfg.model.vocab_size:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=task.tok.vocab_size))


def task_of_checkpoint(cfg: Config, folder: str | Path) -> Any:
    """The task a checkpoint was trained on, with the tokenizer saved in it."""
    from .. import checkpoint as ckpt

    return make_task(cfg, tokenizers.load(ckpt.resolve(folder)))


__all__ = ["IGNORE", "AdditionTask", "Batch", "ChainTask", "CharTokenizer", "JsonlTask", "ParityTask", "TextTask",
           "make_task", "read_addition_jsonl", "task_of_checkpoint", "with_task_vocab"]
