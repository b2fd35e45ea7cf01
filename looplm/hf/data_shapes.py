"""A JSON data file that is one object of columns or of splits, said as such (looplm.hf.data reads records)."""

from __future__ import annotations

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
    if all(isinstance(v, list) and all(isinstance(r, dict) for r in v) for v in values) and all(
            str(k).lower() in SPLIT_NAMES for k in data):
        return (f"one JSON object of splits ({', '.join(map(str, data))[:80]}); write each split's records to its "
                "own file (train.jsonl, test.jsonl: a folder of them splits as datasets.load_dataset does)")
    return None
