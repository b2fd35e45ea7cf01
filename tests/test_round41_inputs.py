"""Round 40's findings: a later null gold in an lm-eval task, an empty data.source, an unnormalised power_penalty
v0, and a (B, T, 1, 1) mask that broadcast T-fold."""

import json

import pytest
import torch

from looplm import fixed_point_residual, jsrr_release, power_penalty
from looplm.config import ConfigError, load_config


def test_write_lm_eval_task_checks_every_gold(tmp_path):
    from looplm.hf.mathdata import write_lm_eval_task

    rows = [{"question": "What is 2+2?", "answer": "#### 4"}, {"question": "What is 3+3?", "answer": None}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"t\.jsonl:2: not a problem with a usable gold answer"):
        write_lm_eval_task(tmp_path / "task", tmp_path / "t.jsonl", name="ng")
    assert not (tmp_path / "task").exists()  # nothing written


def test_an_empty_data_source_is_refused():
    with pytest.raises(ConfigError, match="data.source"):
        load_config("ouro-math-stars", ["data.source="])


def _f(h):
    w = torch.linspace(-0.5, 0.5, h.shape[-1] ** 2, dtype=h.dtype).view(h.shape[-1], -1)
    return torch.tanh(h @ w)


def test_power_penalty_reads_v0_as_a_direction():
    torch.manual_seed(0)
    h = torch.randn(2, 3, 4, dtype=torch.float64)
    v = torch.randn(2, 3, 4, dtype=torch.float64)
    unit = v / v.flatten(1).norm(dim=1).view(-1, 1, 1)
    p_big, _ = power_penalty(_f, h, v0=v * 1000)
    p_unit, _ = power_penalty(_f, h, v0=unit)
    assert torch.allclose(p_big, p_unit) and float(p_unit) < 10  # it was |v0|^2 = 1e6 times larger


def test_a_mask_of_extra_dimensions_is_refused():
    torch.manual_seed(1)
    h = torch.randn(1, 4, 3, dtype=torch.float64)
    for fn in (jsrr_release, fixed_point_residual):
        assert torch.isfinite(fn(_f, h, None, torch.ones(1, 4, 1)))  # (B, T, 1) is the documented other form
        with pytest.raises(ValueError, match="mask must have the state's"):
            fn(_f, h, None, torch.ones(1, 4, 1, 1))
