"""torchrun with 2 CPU processes (gloo) must train the same model as 1 process on the global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

SETS = ["model.d_model=32", "model.d_ff=64", "model.n_heads=2", "train.steps=4", "train.batch_size=8",
        "train.warmup_steps=1", "train.eval_every=0", "reg.rho_every=0", "train.threads=1", "loops.max_loops=6",
        "data.test_size=16", "train.checkpoint_every=2", "train.log_every=1"]


def train(out, extra=(), nproc=None, resume=False):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                 "-m", "looplm"] if nproc else [sys.executable, "-m", "looplm"])
    sets = [x for s in [*SETS, *extra] for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*launcher, "train", "--config", "addition-prenorm-stars", "--out", str(out), "--no-progress", *sets,
                    *(["--resume"] if resume else [])],
                   check=True, timeout=240, env=env, capture_output=True)
    return load_file(out / "checkpoint" / "model.safetensors")


def metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=2e-6, msg=k)


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    plain = ["reg.kind=none"]
    one = train(tmp_path / "one", plain)
    two = train(tmp_path / "two", plain, nproc=2)
    acc = train(tmp_path / "acc", [*plain, "train.micro_batch_size=2"])  # 4 micro-batches of 2
    two_acc = train(tmp_path / "two_acc", [*plain, "train.micro_batch_size=2"], nproc=2)
    assert_same(one, two)
    assert_same(one, acc)
    assert_same(one, two_acc)
    assert not torch.equal(one["tok_emb.weight"], train(tmp_path / "other", [*plain, "train.seed=1"])["tok_emb.weight"])
    m1 = metrics(tmp_path / "one")
    for name in ("two", "acc", "two_acc"):
        m2 = metrics(tmp_path / name)
        assert [r["step"] for r in m2] == [1, 2, 3, 4]  # rank 0 alone writes the log
        assert [r["loops"] for r in m1] == [r["loops"] for r in m2]  # the same loop count on every rank
        for a, b in zip(m1, m2, strict=True):
            # Adam hides a constant gradient scale in the weights; the logged pre-clip norm does not, so a
            # rank training on the whole batch, or a mis-normalized micro-batch, shows up here.
            assert a["ce"] == pytest.approx(b["ce"], rel=1e-5)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


def test_two_processes_with_jsrr_and_resume_on_one(tmp_path):
    """Probes are per-rank streams, so JSRR runs match statistically, not bitwise; they must train, and a
    2-process checkpoint must resume in a world of one."""
    two = train(tmp_path / "run", ["reg.kind=jsrr", "reg.start_step=1"], nproc=2)
    rows = metrics(tmp_path / "run")
    assert all(r["reg"] is not None and r["reg"] > 0 for r in rows[1:])
    assert all(torch.isfinite(v).all() for v in two.values())
    # Resume the same run in one process, extended to 6 steps.
    subprocess.run([sys.executable, "-m", "looplm", "train", "--config", "addition-prenorm-stars", "--out",
                    str(tmp_path / "run"), "--no-progress", "--resume",
                    *[x for s in [*SETS[:3], "train.steps=6", *SETS[4:], "reg.kind=jsrr", "reg.start_step=1"]
                      for x in ("--set", s)]],
                   check=True, timeout=120, capture_output=True)
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


CRASH = """
import sys
from pathlib import Path
from looplm.config import load_config
from looplm.train import train
cfg = load_config("addition-prenorm-stars", sys.argv[2:])
train(cfg, Path(sys.argv[1]), progress=False, fault={"crash_at_step": 2})
"""


def test_two_processes_with_jsrr_at_a_random_depth_resume_exactly(tmp_path):
    """Each rank's probe stream is reseeded from (seed, step, rank) every step, so a 2-process run that crashes
    after its step-2 checkpoint and resumes under torchrun repeats the uninterrupted run: per-step penalty and
    every weight."""
    extra = ["reg.kind=jsrr", "reg.start_step=0", "reg.at=random"]
    whole = train(tmp_path / "whole", extra, nproc=2)
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    crashed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(script), str(tmp_path / "cut"), *SETS, *extra],
                             timeout=240, env=env, capture_output=True, text=True)
    assert crashed.returncode != 0 and "injected crash after step 2" in crashed.stderr
    assert [r["step"] for r in metrics(tmp_path / "cut")] == [1, 2]
    resumed = train(tmp_path / "cut", [*extra], nproc=2, resume=True)
    a, b = metrics(tmp_path / "whole"), metrics(tmp_path / "cut")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert all(r["reg"] is not None and r["reg"] > 0 for r in a)
    for x, y in zip(a, b, strict=True):
        assert x["loops"] == y["loops"]
        assert x["reg"] == pytest.approx(y["reg"], rel=1e-6)
        assert x["ce"] == pytest.approx(y["ce"], rel=1e-6)
    assert_same(whole, resumed)


def test_under_torchrun_rank_0_speaks_for_all(tmp_path):
    """Every rank printed `run written to` (two copies, once run together on one line), and every rank printed the
    same config refusal: rank 0 says each once."""
    def run(out, extra):
        sets = [x for s in [*SETS, *extra] for x in ("--set", s.replace("train.steps=4", "train.steps=1"))]
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "looplm", "train", "--config", "addition-prenorm-stars", "--out", str(out),
                               "--no-progress", *sets], timeout=240, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    ok = run(tmp_path / "ok", ["reg.kind=none"])
    assert ok.returncode == 0 and ok.stdout.count("run written to") == 1, ok.stdout
    bad = run(tmp_path / "bad", ["reg.samples=3", "reg.start_step=0"])  # 3 probes cannot be shared by 2 ranks
    errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error:")]
    assert bad.returncode != 0 and len(errors) == 1 and "reg.samples=3" in errors[0], bad.stderr[-2000:]
    assert not (tmp_path / "bad").exists()
    # the run-folder refusals and the command line's are the same on every rank too
    for refused, said in ((run(tmp_path / "ok", ["reg.kind=none"]), "already holds a checkpoint"),
                          (run(tmp_path / "x", ["reg.kind=none", "reg.kind=jsrr"]), "reg.kind given twice")):
        errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
        assert refused.returncode != 0 and len(errors) == 1 and said in errors[0], refused.stderr[-2000:]


def test_a_rank_waiting_for_its_job_says_so_and_takes_ctrl_c(monkeypatch, capsys):
    """A shell that kept a torchrun job's RANK, WORLD_SIZE and MASTER_ADDR made `train` wait for the other ranks
    inside torch's C++ store: nothing said, and Ctrl-C and SIGTERM unheard for the store's 30-minute timeout. The
    wait now runs in a helper thread (here: a wait that never ends, as the store's), and the main thread says
    what it waits for and takes the signal."""
    import signal
    import threading

    import looplm.distributed as distributed

    for k, v in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29999")):
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(distributed, "WAIT_NOTE_S", 0.2)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: threading.Event().wait())
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            distributed.init("cpu")
    finally:
        timer.cancel()
    assert "note: rank 0 is waiting for the other 1 process(es) of a WORLD_SIZE=2 job at 127.0.0.1:29999" in \
        capsys.readouterr().err
