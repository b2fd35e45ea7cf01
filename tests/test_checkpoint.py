"""Issue 6: atomic checkpoints that survive a crash at any point of a save, keep-last-K, and safe
loading of damaged checkpoints."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.cli import main
from looplm.config import Config, ConfigError
from looplm.model import LoopedTransformer
from looplm.train import train

from .conftest import tiny_config, tiny_model_config
from .helpers import ENV, POSIX_ONLY


# --- 2. atomic checkpoints, keep last K ----------------------------------------------------------------------
class Crash(Exception):
    """Stands for a SIGKILL: raised at the n-th filesystem operation, with no cleanup after it."""


@contextmanager
def crash_at(n: int):
    """Count every filesystem operation checkpoint.py makes; the n-th one crashes. Writes crash torn (half the
    file on disk), deletions crash after removing one file, renames/fsyncs/mkdirs crash before acting."""
    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == n

    def torn(write, path_of):
        def wrapper(*a, **k):
            r = write(*a, **k)
            if hit():
                p = Path(path_of(*a, **k))
                p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]) if p.is_file() else None
                raise Crash
            return r
        return wrapper

    def before(op):
        def wrapper(*a, **k):
            if hit():
                raise Crash
            return op(*a, **k)
        return wrapper

    real_rmtree = shutil.rmtree

    def rmtree(path, *a, **k):
        if hit():
            files = [f for f in Path(path).rglob("*") if f.is_file()]
            if files:
                files[0].unlink()
            raise Crash
        return real_rmtree(path, *a, **k)

    real_write_text = Path.write_text
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ckpt, "save_file", torn(ckpt.save_file, lambda w, f, **k: f))
        mp.setattr(torch, "save", torn(torch.save, lambda obj, f, *a, **k: f))
        mp.setattr(Path, "write_text", torn(real_write_text, lambda self, *a, **k: self))
        mp.setattr(Path, "rename", before(Path.rename))
        mp.setattr(Path, "mkdir", before(Path.mkdir))
        mp.setattr(os, "fsync", before(os.fsync))
        mp.setattr(shutil, "rmtree", rmtree)
        yield count


def _model(step: int) -> LoopedTransformer:
    torch.manual_seed(step)
    return LoopedTransformer(tiny_model_config())


def _check_run(run: Path, keep: int, latest: int, hist: list[int], models: dict[int, LoopedTransformer]) -> None:
    """After `recover`: `checkpoint/` holds step `latest` whole and matching, the history is exactly `hist`, and
    no temporary directory is left."""
    m, _ = ckpt.load_model(run)
    st = ckpt.load_state(run)
    assert st["step"] == latest and torch.equal(st["marker"], torch.full((3,), float(latest)))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), models[latest].state_dict().values(),
                                                 strict=True))
    got = ckpt.history(run)
    assert [s for s, _ in got] == hist
    for s, d in got:
        assert ckpt.load_state(d)["step"] == s
        ckpt.load_model(d)
    assert sorted(p.name for p in run.iterdir()) == (["checkpoint", "checkpoints"] if keep > 1 else ["checkpoint"])


@pytest.mark.parametrize("keep", [1, 3])
def test_crash_at_every_point_of_a_save_leaves_a_whole_checkpoint(tmp_path, keep):
    """Crash at each filesystem operation of `save` (and, for each, at each operation of the `recover` that
    follows): afterwards the run holds either the previous checkpoint or the new one, whole, never a mix."""
    cfg = Config(model=tiny_model_config())
    models = {s: _model(s) for s in range(1, 6)}
    base = tmp_path / "base"
    for s in (1, 2, 3, 4):
        ckpt.save(base / "checkpoint", models[s], cfg, {"step": s, "marker": torch.full((3,), float(s))}, keep=keep)
    before = [2, 3] if keep == 3 else []
    _check_run(base, keep, 4, before, models)
    after = ([*before, 4][-(keep - 1):]) if keep > 1 else []
    points = 0
    for n in range(1, 200):
        run = tmp_path / f"n{n}"
        shutil.copytree(base, run)
        with crash_at(n) as count:
            try:
                ckpt.save(run / "checkpoint", models[5], cfg, {"step": 5, "marker": torch.full((3,), 5.0)}, keep=keep)
                crashed = False
            except Crash:
                crashed = True
        if not crashed:
            assert count[0] < n
            _check_run(run, keep, 5, after, models)
            break
        points += 1
        # Crash again inside the recovery, at each of its operations, then recover cleanly.
        for m in range(1, 50):
            again = tmp_path / f"n{n}m{m}"
            shutil.copytree(run, again)
            with crash_at(m):
                try:
                    ckpt.recover(again / "checkpoint", keep)
                    done = True
                except Crash:
                    done = False
            ckpt.recover(again / "checkpoint", keep)
            step = ckpt.load_state(again)["step"]
            _check_run(again, keep, step, before if step == 4 else after, models)
            shutil.rmtree(again)
            if done:
                break
        ckpt.recover(run / "checkpoint", keep)
        step = ckpt.load_state(run)["step"]
        assert step in (4, 5)
        _check_run(run, keep, step, before if step == 4 else after, models)
        shutil.rmtree(run)
    print(f"\nkeep={keep}: {points} crash points in one save, each also crashed at every point of recover")
    assert points >= 10


SAVE_LOOP = r"""
import sys, torch
from pathlib import Path
from looplm import checkpoint as ckpt
from looplm.config import Config, ModelConfig
from looplm.model import LoopedTransformer
run, keep = Path(sys.argv[1]), int(sys.argv[2])
cfg = Config(model=ModelConfig(vocab_size=16, max_seq_len=16, d_model=64, n_heads=2, d_ff=256))
model = LoopedTransformer(cfg.model)
step = 0
if (run / "checkpoint").exists() or (run / "checkpoint.old").exists():
    ckpt.recover(run / "checkpoint", keep)
    step = ckpt.load_state(run)["step"]
while True:
    step += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    ckpt.save(run / "checkpoint", model, cfg, {"step": step, "blob": torch.full((200_000,), float(step))}, keep=keep)
    print(step, flush=True)
"""


@POSIX_ONLY
def test_sigkill_while_saving_keeps_a_whole_checkpoint(tmp_path):
    """A process that does nothing but save (weights and state all hold the step number) is SIGKILLed at
    random moments, so the kill lands inside a save; the recovered checkpoint is whole and self-consistent."""
    run, keep = tmp_path / "run", 2
    rng = random.Random(1)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(run), str(keep)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)
        done, want, deadline = 0, rng.randint(2, 6), time.monotonic() + 60
        try:
            while done < want:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    done = int(proc.stdout.readline())
            time.sleep(rng.uniform(0, 0.01))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()
        ckpt.recover(run / "checkpoint", keep)
        st = ckpt.load_state(run)
        assert st["step"] >= done and torch.equal(st["blob"], torch.full((200_000,), float(st["step"])))
        m, _ = ckpt.load_model(run)
        assert all(bool((p == st["step"]).all()) for p in m.parameters())
        for s, d in ckpt.history(run):
            assert s < st["step"] and ckpt.load_state(d)["step"] == s
        assert len(ckpt.history(run)) <= keep - 1


def test_keep_last_k_checkpoints_and_the_cli_reads_each(tmp_path, capsys):
    cfg = tiny_config(train=dict(steps=7, checkpoint_every=2, keep_checkpoints=3, eval_every=0))
    run = train(cfg, tmp_path / "run", progress=False)
    assert ckpt.load_state(run)["step"] == 7
    hist = ckpt.history(run)
    assert [s for s, _ in hist] == [4, 6] and [d.name for _, d in hist] == ["step-00000004", "step-00000006"]
    assert ckpt.history(run / "checkpoint") == hist == ckpt.history(hist[0][1])
    for target in (run, run / "checkpoint", hist[0][1]):
        assert main(["generate", str(target), "12+34=", "--loops", "2"]) == 0
    assert main(["sweep", str(hist[1][1]), "--depths", "1:3", "--n", "4", "--no-progress",
                 "--out", str(tmp_path / "s.json")]) == 0
    # A damaged latest checkpoint: the error names the file and points at the older ones.
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    _flip_last_byte(broken / "checkpoint" / ckpt.WEIGHTS)
    with pytest.raises(ckpt.CheckpointError, match=r"does not match its SHA-256 .*Older checkpoints: step-00000004, "
                                                    r"step-00000006 in .*checkpoints"):
        ckpt.load_model(broken)
    ckpt.load_model(ckpt.history(broken)[-1][1])
    # Resuming with a smaller K would delete the history: refused, nothing touched (docs/reliability.md).
    cfg2 = tiny_config(train=dict(steps=9, checkpoint_every=2, keep_checkpoints=1, eval_every=0))
    with pytest.raises(ConfigError, match="train.keep_checkpoints: checkpoint 3 vs requested 1"):
        train(cfg2, run, resume=True, progress=False)
    assert [s for s, _ in ckpt.history(run)] == [4, 6] and ckpt.load_state(run)["step"] == 7
    # More steps with the same K continue the run, and the change is reported.
    capsys.readouterr()
    train(tiny_config(train=dict(steps=9, checkpoint_every=2, keep_checkpoints=3, eval_every=0)), run, resume=True,
          progress=False)
    assert "train.steps: checkpoint 7 vs requested 9" in capsys.readouterr().out
    assert [s for s, _ in ckpt.history(run)] == [7, 8] and ckpt.load_state(run)["step"] == 9


def test_a_checkpoint_replaced_while_it_is_read_is_not_scored_under_the_new_step(tmp_path, capsys, monkeypatch):
    """A result records the step of the weights it scored: the step was read after the work, so a sweep of a run
    still training named a later checkpoint than it loaded. Read around the load, a replacement in between is
    refused."""
    cfg = tiny_config(train=dict(steps=4, checkpoint_every=2, keep_checkpoints=2, eval_every=0))
    run = train(cfg, tmp_path / "run", progress=False)
    real = ckpt.load_model

    def load_then_a_save(path, *a, **k):  # the trainer saves its next checkpoint while the weights are read
        out = real(path, *a, **k)
        shutil.rmtree(run / "checkpoint")
        shutil.copytree(ckpt.history(run)[0][1], run / "checkpoint")
        return out

    monkeypatch.setattr(ckpt, "load_model", load_then_a_save)
    args = ["--depths", "1:2", "--n", "4", "--no-progress", "--out", str(tmp_path / "s.json")]
    capsys.readouterr()
    assert main(["sweep", str(run), *args]) == 2
    assert "was replaced while it was read (step 4, then 2" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
    monkeypatch.setattr(ckpt, "load_model", real)
    assert main(["sweep", str(run), *args]) == 0 and json.loads((tmp_path / "s.json").read_text())["step"] == 2


def test_a_foreign_folder_in_the_history_is_neither_counted_nor_pruned(tmp_path, capsys):
    """`checkpoints/step-99999999` made by hand (no manifest) sorts after every real step: counted as a checkpoint,
    it pushed the run's real ones out of a keep-last-K history. It is ignored, kept, and never resumed from."""
    cfg = tiny_config(train=dict(steps=4, checkpoint_every=2, keep_checkpoints=2, eval_every=0))
    run = train(cfg, tmp_path / "run", progress=False)
    junk = run / ckpt.HISTORY / "step-99999999"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    clash = run / ckpt.HISTORY / "step-00000004"  # the name the next retired checkpoint takes, already used
    clash.mkdir()
    (clash / "notes.txt").write_text("also mine")
    assert [s for s, _ in ckpt.history(run)] == [2]
    train(tiny_config(train=dict(steps=6, checkpoint_every=2, keep_checkpoints=2, eval_every=0)), run, resume=True,
          progress=False)
    assert [s for s, _ in ckpt.history(run)] == [4] and ckpt.load_state(run)["step"] == 6
    assert (junk / "notes.txt").read_text() == "mine"  # untouched
    moved = [d for d in (run / ckpt.HISTORY).iterdir() if d.name.startswith("step-00000004.displaced-")]
    assert len(moved) == 1 and (moved[0] / "notes.txt").read_text() == "also mine"


def test_readers_find_a_checkpoint_left_mid_swap(tmp_path):
    """A crash between the two renames of a save leaves only `checkpoint.old/`: readers use it without changing
    anything, and the next `train --resume` puts it back."""
    cfg = tiny_config(train=dict(steps=2, eval_every=0))
    run = train(cfg, tmp_path / "run", progress=False)
    (run / "checkpoint").rename(run / "checkpoint.old")
    for target in (run, run / "checkpoint"):
        assert ckpt.resolve(target) == run / "checkpoint.old"
        ckpt.load_model(target)
    assert not (run / "checkpoint").exists()
    train(tiny_config(train=dict(steps=3, eval_every=0)), run, resume=True, progress=False)
    assert ckpt.load_state(run)["step"] == 3 and sorted(p.name for p in run.glob("checkpoint*")) == ["checkpoint"]


def test_save_refuses_non_finite_weights(tmp_path):
    cfg = Config(model=tiny_model_config())
    good = _model(1)
    ckpt.save(tmp_path / "checkpoint", good, cfg, {"step": 1})
    bad = _model(2)
    with torch.no_grad():
        bad.tok_emb.weight[0, 0] = float("nan")
    with pytest.raises(ckpt.CheckpointError, match=r"non-finite values in tok_emb.weight.*previous checkpoint"):
        ckpt.save(tmp_path / "checkpoint", bad, cfg, {"step": 2})
    assert ckpt.load_state(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# --- 3. safe loading ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("saved") / "run"
    train(tiny_config(train=dict(steps=2, eval_every=0)), run, progress=False)
    return run


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_last_byte(f: Path) -> None:
    b = bytearray(f.read_bytes())
    b[-1] ^= 0xFF
    f.write_bytes(bytes(b))


def _garbage_header(f: Path) -> None:
    f.write_bytes(b"\xff" * 16 + f.read_bytes()[16:])


def _evil_state(f: Path) -> None:
    class Evil:  # unpickling this would create a directory: code execution
        def __reduce__(self):
            return (os.mkdir, (str(f.parent.parent / "PWNED"),))

    torch.save({"step": 1, "x": Evil()}, f)


LOADERS = {"model.safetensors": lambda d: ckpt.load_model(d), "config.json": lambda d: ckpt.load_config(d),
           "trainer_state.pt": lambda d: ckpt.load_state(d), "manifest.json": lambda d: ckpt.load_model(d)}


@pytest.mark.parametrize("name, damage, with_manifest, match", [
    ("model.safetensors", _truncate, True, r"model.safetensors has \d+ bytes but manifest.json records \d+"),
    ("model.safetensors", _flip_last_byte, True, "model.safetensors does not match its SHA-256 in manifest.json"),
    ("model.safetensors", _truncate, False, r"model.safetensors is unreadable .*truncated or corrupted"),
    ("model.safetensors", _garbage_header, False, r"model.safetensors is unreadable .*truncated or corrupted"),
    ("model.safetensors", lambda f: f.write_bytes(b""), False, "model.safetensors is unreadable"),
    ("config.json", _truncate, True, r"config.json has \d+ bytes but manifest.json records"),
    ("config.json", _truncate, False, r"config.json is not valid JSON .*corrupted"),
    ("config.json", lambda f: f.write_bytes(b"\x89PNG\xff\xfe"), False, "config.json is not valid JSON"),
    ("config.json", lambda f: f.write_text('{"model": {"d_model": "big"}}'), False,
     "config.json: model.d_model must be int"),
    ("config.json", lambda f: f.write_text("[1, 2]"), False, "config.json: a config must be a mapping"),
    ("trainer_state.pt", _truncate, True, r"trainer_state.pt has \d+ bytes but manifest.json records"),
    ("trainer_state.pt", _truncate, False, r"trainer_state.pt is unreadable .*truncated, corrupted"),
    ("trainer_state.pt", lambda f: f.write_bytes(b"not a zip"), False, "trainer_state.pt is unreadable"),
    ("trainer_state.pt", _evil_state, False, r"trainer_state.pt is unreadable \(UnpicklingError"),
    ("trainer_state.pt", lambda f: torch.save([1, 2], f), False, "trainer_state.pt is not a looplm trainer state"),
    ("manifest.json", _truncate, True, r"manifest.json is unreadable .*corrupted"),
])
def test_damaged_checkpoint_file_gives_an_error_naming_it(saved, tmp_path, name, damage, with_manifest, match):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    d = run / "checkpoint"
    if not with_manifest:
        (d / ckpt.MANIFEST).unlink()
    damage(d / name)
    with pytest.raises(ckpt.CheckpointError, match=match) as e:
        LOADERS[name](run)
    assert str(d / name) in str(e.value)
    assert not (run / "PWNED").exists()  # the pickle's payload never ran


def test_without_a_manifest_a_bit_flip_loads_silently(saved, tmp_path):
    """Why the manifest exists: safetensors checks structure, not content."""
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    (run / "checkpoint" / ckpt.MANIFEST).unlink()
    _flip_last_byte(run / "checkpoint" / ckpt.WEIGHTS)
    ckpt.load_model(run)  # no error: garbage in the last weight


@pytest.mark.parametrize("remove, match", [
    ("model.safetensors", "no model.safetensors in"),
    ("config.json", r"config.json is missing"),
    ("trainer_state.pt", "trainer_state.pt is missing: this checkpoint holds weights only and cannot be resumed"),
])
def test_missing_checkpoint_file(saved, tmp_path, remove, match):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    (run / "checkpoint" / remove).unlink()
    with pytest.raises(ckpt.CheckpointError, match=match):
        ckpt.load_model(run) if remove != "trainer_state.pt" else ckpt.load_state(run)


def test_weights_that_do_not_fit_config_json(saved, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    f = run / "checkpoint" / ckpt.CONFIG
    d = json.loads(f.read_text())
    d["model"]["d_ff"] = 96
    f.write_text(json.dumps(d))
    (run / "checkpoint" / ckpt.MANIFEST).unlink()
    # one line naming the tensors, their shapes in the file and in the model config.json describes
    with pytest.raises(ckpt.CheckpointError, match=r"^\S+model.safetensors does not match config.json: [^\n]* "
                                                   r"\[(96, \d+|\d+, 96)\] in the model[^\n]*$"):
        ckpt.load_model(run)


def test_config_mismatch_lists_every_field(saved, tmp_path, capsys):
    cfg = ckpt.load_config(saved)
    want = tiny_config(model=dict(d_model=64, n_heads=4, norm_placement="post"))
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.load_model(saved, expect=want)
    msg = str(e.value)
    assert "does not match the requested model" in msg and str(ckpt.resolve(saved)) in msg
    for line in ("model.d_model: checkpoint 32 vs requested 64", "model.n_heads: checkpoint 2 vs requested 4",
                 "model.norm_placement: checkpoint 'pre' vs requested 'post'"):
        assert line in msg
    assert "d_ff" not in msg
    assert ckpt.load_model(saved, expect=cfg)[1] == cfg
    # The same through `looplm train --resume` with a different model.
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    capsys.readouterr()
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume", "--no-progress",
                 "--set", "model.d_model=64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and "model.d_model: checkpoint 32 vs requested 64" in err


def test_cli_reports_a_corrupted_checkpoint_in_one_line(saved, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(saved, run)
    _flip_last_byte(run / "checkpoint" / ckpt.WEIGHTS)
    capsys.readouterr()
    assert main(["generate", str(run), "1+2="]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors does not match its SHA-256" in err
    assert "Traceback" not in err




def test_a_file_that_is_no_checkpoint_is_not_sent_to_its_folder(tmp_path):
    """`looplm sweep mul.jsonl` (arguments swapped) suggested the file's folder, `.`, which holds no weights; the
    folder is suggested only when it is a checkpoint or a run (model.safetensors or config.json given)."""
    from looplm.checkpoint import CheckpointError, resolve

    (tmp_path / "mul.jsonl").write_text("{}\n")
    with pytest.raises(CheckpointError, match=r"mul.jsonl is a file, not a run directory \(a data file\? pass it "
                                              r"with --data\); give the run directory \(train's --out\)"):
        resolve(tmp_path / "mul.jsonl")
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "model.safetensors").write_bytes(b"")
    (tmp_path / "run" / "checkpoint" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"config.json is a file; give the run directory or the folder that "
                                              r"holds model.safetensors \(.*checkpoint\)"):
        resolve(tmp_path / "run" / "checkpoint" / "config.json")


def test_a_path_with_a_trailing_space_is_quoted_in_the_message(tmp_path):
    """`looplm sweep "base "` said `checkpoint base  does not exist`, where the space cannot be seen."""
    from looplm.checkpoint import CheckpointError, resolve
    from looplm.records import read_rows

    with pytest.raises(CheckpointError, match=r"^checkpoint '.*base ' does not exist$"):
        resolve(str(tmp_path / "base "))
    with pytest.raises(FileNotFoundError, match=r"^data file ' d.jsonl' does not exist in "):
        read_rows(" d.jsonl")
    with pytest.raises(CheckpointError, match=r"^checkpoint \S*base does not exist$"):
        resolve(str(tmp_path / "base"))
