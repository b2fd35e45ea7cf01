"""A switch given to the HF side's API (`use_weighted_exit=`, `output_loop_logits=`, `overwrite=`) must be a bool:
a string is a true value to Python, so "false" or "no" turned the switch on without a word (standard library only)."""

from __future__ import annotations

from typing import Any


def check_flag(name: str, value: Any, optional: bool = False) -> bool | None:
    """`value` if it is True or False (or None, where `optional`: the config's or transformers' default), else a
    ValueError naming the argument (as eval_depths refuses apply_chat_template="false")."""
    if isinstance(value, bool) or (optional and value is None):
        return value
    raise ValueError(f"{name} must be True or False{' (or None)' if optional else ''}, got {value!r:.80}")
