"""Shared checks for the reliability and checkpoint tests: metrics, bitwise weight and state equality."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from looplm import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("tok_s", "step_s")} for r in rows]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(ckpt.resolve(a) / ckpt.WEIGHTS), load_file(ckpt.resolve(b) / ckpt.WEIGHTS)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def same_tensors(x, y) -> bool:
    """Deep bitwise equality of nested state (dicts, lists, tensors, numbers)."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same_tensors(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(same_tensors(a, b) for a, b in zip(x, y, strict=True))
    return x == y


POSIX_ONLY = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
