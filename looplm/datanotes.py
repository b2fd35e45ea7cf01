"""Notes for a `--data` file of the user's (sweep, analyze), as the same rows get them elsewhere: addition rows that
are not the task's problem shape (other operand widths: `generate` notes such prompts, `task.prompt_note`), and jsonl
rows that give one prompt two answers (`train` notes those, `lineage.conflict_note`). Each is scored as given, so a
sweep of them reported an accuracy of 0 or a ceiling below 1 with no word of why."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .tasks.addition import AdditionTask, read_addition_jsonl
from .tasks.jsonl import JsonlTask, read_pairs
from .tasks.lineage import conflict_note


def data_notes(task: Any, path: str, n: int | None) -> list[str]:
    """The notes for the first n rows of `path` (all: None), read as `task.load_eval` read them."""
    if isinstance(task, AdditionTask):
        a, b = read_addition_jsonl(path)
        odd = [note for note in map(task.prompt_note, map(task.prompt, a[:n], b[:n])) if note]
        if not odd:
            return []
        return [f"note: {len(odd)} of the {len(a[:n])} problems of {path} are not the task's shape (first: "
                f"{odd[0].removeprefix('note: ')})"]
    if isinstance(task, JsonlTask):
        prompts, answers = read_pairs(path, *task.fields)
        # conflict_note reads a task's rows: these rows, all scored, stand in for its held-out split
        rows = SimpleNamespace(train=([], []), test=(prompts[:n], answers[:n]), paths=[path])
        note = conflict_note(rows).replace("held-out exact match", "exact match on them")
        return [note] if note else []
    return []


def print_data_notes(task: Any, path: str, n: int | None) -> None:
    for note in data_notes(task, path, n):
        print(note)
