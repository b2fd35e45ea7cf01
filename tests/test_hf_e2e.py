"""Issue 7 end to end on CPU: a tiny Ouro-architecture model built from config, a few STARS steps under torchrun
(2 processes, gloo), saved, reloaded, scored at loop counts 1..4 through lm-eval on a local task, and its
one-loop map analyzed with looplm.dynamics."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from looplm.dynamics import spectral_radius  # noqa: E402
from looplm.hf import OuroForCausalLM  # noqa: E402
from looplm.hf.testing import math_problems, tiny_chat_tokenizer, tiny_ouro, write_jsonl  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_stars_finetune_then_lm_eval_by_depth_and_dynamics(tmp_path):
    tok = tiny_chat_tokenizer()
    tiny_ouro(len(tok)).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    data = write_jsonl(math_problems(8), tmp_path / "math.jsonl")
    cfg = tmp_path / "stars.yaml"
    cfg.write_text(f"model:\n  name_or_path: {tmp_path / 'base'}\ndata:\n  source: {data}\n  max_length: 256\n"
                   "loops:\n  max_loops: 6\nreg:\n  kind: jsrr\n  weight: 0.1\n"
                   "train:\n  steps: 2\n  micro_batch_size: 1\n  grad_accum: 1\n  lr: 1.0e-3\n  log_every: 1\n"
                   "  threads: 1\n")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "looplm", "finetune", "--config", str(cfg), "--out", str(run),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1  # rank 0 reports
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2] and all(r["reg"] > 0 and 1 <= r["loops"] <= 6 for r in recs)

    model = AutoModelForCausalLM.from_pretrained(run / "checkpoint")
    assert isinstance(model, OuroForCausalLM)

    # The one-loop map of the fine-tuned model, analyzed with looplm.dynamics as is.
    ids = torch.tensor([tok("Tom has 3 apples and buys 4 more.")["input_ids"]])
    step, h0 = model.step_fn_for(ids)
    with torch.no_grad():
        h = model.loop(h0, None, 4)
    est = spectral_radius(step, h, iters=30, tol=1e-2, generator=torch.Generator().manual_seed(0))
    assert est.value.shape == (1,) and torch.isfinite(est.raw).all() and est.raw[0] > 0
    assert bool(est.converged[0]) == bool(torch.isfinite(est.value[0]))

    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from looplm.hf.lm_eval_adapter import eval_depths
    from looplm.hf.testing import write_lm_eval_tasks

    tasks = write_lm_eval_tasks(tmp_path / "tasks", data, max_gen_toks=4)
    res = eval_depths(str(run / "checkpoint"), tasks, [1, 2, 3, 4], tmp_path / "eval", include_path=str(
        tmp_path / "tasks"), limit=2, batch_size=2, device="cpu")
    assert [r["loops"] for r in res["rows"]] == [1, 2, 3, 4]
    assert all(set(r["metrics"]) == set(tasks) for r in res["rows"])
    saved = json.loads((tmp_path / "eval" / "eval_lm.json").read_text())
    assert saved["rows"][0]["metrics"][tasks[1]].keys() == {"acc,none"}
    md = (tmp_path / "eval" / "eval_lm.md").read_text()
    assert "| loops |" in md and "| 4 |" in md
    assert (tmp_path / "eval" / "eval_lm.png").read_bytes()[:4] == b"\x89PNG"
