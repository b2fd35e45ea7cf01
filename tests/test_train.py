import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from looplm.checkpoint import CheckpointError, load_model
from looplm.train import TrainingDiverged, lr_at, train

from .conftest import tiny_config


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_metrics_and_checkpoint(tmp_path):
    cfg = tiny_config(reg=dict(kind="jsrr", start_step=3, rho_every=3), loops=dict(sampler="uniform", max_loops=4))
    run = train(cfg, tmp_path / "run", progress=False)
    assert (run / "config.yaml").is_file()
    for f in ("model.safetensors", "config.json", "trainer_state.pt"):
        assert (run / "checkpoint" / f).is_file()
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 7))
    for r in rows:
        assert {"step", "loops", "ce", "reg", "lr", "tok_s"} <= set(r) and 1 <= r["loops"] <= 4
    # No penalty (and no penalty graph) before reg.start_step; named honestly after it.
    assert all(r["reg"] is None for r in rows[:3]) and all(r["reg"] > 0 for r in rows[3:])
    assert {r["reg_kind"] for r in rows[3:]} == {"jsrr"}
    assert "rho" in rows[2] and rows[2]["rho"] > 0 and "acc" in rows[2]
    model, cfg2 = load_model(run)
    assert cfg2 == cfg


def test_step_time_leaves_out_evaluation_and_the_rho_estimate(tmp_path, monkeypatch):
    """`step_s` (and `tok_s` from it) times the step, not the held-out evaluation or ρ estimate after it: each
    is made to take 2 s here, a tiny step takes milliseconds."""
    import importlib
    import time

    from looplm import spectra

    tr = importlib.import_module("looplm.train")  # the module (the package's `looplm.train` is the function)
    slow_sweep, slow_rho = tr.sweep, spectra.monitor_rho

    def sweep(*a, **k):
        time.sleep(2)
        return slow_sweep(*a, **k)

    def rho(*a, **k):
        time.sleep(2)
        return slow_rho(*a, **k)

    monkeypatch.setattr(tr, "sweep", sweep)
    monkeypatch.setattr(spectra, "monitor_rho", rho)
    cfg = tiny_config(train=dict(steps=2, eval_every=2), reg=dict(rho_every=2))
    rows = read_metrics(train(cfg, tmp_path / "run", progress=False))
    assert "acc" in rows[1] and "rho" in rows[1]
    assert all(r["step_s"] < 2 for r in rows), rows


@pytest.mark.parametrize("kind", ["jsrr", "jsrr_release", "power", "hutchinson", "residual"])
@pytest.mark.parametrize("at", ["final", "random"])
def test_every_penalty_trains(tmp_path, kind, at):
    cfg = tiny_config(reg=dict(kind=kind, at=at, power_iters=2), train=dict(steps=2, eval_every=0))
    rows = read_metrics(train(cfg, tmp_path / "r", progress=False))
    assert all(r["reg"] is not None and r["reg"] >= 0 for r in rows)


def test_lr_schedule():
    cfg = tiny_config(train=dict(steps=100, warmup_steps=10, lr=1e-3, min_lr=1e-4))
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lr_at(100, cfg) == pytest.approx(1e-4)


def test_crash_then_resume_is_bitwise_identical(tmp_path):
    cfg = tiny_config(reg=dict(kind="jsrr", start_step=1), train=dict(steps=8, checkpoint_every=3),
                      model=dict(dropout=0.1))
    ref = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, tmp_path / "b", progress=False, fault={"crash_at_step": 5})
    with pytest.raises(FileExistsError, match="pass resume=True"):
        train(cfg, tmp_path / "b", progress=False)
    out = train(cfg, tmp_path / "b", resume=True, progress=False)
    w_ref = load_file(ref / "checkpoint" / "model.safetensors")
    w_out = load_file(out / "checkpoint" / "model.safetensors")
    assert all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
    assert [r["loops"] for r in read_metrics(ref)] == [r["loops"] for r in read_metrics(out)]
    assert [r["ce"] for r in read_metrics(ref)] == [r["ce"] for r in read_metrics(out)]


def test_init_from_starts_from_another_runs_weights_and_resumes_exactly(tmp_path, capsys):
    base = train(tiny_config(train=dict(steps=4, eval_every=0)), tmp_path / "base", progress=False)
    # A near-zero learning rate: after one step the weights must still be the base run's, not a fresh init's.
    ft = train(tiny_config(train=dict(steps=1, lr=1e-12, eval_every=0, seed=5, init_from=str(base))),
               tmp_path / "ft", progress=False)
    fresh = train(tiny_config(train=dict(steps=1, lr=1e-12, eval_every=0, seed=5)), tmp_path / "fresh",
                  progress=False)
    w_base, w_ft, w_fresh = (load_file(r / "checkpoint" / "model.safetensors") for r in (base, ft, fresh))
    assert max((w_ft[k] - w_base[k]).abs().max().item() for k in w_base) < 1e-8
    assert max((w_fresh[k] - w_base[k]).abs().max().item() for k in w_base) > 1e-2
    assert [r["step"] for r in read_metrics(ft)] == [1]  # a fresh step count and schedule
    # Crash and resume: the run's own checkpoint holds the weights, so the result equals an uninterrupted run
    # and the base run is no longer needed (here it has been moved away).
    cfg = tiny_config(reg=dict(kind="jsrr", start_step=0), train=dict(steps=5, checkpoint_every=2, eval_every=0,
                                                                      init_from=str(base)))
    ref = train(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, tmp_path / "b", progress=False, fault={"crash_at_step": 4})
    # A resume naming another origin does not read it (the weights are the run's own), and the record keeps
    # where the run started instead of the path it was given.
    import dataclasses

    from looplm import checkpoint as ckpt

    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, tmp_path / "c", progress=False, fault={"crash_at_step": 4})
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=str(tmp_path / "nowhere")))
    out = train(other, tmp_path / "c", resume=True, progress=False)
    w_ref, w_out = (load_file(r / "checkpoint" / "model.safetensors") for r in (ref, out))
    assert all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
    assert capsys.readouterr().out.count(f"note: train.init_from={tmp_path / 'nowhere'} is not read") == 1
    assert ckpt.load_config(out).train.init_from == str(tmp_path / "base")
    assert f"init_from: {tmp_path / 'base'}" in (out / "config.yaml").read_text()
    base.rename(tmp_path / "moved")
    out = train(cfg, tmp_path / "b", resume=True, progress=False)
    base = tmp_path / "moved"
    w_ref, w_out = (load_file(r / "checkpoint" / "model.safetensors") for r in (ref, out))
    assert all(torch.equal(w_ref[k], w_out[k]) for k in w_ref)
    with pytest.raises(CheckpointError, match="model.d_model: checkpoint 32 vs requested 48"):
        train(tiny_config(model=dict(d_model=48), train=dict(init_from=str(base))), tmp_path / "bad", progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny_config(train=dict(init_from=str(tmp_path / "nope"))), tmp_path / "bad2", progress=False)


def test_init_from_may_change_the_training_only_model_fields(tmp_path):
    """model.dropout and model.random_positions change how a run trains, not its weights or Φ, yet a fine-tune that
    set them anew was refused as "does not match the requested model"; it now trains with the new values."""
    from looplm import checkpoint as ckpt

    fast = dict(steps=1, eval_every=0, checkpoint_every=0)
    base = train(tiny_config(train=fast), tmp_path / "base", progress=False)
    ft = train(tiny_config(model=dict(dropout=0.1, random_positions=True), train=dict(init_from=str(base), **fast)),
               tmp_path / "ft", progress=False)
    model = ckpt.load_model(ft)[0]
    assert model.cfg.dropout == 0.1 and model.cfg.random_positions is True
    with pytest.raises(CheckpointError, match="model.bias: checkpoint True vs requested False"):
        train(tiny_config(model=dict(bias=False, dropout=0.1), train=dict(init_from=str(base), **fast)),
              tmp_path / "bad", progress=False)
    assert ckpt.TRAINING_ONLY == ("dropout", "random_positions")


def test_init_from_non_finite_weights_is_refused_naming_the_source(tmp_path):
    """A source with a NaN weight made every step non-finite, and the run was refused blaming train.lr."""
    from safetensors.torch import save_file

    from looplm import checkpoint as ckpt

    fast = dict(steps=2, eval_every=0, checkpoint_every=0)
    base = train(tiny_config(train=fast), tmp_path / "base", progress=False)
    w = load_file(base / "checkpoint" / "model.safetensors")
    w["tok_emb.weight"][3] = float("nan")
    save_file(w, base / "checkpoint" / "model.safetensors")
    manifest = json.loads((base / "checkpoint" / ckpt.MANIFEST).read_text())
    manifest["files"]["model.safetensors"] = {"sha256": ckpt._sha256(base / "checkpoint" / "model.safetensors"),
                                              "bytes": (base / "checkpoint" / "model.safetensors").stat().st_size}
    (base / "checkpoint" / ckpt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"train.init_from .*base: its weights are not finite \(tok_emb.weight\); "
                                              "start from another checkpoint"):
        train(tiny_config(train=dict(init_from=str(base), **fast)), tmp_path / "ft", progress=False)
    assert not (tmp_path / "ft").exists()


def test_a_resume_of_a_user_module_run_without_the_module_says_to_pass_it(tmp_path):
    """fit(cfg, out, resume=True) on a run of the user's own module (model= left out) was told to build the module
    and load it with load_weights, "then use the Python API", which is not how a resume continues."""
    from looplm.model import LoopedTransformer

    class Damped(LoopedTransformer):
        def step(self, h, ctx, loop=0):
            return h + 0.5 * (super().step(h, ctx, loop) - h)

    cfg = tiny_config(train=dict(steps=1, eval_every=0))
    run = train(cfg, tmp_path / "d", progress=False, model=Damped(cfg.model))
    with pytest.raises(CheckpointError, match=r"module of your own \(.*Damped\), not of the LoopedTransformer its "
                                              r"config describes; pass the module to fit: fit\(cfg, out, resume=True, "
                                              r"model=Damped\(...\)\)$"):
        train(tiny_config(train=dict(steps=2, eval_every=0)), run, resume=True, progress=False)


def test_backprop_loops_at_or_above_the_most_loops_trained_gets_a_note(tmp_path, capsys):
    """loops.backprop_loops=8 with a fixed 4 loops (or a sampler clipped to 4) backpropagated through every loop,
    as with 0, without a word."""
    note = "note: loops.backprop_loops=8 is not below the most loops this run trains (4): every step " \
        "backpropagates through all its loops, as with 0; it has no effect on this run"
    fast = dict(steps=1, eval_every=0)
    train(tiny_config(loops=dict(sampler="fixed", num_loops=4, backprop_loops=8), train=fast), tmp_path / "a",
          progress=False)
    assert note in capsys.readouterr().out
    train(tiny_config(loops=dict(sampler="fixed", num_loops=4, backprop_loops=2), train=fast), tmp_path / "b",
          progress=False)
    assert "is not below the most loops" not in capsys.readouterr().out  # (tiny_config has no injection: the
    # note that the position table gets no gradient is made for it, test_round36_protocol)


def test_nan_step_is_skipped_and_too_many_stop_the_run(tmp_path):
    cfg = tiny_config(train=dict(steps=4, eval_every=0))
    ok = train(cfg, tmp_path / "clean", progress=False)
    run = train(cfg, tmp_path / "nan", progress=False, fault={"nan_at_steps": [1]})
    rows = read_metrics(run)
    assert rows[1].get("skipped") == "non-finite loss" and rows[1]["step"] == 2
    w = load_file(run / "checkpoint" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())
    assert not torch.equal(w["tok_emb.weight"], load_file(ok / "checkpoint" / "model.safetensors")["tok_emb.weight"])
    bad = tiny_config(train=dict(steps=10, eval_every=0, max_bad_steps=3, checkpoint_every=1))
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps"):
        train(bad, tmp_path / "div", progress=False, fault={"nan_at_steps": [2, 3, 4]})
    last = read_metrics(tmp_path / "div")[-1]
    assert last["step"] == 5 and "skipped" in last
    # The last good checkpoint (after step 2) is intact and loadable.
    load_model(tmp_path / "div")


def test_a_tiny_model_learns_addition(tmp_path):
    """Behaviour, not just plumbing: 2-digit addition at 2 fixed loops goes well above chance."""
    cfg = tiny_config(data=dict(digits=2, test_size=40), loops=dict(sampler="fixed", num_loops=2),
                      model=dict(d_model=64, d_ff=128, n_heads=4),
                      train=dict(steps=400, batch_size=64, lr=3e-3, warmup_steps=20, eval_every=400,
                                 eval_size=40, log_every=50))
    rows = read_metrics(train(cfg, tmp_path / "r", progress=False))
    assert rows[-1]["ce"] < 0.5 * rows[0]["ce"]
    assert rows[-1]["acc"] >= 0.5


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_loggers_write_the_metrics_the_log_holds(tmp_path, logger, monkeypatch):
    """TensorBoard event files, and a wandb run in offline mode (no network): the same scalars as metrics.jsonl."""
    pytest.importorskip("torch.utils.tensorboard" if logger == "tensorboard" else "wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = train(tiny_config(train=dict(steps=3, eval_every=0, logger=logger), reg=dict(kind="jsrr", rho_every=0)),
                tmp_path / "r", progress=False)
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    if logger == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        ce = [(e.step, e.value) for e in acc.Scalars("ce")]
        assert ce == [(r["step"], pytest.approx(r["ce"], rel=1e-6)) for r in rows]
        assert {"loss", "lr", "grad_norm", "tok_s"} <= set(acc.Tags()["scalars"])
    else:
        files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1  # the offline run's record file, which `wandb sync` uploads later
        import time

        deadline = time.monotonic() + 30  # wandb's service process writes the records after finish() returns
        while not all(json.dumps(r["ce"]).encode() in files[0].read_bytes() for r in rows):
            assert time.monotonic() < deadline, "the wandb run does not hold every step's ce"
            time.sleep(0.2)
        raw = files[0].read_bytes()  # history values are stored as JSON text inside the records
        assert all(k.encode() in raw for k in ("grad_norm", "tok_s", "loss", "lr"))


def test_an_eval_size_above_the_held_out_split_is_said_and_recorded(tmp_path, capsys):
    """train.eval_size beyond data.test_size scores the split there is: the run says so, and each evaluation
    records how many problems it scored (acc_n), so a figure on 16 problems cannot pass for one on 64."""
    run = train(tiny_config(train=dict(steps=3, eval_every=3, eval_size=64), data=dict(test_size=16)),
                tmp_path / "r", progress=False)
    assert "train.eval_size=64, but the held-out split holds 16" in capsys.readouterr().out
    evals = [r for r in read_metrics(run) if "acc" in r]
    assert evals and all(r["acc_n"] == 16 for r in evals)


def test_the_memory_check_counts_the_loops_training_samples(tmp_path, monkeypatch):
    """loops.num_loops above max_loops with a random sampler sets only the (no-graph) evaluation depth: the
    memory check must not count it as a graph of 100,000 loops (it refused a 9,632-parameter model)."""
    from looplm import memory
    from looplm.errors import UserError

    monkeypatch.setattr(memory, "available_bytes", lambda: 2**30)
    train(tiny_config(loops=dict(num_loops=100_000, max_loops=4), train=dict(steps=1, eval_every=0)),
          tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="not enough memory"):  # a fixed sampler does run that deep
        train(tiny_config(loops=dict(sampler="fixed", num_loops=100_000), train=dict(steps=1, eval_every=0),
                          model=dict(d_model=256, n_heads=2, d_ff=1024)), tmp_path / "f", progress=False)
    # batches are padded to their longest row: a large position table (random_positions) costs no memory, but the
    # check sized every sequence by it (max_seq_len 4096 asked for hundreds of GiB)
    monkeypatch.setattr(memory, "available_bytes", lambda: 2**31)
    train(tiny_config(model=dict(max_seq_len=4096, random_positions=True), train=dict(steps=1, eval_every=0)),
          tmp_path / "long", progress=False)
    # a GPU run's tensors live on the GPU: its free memory decides, not the host's (compared alone before)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 2**34))
    memory.require(2**25, "a job")  # 32 MiB: the host's 2 GiB hold it
    with pytest.raises(UserError, match=r"need at least 0.0 GiB, and 0.0 GiB are free on cuda:0"):
        memory.require(2**25, "a job", torch.device("cuda:0"))



def test_a_bad_wandb_mode_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    """wandb.init would refuse WANDB_MODE=bogus only after the run directory was written, leaving a half run
    that the corrected command then refuses."""
    pytest.importorskip("wandb")
    from looplm.errors import UserError

    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(UserError, match="WANDB_MODE='bogus' is not a wandb mode; use one of online, offline"):
        train(tiny_config(train=dict(steps=1, eval_every=0, logger="wandb")), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_a_logger_that_cannot_start_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """wandb without a login (or any tracker failure) is the user's to fix: one UserError, raised before the run's
    files are written, so the corrected command starts in a new directory, not a half run."""
    wandb = pytest.importorskip("wandb")
    from looplm.errors import UserError

    def no_login(**kw):
        raise wandb.errors.UsageError("No API key configured. Use `wandb login` to log in.")

    monkeypatch.setattr(wandb, "init", no_login)
    out = tmp_path / "r"
    with pytest.raises(UserError, match=r"train.logger=wandb: the wandb logger could not start \(UsageError: No API"):
        train(tiny_config(train=dict(steps=2, eval_every=0, logger="wandb"), reg=dict(rho_every=0)), out,
              progress=False)
    assert not out.exists()  # not even its lock file or the folder it made
    train(tiny_config(train=dict(steps=2, eval_every=0), reg=dict(rho_every=0)), out, progress=False)  # no --resume


def test_a_resume_keeps_tensorboard_in_step_with_the_log(tmp_path):
    """The steps a resume redoes are dropped from TensorBoard as from metrics.jsonl: each step has one value."""
    pytest.importorskip("torch.utils.tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from .helpers import read_metrics as rows_of

    cfg = tiny_config(train=dict(steps=6, eval_every=0, checkpoint_every=2, logger="tensorboard"),
                      reg=dict(rho_every=0))
    run = tmp_path / "r"
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, run, progress=False, fault={"crash_at_step": 3, "nan_at_steps": []})  # step 3 logged, not saved
    train(cfg, run, resume=True, progress=False)
    assert len(list((run / "tensorboard").iterdir())) == 2  # one event file per process, as TensorBoard writes
    acc = EventAccumulator(str(run / "tensorboard"))  # reads both, as TensorBoard shows them
    acc.Reload()
    ce = {}
    for e in acc.Scalars("ce"):
        ce.setdefault(e.step, []).append(e.value)
    assert sorted(ce) == [1, 2, 3, 4, 5, 6] and all(len(v) == 1 for v in ce.values())
    assert [ce[r["step"]][0] for r in rows_of(run)] == pytest.approx([r["ce"] for r in rows_of(run)], rel=1e-6)


def test_reg_samples_is_a_count_over_the_whole_batch(tmp_path, monkeypatch):
    """reg.samples=k probes k sequences per step however the batch is split: each micro-batch probes its equal
    share (before, micro-batches of 2 with k = 2 probed all 8), and a subset gives another penalty than all rows."""
    import importlib

    tr = importlib.import_module("looplm.train")  # the module (the package's `looplm.train` is the function)

    shares = []
    real = tr.Objective

    def spy(model, loops, reg, ctx_rows=None):
        shares.append(reg.samples)
        return real(model, loops, reg, ctx_rows)

    monkeypatch.setattr(tr, "Objective", spy)

    def reg_of(samples, micro, name):
        cfg = tiny_config(train=dict(steps=1, eval_every=0, micro_batch_size=micro),
                          reg=dict(kind="jsrr", start_step=0, rho_every=0, samples=samples))
        from .helpers import read_metrics as rows_of

        return rows_of(train(cfg, tmp_path / name, progress=False))[0]["reg"]

    everything = reg_of(0, 2, "all")
    assert reg_of(8, 2, "eight") == pytest.approx(everything, rel=0.05)  # all rows, other probe draws
    four = reg_of(4, 2, "four")
    assert reg_of(4, 8, "four-one") != pytest.approx(everything, rel=1e-6) and four != pytest.approx(everything,
                                                                                                    rel=1e-6)
    assert shares == [0, 2, 1, 4]  # per micro-batch: all, 8·2/8, 4·2/8, 4·8/8



def test_reg_samples_probes_rows_in_their_drawn_order(tmp_path, monkeypatch):
    """With micro-batches, rows are sorted by length only when every row is probed: a micro-batch probes its first
    rows, which after the sort would be its shortest (a biased subset)."""
    from looplm.tasks.base import Batch

    calls = []
    real = Batch.by_length
    monkeypatch.setattr(Batch, "by_length", lambda self: calls.append(1) or real(self))
    for samples in (4, 0):
        calls.clear()
        cfg = tiny_config(train=dict(steps=2, eval_every=0, micro_batch_size=4),
                          reg=dict(kind="jsrr", start_step=0, rho_every=0, samples=samples))
        train(cfg, tmp_path / f"s{samples}", progress=False)
        assert bool(calls) == (samples == 0)


def test_a_new_run_gets_a_new_wandb_run_and_a_resume_its_own(tmp_path, monkeypatch):
    """The wandb run id is drawn for each new run and kept in the run directory for its resumes: a new experiment
    in a reused directory is not appended to the old one's wandb run."""
    wandb = pytest.importorskip("wandb")
    ids = []

    def fake_init(**kw):
        ids.append(kw["id"])
        return type("Run", (), {"log": lambda *a, **k: None, "finish": lambda *a, **k: None})()

    monkeypatch.setattr(wandb, "init", fake_init)

    cfg = tiny_config(train=dict(steps=4, eval_every=0, checkpoint_every=2, logger="wandb"), reg=dict(rho_every=0))
    with pytest.raises(RuntimeError, match="injected crash"):
        train(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 3})
    train(cfg, tmp_path / "r", resume=True, progress=False)
    shutil.rmtree(tmp_path / "r")
    train(cfg, tmp_path / "r", progress=False)
    assert ids[0] == ids[1] != ids[2]


def test_the_logged_rho_is_of_the_map_without_dropout(tmp_path):
    """The training log's ρ is measured with dropout off (one fixed Φ; with it on, every Arnoldi step drew a new
    map), from a model in training mode, which stays in training mode."""
    from contextlib import nullcontext

    from looplm import spectra
    from looplm.model import LoopedTransformer
    from looplm.tasks import make_task

    cfg = tiny_config(model=dict(dropout=0.3))
    torch.manual_seed(0)
    model = LoopedTransformer(cfg.model)
    batch = make_task(cfg).held_out(8)

    def rho(mode: str) -> dict:
        getattr(model, mode)()
        torch.manual_seed(1)  # dropout's stream, were it on
        return spectra.monitor_rho(model, batch, 3, torch.Generator().manual_seed(2), nullcontext(), nullcontext)

    assert rho("train") == rho("eval") and model.training is False
    model.train()
    rho("train")
    assert model.training


def test_a_run_says_which_settings_it_never_reaches(tmp_path, capsys):
    """A STARS preset cut to fewer steps than its reg.start_step trains exactly as with no penalty: the run says
    so, and likewise for a warm-up longer than the run and a curriculum that covers it (whose results record the
    fixed count as the loops training saw)."""
    from looplm.loops import trained_loops

    cfg = tiny_config(reg=dict(kind="jsrr", start_step=50), train=dict(steps=3, warmup_steps=4, eval_every=0),
                      loops=dict(sampler="uniform", num_loops=3, max_loops=6, curriculum_steps=3))
    capsys.readouterr()
    train(cfg, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert "note: reg.start_step=50 is not below the run's 3 steps: the jsrr penalty never applies" in out
    assert "note: train.warmup_steps=4 is more than the run's 3 steps" in out
    assert "note: loops.curriculum_steps=3 covers the run's 3 steps: every step runs loops.num_loops=3" in out
    assert all(r["reg"] is None and r["loops"] == 3 for r in read_metrics(tmp_path / "run"))
    assert trained_loops(cfg) == [3, 3]
    import dataclasses

    longer = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=60))
    assert longer.unreached(60) == [] and trained_loops(longer) == [1, 6]


def test_a_run_names_the_keys_its_sampler_and_penalty_never_read(tmp_path, capsys):
    """`--set loops.max_loops=8` beside the fixed sampler, or a reg.weight with no penalty, trains exactly as
    without it: the run says so (a note, not a refusal: a preset switched to another sampler keeps its keys)."""
    from looplm.config import load_config

    cfg = tiny_config(loops=dict(sampler="fixed", num_loops=2, max_loops=8, mu=2.5),
                      reg=dict(kind="none", weight=0.3), train=dict(steps=1, eval_every=0))
    capsys.readouterr()
    train(cfg, tmp_path / "run", progress=False)
    out = capsys.readouterr().out
    assert "note: loops.max_loops=8 is not read by the fixed sampler (loops.sampler)" in out
    assert "note: loops.mu=2.5 is not read by the fixed sampler" in out
    assert "note: reg.weight=0.3 is not read by reg.kind=none" in out
    # keys the chosen sampler and penalty read, and every shipped preset as it stands, give no note
    assert tiny_config(loops=dict(sampler="lognormal", mu=2.5, max_loops=8),
                       reg=dict(kind="power", power_iters=3, weight=0.3)).unread() == []
    assert load_config("addition-prenorm-stars", ["reg.kind=jsrr", "reg.impl=autograd"]).unread() == []
    from looplm.config_files import preset_names

    assert [n for p in preset_names() for n in load_config(p).unread()] == []
    # keys read only in some setups of a task or model: a char text run's bpe_vocab and test_seed, a deepnorm
    # alpha beside layernorm, an eval_size with no evaluations were recorded in config.yaml as if they applied
    said = load_config("text-fixed", ["data.bpe_vocab=300", "data.test_seed=7"]).unread()
    assert [n.split(" is not read")[0] for n in said] == ["note: data.bpe_vocab=300", "note: data.test_seed=7"]
    said = load_config("addition-prenorm-stars", ["model.deepnorm_alpha=5.0", "train.eval_every=0",
                                                  "train.eval_size=7"]).unread()
    assert [n.split(" is not read")[0] for n in said] == ["note: train.eval_size=7", "note: model.deepnorm_alpha=5.0"]
    assert load_config("jsonl-fixed", ["data.test_path=t.jsonl", "data.test_seed=3"]).unread() == [
        "note: data.test_seed=3 is not read by a jsonl run with data.test_path (its held-out rows are that file's); "
        "it has no effect on this run"]
    assert load_config("text-fixed", ["data.tokenizer=bpe", "data.bpe_vocab=300"]).unread() == []
    assert load_config("ouro-math-stars", ["loops.sampler=fixed"]).unread() == []  # HF defaults are its base
    # chat data: the field names of the record shape data.format does not read were recorded, unused, unsaid
    assert load_config("ouro-math-stars", ["data.format=messages", "data.prompt_field=question"]).unread() == [
        "note: data.prompt_field='question' is not read by data.format=messages; it has no effect on this run"]
    assert load_config("ouro-math-stars", ["data.messages_field=conv"]).unread() == [
        "note: data.messages_field='conv' is not read by data.format=prompt_response; it has no effect on this run"]


def test_results_record_the_loops_training_saw_up_to_their_checkpoint(tmp_path):
    """A checkpoint taken inside a loop curriculum (one of the history, or a run stopped early) ran only
    loops.num_loops, yet its sweep and analysis recorded the sampler's whole range (computed from train.steps):
    they now record the loops seen up to the checkpoint's own step."""
    from looplm.cli import main

    cfg = tiny_config(loops=dict(sampler="uniform", num_loops=3, max_loops=6, curriculum_steps=2),
                      reg=dict(rho_every=0), train=dict(steps=4, eval_every=0, checkpoint_every=1, keep_checkpoints=5))
    run = train(cfg, tmp_path / "run", progress=False)
    assert [r["loops"] for r in read_metrics(run)][:2] == [3, 3]

    def recorded(cmd: str, checkpoint) -> list[int]:
        out = tmp_path / f"{cmd}-{checkpoint.name}"  # analyze: a folder for dynamics.json and its figures
        args = ["--depths", "1:2", "--no-progress", "--out", str(out)]
        args += ["--spectral-n", "0", "--no-plot"] if cmd == "analyze" else []
        assert main([cmd, str(checkpoint), *args]) == 0
        return json.loads((out / "dynamics.json" if cmd == "analyze" else out).read_text())["train_loops"]

    inside = run / "checkpoints" / "step-00000002"
    assert recorded("sweep", inside) == recorded("analyze", inside) == [3, 3]
    assert recorded("sweep", run) == [1, 6]
