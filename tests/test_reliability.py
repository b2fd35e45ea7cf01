"""Issue 6: exact resume after a real SIGKILL, the divergence guard, and CPU determinism.

Atomic saves, keep-last-K and safe loading of damaged checkpoints are in test_checkpoint.py."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.cli import main
from looplm.config import load_config
from looplm.train import TrainingDiverged, train

from .conftest import tiny_config
from .helpers import ENV, POSIX_ONLY, read_metrics, same_tensors, same_weights, without_timing

# --- 1. exact resume after a real SIGKILL ------------------------------------------------------------------
KILL_SEED = 6
N_KILLS = 4
KILL_STEPS = 24
KILL_SETS = [
    "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_seq_len=16", "model.dropout=0.1",
    "loops.max_loops=6", "reg.start_step=4", "reg.rho_every=5", "data.test_size=32",
    f"train.steps={KILL_STEPS}", "train.batch_size=8", "train.warmup_steps=3", "train.log_every=1",
    "train.eval_every=10", "train.eval_size=16", "train.checkpoint_every=3", "train.keep_checkpoints=2",
    "train.threads=1",
]


def _last_logged_step(metrics: Path, cache: dict | None = None) -> int:
    """The largest step in the log; `cache` skips re-parsing while the file is unchanged."""
    try:
        st = metrics.stat()
        if cache is not None and cache.get("key") == (st.st_size, st.st_mtime_ns):
            return cache["last"]
        text = metrics.read_text()
    except FileNotFoundError:
        return 0
    last = 0
    for line in text.splitlines():
        try:
            last = max(last, json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written right now
    if cache is not None:
        cache.update(key=(st.st_size, st.st_mtime_ns), last=last)
    return last




def kill_and_resume(cmd: list[str], run: Path, steps: int, n_kills: int, seed: int, logs: Path) -> list[dict]:
    """Launch `cmd` (a `--resume` command writing `run`), SIGKILL it at seeded random steps (and random moments
    within a step, often inside a checkpoint save), relaunch it each time, and let the last launch finish."""
    rng = random.Random(seed)
    targets = sorted(rng.sample(range(1, steps - 4), n_kills))
    kills, seen, launches = [], 0, 0
    for target in [*targets, None]:
        launches += 1
        with (logs / f"log{launches}.txt").open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
            deadline, cache = time.monotonic() + 180, {}
            try:
                while target is not None and proc.poll() is None:
                    assert time.monotonic() < deadline, "training subprocess hung"
                    if _last_logged_step(run / "metrics.jsonl", cache) >= max(target, seen + 1):
                        time.sleep(rng.uniform(0.0, 0.05))  # land anywhere in the step, or in a save
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.002)
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            finally:
                if proc.poll() is None:
                    proc.kill()
        if target is None:
            assert rc == 0, (logs / f"log{launches}.txt").read_text()
            break
        if rc == 0:  # finished before the kill landed: nothing left to kill
            break
        assert rc == -signal.SIGKILL
        seen = _last_logged_step(run / "metrics.jsonl")
        ck = run / "checkpoint"
        kills.append({"logged": seen, "checkpoint": ckpt.saved_step(ck) if ck.exists() else None,
                      "left": sorted(p.name for p in run.iterdir() if p.name.startswith(("checkpoint.", ".trash")))})
    print(f"\n{len(kills)} SIGKILLs (seed {seed}): {kills}")
    assert len(kills) >= n_kills - 1
    return kills


def assert_same_run(ref: Path, run: Path, steps: int) -> None:
    """Final weights, optimizer state, history checkpoint and metrics log equal, bit for bit."""
    assert (ref / "checkpoint" / ckpt.WEIGHTS).read_bytes() == (run / "checkpoint" / ckpt.WEIGHTS).read_bytes()
    assert same_weights(ref, run)
    assert same_tensors(ckpt.load_state(ref), ckpt.load_state(run))
    assert [s for s, _ in ckpt.history(ref)] == [s for s, _ in ckpt.history(run)] == [steps - 3]
    assert same_weights(ckpt.history(ref)[0][1], ckpt.history(run)[0][1])
    # The log was truncated back to each checkpoint and the lost steps redone: one line per step, identical.
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(ref))
    assert [r["step"] for r in read_metrics(run)] == list(range(1, steps + 1))


@POSIX_ONLY
def test_sigkill_at_random_steps_then_resume_is_bitwise_identical(tmp_path):
    """`looplm train --resume` as a subprocess, SIGKILLed at random steps and relaunched each time with the same
    command: the final weights, optimizer state, history checkpoint and metrics log equal those of an
    uninterrupted run, bit for bit."""
    cfg = load_config("addition-prenorm-stars", KILL_SETS)
    ref = train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "looplm", "train", "--config", "addition-prenorm-stars", "--out", str(run), "--resume",
           "--no-progress"] + [a for s in KILL_SETS for a in ("--set", s)]
    kill_and_resume(cmd, run, KILL_STEPS, N_KILLS, KILL_SEED, tmp_path)
    assert_same_run(ref, run, KILL_STEPS)


@POSIX_ONLY
def test_sigkill_during_a_fine_tune_then_resume_is_bitwise_identical(tmp_path):
    """The same for `looplm finetune --resume` on a tiny Ouro-architecture model: one checkpoint layout and one
    writer, so a pretrained model's run survives kills exactly as a native one does."""
    pytest.importorskip("transformers")
    from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl

    save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    data = write_jsonl(math_problems(16), tmp_path / "math.jsonl")
    steps = 15  # checkpoints every 3 steps: the history holds step 12 when the run ends
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"model:\n  name_or_path: {tmp_path / 'base'}\ndata:\n  source: {data}\n  max_length: 256\n"
                   "loops:\n  max_loops: 6\nreg:\n  kind: jsrr\n  rho_every: 5\n"
                   f"train:\n  steps: {steps}\n  batch_size: 2\n  lr: 1.0e-3\n  warmup_steps: 2\n  log_every: 1\n"
                   "  checkpoint_every: 3\n  keep_checkpoints: 2\n  threads: 1\n")
    ref = tmp_path / "ref"
    base = [sys.executable, "-m", "looplm", "finetune", "--config", str(cfg), "--no-progress"]
    subprocess.run([*base, "--out", str(ref)], check=True, env=ENV, capture_output=True, timeout=300)
    run = tmp_path / "killed"
    kill_and_resume([*base, "--out", str(run), "--resume"], run, steps, 3, KILL_SEED, tmp_path)
    assert_same_run(ref, run, steps)
    # Every file of the final checkpoint matches its manifest, and it is an HF model directory.
    ckpt.verify(run / "checkpoint")
    assert json.loads((run / "checkpoint" / "config.json").read_text())["model_type"] == "ouro"


def test_crash_before_first_checkpoint_and_torn_log_line(tmp_path):
    cfg = tiny_config(train=dict(steps=6, checkpoint_every=4))
    ref = train(cfg, tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, run, progress=False, fault={"crash_at_step": 2})  # no checkpoint yet, 2 log lines
    assert not (run / "checkpoint").exists()
    train(cfg, run, resume=True, progress=False)  # --resume with nothing to resume starts fresh
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(ref))
    # A kill mid-write leaves a torn last line: resuming drops it with the lines after the checkpoint.
    shutil.rmtree(run)
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, run, progress=False, fault={"crash_at_step": 5})
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "loops": 3, "c')
    train(cfg, run, resume=True, progress=False)
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(ref))
    assert same_weights(run, ref)


# --- 4. divergence guard ------------------------------------------------------------------------------------
def test_a_skipped_step_leaves_weights_and_optimizer_untouched(tmp_path):
    cfg = tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=3))
    clean = tmp_path / "clean"
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, clean, progress=False, fault={"crash_at_step": 3})  # checkpoint after step 3
    run = train(cfg, tmp_path / "nan", progress=False, fault={"nan_at_steps": [3]})  # step 4 is poisoned
    assert read_metrics(run)[-1]["skipped"] == "non-finite loss"
    assert ckpt.load_state(run)["step"] == 4 and ckpt.load_state(clean)["step"] == 3
    assert same_weights(run, clean)
    # Adam's moments and step count too (param_groups differ only in the lr set for step 4).
    assert same_tensors(ckpt.load_state(run)["optimizer"]["state"], ckpt.load_state(clean)["optimizer"]["state"])


def test_injected_nans_skip_updates_then_stop_with_the_last_good_checkpoint(tmp_path, capsys):
    cfg = tiny_config(train=dict(steps=12, eval_every=0, checkpoint_every=2, keep_checkpoints=3, max_bad_steps=3))
    clean = tmp_path / "clean"
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, clean, progress=False, fault={"crash_at_step": 4})
    run = tmp_path / "div"
    capsys.readouterr()
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, run, progress=False, fault={"nan_at_steps": [4, 5, 6]})  # 0-based: logged steps 5, 6, 7
    assert str(e.value) == (f"3 consecutive non-finite steps (last: step 7, {read_metrics(run)[-1]['loops']} loops); "
                            f"stopping. The last good checkpoint is in {run / 'checkpoint'}. Lower train.lr or raise "
                            "train.max_bad_steps to go on.")
    out = capsys.readouterr().out
    rows = read_metrics(run)
    for s in (5, 6, 7):
        r = rows[s - 1]
        assert r["step"] == s and r["skipped"] == "non-finite loss" and r["loops"] >= 1
        assert {"grad_norm", "step_s", "tok_s", "nonfinite"} <= set(r), r  # the step that stops the run too
        assert f"step {s}: non-finite loss at {r['loops']} loops; update skipped ({s - 4}/3)" in out
    # No checkpoint during the streak; the latest is step 4 and equals a clean run's step 4, optimizer included.
    assert ckpt.load_state(run)["step"] == 4 and [s for s, _ in ckpt.history(run)] == [2]
    assert same_weights(run, clean)
    assert same_tensors(ckpt.load_state(run)["optimizer"], ckpt.load_state(clean)["optimizer"])


def test_a_non_finite_gradient_is_skipped_too(tmp_path, monkeypatch):
    real = torch.nn.utils.clip_grad_norm_
    calls = [0]

    def clip(params, max_norm, *a, **k):
        calls[0] += 1
        return torch.tensor(float("inf")) if calls[0] == 2 else real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    run = train(tiny_config(train=dict(steps=3, eval_every=0)), tmp_path / "r", progress=False)
    rows = read_metrics(run)
    assert rows[1]["skipped"] == "non-finite gradient" and "skipped" not in rows[0] and "skipped" not in rows[2]


def test_a_real_divergence_from_a_huge_learning_rate(tmp_path, capsys):
    args = ["train", "--config", "addition-prenorm-stars", "--out", str(tmp_path / "r"), "--no-progress",
            "--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.max_seq_len=16",
            "--set", "data.test_size=20", "--set", "train.batch_size=8", "--set", "train.eval_every=0",
            "--set", "loops.max_loops=4", "--set", "train.lr=1e12", "--set", "train.warmup_steps=1",
            "--set", "train.grad_clip=0", "--set", "train.max_bad_steps=2", "--set", "train.steps=20",
            "--set", "train.weight_decay=0"]  # lr·wd >= 1 is refused up front; without decay it runs, and diverges
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 consecutive non-finite steps") and "No checkpoint had been written yet" in err


# --- 6. determinism -----------------------------------------------------------------------------------------
def test_same_seed_same_metrics_and_checkpointing_changes_nothing(tmp_path):
    sec = dict(reg=dict(kind="jsrr", start_step=2), model=dict(dropout=0.1), train=dict(steps=8, eval_every=4))
    a = train(tiny_config(**sec), tmp_path / "a", progress=False)
    b = train(tiny_config(**{**sec, "train": dict(steps=8, eval_every=4, checkpoint_every=1, keep_checkpoints=2)}),
              tmp_path / "b", progress=False)
    c = train(tiny_config(**{**sec, "train": dict(steps=8, eval_every=4, seed=1)}), tmp_path / "c", progress=False)
    assert without_timing(read_metrics(a)) == without_timing(read_metrics(b))
    assert (a / "checkpoint" / ckpt.WEIGHTS).read_bytes() == (b / "checkpoint" / ckpt.WEIGHTS).read_bytes()
    assert [r["ce"] for r in read_metrics(a)] != [r["ce"] for r in read_metrics(c)]
    assert not same_weights(a, c)


# --- 7. one writer, Ctrl-C, strict logs, resuming from the history -----------------------------------------
TINY_SETS = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.max_seq_len=16", "loops.max_loops=4",
             "data.test_size=16", "train.batch_size=8", "train.eval_every=0", "train.log_every=1", "train.threads=1",
             "reg.start_step=1", "reg.rho_every=0"]


def _cmd(out: Path, *sets: str, resume: bool = True) -> list[str]:
    return [sys.executable, "-m", "looplm", "train", "--config", "addition-prenorm-stars", "--out", str(out),
            "--no-progress", *(["--resume"] if resume else []), *[a for s in [*TINY_SETS, *sets] for a in ("--set", s)]]


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _last_logged_step(run / "metrics.jsonl") < step:
        assert proc.poll() is None, "the run ended early"
        assert time.monotonic() < deadline, "the run did not get there"
        time.sleep(0.01)


@POSIX_ONLY
def test_a_second_writer_is_refused_and_names_the_first(tmp_path):
    run = tmp_path / "run"
    # Far more steps than the test waits for: the first writer must still hold the run when the second starts.
    first = subprocess.Popen(_cmd(run, "train.steps=100000"), env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(run, 2, first)
        for resume in (False, True):  # a fresh run and a --resume alike
            second = subprocess.run(_cmd(run, "train.steps=100000", resume=resume), env=ENV, capture_output=True,
                                    text=True, timeout=120)
            assert second.returncode == 2
            err = second.stderr.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"error: {run} is in use by pid {first.pid} on "), err
    finally:
        first.kill()
        first.wait()


@POSIX_ONLY
def test_ctrl_c_saves_the_step_and_resume_is_bitwise(tmp_path):
    sets = ["train.steps=40", "train.checkpoint_every=0", "model.dropout=0.1"]
    ref = train(load_config("addition-prenorm-stars", [*TINY_SETS, *sets]), tmp_path / "ref", progress=False)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, *sets), env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    step = ckpt.saved_step(run / "checkpoint")
    lines = err.strip().splitlines()
    assert lines[-1] == (f"error: interrupted: saved a checkpoint at step {step} in {run / 'checkpoint'}; continue "
                         "with --resume") and "Traceback" not in err
    # said when the signal lands, not only after the step: a long step looked like an unheard Ctrl-C
    assert "note: stopping at the end of this step, with a checkpoint; Ctrl-C again stops now, without saving" in lines
    assert 5 <= step < 40
    subprocess.run(_cmd(run, *sets), env=ENV, check=True, capture_output=True, timeout=120)
    assert same_weights(ref, run) and same_tensors(ckpt.load_state(ref), ckpt.load_state(run))
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(ref))


@POSIX_ONLY
def test_a_second_ctrl_c_stops_at_once_and_says_what_is_kept(tmp_path):
    """Two Ctrl-Cs in a row: the second stops without saving and the line says which checkpoint is kept; the
    resume then says that it drops the log records of the steps it redoes."""
    # Steps of about a second, so that both signals land in one (a pending signal sent twice is delivered once).
    slow = {"model.d_model": "512", "model.d_ff": "2048", "train.batch_size": "128"}
    argv = [a if a.split("=")[0] not in slow else f"{a.split('=')[0]}={slow[a.split('=')[0]]}"
            for a in _cmd(tmp_path / "run", "train.steps=100000", "train.checkpoint_every=3")]
    run = tmp_path / "run"
    proc = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, 5, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    kept = ckpt.saved_step(run / "checkpoint")
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: interrupted twice: stopped at step (\d+) without saving; the checkpoint at step "
                        rf"{kept} in {re.escape(str(run / 'checkpoint'))} is kept", line), line
    logged = _last_logged_step(run / "metrics.jsonl")
    assert logged > kept
    again = subprocess.run([*[a.replace("train.steps=100000", f"train.steps={logged + 1}") for a in argv]], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"record(s) of steps after {kept} dropped; those steps are run again" in again.stdout + again.stderr


def test_resume_falls_back_to_the_newest_whole_checkpoint_in_the_history(tmp_path, capsys):
    cfg = tiny_config(train=dict(steps=6, checkpoint_every=2, keep_checkpoints=3, eval_every=0))
    ref = train(cfg, tmp_path / "ref", progress=False)
    for damage in ("lost", "flipped"):
        run = tmp_path / damage
        with pytest.raises(RuntimeError, match="injected crash"):
            train(cfg, run, progress=False, fault={"crash_at_step": 5})  # checkpoint/ at 4, history 2
        if damage == "lost":
            shutil.rmtree(run / "checkpoint")
        else:
            f = run / "checkpoint" / ckpt.WEIGHTS
            raw = bytearray(f.read_bytes())
            raw[len(raw) // 2] ^= 1
            f.write_bytes(bytes(raw))
        capsys.readouterr()
        train(cfg, run, resume=True, progress=False)
        assert same_weights(ref, run) and without_timing(read_metrics(run)) == without_timing(read_metrics(ref))
        if damage == "flipped":  # said so, and the damaged checkpoint is kept aside, out of the history
            assert "resuming from" in capsys.readouterr().err
            assert [p.name.split("-")[0] for p in run.iterdir() if p.name.startswith("checkpoint.")] == \
                ["checkpoint.damaged"]


def test_metrics_are_strict_json(tmp_path):
    run = train(tiny_config(train=dict(steps=3, eval_every=0)), tmp_path / "r", progress=False,
                fault={"nan_at_steps": [1]})
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    rec = read_metrics(run)[1]
    assert rec["skipped"] == "non-finite loss" and rec["grad_norm"] is None and rec["nonfinite"] == ["grad_norm"]


def test_resume_rewrites_an_old_log_as_strict_json_and_reads_past_a_bom(tmp_path):
    """A log from before strict JSON (`NaN` in a record) is rewritten on resume; a BOM an editor added does not
    make the first record look torn (it would be dropped without a word)."""
    run = train(tiny_config(train=dict(steps=3, eval_every=0, checkpoint_every=0)), tmp_path / "r", progress=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[1] = lines[1].replace('"grad_norm": ', '"grad_norm": NaN, "was": ', 1)
    (run / "metrics.jsonl").write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())
    train(tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=0)), run, resume=True, progress=False)
    text = (run / "metrics.jsonl").read_text()
    recs = [json.loads(x, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
            for x in text.splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4] and recs[0]["ce"] == first["ce"]
    assert recs[1]["grad_norm"] is None and recs[1]["nonfinite"] == ["grad_norm"]


def test_an_interrupt_on_a_checkpoint_step_keeps_the_history_it_had(tmp_path):
    """A stop requested in a step that was just saved does not save that step again: a second save would move
    the first copy into the history and push out a real older checkpoint."""
    cfg = tiny_config(train=dict(steps=50, checkpoint_every=1, keep_checkpoints=3, eval_every=0),
                      reg=dict(rho_every=0))
    with pytest.raises(Exception, match="interrupted: saved a checkpoint at step 5"):
        train(cfg, tmp_path / "run", progress=False, fault={"interrupt_at_step": 5})
    run = tmp_path / "run"
    assert ckpt.saved_step(run / "checkpoint") == 5
    assert [s for s, _ in ckpt.history(run)] == [3, 4]


def test_a_run_whose_every_step_was_skipped_is_an_error_not_a_result(tmp_path):
    """No update applied (every step non-finite, fewer than max_bad_steps): the run ends in an error and saves
    nothing, instead of a 'trained' checkpoint that holds the initial weights."""
    cfg = tiny_config(train=dict(steps=3, max_bad_steps=5, eval_every=0), reg=dict(rho_every=0))
    with pytest.raises(TrainingDiverged, match="no step of this run applied an update: all 3 were non-finite"):
        train(cfg, tmp_path / "run", progress=False, fault={"nan_at_steps": [0, 1, 2]})
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_finished_run_that_lost_its_only_checkpoint_is_not_started_over(tmp_path):
    """A run that saved only at its end (checkpoint_every=0) and whose checkpoint/ was moved away: its log reached
    the last step, so --resume refuses (starting over would replace that log); a run killed before any save
    starts again."""
    from looplm.errors import UserError

    cfg = tiny_config(train=dict(steps=3, checkpoint_every=0, eval_every=0), reg=dict(rho_every=0))
    run = train(cfg, tmp_path / "r", progress=False)
    shutil.move(run / "checkpoint", tmp_path / "moved")
    log = (run / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match="logged training to step 3, past a checkpoint it saved"):
        train(cfg, run, resume=True, progress=False)
    assert (run / "metrics.jsonl").read_text() == log
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, tmp_path / "k", progress=False, fault={"crash_at_step": 2})
    train(cfg, tmp_path / "k", resume=True, progress=False)  # no save was due yet: it starts again


@POSIX_ONLY
def test_a_closed_stdout_and_leftover_launcher_variables_are_not_tracebacks(tmp_path, capsys, monkeypatch):
    """A command started with stdout closed (`>&-`) did its work, then failed with a traceback and exit 1 at the
    final flush; a RANK left in a shell without WORLD_SIZE > 1 muted every error line (exit 2, nothing said);
    WORLD_SIZE without RANK was a KeyError traceback."""
    closed = subprocess.run(["bash", "-c", f'"{sys.executable}" -m looplm sweep "{tmp_path}/nope" >&-'], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr.strip().splitlines() == [
        f"error: checkpoint {tmp_path}/nope does not exist"], closed.stderr
    version = subprocess.run(["bash", "-c", f'"{sys.executable}" -m looplm --version >&-'], env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "Traceback" not in version.stderr, version.stderr
    # stderr closed: a refusal kept its exit status (it was 1), and a run with its progress bar trained (it stopped
    # at the bar's first write, exit 1, nothing written)
    run = tmp_path / "bar"
    tiny = ("--set train.steps=2 --set model.d_model=32 --set model.d_ff=64 --set model.n_heads=2 "
            "--set data.test_size=8 --set train.eval_every=0")
    for args, rc in ((f'sweep "{tmp_path}/nope"', 2),
                     (f'train --config addition-prenorm-stars --out "{run}" {tiny}', 0)):
        quiet = subprocess.run(["bash", "-c", f'"{sys.executable}" -m looplm {args} 2>&-'], env=ENV,
                               capture_output=True, text=True, timeout=300)
        assert quiet.returncode == rc, quiet.stdout
    assert (run / "checkpoint").is_dir()
    if Path("/dev/full").exists():  # stderr on a full device: a refusal exited 1 (a traceback no one could see)
        quiet = subprocess.run(["bash", "-c", f'"{sys.executable}" -m looplm sweep "{tmp_path}/nope" 2>/dev/full'],
                               env=ENV, capture_output=True, text=True, timeout=120)
        assert quiet.returncode == 2, quiet.stdout
    if Path("/dev/full").exists():  # stdout on a full device was a bare "[Errno 28]", read as the result lost
        full = subprocess.run(["bash", "-c", f'"{sys.executable}" -m looplm generate "{run}" 12+34= > /dev/full'],
                              env=ENV, capture_output=True, text=True, timeout=120)
        assert full.returncode == 2 and full.stderr.strip().splitlines() == [
            "error: could not write to standard output (No space left on device)"], full.stderr
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: checkpoint {tmp_path / 'nope'} does not exist"
    # a command torchrun does not run (sweep, analyze, ...) is a process of its own, whatever the environment says
    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv in (["sweep", str(tmp_path / "nope")], ["sweep", str(tmp_path / "nope"), "--n", "0"]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert main(["train", "--config", "nope", "--out", str(tmp_path / "r")]) == 2  # rank 1 of a real job: quiet
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("WORLD_SIZE")
    cmd = ["train", "--config", "addition-prenorm-stars", "--out", str(tmp_path / "run"), "--no-progress"]
    for env, msg in (({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK is not; run under torchrun"),
                     ({"WORLD_SIZE": "x", "RANK": "0"}, "environment variable WORLD_SIZE='x' is not an integer"),
                     ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 is not a rank of WORLD_SIZE=2")):
        monkeypatch.delenv("RANK", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {msg}"), err
        assert not (tmp_path / "run").exists()


@POSIX_ONLY
def test_a_forked_child_does_not_inherit_the_sigterm_handler():
    """lm-eval's bootstrap pool (forked) is stopped with SIGTERM when it is done: each worker inherited the
    command's handler and printed a `Terminated` traceback after a run that went well."""
    import os

    from looplm.errors import run_command

    def body() -> int:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the command's own handler, in the parent
        pid = os.fork()
        if pid == 0:
            os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert run_command(body) == 0


def test_a_demo_rerun_after_stage_1_trained_on_starts_stage_2_again(tmp_path, capsys):
    """`demo` rerun with more train.steps trains stage 1 on; stage 2 then resumed its own checkpoint, which had
    started from the old stage 1, and the table was presented as the recipe's result."""
    tiny = ["--no-progress", "--n", "4", "--set", "model.d_model=32", "--set", "model.d_ff=64", "--set",
            "model.n_heads=2", "--set", "train.batch_size=8", "--set", "data.test_size=16", "--set", "reg.rho_every=0",
            "--set", "train.eval_every=0", "--set", "train.stop_at_acc=0"]
    demo = tmp_path / "demo"
    assert main(["demo", "--out", str(demo), *tiny, "--set", "train.steps=2"]) == 0
    assert torch.load(demo / "stage2/checkpoint/trainer_state.pt", weights_only=True)["init_from"]["step"] == 2
    capsys.readouterr()
    assert main(["demo", "--out", str(demo), *tiny, "--set", "train.steps=3", "--force"]) == 0
    assert (f"note: stage 1 has changed since stage 2 started from it (step 2 -> 3); stage 2 starts again from the "
            f"new stage 1, replacing its earlier training in {demo / 'stage2'}") in capsys.readouterr().out
    state = torch.load(demo / "stage2/checkpoint/trainer_state.pt", weights_only=True)
    assert state["init_from"]["step"] == 3 and state["step"] == 3
    capsys.readouterr()
    assert main(["demo", "--out", str(demo), *tiny, "--set", "train.steps=3", "--force"]) == 0  # nothing changed
    assert "stage 1 has changed" not in capsys.readouterr().out


def test_a_jsonl_field_of_the_wrong_type_names_its_value_and_a_missing_one_the_field_settings(tmp_path):
    """A numeric answer (very common) got the hint about data.prompt_field / data.answer_field, which does not
    apply: the field is there and rightly named. It now says what the value was; a missing field keeps the hint."""
    from looplm.tasks.jsonl import read_pairs

    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "0*0=", "answer": 0}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:1: field 'answer' must be a string, got int 0 "
                                         r'\(write numbers as "0"\)$'):
        read_pairs(f, "prompt", "answer")
    f.write_text('{"prompt": ["a"], "answer": "b"}\n')
    with pytest.raises(ValueError, match=r"field 'prompt' must be a string, got list \[\"a\"\]$"):
        read_pairs(f, "prompt", "answer")
    f.write_text('{"prompt": "a", "reply": "b"}\n')
    with pytest.raises(ValueError, match=r"field 'answer' is missing \(data.prompt_field / data.answer_field name "
                                         r"the fields\); the row has \['prompt', 'reply'\]"):
        read_pairs(f, "prompt", "answer")


def test_a_json_array_data_file_is_named_one_document_not_malformed(tmp_path):
    """A valid JSON file holding a list of rows (as many datasets ship) was "malformed JSON" on its line 1."""
    from looplm.records import read_rows

    f = tmp_path / "arr.json"
    f.write_text(json.dumps([{"prompt": "1*2=", "answer": "2"}] * 3, indent=2))
    with pytest.raises(ValueError, match=re.escape(f"{f} is one JSON document (a list of 3 objects), but this reads "
                                                   "JSON Lines, one object per line; convert it, e.g. `jq -c '.[]' "
                                                   f"{f} > arr.jsonl`")):
        read_rows(f)
    f.write_text("[1, 2]\n")  # a row that is a list: the row's own error
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        read_rows(f)


def test_blank_lines_in_metrics_jsonl_do_not_block_a_resume_nor_drop_records(tmp_path):
    """Two trailing blank lines (an editor, `echo >>`) made a resume refuse the log as torn in the middle; a blank
    line inside it would have cut the log there on the resume's rewrite."""
    from looplm.logger import truncate_metrics
    from looplm.rundir import check_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3}\n\n\n')
    check_metrics(log)
    assert truncate_metrics(log, 2) == 1
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_missing_relative_data_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A relative data.path beside a config file (proj/cfg.yaml with path: data.jsonl) was "data file data.jsonl
    does not exist", with no word that it was looked for in the working directory."""
    from looplm.records import read_rows
    from looplm.tasks.text import read_text

    monkeypatch.chdir(tmp_path)
    for read in (read_rows, read_text):
        with pytest.raises(FileNotFoundError, match=re.escape(
                f"data file data.jsonl does not exist in {tmp_path} (a relative path is read from the working "
                "directory, not from a config file's folder)")):
            read("data.jsonl")
    with pytest.raises(FileNotFoundError, match=re.escape(f"data file {tmp_path / 'x.jsonl'} does not exist") + "$"):
        read_rows(tmp_path / "x.jsonl")
