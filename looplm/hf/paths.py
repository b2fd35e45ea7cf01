"""One rule for the paths the HF commands read (model.name_or_path and model.tokenizer, data.source,
data.chat_template, eval-lm's and analyze's model): a leading `~` is expanded, as a shell would. A YAML config or an
API call reaches no shell, and `~/models/Ouro-1.4B` was taken for a hub id and refused for its characters, while
data.source's `~/x.jsonl` was read. (looplm's own runs, and every --out, refuse `~` instead: errors.not_there.)"""

from __future__ import annotations

import os
from typing import Any


def expand_home(path: Any, what: str = "the path") -> str:
    """`path` (a str or os.PathLike) as a str with a leading ~ or ~user expanded. A `~name` of no user is refused
    (it names no folder; taken as a name it was a hub id or a folder named ~name here); a wrong type is a TypeError
    naming `what` (a pathlib.Path was `'PosixPath' object has no attribute 'strip'`)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__} {repr(path)[:60]}")
    if not path.startswith("~"):
        return path
    full = os.path.expanduser(path)
    if full.startswith("~"):
        head = path.split(os.sep)[0]
        raise ValueError(f"{what} {path}: {head} is no home folder (there is no user {head[1:]!r}); give the full "
                         "path")
    return full


def shown_home(path: str, full: str) -> str:
    """`path` as given, with the folder it names after a ~ (`~/x.jsonl (/home/me/x.jsonl)`): a message on a
    missing `~/x` names where it looked. (An edge space is shown quoted: errors.shown_path.)"""
    from ..errors import shown_path

    return shown_path(path) if path == full else f"{shown_path(path)} ({full})"


def not_a_hub_id(path: str) -> bool:
    """Whether `path` can only be a local path: absolute, starting with ./ or ../ (or . or ..), or with more
    segments than a hub id's `name` or `org/name` (or a separator of the OS's own other than /)."""
    p = str(path)
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return (os.path.isabs(p) or p in (".", "..") or p.startswith(("./", "../")) or p.count("/") > 1
            or any(s != "/" and s in p for s in seps))


def refuse_missing(path: str, what: str = "model directory") -> None:
    """A UserError when `path` cannot be a hub id and is not there: a mistyped local path (`./run/checkpoints/
    step-1`) was blamed on the hub's repo-id rules. Names the nearest folder above it that exists."""
    from pathlib import Path

    from ..errors import UserError, shown_path

    p = Path(path)
    if p.exists() or not not_a_hub_id(str(path)):
        return
    near = next((q for q in p.parents if q.is_dir() and str(q) != "."), None)
    hint = f" ({shown_path(str(near))}/ does)" if near is not None else ""
    raise UserError(f"{what} {shown_path(str(path))} does not exist{hint}")
