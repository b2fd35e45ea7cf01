"""Issue 7 end to end on CPU: a tiny Ouro-architecture model built from config, a few STARS steps under torchrun
(2 processes, gloo), saved, reloaded, scored at loop counts 1..4 through lm-eval on a local task, and its
one-loop map analyzed with `looplm analyze`."""

import json
import math
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

from transformers import AutoModelForCausalLM  # noqa: E402

from looplm.cli import main  # noqa: E402
from looplm.hf import OuroForCausalLM  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_stars_finetune_then_lm_eval_by_depth_and_dynamics(tmp_path):
    tok = tiny_chat_tokenizer()
    save_tiny_base(tmp_path / "base", tok)
    data = write_jsonl(math_problems(8), tmp_path / "math.jsonl")
    cfg = tmp_path / "stars.yaml"
    cfg.write_text(f"model:\n  name_or_path: {tmp_path / 'base'}\ndata:\n  source: {data}\n  max_length: 256\n"
                   "loops:\n  max_loops: 6\nreg:\n  kind: jsrr\n  weight: 0.1\n"
                   "train:\n  steps: 0\n  epochs: 1\n  batch_size: 4\n  micro_batch_size: 1\n  lr: 1.0e-3\n"
                   "  log_every: 1\n"
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

    # The fine-tuned model's one-loop map, analyzed with `looplm analyze` on the run directory (the CLI finds
    # the HF model in run/checkpoint) and its math data: per-loop statistics, ρ / σ_max, PCA, figures.
    assert main(["analyze", str(run), "--data", str(data), "--depths", "1:4", "--n", "4", "--spectral-n", "2",
                 "--iters", "20", "--tol", "1e-2", "--hutchinson", "2", "--pca-n", "2", "--no-progress"]) == 0
    dyn = json.loads((run / "dynamics.json").read_text())
    assert dyn["depths"] == [1, 2, 3, 4] and dyn["n"] == 4 and dyn["model"]["model_type"] == "ouro"
    assert dyn["step"] == 2  # the checkpoint scored: a resume leaves this result of an earlier step
    assert dyn["data_stats"]["used"] == 4
    norms = dyn["metrics"]["state_norm"]["mean"]
    assert len(norms) == 4 and all(math.isfinite(x) and x > 0 for x in norms)
    assert all(0 <= a <= 1 for a in dyn["accuracy"]) and all(math.isfinite(x) for x in dyn["metrics"]["ce"]["mean"])
    rho = dyn["spectral"]["rho"]
    assert dyn["spectral"]["depths"] and len(rho["converged_frac"]) == len(dyn["spectral"]["depths"])
    assert all(math.isfinite(x) and x > 0 for x in dyn["spectral"]["frobenius_rms"]["mean"])
    assert (run / "dynamics.png").read_bytes()[:4] == b"\x89PNG"
    # the loop counts the fine-tune trained at (shaded in the figures), and `plot` reads its sibling's result
    assert dyn["train_loops"] == [1, 6]
    assert main(["plot", str(run / "dynamics.json"), "--out", str(tmp_path / "d.png")]) == 0

    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from looplm.hf.lm_eval_depths import eval_depths

    from .hf_fixtures import write_lm_eval_tasks

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
    assert saved["step"] == 2
