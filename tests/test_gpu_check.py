"""benchmarks/gpu_check.py in its CPU smoke mode: every section runs at a tiny size or says why it was skipped."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_on_the_cpu_and_says_what_it_skipped(tmp_path):
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    names = ["addition_step", "addition_memory", "sweep_vs_decoding", "ouro_forward", "ouro_finetune_step",
             "ouro_fsdp_step", "nccl_ddp", "bf16_vs_fp32"]
    assert [n for n in names if n in res] == names and res["smoke"] is True
    assert all(res[n]["status"] in ("ok", "skipped") for n in names)
    assert res["ouro_fsdp_step"]["status"] == "skipped" and "torchrun" in res["ouro_fsdp_step"]["reason"]
    if not torch.cuda.is_available():
        for n in ("addition_memory", "nccl_ddp"):
            assert res[n]["status"] == "skipped" and "no CUDA" in res[n]["reason"]
    # the figures are there and sane, and they came through the trainer
    step = res["addition_step"]
    assert step["none"]["tok_s"] > 0 and step["jsrr"]["ms_per_step"] > 0 and step["jsrr_over_none_time"] > 0
    assert res["sweep_vs_decoding"]["one_pass_s"] > 0 and res["ouro_forward"]["forward_tok_s_T4"] > 0
    ft = res["ouro_finetune_step"]
    assert ft["reg"] > 0 and ft["ce"] > 0 and ft["step2_s"] > 0
    bf = res["bf16_vs_fp32"]
    assert bf["within_tolerance"] and set(bf["relative_difference"]) == {"ce", "jsrr"}
    for line in ("section", "addition_step", "wrote"):
        assert line in r.stdout
