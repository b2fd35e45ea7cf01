"""JSON Lines files, read strictly: one reader for every task and data format that takes rows of JSON objects.

A row that is not what it claims is refused with `file:line`, never skipped or guessed at: malformed JSON, a
row that is not an object, a key given twice (json.loads would keep the last one without a word), a number too
long for Python to convert, nesting past the recursion limit. Blank lines are skipped; lines are split on
`\n` only (U+2028 and friends may stand inside a JSON string), and a trailing `\r` is dropped (CRLF files).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import emptiness, not_there, shown_path, special_kind


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


def wrong_type(value: Any) -> str:
    """A field's value that is not the string it should be, for a message: `int 0 (write numbers as "0")`."""
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if value is None:  # (was "got null null")
        return "null"
    kind = type(value).__name__
    hint = f' (write numbers as "{shown}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"{kind} {shown}{hint}"


def lone_surrogate(value: Any, name: str) -> str | None:
    """The field (`name`, or a part of it such as `name[1].content`) of the first string in `value` that holds a
    lone surrogate escape (`\\ud800`: valid JSON, as scraped text has it where an emoji was cut in half, but no
    character, so no tokenizer encodes it); None when every string is text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name
        return None
    parts = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in parts:
        bad = lone_surrogate(v, f"{name}[{k}]" if isinstance(k, int) else f"{name}.{k}")
        if bad is not None:
            return bad
    return None


def check_text(value: Any, name: str) -> None:
    """ValueError when `value` (a field's string, or the list or object it holds) has a lone surrogate escape;
    the caller adds the row's file:line."""
    bad = lone_surrogate(value, name)
    if bad is not None:
        raise ValueError(f"field {bad!r} holds a lone surrogate escape, which is not a character")


def alpaca_prompt(record: dict[str, Any], prompt_field: str) -> Any:
    """The prompt of a record read by its fields: an instruction with the passage it is about joined after it,
    Alpaca's `input` (in ~40% of records) or Dolly's `context`; read alone, the instruction was trained without
    its passage."""
    key = "input" if "input" in record or "context" not in record else "context"
    said, extra = record.get(prompt_field), record.get(key) if prompt_field == "instruction" else None
    if extra in (None, "") or not isinstance(said, str | None):  # (a said of another type is refused as such)
        return said
    if not isinstance(extra, str):
        raise ValueError(f"{key} must be a string, got {type(extra).__name__} {repr(extra)[:80]}")
    return f"{said}\n\n{extra}" if said and said.strip() else extra


def _walk(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """(folder, its file names) for every folder a data folder's reader walks: links followed, each folder once
    (a link back to one already walked, `more -> ..`, is no cycle), hidden ones left out."""
    walked = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in walked:
            dirs[:] = []
            continue
        walked.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield root, files


def data_folders(folder: Path) -> list[Path]:
    """Every folder (resolved) whose files a data folder's reader reads: the folder and those linked into it."""
    return [Path(root).resolve() for root, _ in _walk(folder)]


# Data in a format no looplm reader reads (compressed, CSV, Arrow): refused in a data folder, not skipped, so that a
# corpus kept mostly as .txt.gz is not trained on its small uncompressed part without a word
UNREAD_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".zip", ".lz4", ".lz", ".lzma", ".z", ".br", ".7z", ".rar",
                   ".tar", ".tgz", ".tbz2", ".txz", ".csv", ".tsv", ".arrow", ".feather", ".ipc", ".ndjson",
                   ".jsonlines", ".pq", ".parq")
# ... and whatever a compressor, tar, Parquet or Arrow wrote, by its first bytes, under any name (`corpus.part1`, a hub
# shard `train-00001-of-00002`)
_PACKED = (b"\x1f\x8b", b"\x1f\x9d", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"LZIP", b"\x04\x22\x4d\x18",
           b"PK\x03\x04", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"PAR1", b"ARROW1",
           b"!<arch>\n", b"070701", b"070702", b"070707", b"\xc7\x71")  # (ar, cpio)


def unread_format(f: Path, suffixes: tuple[str, ...], unread: tuple[str, ...] = UNREAD_SUFFIXES) -> bool:
    """Whether `f` is data in a format a reader of `suffixes` does not read: one of `unread`, or a compressor's,
    Parquet's or Arrow's first bytes under a name the reader does not read (under a name it reads, the reader's own
    error says what is wrong)."""
    return f.suffix.lower() in unread or (f.suffix.lower() not in suffixes and _packed(f))


def _packed(f: Path) -> bool:
    if not f.is_file():  # a FIFO would block the read; a link to nothing is no data
        return False
    try:
        with open(f, "rb") as fh:
            head = fh.read(262)
        # a POSIX or GNU tar marks its first header at byte 257 (its text is valid UTF-8 when its members are:
        # the headers' NUL padding and octal fields were read as training text)
        return head.startswith(_PACKED) or head[257:262] == b"ustar"
    except OSError:
        return False


def data_files(folder: Path, suffixes: tuple[str, ...], unread: tuple[str, ...] = UNREAD_SUFFIXES,
               sniff_all: bool = False) -> list[Path]:
    """The files of a data folder that are read, in path order: those with one of `suffixes` (any letter case),
    links to files and folders followed (data kept elsewhere and linked in; a link that leads nowhere is
    refused, not left out), each file once (a second path to a
    file already read, a symbolic or hard link, would count every row twice: files are told apart by device and
    inode), and nothing hidden at any depth (`.git/`, and `.ipynb_checkpoints/`, whose copies would count every
    row twice). A file with one of `unread` (data in a format this reader does not read) is refused, naming it.
    `sniff_all`: the first bytes of files under the reader's own names are checked too (a reader of plain text
    would read an uncompressed tar named `.txt`, or a shard with no suffix, headers and padding as text)."""
    found, other = [], []
    for root, files in _walk(folder):
        for name in files:
            f = Path(root) / name
            if not name.startswith(".") and unread_format(f, () if sniff_all else suffixes, unread):
                other.append(f)
            if name.startswith(".") or f.suffix.lower() not in suffixes:
                continue
            if f.is_symlink() and not f.exists():  # data that is gone (an unmounted drive): not left out unsaid
                raise FileNotFoundError(f"data file {f} {not_there(f)}")
            if not f.is_file():  # a device or FIFO would be read forever
                raise ValueError(f"data file {f} is not a regular file (a device, FIFO or socket)")
            found.append(f)
    if other:
        raise ValueError(_unread_message(folder, sorted(other), suffixes, unread))
    first: dict[tuple[int, int], Path] = {}
    for f in sorted(found, key=lambda f: (f.is_symlink(), f)):  # the file itself before a link to it
        st = f.stat()
        first.setdefault((st.st_dev, st.st_ino), f)
    return sorted(first.values())


def few(names: list[str], n: int = 3) -> str:
    """The first `n` of `names`, then how many more."""
    return ", ".join(names[:n]) + (f" and {len(names) - n:,} more" if len(names) > n else "")


def kinds_read(suffixes: tuple[str, ...]) -> str:
    return ", ".join(s for s in suffixes if s) + (" (or no suffix)" if "" in suffixes else "")


def held_files(folder: Path) -> list[str]:
    """Every file under `folder`, hidden ones too, as paths relative to it: what a folder that gives a reader
    nothing holds instead."""
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


def _run_above(f: Path, folder: Path) -> Path | None:
    """The outermost folder between `folder` and `f` that holds a looplm run or a model's weights."""
    from .checkpoint import has_weights
    from .rundir import holds_run  # (rundir reads records: imported here, on the way to an error only)

    for d in reversed(f.parents):
        if d != folder and folder in d.parents and (holds_run(d) or has_weights(d)):
            return d
    return None


def _unread_message(folder: Path, other: list[Path], suffixes: tuple[str, ...], unread: tuple[str, ...]) -> str:
    """Why the files `other` of data folder `folder` are refused, by kind. Each is named by its path in the folder,
    once: bare names gave "trainer_state.pt, trainer_state.pt, trainer_state.pt" for a run's checkpoints, with the
    advice to convert them to text, and "convert them to .txt" for a zip named .txt."""
    from .rundir import holds_run  # (rundir reads records: imported here, on the way to an error only)

    if holds_run(folder):
        return f"{folder} is a looplm run, not a folder of data; give the folder of the data files"
    runs = sorted({r for f in other if (r := _run_above(f, folder)) is not None})
    rest = [f for f in other if not any(r in f.parents for r in runs)]
    named = [os.path.relpath(f, folder) for f in rest if f.suffix.lower() in unread]
    packed = [os.path.relpath(f, folder) for f in rest if f.suffix.lower() not in unread]
    parts = []
    if runs:
        shown = few([os.path.relpath(r, folder) for r in runs])
        parts.append(f"a looplm run or model ({shown}), whose checkpoints are not data: move "
                     f"{'it' if len(runs) == 1 else 'them'} out of the folder")
    if named:
        parts.append(f"data files looplm does not read ({few(named)}); convert them to {kinds_read(suffixes)} "
                     "files, or move them out of the folder")
    if packed:  # found by their first bytes: "convert them to .txt" told a zip named .txt to become one
        parts.append(f"data files looplm does not read ({few(packed)}): their bytes are compressed, an archive, "
                     f"Parquet or Arrow, whatever their names say; unpack or convert them to {kinds_read(suffixes)} "
                     "files, or move them out of the folder")
    return f"{folder} holds " + "; it also holds ".join(parts)


def check_regular_file(path: str | Path) -> Path:
    """`path` as a Path if it names a regular file; FileNotFoundError or ValueError (a folder, a device or FIFO)
    otherwise. A pipe (`--data /dev/stdin`) was "not a regular file", with no reason and no way out."""
    if not str(path).strip():  # pathlib's working folder: "data file . is a directory"
        raise ValueError(f"the data path is {emptiness(str(path))}; give a data file")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(missing_data(path))
    if p.is_dir():
        raise ValueError(f"data file {p} is a directory")
    if not p.is_file():
        odd = special_kind(p) or "not a regular file"
        if "FIFO" not in odd:  # (/dev/zero would be read forever)
            raise ValueError(f"data file {p} is {odd}, not a file; give the path of a data file")
        raise ValueError(f"data file {p} is {odd}, not a file: a pipe's rows are gone once read, yet the result "
                         "records the path as the data it scored (and one with no writer never ends); write the rows "
                         "to a file first (`cat > rows.jsonl`) and give its path")
    return p


def missing_data(path: str | Path) -> str:
    """Why data file `p` cannot be read, where a relative path was looked for: it is read from the working
    directory, not from the config file's folder (a data file beside a config was "does not exist")."""
    p = Path(path)
    why = not_there(p)
    url = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):/", str(path))  # (a Path has made file:///x file:/x)
    if url and why == "does not exist":  # "data file file:/tmp/d.jsonl does not exist in ..." never said why
        return (f"data file {shown_path(path)} looks like a URL ({url[1]}://...): looplm reads local files; give "
                "the file's path (download it first if it is remote)")
    if p.is_absolute() or why != "does not exist":
        return f"data file {shown_path(p)} {why}"
    return (f"data file {shown_path(p)} does not exist in {Path.cwd()} (a relative path is read from the working "
            "directory, not from a config file's folder)")


def first_bad_byte(f: Path) -> str:
    """Where file `f` (a corpus, a JSONL file) stops being UTF-8: its first bad byte, by offset and line, so one
    stray byte (a Windows-1252 quote) in a large corpus can be found."""
    data = f.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return f"byte 0x{data[e.start]:02x} at offset {e.start:,}, line {line}"
    return "it changed while it was read"


def read_rows(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(`file:line`, object) for every non-blank line of a UTF-8 JSON Lines file. A byte-order mark at its start
    (Windows editors write one) is not part of the first record."""
    p = check_regular_file(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a UTF-8 text file ({first_bad_byte(p)})") from None
    _not_one_document(text, p)
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if line.strip():
            rows.append((f"{p}:{n}", parse_row(line, f"{p}:{n}")))
    return rows


def _not_one_document(text: str, p: Path) -> None:
    """Refuse a file that is one JSON document, a list of objects (as many datasets are shipped), saying so: read as
    JSON Lines, it was "malformed JSON" on its first line."""
    if not text.lstrip().startswith("["):
        return
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return  # not one document: the lines' own errors say what is wrong
    if isinstance(doc, list) and doc and all(isinstance(r, dict) for r in doc):
        lines = p.with_suffix(".jsonl") if p.suffix != ".jsonl" else p.with_name(p.stem + ".lines.jsonl")
        objects = f"{len(doc)} object" + "s" * (len(doc) != 1)  # (was "a list of 1 objects")
        raise ValueError(f"{p} is one JSON document (a list of {objects}), but this reads JSON Lines, one object per "
                         f"line; convert it, e.g. `jq -c '.[]' {p} > {lines.name}`")


def not_carried(d: Path) -> list[str]:
    """What a user added to checkpoint folder `d` that ckpt.user_files does not carry into the next checkpoint:
    folders that hold no file or link (empty), and FIFOs, sockets and devices."""
    found = []
    for root, dirs, files in os.walk(d) if d.is_dir() and not d.is_symlink() else ():
        r = Path(root)
        found += [(r / n).relative_to(d).as_posix() for n in files if not ((r / n).is_file() or (r / n).is_symlink())]
        if r != d and not any(p.is_file() or p.is_symlink() for p in r.rglob("*")):
            found.append(r.relative_to(d).as_posix() + "/")
            dirs[:] = []  # (the folder is named: not each empty folder in it)
    return sorted(found)


def result_of(result: Path) -> tuple[int | None, str | None]:
    """The step a result file (sweep.json, dynamics.json) scored and the run folder its label names (its first
    part: `RUN/step-N` is a checkpoint of RUN's history); None for what it does not record."""
    try:
        rec = json.loads(result.read_text())
    except (OSError, ValueError):
        return None, None
    step, label = (rec.get("step"), rec.get("label")) if isinstance(rec, dict) else (None, None)
    return (step if isinstance(step, int) and not isinstance(step, bool) else None,
            label.split("/")[0] if isinstance(label, str) and label else None)
