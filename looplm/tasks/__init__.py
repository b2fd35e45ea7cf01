"""Tasks: tokenizers, on-the-fly training data, held-out splits and file readers."""

from .addition import AdditionTask, Batch, CharTokenizer, read_addition_jsonl

__all__ = ["AdditionTask", "Batch", "CharTokenizer", "read_addition_jsonl"]
