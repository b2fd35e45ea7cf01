"""Shared tiny configs: every test model is small enough to train or sweep in a second on one CPU core."""

from __future__ import annotations

import pytest
import torch

from looplm.config import Config, ModelConfig


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


def tiny_model_config(**kw) -> ModelConfig:
    base = dict(vocab_size=16, max_seq_len=16, d_model=32, n_heads=2, d_ff=64)
    base.update(kw)
    return ModelConfig(**base)


def tiny_config(**sections) -> Config:
    """A Config with a tiny model and a few steps; `sections` maps a section name to overrides."""
    d = Config().to_dict()
    d["model"].update(dict(d_model=32, n_heads=2, d_ff=64, max_seq_len=16))
    d["train"].update(dict(steps=6, batch_size=8, warmup_steps=2, log_every=1, eval_every=3, eval_size=16,
                           checkpoint_every=0))
    d["loops"].update(dict(max_loops=6))
    d["data"].update(dict(test_size=32))
    d["reg"].update(dict(rho_every=3))
    for k, v in sections.items():
        d[k].update(v)
    return Config.from_dict(d)
