"""The shipped demo checkpoint loads and scores what its sweep.json records."""

import json
from pathlib import Path

import pytest

from looplm.checkpoint import load_model
from looplm.evaluate import sweep
from looplm.train import make_task

RUN = Path(__file__).resolve().parents[1] / "models" / "addition-stars"


@pytest.mark.skipif(not RUN.exists(), reason="no shipped checkpoint in this checkout")
def test_shipped_checkpoint_scores_as_recorded():
    model, cfg = load_model(RUN)
    task = make_task(cfg)
    batch = task.test_batch(200, cfg.data.test_seed, cfg.model.max_seq_len)
    res = sweep(model, batch, [1, 4, 100])
    recorded = json.loads((RUN / "sweep.json").read_text())
    acc = dict(zip(recorded["depths"], recorded["accuracy"], strict=True))
    assert res.accuracy[1] == 1.0 and res.accuracy[2] >= 0.99  # the first 200 of the recorded 1,000
    assert acc[4] == 1.0 and acc[100] >= 0.99
    assert res.accuracy[0] < 0.5  # one loop is not enough: depth matters
