"""A run's held-out split against the runs it descends from (train.init_from, followed up the chain): a fine-tune
whose held-out rows, or text tail, are what one of those runs trained on scores training rows as held-out, in
every evaluation and held-out sweep (a hash split with another data.test_seed, a data.test_path that is the base
run's training file, a longer text tail). One run's own split is held to the same rule (jsonl.JsonlTask refuses
a data.test_path sharing prompts with data.path). Addition, parity and chain hold out the same problems in every
run (a fixed hash), so only jsonl and text are compared.

The chain is read as far as it can be: a run that is gone or is no looplm run ends it; one whose data is found
nowhere as it trained on it (its data.json digest) is skipped with a note; it never fails a run by itself. A text
that holds the base's text, or is held in it, is compared where it lies; texts that share only some files are not."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UserError, rank_zero

MAX_DEPTH = 8  # runs followed up a chain (each one's config read); a loop of links ends sooner


def ancestors(cfg: Any, folder: str | Path | None = None) -> list[tuple[str, Path, Any]]:
    """(train.init_from as recorded, its checkpoint folder, its config) for each looplm run up the chain from
    `cfg` (whose checkpoint is `folder`, if known), nearest first. A run that cannot be read ends the chain. A
    relative train.init_from is read from the working directory, else from the one its run recorded (data.json's
    cwd): a sweep from another directory cut the chain."""
    from .. import checkpoint as ckpt

    found: list[tuple[str, Path, Any]] = []
    seen: set[Path] = set()
    init = getattr(getattr(cfg, "train", None), "init_from", "")
    while init and len(found) < MAX_DEPTH:
        try:
            ran_in = (_saved_fingerprint(ckpt.resolve(folder)) or {}).get("cwd") if folder is not None else None
        except (UserError, OSError, ValueError):
            ran_in = None
        try:
            there = Path(init)
            if not there.exists() and isinstance(ran_in, str) and (Path(ran_in) / init).exists():
                there = Path(ran_in) / init
            d = ckpt.resolve(there)
            if d.resolve() in seen:
                break
            base = ckpt.load_config(d)
        except (UserError, OSError, ValueError, RuntimeError):  # gone, damaged, an HF model: nothing to compare
            break
        if base.kind != "native":
            break
        seen.add(d.resolve())
        found.append((str(init), d, base))
        init, folder = base.train.init_from, d
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


def _candidates(run: Any, saved: dict, key: str, also: tuple[str, ...]) -> list[str]:
    """Where a run's data.path (`key`: "path" or "test_path") may be now: the absolute path it was read from
    (data.json's read_from, recorded since round 47), the path as given (relative ones read from this working
    directory), then `also` (this run's own data, a --data file): older runs did not record where they ran, so a
    relative path read from elsewhere names nothing, or another file of the same name; the digest decides."""
    given = getattr(run.data, key, "") or ""
    read_from = saved.get("read_from")
    i = 0 if key == "path" else 1
    recorded = [read_from[i]] if isinstance(read_from, list) and len(read_from) > i and given else []
    found: list[str] = []
    for c in [*recorded, *([given] if given else []), *(also if key == "path" else ())]:
        if c and c not in found and Path(c).exists():
            found.append(str(c))
    return found


def located(run: Any, folder: Path | None, also: tuple[str, ...] = ()) -> tuple[str, Any] | None:
    """(the path, the data) of a jsonl or text run's training data as it trained on it: a JsonlTask split by the
    run's own rule, or the text read. None when no candidate holds it (gone, changed, or read from elsewhere). A
    run without a digest (data.json) is taken at its path as given, as before the digest was recorded."""
    from .. import checkpoint as ckpt
    from . import same_rows
    from .jsonl import JsonlTask
    from .text import read_text

    b = run.data
    try:
        saved = _saved_fingerprint(ckpt.resolve(folder)) if folder is not None else {}
    except (UserError, OSError, ValueError):
        saved = {}
    if saved is None:
        return None
    tests = _candidates(run, saved, "test_path", ()) if b.test_path else [""]
    for path in _candidates(run, saved, "path", also if saved else ()):  # (no digest: no other file is its)
        try:
            if b.task == "jsonl":
                data = JsonlTask(path, b.prompt_field, b.answer_field, tests[0] if tests else b.test_path,
                                 b.test_fraction, b.test_seed)
                now = data.fingerprint
            else:
                data = read_text(path)
                if isinstance(saved.get("chars"), int) and len(data) > saved["chars"]:
                    data = data[:saved["chars"]]  # a file grown in place (appended to) holds its text at its start
                now = {"sha256": hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()}
        except (UserError, OSError, ValueError):
            continue
        if not saved or (same_rows(saved, now) if b.task == "jsonl" else saved.get("sha256") == now["sha256"]):
            return path, data
    return None


def trained_prompts(base: Any, folder: Path, also: tuple[str, ...] = ()) -> set[str] | None:
    """The prompts a jsonl run trained on: its data read again and split by its own rule (its data.test_path, or
    its test_fraction and test_seed). None when its files are gone, unreadable, or no longer the ones it read."""
    found = located(base, folder, also)
    return set(found[1].train[0]) if found else None


def _jsonl_overlap(cfg: Any, task: Any, named: str, folder: Path, base: Any) -> str | None:
    trained = trained_prompts(base, folder, (cfg.data.path,))
    if trained is None:
        return None
    shared = [q for q in task.test[0] if q in trained]
    if not shared:
        return ""
    b = base.data
    split = (f"its held-out file data.test_path={b.test_path}" if b.test_path else
             f"its split, data.test_fraction={b.test_fraction} and data.test_seed={b.test_seed}, with no test_path")
    return (f"data: {len(shared)} of the {len(task.test[0])} held-out prompts (first: {shared[0]!r:.60}) are "
            f"training prompts of {named}{_whose(cfg, named)}; the held-out score would be on training rows: hold "
            f"out what it held out ({split}), or give a data.test_path without them")


def _text_overlap(cfg: Any, task: Any, named: str, folder: Path, base: Any) -> str | None:
    from .text import read_text

    saved, now = _saved_fingerprint(folder), task.fingerprint
    was, fraction = base.data.test_fraction, cfg.data.test_fraction
    if saved and saved.get("sha256") == now["sha256"] and isinstance(now.get("chars"), int):
        n = now["chars"]
        cut, trained_to = int(n * (1 - fraction)), int(n * (1 - was))
        if cut >= trained_to:
            return ""
        return (f"data.test_fraction={fraction} holds out the last {n - cut:,} characters of {cfg.data.path}, but "
                f"{named}{_whose(cfg, named)} trained on the same text up to its last {n - trained_to:,} (its "
                f"data.test_fraction={was}): {trained_to - cut:,} characters of the held-out tail are text it "
                f"trained on, and the held-out score would be on training rows; set data.test_fraction={was} or less")
    found = located(base, folder, (cfg.data.path,))
    if found is None:
        return None
    # another text: the base's may be part of it (a folder that gained a file, a file grown in place) or it part of
    # the base's (one file of the base's folder); the held-out tail is compared with the base's trained span there
    old, new = found[1], read_text(cfg.data.path)
    cut, trained_to = int(len(new) * (1 - fraction)), int(len(old) * (1 - was))
    at = new.find(old)
    inside = at >= 0
    if inside:  # the base's text at new[at:], trained up to new[at + trained_to]
        overlap, clear = min(at + trained_to, len(new)) - max(cut, at), at + trained_to
    elif (at := old.find(new)) >= 0:  # this text at old[at:]: its tail is old[at + cut:at + len(new)]
        overlap, clear = min(trained_to, at + len(new)) - (at + cut), trained_to - at
    else:
        return ""  # (texts that share only some files are not compared)
    if overlap <= 0:
        return ""
    most = int((1 - clear / len(new)) * 1000) / 1000  # the largest fraction that holds out only text it did not see
    advice = (f"set data.test_fraction={most} or less" if most > 0 else
              "no tail of this text is free of it: give a data.path the run did not train on")
    return (f"data.test_fraction={fraction} holds out the last {len(new) - cut:,} characters of {cfg.data.path}, but "
            f"{overlap:,} of them are text {named}{_whose(cfg, named)} trained on (its text, {found[0]}, "
            f"{'is part of this one' if inside else 'holds this one'}; its data.test_fraction={was}), and the held-out "
            f"score would be on training rows; {advice}")


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
            if said is None and rank_zero():  # its data is gone or changed: the chain goes unchecked, not unsaid
                print(f"note: the training data of {named}{_whose(cfg, named)} (data.path={base.data.path}) is not "
                      "found as it trained on it (moved, changed, or its relative path read from another directory),"
                      " so this run's held-out split is not checked against what it trained on")
    note = conflict_note(task) if d.task == "jsonl" else ""
    if note and rank_zero():
        print(note)
