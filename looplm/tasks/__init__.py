"""Tasks: what a run trains on and is scored by.

A task gives the trainer seeded training batches (`train_batch(n, gen, step) -> Batch`), a held-out split it
never draws from (`held_out(n) -> Batch`), its tokenizer (`tok`, with `eos_id` and `pad_id`) and `size`, the
number of training examples (None for data generated on the fly). A `Batch` carries token ids, next-token
targets (IGNORE where a position is not scored) and a real-token mask, so nothing outside the task needs its
padding id or prompt format.
"""

from ..config import Config, ConfigError
from .addition import AdditionTask, CharTokenizer, read_addition_jsonl
from .base import IGNORE, Batch


def make_task(cfg: Config) -> AdditionTask:
    """The task of a looplm model's run (`data.task`), checked against the model's vocabulary and positions."""
    task = AdditionTask(cfg.data.digits, max_len=cfg.model.max_seq_len, test_seed=cfg.data.test_seed,
                        test_size=cfg.data.test_size)
    if task.tok.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the task's vocabulary "
                          f"({task.tok.vocab_size})")
    if task.seq_len > cfg.model.max_seq_len:
        raise ConfigError(f"model.max_seq_len={cfg.model.max_seq_len} is too short for {cfg.data.digits}-digit "
                          f"addition, which needs {task.seq_len}")
    return task


__all__ = ["IGNORE", "AdditionTask", "Batch", "CharTokenizer", "make_task", "read_addition_jsonl"]
