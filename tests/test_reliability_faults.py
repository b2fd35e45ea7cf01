"""What the bad-input table (tests/test_bad_inputs.py) cannot express: runs that must change nothing or say what
they did (a finished run resumed, a resume from the history, a stopped run), signals, a disk that fills up,
two commands writing one --out, and inputs that must work rather than be refused (a model that prefers an id
its tokenizer lacks, a loop distribution far past max_loops, chat records that are dropped with a count)."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.cli import main
from looplm.loops import sample_lognormal
from looplm.tasks import tokenizers

from .bad_input_cases import GOOD_CHAT, TINY, setting
from .helpers import ENV, POSIX_ONLY, read_metrics
from .test_bad_inputs import snapshot
from .test_reliability import _cmd, _wait_for_step


def train_args(out: Path, *sets: str, resume: bool = False) -> list[str]:
    """`looplm train` of the bad-input table's tiny run (2 steps, a checkpoint every step, 3 kept), with `sets`."""
    argv = ["train", "--config", "addition-prenorm-stars", "--out", str(out), "--no-progress", *TINY,
            *(["--resume"] if resume else [])]
    for s in sets:
        key = s.split("=", 1)[0] + "="
        argv = setting(argv, s) if any(a.startswith(key) for a in argv) else [*argv, "--set", s]
    return argv


def looplm(*args: str, limit_bytes: int | None = None, **kw) -> subprocess.Popen:
    """`python -m looplm ARGS` in a subprocess; `limit_bytes` caps the size of any file it writes (RLIMIT_FSIZE),
    which is what a full disk looks like to the writer: the write fails (Python ignores SIGXFSZ)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "-m", "looplm", *args], env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=cap if limit_bytes is not None else None, **kw)


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]


# --- resuming ----------------------------------------------------------------------------------------------------
def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, "train.steps=3")) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert main(train_args(run, "train.steps=3", resume=True)) == 0
    out = capsys.readouterr().out
    assert f"{run} is already complete (step 3 of 3): nothing to train; nothing was changed" in out
    assert "run written to" not in out  # it was not
    assert snapshot(run) == before  # the history is not rotated, the lock and config.yaml not rewritten
    assert [s for s, _ in ckpt.history(run)] == [1, 2]
    # More steps continue it; a larger keep_checkpoints is a change a resume may take (it deletes nothing).
    assert main(train_args(run, "train.steps=4", "train.keep_checkpoints=4", resume=True)) == 0
    assert ckpt.saved_step(run / "checkpoint") == 4 and [s for s, _ in ckpt.history(run)] == [1, 2, 3]


def test_a_run_stopped_by_stop_at_acc_is_complete(tmp_path, capsys):
    """A run that met train.stop_at_acc is finished too: resuming it trains nothing more."""
    rng = random.Random(0)
    rows = tmp_path / "rows.jsonl"  # every answer is "z": learned in a few steps
    rows.write_text("".join(json.dumps({"prompt": "".join(rng.choices("abcd", k=rng.randint(2, 5))), "answer": "z"})
                            + "\n" for _ in range(200)))
    argv = ["train", "--config", "jsonl-stars", "--out", str(tmp_path / "run"), "--no-progress", "--resume",
            *[x for s in (f"data.path={rows}", "model.d_model=32", "model.d_ff=64", "model.n_heads=2",
                          "model.max_seq_len=16", "loops.max_loops=4", "reg.kind=none", "data.test_size=16",
                          "train.batch_size=8", "train.threads=1", "train.lr=1e-2", "train.warmup_steps=0",
                          "train.eval_every=2", "train.eval_size=16", "train.stop_at_acc=0.9", "train.steps=300")
              for x in ("--set", s)]]
    assert main(argv) == 0
    last = read_metrics(tmp_path / "run")[-1]
    assert "stopped" in last and last["step"] < 300
    before = snapshot(tmp_path / "run")
    capsys.readouterr()
    assert main(argv) == 0
    assert (f"is already complete (it stopped at step {last['step']} on train.stop_at_acc=0.9)"
            in capsys.readouterr().out)
    assert snapshot(tmp_path / "run") == before


def test_a_resume_from_the_history_names_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run)) == 0
    shutil.rmtree(run / "checkpoint")
    capsys.readouterr()
    assert main(train_args(run, "train.steps=3", resume=True)) == 0
    err = capsys.readouterr().err
    assert f"resuming from {run / 'checkpoints' / 'step-00000001'}: {run / 'checkpoint'} is missing" in err
    assert ckpt.saved_step(run / "checkpoint") == 3


# --- signals ------------------------------------------------------------------------------------------------------
@POSIX_ONLY
def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, "train.steps=400", "train.checkpoint_every=0"), env=ENV,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    step = ckpt.saved_step(run / "checkpoint")
    assert error_lines(err) == [f"error: terminated (SIGTERM): saved a checkpoint at step {step} in "
                                f"{run / 'checkpoint'}; continue with --resume"]
    assert 3 <= step < 400
    ckpt.verify(run)


class Sweep:
    """A `looplm sweep` in a subprocess, its stderr read as it comes (the progress bar starts once the inputs are
    read and the output checked). `paused()` holds it stopped (SIGSTOP) after that point, so a test can act while
    it is surely still running, without a sweep long enough to outlast the test's own steps."""

    DEPTH = 2000

    def __init__(self, run: Path, out: Path, *extra: str):
        self.proc = looplm("sweep", str(run), "--depths", f"1:{self.DEPTH}", "--out", str(out), *extra)
        self.err = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while ch := self.proc.stderr.read(1):
            self.err += ch

    def wait_for_progress(self) -> None:
        deadline = time.monotonic() + 120
        while "sweep:" not in self.err:
            assert self.proc.poll() is None, self.err
            assert time.monotonic() < deadline, "the sweep did not start"
            time.sleep(0.01)

    @contextlib.contextmanager
    def paused(self):
        self.wait_for_progress()
        self.proc.send_signal(signal.SIGSTOP)
        try:
            assert self.proc.poll() is None, "the sweep finished before it could be paused"
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def finish(self) -> tuple[int, str]:
        rc = self.proc.wait(timeout=300)
        self.reader.join(timeout=10)
        return rc, self.err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    assert main(train_args(run)) == 0
    return run


@POSIX_ONLY
def test_sigterm_outside_training_is_one_line_and_143(tiny_run, tmp_path):
    sw = Sweep(tiny_run, tmp_path / "s.json")
    sw.wait_for_progress()
    sw.proc.send_signal(signal.SIGTERM)
    rc, err = sw.finish()
    assert rc == 143 and error_lines(err) == ["error: terminated (SIGTERM)"]
    assert list(tmp_path.iterdir()) == []  # no result, and no temporary file


# --- results: whole or absent, never over one that appeared meanwhile ---------------------------------------------
@POSIX_ONLY
def test_an_output_that_appears_during_a_sweep_is_not_replaced(tiny_run, tmp_path):
    out = tmp_path / "s.json"
    other = '{"depths": [1]}\n'  # another sweep's result (--force replaces nothing else)
    sw = Sweep(tiny_run, out)
    with sw.paused():  # past the check that --out does not exist
        out.write_text(other)
    rc, err = sw.finish()
    assert rc == 2 and error_lines(err) == [f"error: {out} appeared while this command ran (another command writing "
                                            "the same --out?); pass --force to replace it, or --out somewhere else"]
    assert out.read_text() == other and sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
    # With --force the second command replaces it.
    sw = Sweep(tiny_run, out, "--force")
    with sw.paused():
        out.write_text(other)
    assert sw.finish()[0] == 0 and json.loads(out.read_text())["depths"][-1] == Sweep.DEPTH


@POSIX_ONLY
@pytest.mark.parametrize("command", ["sweep", "analyze"])
def test_a_full_disk_leaves_no_partial_result(tiny_run, tmp_path, command):
    extra = ["--depths", "1:3", "--n", "4"] + (["--spectral-n", "0", "--pca-n", "0", "--no-plot"]
                                               if command == "analyze" else [])
    target = tmp_path / "s.json" if command == "sweep" else tmp_path
    proc = looplm(command, str(tiny_run), "--no-progress", *extra, "--out", str(target), limit_bytes=200)
    _, err = proc.communicate(timeout=120)
    written = tmp_path / ("s.json" if command == "sweep" else "dynamics.json")
    assert proc.returncode == 2 and error_lines(err) == [f"error: cannot write {written}: File too large"]
    assert list(tmp_path.iterdir()) == []


@POSIX_ONLY
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert main(train_args(run)) == 0
    weights, state = ((run / "checkpoint" / f).stat().st_size for f in (ckpt.WEIGHTS, ckpt.STATE))
    assert weights < state
    before = snapshot(run / "checkpoint", run / "checkpoints")
    # The next save can write the weights but not the trainer state.
    proc = looplm(*train_args(run, "train.steps=3", resume=True), limit_bytes=(weights + state) // 2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    [line] = error_lines(err)
    assert line.startswith("error: could not write the checkpoint of step 3 (") and line.endswith(
        f"); is the disk full? the previous checkpoint in {run / 'checkpoint'} is kept")
    assert snapshot(run / "checkpoint", run / "checkpoints") == before and not (run / "checkpoint.tmp").exists()
    ckpt.verify(run)


@POSIX_ONLY
def test_a_fresh_run_that_cannot_start_leaves_nothing(tmp_path):
    """A full disk while a fresh run wrote its config.yaml was a raw errno with no path, and left a lock file and
    an empty config.yaml that made every later `train` (and `--resume`) refuse the folder as no looplm run."""
    run = tmp_path / "new" / "run"
    proc = looplm(*train_args(run), limit_bytes=100)  # the lock file (about 40 bytes) fits, the config does not
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and error_lines(err) == [f"error: cannot write {run / 'config.yaml'}: File too large"]
    assert list(tmp_path.iterdir()) == []
    assert main(train_args(run)) == 0  # the next try starts


def test_a_refused_claim_leaves_no_lock_file(tmp_path, monkeypatch):
    """`analyze --out X` wrote its results into X while `train --out X` was starting: train was refused (right)
    but left its .looplm.lock among the analysis's files."""
    train = importlib.import_module("looplm.train")
    run, native_run = tmp_path / "out", train.native_run

    def results_appear(*a, **kw):  # after train's first look at --out, before it claims it
        run.mkdir()
        (run / "dynamics.json").write_text("{}\n")
        return native_run(*a, **kw)

    monkeypatch.setattr(train, "native_run", results_appear)
    assert main(train_args(run)) == 2
    assert sorted(p.name for p in run.iterdir()) == ["dynamics.json"]


def test_a_run_is_claimed_between_writes_into_its_folder(tmp_path):
    """train took only its own lock file, sweep/analyze/plot the folder's lock, so a run could start in a folder
    while another command was writing results there. The claim now waits for the folder."""
    from looplm import rundir
    from looplm.errors import UserError
    from looplm.outputs import folders_held

    run, said = tmp_path / "out", []

    def claim() -> None:
        try:
            with rundir.claimed(run, False, None, 1):
                said.append("claimed")
        except UserError as e:
            said.append(str(e))

    with folders_held([run / "dynamics.json"]):
        t = threading.Thread(target=claim)
        t.start()
        time.sleep(0.5)
        assert said == [] and not (run / rundir.LOCK).exists()  # it waits
        (run / "dynamics.json").write_text("{}\n")
    t.join(20)
    assert "is not empty and is not a looplm run" in said[0]
    assert sorted(p.name for p in run.iterdir()) == ["dynamics.json"]


def test_a_closed_pipe_keeps_the_results_it_was_told_of(tiny_run, tmp_path):
    """`looplm analyze ... | head -1`: "wrote ..." was printed inside the all-or-nothing block, so the closed pipe
    then removed the results it had just reported, with a raw "[Errno 32] Broken pipe" line."""
    proc = looplm("analyze", str(tiny_run), "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0",
                  "--pca-n", "0", "--out", str(tmp_path / "an"))
    proc.stdout.close()  # the reader is gone before the first line
    _, err = proc.communicate(timeout=120)
    assert "Broken pipe" not in err and proc.returncode == 141, err
    assert sorted(p.name for p in (tmp_path / "an").iterdir()) == ["dynamics.json", "dynamics.png"]


# --- inputs that must work ------------------------------------------------------------------------------------------
def test_generation_never_picks_an_id_the_tokenizer_lacks(tiny_run, tmp_path, capsys):
    """The addition model's head has 16 ids and its tokenizer 14. Weights that make id 15 win every argmax (the
    final norm's output is one direction, which id 15's embedding points along) must still decode."""
    model, cfg = ckpt.load_model(tiny_run)
    tok = tokenizers.load(tiny_run / "checkpoint")
    assert cfg.model.vocab_size == 16 and tok.vocab_size == 14
    w = ckpt.cpu_weights(model.state_dict())
    u = torch.nn.functional.normalize(torch.randn(cfg.model.d_model, generator=torch.Generator().manual_seed(0)), dim=0)
    w["norm_f.weight"].zero_()
    w["norm_f.bias"].copy_(u)
    w["tok_emb.weight"][15] = 100 * u
    run = tmp_path / "run"
    ckpt.write_checkpoint(run / "checkpoint", w, lambda d, ws: (ckpt.write_native(d, ws, cfg), tokenizers.save(tok, d)))
    model.load_state_dict(w)
    assert int(model(torch.tensor([tok.encode("2+0=")]), 2)[0, -1].argmax()) == 15
    for extra in ([], ["--no-cache"]):
        capsys.readouterr()
        assert main(["generate", str(run), "2+0=", "--loops", "2", *extra]) == 0
        answer = capsys.readouterr().out.splitlines()[-1].split("  [cut off")[0].removeprefix("2+0=").strip()
        assert set(answer) <= set("0123456789+=")


def test_a_lognormal_far_past_max_loops_trains_at_max_loops(tmp_path):
    g = torch.Generator().manual_seed(0)
    assert {sample_lognormal(g, 1000.0, 0.7, 1, 4) for _ in range(20)} == {4}
    assert {sample_lognormal(g, -1000.0, 0.7, 1, 4) for _ in range(20)} == {1}
    # An ordinary mu draws exactly what round(exp(mu + sigma z)), clipped, always drew.
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    zs = [torch.randn(1, generator=g2, dtype=torch.float64).item() for _ in range(200)]
    assert [sample_lognormal(g1, 2.0, 0.7, 1, 100) for _ in zs] == \
        [max(1, min(100, round(math.exp(2.0 + 0.7 * z)))) for z in zs]
    run = tmp_path / "run"
    assert main(train_args(run, "loops.mu=1000")) == 0
    assert {r["loops"] for r in read_metrics(run)} == {4}


# --- fine-tuning data -------------------------------------------------------------------------------------------------
def test_a_fine_tune_says_which_chat_records_it_dropped(tmp_path, capsys):
    pytest.importorskip("transformers")
    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer

    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    user = {"role": "user", "content": "1+1?"}
    rows = [GOOD_CHAT, GOOD_CHAT, '{"messages": []}', "{}", '{"problem": "1+1?"}',
            json.dumps({"messages": [{"role": "system", "content": "be brief"}]}),
            json.dumps({"messages": [user, {"role": "assistant", "content": "  "}]}),
            json.dumps({"messages": [user, {"role": "assistant", "content": "#### 2 " * 200}]})]
    (tmp_path / "chat.jsonl").write_text("".join(r + "\n" for r in rows))
    (tmp_path / "ft.yaml").write_text(f"model:\n  name_or_path: {base}\ndata:\n  source: {tmp_path / 'chat.jsonl'}\n"
                                      "  max_length: 256\ntrain:\n  steps: 1\n  batch_size: 2\n  threads: 1\n")
    capsys.readouterr()
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--out", str(tmp_path / "ft"),
                 "--no-progress"]) == 0
    assert ("data: 2 of 8 records kept; 6 dropped: 5 with no assistant reply to learn (a missing or empty "
            "conversation or field, no assistant turn, or only empty ones), 1 longer than data.max_length=256 "
            "tokens") in capsys.readouterr().out.splitlines()


def test_eval_lm_accepts_a_fine_tune_run_directory(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks

    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer(), max_position_embeddings=256)
    data = write_jsonl(math_problems(4), tmp_path / "math.jsonl")
    (tmp_path / "ft.yaml").write_text(f"model:\n  name_or_path: {base}\ndata:\n  source: {data}\n  format: "
                                      "prompt_response\n  max_length: 256\ntrain:\n  steps: 1\n  batch_size: 2\n"
                                      "  threads: 1\n")
    run = tmp_path / "ft"
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--out", str(run), "--no-progress"]) == 0
    _, mc_task = write_lm_eval_tasks(tmp_path / "tasks", data, max_gen_toks=4)
    assert main(["eval-lm", str(run), "--tasks", mc_task, "--depths", "1", "--include-path", str(tmp_path / "tasks"),
                 "--limit", "2", "--device", "cpu"]) == 0
    res = json.loads((run / "eval-lm" / "eval_lm.json").read_text())  # next to the run's checkpoint, not in it
    assert res["model"] == str(run / "checkpoint") and [r["loops"] for r in res["rows"]] == [1]


def test_archives_with_no_compression_are_no_text_and_a_fifo_is_no_run(tmp_path):
    """An old (v7) tar, an `ar` and a cpio archive, given as the text or as a suffix-less shard of a text folder,
    were read as training text (valid UTF-8 when their members are): header bytes and NUL padding in the
    vocabulary. And `train --out DIR` with a FIFO named config.yaml in DIR hung, reading it."""
    import io
    import os
    import tarfile

    from looplm.errors import UserError
    from looplm.rundir import resume_point
    from looplm.tasks.text import read_text

    text = b"the quick brown fox jumps over the lazy dog\n" * 4
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("a.txt")
        member.size = len(text)
        tar.addfile(member, io.BytesIO(text))
    v7 = bytearray(buf.getvalue())
    v7[257:265] = b"\0" * 8  # a pre-POSIX tar has no magic
    archives = {"v7.tar.txt": bytes(v7),
                "lib.a": b"!<arch>\na.txt/          0           0     0     644     176       `\n" + text,
                "files.cpio": b"070701" + b"0" * 104 + b"a.txt\0\0" + text}
    for name, data in archives.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="NUL bytes|does not read as text"):
            read_text(tmp_path / name)
        corpus = tmp_path / f"corpus-{name}"
        corpus.mkdir()
        (corpus / "a.txt").write_bytes(text)
        (corpus / "shard-00002").write_bytes(data)
        with pytest.raises(ValueError, match=r"NUL bytes|does not read \(shard-00002\)"):
            read_text(corpus)
    run = tmp_path / "fifo"
    run.mkdir()
    os.mkfifo(run / "config.yaml")
    with pytest.raises(UserError, match="is not empty and is not a looplm run"):
        resume_point(run, False)


def test_a_ctrl_c_during_tokenizer_work_is_heard_before_the_work_ends():
    """BPE training and corpus encoding are one call into Rust each (tens of seconds on tens of megabytes), and
    Python runs a SIGINT handler only between bytecodes: Ctrl-C waited for the whole call. The call now runs in a
    helper thread while the caller waits in slices, so the interrupt reaches the caller while the work still runs."""
    release = threading.Event()
    timer = threading.Timer(0.2, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            tokenizers.hearing_ctrl_c(lambda: release.wait(60))  # Event.wait releases the GIL, as Rust's work does
        assert not release.is_set()
    finally:
        release.set()
        timer.join()
    assert tokenizers.hearing_ctrl_c(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):  # the work's own errors reach the caller as they were
        tokenizers.hearing_ctrl_c(lambda: 1 / 0)


def test_a_long_text_encodes_as_one_call_would():
    """Texts of 64 Ki characters or more go through `encode_batch` (which lets Ctrl-C be heard); the ids must be
    those of the plain `encode` call, across line ends, runs of spaces, tabs, non-ASCII and special-token text."""
    pytest.importorskip("tokenizers")
    rng = random.Random(0)
    pieces = ["the", "cat", "é", "数", " ", "  ", "\n", "\n\n", " \n", "\t", "\r\n", "<eos>", "'s", "42", "!?", "🙂"]
    text = "".join(rng.choice(pieces) for _ in range(40_000))
    assert len(text) >= 1 << 16
    bpe = tokenizers.BpeTokenizer.train([text], 300)
    ids = bpe.encode(text)
    assert ids == bpe.tok.encode(text).ids and len(set(ids)) > 30
    assert bpe.decode(ids) == text


def test_a_folder_is_a_runs_own_only_beside_a_run(tiny_run, tmp_path):
    """`checkpoint`, `tensorboard`, `wandb`... were "a run's own" beside any config.yaml (a project's) or any
    `checkpoint` entry (the one a new run named so had just made): `train --out X/checkpoint` could not start, a
    sweep into a project's wandb/ or an analysis folder named checkpoint was refused. Only a folder that holds a
    looplm run (its own config.yaml, or a checkpoint with weights) makes them so."""
    assert main(train_args(tmp_path / "new" / "checkpoint")) == 0
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "config.yaml").write_text("lr: 0.1\n")  # a project's own (Hydra's, say)
    sweep = ["sweep", str(tiny_run), "--depths", "1:2", "--n", "4", "--no-progress", "--out"]
    assert main([*sweep, str(tmp_path / "proj" / "wandb" / "s.json")]) == 0
    analyze = ["analyze", str(tiny_run), "--depths", "1:2", "--n", "4", "--spectral-n", "0", "--pca-n", "0",
               "--no-plot", "--no-progress", "--out", str(tmp_path / "an" / "checkpoint")]
    assert main(analyze) == 0 and main([*analyze, "--force"]) == 0  # its own folder made it "a run"
    assert main([*sweep, str(tiny_run / "wandb" / "s.json")]) == 2  # beside a run they still are its own


def test_a_log_that_cannot_be_rewritten_on_resume_is_one_line_and_no_tmp(tmp_path, monkeypatch):
    """A resume rewrites metrics.jsonl through metrics.jsonl.tmp; a rename that failed (an immutable log) left
    the .tmp in the run and said only errno's line about it."""
    from looplm.errors import UserError
    from looplm.logger import truncate_metrics

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')

    def refused(self, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "replace", refused)
    with pytest.raises(UserError, match=r"cannot rewrite the training log .*metrics.jsonl for the resume \(Operation "
                                        r"not permitted\); the log is as it was"):
        truncate_metrics(log, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"] and '"step": 2' in log.read_text()


@POSIX_ONLY
def test_a_fifo_device_or_socket_is_named_as_what_it_is(tmp_path, capsys):
    """A FIFO or /dev/null given as a checkpoint or as train's --out was called "a file" (the checkpoint's hint
    offered its folder, /dev), and plot of a socket printed "[Errno 6] No such device or address". (FIFOs and
    sockets cannot be rows of the bad-input table: its snapshot reads every file under tmp.)"""
    import os
    import socket

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        for argv, line in (
                (["sweep", str(fifo), "--no-progress"], f"checkpoint {fifo} is a FIFO (named pipe), not a run "
                 "directory; give the run directory (train's --out) or the folder that holds model.safetensors"),
                (["generate", "/dev/null", "1+1="], "checkpoint /dev/null is a device, not a run directory;"),
                (["analyze", str(sock_path), "--no-progress"], f"checkpoint {sock_path} is a socket, not a run"),
                (train_args(fifo), f"--out {fifo} is a FIFO (named pipe), not a run directory"),
                (["plot", str(sock_path), "--out", str(tmp_path / "p.png")],
                 f"{sock_path} is a socket, not a result file (sweep.json or dynamics.json)")):
            assert main(argv) == 2
            lines = error_lines(capsys.readouterr().err)
            assert len(lines) == 1 and lines[0].startswith(f"error: {line}"), (argv, lines)
    finally:
        sock.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "sock"]


def test_a_sweep_table_of_many_depths_says_which_it_shows(tiny_run, tmp_path, capsys):
    """A sweep of more than 16 depths printed a table of 7 of them (the demo's and the last) without a word."""
    out = tmp_path / "s.json"
    assert main(["sweep", str(tiny_run), "--depths", "1:20", "--n", "4", "--no-progress", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    at = lines.index(f"showing 7 of the 20 depths; every depth is in {out}")
    assert lines[at + 1].split() == ["loops", "1", "2", "3", "4", "8", "16", "20"]
    assert len(json.loads(out.read_text())["depths"]) == 20
    assert main(["sweep", str(tiny_run), "--depths", "1:16", "--n", "4", "--no-progress", "--out", str(out),
                 "--force"]) == 0
    assert "showing" not in capsys.readouterr().out  # all 16 are columns
