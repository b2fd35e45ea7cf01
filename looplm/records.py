"""JSON Lines files, read strictly: one reader for every task and data format that takes rows of JSON objects.

A row that is not what it claims is refused with `file:line`, never skipped or guessed at: malformed JSON, a
row that is not an object, a key given twice (json.loads would keep the last one without a word), a number too
long for Python to convert, nesting past the recursion limit. Blank lines are skipped; lines are split on
`\n` only (U+2028 and friends may stand inside a JSON string), and a trailing `\r` is dropped (CRLF files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} given twice in one object")
        out[k] = v
    return out


def parse_row(line: str, where: str) -> dict[str, Any]:
    """One JSON object; ValueError naming `where` otherwise."""
    try:
        row = json.loads(line, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: malformed JSON ({e.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply to read") from None
    except ValueError as e:  # a duplicate key, or Python's digit limit for int() (4,300 digits)
        why = "a number too long to read (more than 4,300 digits)" if "digits" in str(e) else str(e)
        raise ValueError(f"{where}: {why}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def data_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of a data folder that are read, in path order: those with one of `suffixes` (any letter case),
    each file once (a link to a file kept elsewhere is read; a second path to a file already read, a link beside
    its target, is not: it would count every row twice), and nothing hidden at any depth (`.git/`, and
    `.ipynb_checkpoints/`, whose copies would count every row twice)."""
    found = [f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes
             and not any(part.startswith(".") for part in f.relative_to(folder).parts)]
    first: dict[Path, Path] = {}
    for f in sorted(found, key=lambda f: (f.is_symlink(), f)):  # the file itself before a link to it
        first.setdefault(f.resolve(), f)
    return sorted(first.values())


def check_regular_file(path: str | Path) -> Path:
    """`path` as a Path if it names a regular file; FileNotFoundError or ValueError (a folder, a device or FIFO
    that would be read forever) otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file {p} does not exist")
    if not p.is_file():
        raise ValueError(f"data file {p} is {'a directory' if p.is_dir() else 'not a regular file'}")
    return p


def read_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(`file:line`, object) for every non-blank line of a UTF-8 JSON Lines file. A byte-order mark at its start
    (Windows editors write one) is not part of the first record."""
    p = check_regular_file(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a UTF-8 text file") from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if line.strip():
            rows.append((f"{p}:{n}", parse_row(line, f"{p}:{n}")))
    return rows
