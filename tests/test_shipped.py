"""The shipped demo checkpoint loads and scores what its sweep.json records."""

import json
from pathlib import Path

import pytest

from looplm.checkpoint import load_model
from looplm.evaluate import sweep
from looplm.tasks import make_task

RUN = Path(__file__).resolve().parents[1] / "models" / "addition-prenorm-stars"


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


EXTERNAL = Path(__file__).resolve().parents[1] / "models" / "addition-stars-external"


@pytest.mark.skipif(not EXTERNAL.exists(), reason="no shipped checkpoint in this checkout")
def test_shipped_external_norm_checkpoint_holds_its_accuracy_with_depth():
    """The study's stable recipe (post_sandwich, prelude + input injection, curriculum, STARS): flat accuracy
    and a bounded state far past the training depth, as its result.json records on 5,000 problems."""
    model, cfg = load_model(EXTERNAL)
    assert cfg.model.norm_placement == "post_sandwich" and cfg.model.injection == "add"
    task = make_task(cfg)
    batch = task.test_batch(200, cfg.data.test_seed, cfg.model.max_seq_len)
    res = sweep(model, batch, [1, 8, 300])
    assert res.accuracy[1] >= 0.99 and res.accuracy[2] >= 0.99
    assert res.state_norm[2] < 1.5 * res.state_norm[1]  # bounded: no drift between 8 and 300 loops
    recorded = json.loads((EXTERNAL / "result.json").read_text())
    acc = dict(zip(recorded["depths"], recorded["accuracy"], strict=True))
    assert recorded["n"] >= 5000 and min(a for d, a in acc.items() if 4 <= d <= 1000) >= 0.99


OURO_MINI = Path(__file__).resolve().parents[1] / "models" / "ouro-mini-base"


@pytest.mark.skipif(not OURO_MINI.exists(), reason="no shipped Ouro-architecture base in this checkout")
def test_shipped_ouro_mini_base_scores_as_recorded(tmp_path):
    """The base of `looplm study ouro-mini` (an OuroForCausalLM trained at a fixed 4 loops): lm-eval on the first
    held-out problems of its study, regenerated from the recorded settings, gives the recorded exact match."""
    pytest.importorskip("transformers")
    pytest.importorskip("lm_eval")
    from looplm.experiments import ouro_mini

    rec = json.loads((OURO_MINI / "check.json").read_text())
    keys = json.loads((OURO_MINI / "study_settings.json").read_text())
    s = ouro_mini.Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in keys.items()},
                           max_gen_toks=rec["max_gen_toks"])
    assert ouro_mini.base_check(OURO_MINI, s, tmp_path) == rec
    assert rec["exact_match"][0] > 0  # it learned something at its training depth
