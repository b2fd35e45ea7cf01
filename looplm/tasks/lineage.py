"""A run's held-out split against the runs it descends from (train.init_from, followed up the chain): a fine-tune
whose held-out rows, or text tail, are what one of those runs trained on scores training rows as held-out, in
every evaluation and held-out sweep (a hash split with another data.test_seed, a data.test_path that is the base
run's training file, a longer text tail). One run's own split is held to the same rule (jsonl.JsonlTask refuses
a data.test_path sharing prompts with data.path). Addition, parity and chain hold out the same problems in every
run (a fixed hash), so only jsonl and text are compared.

The chain is read as far as it can be: a run that is gone, is no looplm run, or whose data files are gone or no
longer hold what it trained on (its data.json) ends or skips the comparison; it never fails a run by itself."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError, rank_zero

MAX_DEPTH = 8  # runs followed up a chain (each one's config read); a loop of links ends sooner


def ancestors(cfg: Any) -> list[tuple[str, Path, Any]]:
    """(train.init_from as recorded, its checkpoint folder, its config) for each looplm run up the chain from
    `cfg`, nearest first. A run that cannot be read ends the chain."""
    from .. import checkpoint as ckpt

    found: list[tuple[str, Path, Any]] = []
    seen: set[Path] = set()
    init = getattr(getattr(cfg, "train", None), "init_from", "")
    while init and len(found) < MAX_DEPTH:
        try:
            d = ckpt.resolve(init)
            if d.resolve() in seen:
                break
            base = ckpt.load_config(d)
        except (UserError, OSError, ValueError, RuntimeError):  # gone, damaged, an HF model: nothing to compare
            break
        if base.kind != "native":
            break
        seen.add(d.resolve())
        found.append((str(init), d, base))
        init = base.train.init_from
    return found


def _saved_fingerprint(folder: Path) -> dict | None:
    """The data digest a checkpoint recorded ({} when it recorded none, None when its record is unreadable)."""
    from . import DATA_FILE

    f = folder / DATA_FILE
    if not f.is_file():
        return {}
    try:
        saved = json.loads(f.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return saved if isinstance(saved, dict) else None


def trained_prompts(base: Any, folder: Path) -> set[str] | None:
    """The prompts a jsonl run trained on: its data read again and split by its own rule (its data.test_path, or
    its test_fraction and test_seed). None when its files are gone, unreadable, or no longer the ones it read."""
    from .jsonl import JsonlTask

    b = base.data
    saved = _saved_fingerprint(folder)
    if saved is None:
        return None
    try:
        task = JsonlTask(b.path, b.prompt_field, b.answer_field, b.test_path, b.test_fraction, b.test_seed)
    except (UserError, OSError, ValueError):
        return None
    if saved and saved.get("sha256") != task.fingerprint["sha256"]:  # (a relative path read from elsewhere, too)
        return None
    return set(task.train[0])


def _jsonl_overlap(cfg: Any, task: Any, named: str, folder: Path, base: Any) -> str:
    trained = trained_prompts(base, folder)
    shared = [q for q in task.test[0] if q in trained] if trained else []
    if not shared:
        return ""
    b = base.data
    split = (f"its held-out file data.test_path={b.test_path}" if b.test_path else
             f"its split, data.test_fraction={b.test_fraction} and data.test_seed={b.test_seed}, with no test_path")
    return (f"data: {len(shared)} of the {len(task.test[0])} held-out prompts (first: {shared[0]!r:.60}) are "
            f"training prompts of {named}{_whose(cfg, named)}; the held-out score would be on training rows: hold "
            f"out what it held out ({split}), or give a data.test_path without them")


def _text_overlap(cfg: Any, task: Any, named: str, folder: Path, base: Any) -> str:
    saved, now = _saved_fingerprint(folder), task.fingerprint
    if not saved or saved.get("sha256") != now["sha256"] or not isinstance(now.get("chars"), int):
        return ""  # another text (or no record of it): its training span says nothing of this one's tail
    n, was, fraction = now["chars"], base.data.test_fraction, cfg.data.test_fraction
    cut, trained_to = int(n * (1 - fraction)), int(n * (1 - was))
    if cut >= trained_to:
        return ""
    return (f"data.test_fraction={fraction} holds out the last {n - cut:,} characters of {cfg.data.path}, but "
            f"{named}{_whose(cfg, named)} trained on the same text up to its last {n - trained_to:,} (its "
            f"data.test_fraction={was}): {trained_to - cut:,} characters of the held-out tail are text it trained "
            f"on, and the held-out score would be on training rows; set data.test_fraction={was} or less")


def _whose(cfg: Any, named: str) -> str:
    near = cfg.train.init_from
    return " (train.init_from)" if named == near else f" (up the train.init_from chain from {near})"


def conflict_note(task: Any) -> str:
    """A note for jsonl rows that give one prompt different answers: greedy decoding gives one answer, so the
    other rows can never be matched, and held-out exact match has a ceiling below 1 (train.stop_at_acc above it
    never stops the run)."""
    answers: dict[str, set[str]] = {}
    for q, a in zip(task.train[0] + task.test[0], task.train[1] + task.test[1], strict=True):
        answers.setdefault(q, set()).add(a)
    torn = [q for q, s in answers.items() if len(s) > 1]
    if not torn:
        return ""
    held = Counter(zip(*task.test, strict=True))
    best: dict[str, int] = {}
    for (q, _), k in held.items():
        best[q] = max(best.get(q, 0), k)
    top, rows = sum(best.values()), len(task.test[0])
    cap = (f"held-out exact match can reach at most {top}/{rows} = {top / rows:.2f}" if top < rows else
           "none of them is held out")
    return (f"note: {len(torn)} prompt{'s' if len(torn) > 1 else ''} of {task.paths[0]} "
            f"{'appear' if len(torn) > 1 else 'appears'} with different answers (first: {torn[0]!r:.60}); a model "
            f"gives one answer to a prompt: {cap}; keep one answer per prompt")


def check_start(cfg: Any, task: Any, src: Path | None) -> None:
    """A fresh native run (no resume: its split was checked when it began): refuse a held-out split that a run up
    its train.init_from chain trained on, and note prompts its rows answer differently."""
    d = getattr(cfg, "data", None)
    if src is not None or task is None or cfg.kind != "native" or d.task not in ("jsonl", "text"):
        return
    for named, folder, base in ancestors(cfg):
        if base.data.task == d.task:
            said = (_jsonl_overlap if d.task == "jsonl" else _text_overlap)(cfg, task, named, folder, base)
            if said:
                raise ConfigError(said)
    note = conflict_note(task) if d.task == "jsonl" else ""
    if note and rank_zero():
        print(note)
