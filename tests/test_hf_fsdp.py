"""STARS fine-tuning under FSDP2 (`train.strategy=fsdp`, 2 CPU processes, gloo) trains the same model as DDP, and
its gathered checkpoints resume (sharded optimizer state reloaded) to the same weights."""

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


def finetune(cfg, out, strategy, steps, resume=False):
    sets = [f"train.strategy={strategy}", f"train.steps={steps}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "looplm",
           "finetune", "--config", str(cfg), "--out", str(out), "--no-progress",
           *[x for s in sets for x in ("--set", s)], *(["--resume"] if resume else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(out / "checkpoint" / "model.safetensors")


def test_fsdp_matches_ddp_with_jsrr_and_resumes(tmp_path):
    tok = tiny_chat_tokenizer()
    save_tiny_base(tmp_path / "base", tok)
    data = write_jsonl(math_problems(16), tmp_path / "math.jsonl")
    cfg = tmp_path / "stars.yaml"
    # constant lr (min_lr = lr), so a run stopped after step 1 and resumed follows the 2-step run exactly;
    # 2 micro-batches per rank exercise skipping the gradient reduction on the first one.
    cfg.write_text(f"model:\n  name_or_path: {tmp_path / 'base'}\ndata:\n  source: {data}\n  max_length: 256\n"
                   "loops:\n  max_loops: 6\nreg:\n  kind: jsrr\n  weight: 0.1\n  start_step: 0\n"
                   "train:\n  batch_size: 4\n  micro_batch_size: 1\n  lr: 3.0e-3\n  min_lr: 3.0e-3\n"
                   "  log_every: 1\n  threads: 1\n")
    ddp = finetune(cfg, tmp_path / "ddp", "ddp", 2)
    finetune(cfg, tmp_path / "fsdp", "fsdp", 1)
    fsdp = finetune(cfg, tmp_path / "fsdp", "fsdp", 2, resume=True)
    base = load_file(tmp_path / "base" / "model.safetensors")

    assert fsdp.keys() == ddp.keys()
    moved = 0
    for k in ddp:
        torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-6, msg=k)
        moved += not torch.equal(ddp[k], base[k])
    assert moved >= len(ddp) - 2  # the steps changed (nearly) every tensor, so the comparison means something

    rows = {s: [json.loads(x) for x in (tmp_path / s / "metrics.jsonl").read_text().splitlines()]
            for s in ("ddp", "fsdp")}
    assert [r["step"] for r in rows["fsdp"]] == [1, 2] == [r["step"] for r in rows["ddp"]]
    for a, b in zip(rows["ddp"], rows["fsdp"], strict=True):
        assert a["loops"] == b["loops"] and a["reg"] > 0
        for k in ("ce", "reg", "grad_norm"):
            assert b[k] == pytest.approx(a[k], rel=1e-4), k
