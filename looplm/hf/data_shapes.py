"""Shapes of local data that looplm.hf.data reads records from, said as such: a JSON data file that is one object of
columns or of splits, a folder's files in two formats, a README.md whose `configs:` choose a folder's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPLIT_NAMES = {"train", "test", "validation", "valid", "dev", "eval"}  # (a record's "test_cases" list is no split)


def json_shape(data: Any) -> str | None:
    """Why `data` (one parsed .json file) is no list of records, or None: pandas' default `df.to_json()` (a dict
    of columns, each a dict of row index -> value), a dict of equally long lists (columns), or a dict of splits
    (`{"train": [...], "test": [...]}`). Read as one record, each was a field-type error or "no usable examples"."""
    if not isinstance(data, dict) or not data:
        return None
    values = list(data.values())
    rows = "write it as records, one JSON object per line (JSONL: pandas' df.to_json(path, orient='records', " \
           "lines=True))"
    if all(isinstance(v, dict) and v and all(str(k).isdigit() for k in v) for v in values):
        return f"one JSON object of columns ({', '.join(map(str, data))[:80]}), each by row number; {rows}"
    if len(data) > 1 and all(isinstance(v, list) and v and not isinstance(v[0], dict) for v in values) and len(
            {len(v) for v in values}) == 1:
        return f"one JSON object of columns ({', '.join(map(str, data))[:80]}), each a list; {rows}"
    splits = all(str(k).lower() in SPLIT_NAMES for k in data)
    if splits and all(isinstance(v, list) and all(isinstance(r, dict) for r in v) for v in values):
        return (f"one JSON object of splits ({', '.join(map(str, data))[:80]}); write each split's records to its "
                "own file (train.jsonl, test.jsonl: a folder of them splits as datasets.load_dataset does)")
    if splits and all("columns" in (json_shape(v) or "") for v in values):  # a DatasetDict's to_dict()
        first = next(iter(values))
        return (f"one JSON object of splits ({', '.join(map(str, data))[:80]}), each an object of columns "
                f"({', '.join(map(str, first))[:80]}), which is not read; write each split's records, one JSON object "
                "per line, to its own file (train.jsonl, test.jsonl: a folder of them splits as "
                "datasets.load_dataset does; datasets' ds[split].to_json(path))")
    (key, value), = data.items() if len(data) == 1 else ((None, None),)
    if key != "data" and isinstance(value, list) and value and all(  # ({"data": [...]} is read as its list)
            isinstance(r, dict) and not {"role", "from"} & set(r) for r in value):  # (turns: a one-record file)
        return (f"one JSON object whose {key!r} holds a list of {len(value)} objects, read as one record; write "
                "the records alone: a JSON list of them, or one JSON object per line (JSONL)")
    return None


# datasets' reader of each suffix: it reads one per folder (the most common one), looplm read every file
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def one_format(folder: Path, files: list[Path]) -> None:
    """Refuse the data files of a folder in two formats, or one file's data under two suffixes (data.jsonl beside
    data.parquet or data.json): read together, every record was trained (and analyzed) twice, where
    datasets.load_dataset reads one format (or refuses the folder)."""
    def names(fs: list[Path]) -> str:
        shown = [str(f.relative_to(folder)) if f.is_relative_to(folder) else str(f) for f in fs[:3]]
        return ", ".join(shown) + (", ..." if len(fs) > 3 else "")

    by_format: dict[str, list[Path]] = {}
    by_stem: dict[Path, list[Path]] = {}
    for f in files:  # (a single file of another suffix is refused by its reader, as an unsupported file type)
        if f.suffix.lower() in FORMATS:
            by_format.setdefault(FORMATS[f.suffix.lower()], []).append(f)
        by_stem.setdefault(f.with_suffix(""), []).append(f)
    twice = next((fs for fs in by_stem.values() if len(fs) > 1), None)
    if len(by_format) > 1:
        shown = "; ".join(f"{k}: {names(fs)}" for k, fs in sorted(by_format.items()))
        raise ValueError(f"{folder} holds data files in {len(by_format)} formats ({shown}), which would all be read: "
                         "every record twice where they hold the same data (datasets.load_dataset reads one format "
                         "per folder); keep one format in the folder, or give the files of one (data.source; "
                         "analyze: --data)")
    if twice:
        raise ValueError(f"{folder} holds {names(twice)}: one name under two suffixes, which would both be read, "
                         "every record twice where they hold the same data; keep one of them in the folder")


def card_chooses(folder: Path) -> bool:
    """Whether the folder's README.md header (or .huggingface.yaml) has `configs:`, which choose its files by name:
    a plain dataset card (license, tags) or a README with no header leaves the split to the file names, as no README."""
    import yaml

    for name, header in (("README.md", True), (".huggingface.yaml", False)):
        try:
            text = (folder / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if header:  # (the YAML between the opening --- lines; none: no configs)
            parts = text.split("\n---", 1) if text.startswith("---") else []
            text = parts[0][3:] if len(parts) == 2 else ""
        try:
            meta = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(meta, dict) and meta.get("configs"):
            return True
    return False


def unread_info(folder: Path) -> str | None:
    """The dataset-info metadata of a folder that datasets fails on, read again as its folder reader reads it
    (only once that reader failed): README.md's `dataset_info:` block, or dataset_infos.json (the file old
    push_to_hub versions wrote). None where both read: the fault is the header itself or its `configs:`. Their
    AttributeError (`{"a": 1}`, `features: [1, 2]`) was a traceback, and a dataset_infos.json that is not JSON was
    blamed on README.md's `configs:`."""
    import json

    from datasets.info import DatasetInfo, DatasetInfosDict
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    try:
        card = DatasetCard.load(str(readme)).data if readme.is_file() else None
    except Exception:  # (the header's YAML itself: said as such by the caller)
        return None
    try:
        if card is not None:
            DatasetInfosDict.from_dataset_card_data(card)
    except Exception:
        return "README.md: its `dataset_info:` block"
    infos = folder / "dataset_infos.json"
    try:
        if infos.is_file():
            for info in json.loads(infos.read_text(encoding="utf-8")).values():
                DatasetInfo.from_dict(info)
    except Exception:
        return "dataset_infos.json"
    return None


# what a model directory or a looplm run holds, never a data folder: given as data (the model and the data swapped),
# it was told to convert trainer_state.pt to JSONL, or that config.json holds no list of records
_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "trainer_state.pt",
                "looplm_config.json")


def model_folder(folder: Path) -> str | None:
    """What `folder` is where it is a model directory or checkpoint, or a looplm run (whose checkpoint/ is one), said
    with the files that show it; else None."""
    import json

    for place in (folder, folder / "checkpoint"):
        try:
            typed = "model_type" in json.loads((place / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            typed = False
        marks = ["config.json"] * typed + [n for n in _MODEL_FILES if (place / n).is_file()]
        if marks:
            shown = ", ".join(m if place == folder else f"checkpoint/{m}" for m in marks[:3])
            return f"{'a model directory' if place == folder else 'a run directory'} ({shown})"
    return None
