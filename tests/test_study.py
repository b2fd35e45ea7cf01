import json
import re

import pytest

from looplm.checkpoint import saved_step
from looplm.experiments import addition as study
from looplm.train import train

TINY = ["model.d_model=32", "model.d_ff=64", "train.steps=3", "train.batch_size=8", "train.eval_every=0",
        "data.test_size=16", "loops.max_loops=4", "reg.start_step=1", "reg.rho_every=0"]


def test_study_runs_resumes_and_reports(tmp_path, monkeypatch):
    grid = [study.RunSpec("fixed4-pre-layernorm", "baseline", "addition-prenorm-fixed", TINY, n_eval=16),
            study.RunSpec("random-lognormal", "random loops", "addition-prenorm-random", TINY, n_eval=16),
            study.RunSpec("stars", "STARS", "addition-prenorm-stars", TINY, n_eval=16),
            study.RunSpec("stars-s1", "STARS", "addition-prenorm-stars", TINY, seed=1, n_eval=16),
            study.RunSpec("ext-curriculum-stars", "external norm", "addition-prenorm-stars",
                          [*TINY, "model.norm_placement=post_sandwich"], n_eval=16)]
    monkeypatch.setattr(study, "DEPTHS", [1, 2, 4, 16, 100, 1000])
    monkeypatch.setattr(study, "QUICK_N", 12)
    monkeypatch.setattr(study, "DYN_DEPTHS", [1, 2, 4, 8])
    # One run stopped after 2 of its 3 steps (a session limit): the study resumes it and says so.
    train(grid[0].config(["train.steps=2"]), tmp_path / "runs" / grid[0].name, progress=False)
    report = study.run_study(tmp_path, grid, quick=True, progress=False)
    text = report.read_text()
    for name in ("fixed4-pre-layernorm", "stars", "stars-s1", "Seeds (mean ± std)", "figures/accuracy.png",
                 "kept@100", "figures/dynamics.png", "dynamics-stars.png", "Isolating the regularizer",
                 "STARS keeps 100% exact match from 4 to 100 loops"):
        assert name in text
    res = json.loads((tmp_path / "runs" / "stars" / "result.json").read_text())
    assert res["depths"] == [1, 2, 4, 16, 100, 1000] and res["n"] == 12 and len(res["state_norm"]) == 6
    dyn = json.loads((tmp_path / "runs" / "stars" / "dynamics.json").read_text())
    assert dyn["depths"] == [1, 2, 4, 8] and dyn["spectral"]["depths"] == [1, 2, 4, 8]
    assert not (tmp_path / "runs" / "stars-s1" / "dynamics.json").exists()  # internal norm: seed 0 only
    # Every external-norm run is listed with its recipe and its deep dynamics (read from dynamics.json).
    ext_row = next(x for x in text.splitlines() if x.startswith("| ext-curriculum-stars | addition-prenorm-stars "))
    assert "model.norm_placement=post_sandwich" in ext_row and "conv.)" in ext_row
    assert "## External norm: every recipe tried" in text
    assert "STARS (external norm, curriculum) states settle" in text and "ρ@1000" in text
    # The claims table quotes the measured numbers: a tiny 3-step model fails the 99% target.
    assert "| **not met** |" in text
    # Neither twin learned in 3 steps, so the pair is tabulated but gives no verdict on JSRR.
    assert "JSRR adds stability" not in text
    for png in ("accuracy", "dynamics", "dynamics-stars"):
        assert (tmp_path / "figures" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert res["rho_at_num_loops"] > 0 and res["config"]["reg"]["kind"] == "jsrr"
    assert res["resumed_from_step"] is None
    resumed = json.loads((tmp_path / "runs" / "fixed4-pre-layernorm" / "result.json").read_text())
    assert resumed["resumed_from_step"] == 2 and resumed["config"]["train"]["steps"] == 3
    assert saved_step(tmp_path / "runs" / "fixed4-pre-layernorm" / "checkpoint") == 3
    assert f"{resumed['train_seconds']} (from step 2) |" in text
    # A second call retrains nothing: results are read back.
    mtime = (tmp_path / "runs" / "stars" / "result.json").stat().st_mtime_ns
    study.run_study(tmp_path, grid, quick=True, progress=False)
    assert (tmp_path / "runs" / "stars" / "result.json").stat().st_mtime_ns == mtime
    # The full grid asks for 16 problems: the quick result is swept again from its checkpoint, not retrained.
    log = (tmp_path / "runs" / "stars" / "metrics.jsonl").read_bytes()
    study.run_study(tmp_path, grid, only=["stars"], progress=False)
    again = json.loads((tmp_path / "runs" / "stars" / "result.json").read_text())
    assert again["n"] == 16 and again["train_seconds"] == res["train_seconds"]
    assert (tmp_path / "runs" / "stars" / "metrics.jsonl").read_bytes() == log
    assert json.loads((tmp_path / "runs" / "stars-s1" / "result.json").read_text())["n"] == 12  # not asked for


def test_merged_overrides_keep_the_last_value_per_key():
    assert study.merged(["train.lr=3e-4", "model.injection=add", "train.lr=1e-3"]) == [
        "train.lr=1e-3", "model.injection=add"]
    assert study.merged([]) == []


def test_full_grid_covers_the_issue():
    names = {s.name for s in study.full_grid()}
    assert sum(n.startswith("fixed4-") and "-s" not in n[-3:] for n in names) >= 8
    for n in ("random-lognormal", "random-poisson", "random-uniform", "prelude-coda", "l2-residual", "stars",
              "stars-lambda0.01", "stars-lambda0.3", "stars-vjp-release", "stars-at-random", "6digit-stars",
              "6digit-random", "stars-s1", "stars-s2"):
        assert n in names
    seen: set[str] = set()
    for s in study.full_grid():
        s.config([])  # every spec is a valid config
        # A fine-tuning run starts from a run listed before it, so the whole grid runs in order.
        assert not s.init_from or s.init_from in seen, s.name
        seen.add(s.name)
    assert len(seen) == len(study.full_grid())  # names are unique: each is a run directory


def test_recipe_rows_report_the_seed_row_and_the_perturbation_table(tmp_path, monkeypatch):
    """The shipped two-stage recipe as study rows: stage 1, then stage 2 with and without JSRR from it; the report
    judges the recipe's seeds and compares the twins after a disturbed state."""
    monkeypatch.setattr(study, "DEPTHS", [1, 2, 4, 16, 100, 1000])
    monkeypatch.setattr(study, "DYN_DEPTHS", [1, 2, 4, 8])
    monkeypatch.setattr(study, "PERTURB_EPS", [0.1, 1.0])
    monkeypatch.setattr(study, "PERTURB_KS", [1, 3])
    monkeypatch.setattr(study, "PERTURB_N", 8)
    stage1 = [t for t in TINY if not t.startswith(("reg.", "loops."))] + ["train.stop_at_acc=0", "loops.num_loops=2"]
    grid = [study.RunSpec("recipe-fixed8-s0", "recipe", "addition-fixed8", stage1, n_eval=16),
            study.RunSpec("recipe-stars-s0", "recipe", "addition-stars", TINY, n_eval=16, init_from="recipe-fixed8-s0"),
            study.RunSpec("recipe-random-s0", "recipe", "addition-stars", [*TINY, "reg.kind=none"], n_eval=16,
                          init_from="recipe-fixed8-s0")]
    text = study.run_study(tmp_path, grid, progress=False).read_text()
    assert "STARS (the shipped recipe: addition-fixed8, then addition-stars) keeps ≥ 99% from 4 to 1000" in text
    assert "## Robustness: recovery from a disturbed state" in text
    pert = json.loads((tmp_path / "runs" / "recipe-stars-s0" / "perturbation.json").read_text())
    assert pert["noise"]["ks"] == [1, 3] and [r["eps"] for r in pert["noise"]["rows"]] == [0.1, 1.0]
    assert pert["swap"]["n"] == 8 and len(pert["swap"]["rows"]) == 1
    # The table quotes both twins' figures, cell by cell, from those files.
    twin = json.loads((tmp_path / "runs" / "recipe-random-s0" / "perturbation.json").read_text())
    row = next(x for x in text.splitlines() if x.startswith("| noise ε = 1 |"))
    a, b = pert["noise"]["rows"][1]["accuracy"][0], twin["noise"]["rows"][1]["accuracy"][0]
    assert f"| {a:.3f} / {b:.3f} |" in row
    assert not (tmp_path / "runs" / "recipe-fixed8-s0" / "perturbation.json").exists()  # stage 1 is not compared


def test_parallel_study_waits_for_each_base_run(tmp_path):
    """--jobs 2: each run in its own process, a fine-tune only after the run it starts from has finished."""
    stage1 = [t for t in TINY if not t.startswith(("reg.", "loops."))] + ["train.stop_at_acc=0", "loops.num_loops=2"]
    grid = [study.RunSpec("recipe-fixed8-s0", "recipe", "addition-fixed8", stage1, n_eval=8),
            study.RunSpec("recipe-stars-s0", "recipe", "addition-stars", TINY, n_eval=8, init_from="recipe-fixed8-s0"),
            study.RunSpec("recipe-fixed8-s1", "recipe", "addition-fixed8", stage1, seed=1, n_eval=8)]
    results = study._run_parallel(grid, tmp_path, [8, 8, 8], jobs=2)
    assert [r["name"] for r in results] == [s.name for s in grid] and all(r["n"] == 8 for r in results)
    base = tmp_path / "runs" / "recipe-fixed8-s0"
    cfg = json.loads((tmp_path / "runs" / "recipe-stars-s0" / "result.json").read_text())["config"]
    assert cfg["train"]["init_from"] == str(base)
    # started from the base's finished weights: its result was written before the fine-tune's first record
    ft = tmp_path / "runs" / "recipe-stars-s0" / "config.yaml"
    assert (base / "result.json").stat().st_mtime <= ft.stat().st_mtime


@pytest.mark.parametrize("sig", ["INT", "TERM"])
def test_ctrl_c_stops_a_parallel_study_with_one_line(tmp_path, sig):
    """Ctrl-C or SIGTERM to the whole process group (a terminal, a scheduler) during `study --jobs 2`: the
    children save and stop, and the study exits 130 / 143 with one line, no traceback and no hang."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "study"
    argv = [sys.executable, "-m", "looplm", "study", "addition", "--out", str(out), "--jobs", "2", "--no-progress",
            "--only", "recipe-fixed8-s0", "recipe-fixed8-s1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not all((out / "runs" / n / "metrics.jsonl").exists()
                                             for n in ("recipe-fixed8-s0", "recipe-fixed8-s1")):
        time.sleep(0.5)
    os.killpg(proc.pid, getattr(signal, f"SIG{sig}"))
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == (130 if sig == "INT" else 143), err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error: " in ln]
    what = "interrupted" if sig == "INT" else "terminated (SIGTERM)"
    assert len(lines) == 1 and lines[0].startswith(f"error: {what}: 2 run(s) stopped: recipe-fixed8-s0 ("), err
    assert "saved a checkpoint at step" in lines[0]
    # the study's own way on, not --resume (Interrupted's default hint, an option `looplm study` has not)
    assert lines[0].endswith("; the same command resumes the study") and "--resume" not in lines[0]
    for n in ("recipe-fixed8-s0", "recipe-fixed8-s1"):  # each child saved where it stopped
        assert saved_step(out / "runs" / n / "checkpoint") is not None


def test_a_fine_tune_without_its_base_is_refused_before_anything_is_written(tmp_path):
    from looplm.errors import UserError

    grid = [study.RunSpec("recipe-stars-s0", "recipe", "addition-stars", TINY, n_eval=8, init_from="recipe-fixed8-s0")]
    with pytest.raises(UserError, match="starts from run recipe-fixed8-s0, which has not finished"):
        study.run_study(tmp_path / "st", grid, progress=False)
    assert not (tmp_path / "st").exists()



def test_an_interrupted_study_says_to_rerun_the_study(tmp_path, monkeypatch, capsys):
    """A study continues by its own command (it resumes every unfinished run), not by `--resume`, which `study`
    does not take: the interrupt line says so."""
    import importlib

    from looplm.cli import main

    tr = importlib.import_module("looplm.train")  # the module (the package's `looplm.train` is the function)

    def interrupted(cfg, out, **kw):
        raise tr.Interrupted(f"interrupted: saved a checkpoint at step 3 in {out}/checkpoint", 130)

    monkeypatch.setattr(tr, "fit", interrupted)
    assert main(["study", "addition", "--quick", "--out", str(tmp_path / "s"), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith("; run the same `looplm study` command again to continue") and "--resume" not in err


def test_jobs_above_the_cpu_cores_are_refused_before_anything_starts(tmp_path, monkeypatch, capsys):
    """`study addition --jobs 99999999999999999999` started every ready run of the grid at once (48 processes on a
    2-core machine, each checking its memory alone): jobs above the CPU cores are refused, with the range."""
    from looplm.cli import main
    from looplm.errors import UserError

    def started(*a, **kw):
        raise AssertionError("the study started its runs")

    monkeypatch.setattr(study, "_run_parallel", started)
    monkeypatch.setattr(study, "_run_one", started)
    grid = [study.RunSpec("recipe-fixed8-s0", "recipe", "addition-fixed8", TINY, n_eval=8)]
    with pytest.raises(UserError, match=r"^jobs must be from 1 up to this machine's \d+ CPU cores \(each run takes "
                                        r"one\), got 100000$"):
        study.run_study(tmp_path / "st", grid, jobs=100_000, progress=False)
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match=r"^jobs must be an integer >= 1"):
            study.run_study(tmp_path / "st", grid, jobs=bad, progress=False)
    assert main(["study", "addition", "--out", str(tmp_path / "st"), "--jobs", "99999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: --jobs must be from 1 up to this machine's \d+ CPU cores \(each run takes one\), got "
                        r"99999999999999999999\n", err), err
    assert not (tmp_path / "st").exists()


@pytest.mark.parametrize("text,says", [
    ("{}", r"is not a result this study can read \(it lacks name, group, preset, overrides, \.\.\.\)"),
    ("[]", "holds a JSON list, not the object the study wrote there"),
    ('{"n": 100000}', r"it lacks name, group"),
    ("{", r"is not valid JSON \(Expecting property name"),
    ("READ", r"it is the result of run 'stars', not of 'random-lognormal'"),  # another run's, copied over
])
def test_a_damaged_result_is_refused_naming_the_file_and_the_way_out(tmp_path, text, says):
    """A study resumes by reading each runs/<name>/result.json: one torn by a kill (it was not written whole), edited
    by hand or from another version gave a traceback (KeyError 'n', 'name'; list indices) in every later study call
    in the folder, or a JSON error that named no file. One line now names the file and says what to do."""
    from looplm.errors import UserError

    f = tmp_path / "runs" / "random-lognormal" / "result.json"
    f.parent.mkdir(parents=True)
    good = _good_result("stars")
    f.write_text(json.dumps(good) if text == "READ" else text)
    grid = [study.RunSpec("random-lognormal", "random loops", "addition-prenorm-random", TINY, n_eval=8)]
    with pytest.raises(UserError, match=rf"^{re.escape(str(f))} .*{says}.*; delete it and run the same command again: "
                                        "that run is evaluated again from its checkpoint"):
        study.run_study(tmp_path, grid, progress=False)
    grid = [study.RunSpec("stars", "STARS", "addition-prenorm-stars", TINY, n_eval=8)]
    (tmp_path / "runs" / "stars" / "result.json").parent.mkdir()
    (tmp_path / "runs" / "stars" / "result.json").write_text(json.dumps({**good, "n": 8}))
    with pytest.raises(UserError, match=rf"^{re.escape(str(f))} "):  # read for the report too, --only or not
        study.run_study(tmp_path, grid, only=["stars"], progress=False)
    dyn = tmp_path / "runs" / "stars" / "dynamics.json"
    dyn.write_text("{")
    with pytest.raises(UserError, match=rf"^{re.escape(str(dyn))} is not valid JSON .*; delete it and run the same "
                                        "command again to compute it again$"):
        study.run_dynamics(tmp_path, "stars")


def test_a_resweep_reads_the_log_as_a_resume_does_and_writes_its_result_whole(tmp_path, monkeypatch):
    """A result swept on fewer problems than asked is swept again from its checkpoint: a blank line in metrics.jsonl
    (which `train --resume` accepts) ended it after the whole sweep with a JSON error naming no file, and the result
    was written in place, so a failure mid-write (a kill, a full disk) left a torn result.json behind."""
    import pathlib

    from looplm.errors import UserError

    monkeypatch.setattr(study, "DEPTHS", [1, 2, 4, 16, 100, 1000])
    monkeypatch.setattr(study, "DYN_DEPTHS", [1, 2, 4, 8])
    grid = [study.RunSpec("stars", "STARS", "addition-prenorm-stars", TINY, n_eval=8)]
    study.run_study(tmp_path, grid, progress=False)
    run = tmp_path / "runs" / "stars"
    res = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**res, "n": 4}))  # as if swept on 4 problems
    with (run / "metrics.jsonl").open("a") as f:
        f.write("\n\n")
    write_text = pathlib.Path.write_text

    def torn(self, text, *a, **kw):  # a full disk half-way through the result
        if "result" in self.name:
            write_text(self, text[:len(text) // 2], *a, **kw)
            raise OSError(28, "No space left on device")
        return write_text(self, text, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", torn)
    with pytest.raises(UserError, match=r"^cannot write .*result\.json: No space left on device$"):
        study.run_study(tmp_path, grid, progress=False)
    assert json.loads((run / "result.json").read_text())["n"] == 4  # the earlier result, whole
    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    study.run_study(tmp_path, grid, progress=False)
    again = json.loads((run / "result.json").read_text())
    assert again["n"] == 8 and again["final_ce"] == res["final_ce"]
    assert [p.name for p in run.iterdir() if "tmp" in p.name] == []


def test_the_cores_a_study_may_use_are_said_as_many_as_there_are(tmp_path, monkeypatch):
    """`taskset -c 0 looplm study addition --jobs 2` was told "this machine's 1 CPU cores": a share of the machine,
    and one core, not "cores"."""
    import os

    from looplm.errors import UserError

    grid = [study.RunSpec("recipe-fixed8-s0", "recipe", "addition-fixed8", TINY, n_eval=8)]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    with pytest.raises(UserError, match=r"^jobs must be from 1 up to the 1 CPU core this process may run on \(of the "
                                        r"machine's 16\) \(each run takes one\), got 2$"):
        study.run_study(tmp_path / "st", grid, jobs=2, progress=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    with pytest.raises(UserError, match=r"^jobs must be from 1 up to this machine's 1 CPU core \(each run"):
        study.run_study(tmp_path / "st", grid, jobs=2, progress=False)


def _good_result(name: str) -> dict:
    from looplm import load_config

    return {"name": name, "group": "g", "preset": "addition-prenorm-stars", "overrides": [], "seed": 0,
            "loops": "x", "train_loops": [1, 4], "n": 8, "depths": list(study.DEPTHS),
            "accuracy": [0.5] * len(study.DEPTHS), "state_norm": [1.0] * len(study.DEPTHS), "rho_at_num_loops": 0.5,
            "train_seconds": 1.0, "sweep_seconds": 1.0, "config": load_config("addition-prenorm-stars").to_dict()}


@pytest.mark.parametrize("change,says", [
    ({"config": {"model": {}, "train": {}}}, r"its config lacks model\.d_model, model\.n_heads"),
    ({"accuracy": ["a"] * 10}, "its accuracy is not one exact-match fraction per depth"),
    ({"accuracy": [None] * 10}, "its accuracy is not one exact-match fraction per depth"),
    ({"depths": [1], "accuracy": [0.5], "state_norm": [1.0]}, r"its depths are not the study's \[1, 2, 4"),
    ({"depths": [True, *study.DEPTHS[1:]]}, "its depths are not the study's"),
    ({"rho_at_num_loops": "x"}, "its rho_at_num_loops is 'x', not a number"),
    ({"state_norm": [None] * 10}, "its state_norm is not one number per depth"),
    ({"seed": "0"}, "its group, preset, loops or seed"),
])
def test_a_result_whose_values_the_report_cannot_read_is_refused(tmp_path, change, says):
    """read_result checked result.json's keys but not their values: a config without d_model or norm_placement,
    accuracy as strings or nulls, or missing depths passed, then the report failed with a KeyError/TypeError
    traceback (or `min() arg is an empty sequence`, naming no file). Each is one line naming the file now."""
    from looplm.errors import UserError

    f = tmp_path / "runs" / "stars" / "result.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(_good_result("stars")))
    assert study.read_result(f)["name"] == "stars"
    f.write_text(json.dumps({**_good_result("stars"), **change}))
    with pytest.raises(UserError, match=rf"^{re.escape(str(f))} is not a result this study can read \(.*{says}.*\); "
                                        "delete it and run the same command again"):
        study.read_result(f)


@pytest.mark.parametrize("text", ["{}", '{"depths": 5}', '{"depths": [1], "accuracy": [0.5]}'])
def test_a_dynamics_json_the_report_cannot_read_is_refused(tmp_path, text):
    """dynamics.json was only checked to be an object: `{}` gave KeyError 'depths' in the report, `{"depths": 5}`
    a TypeError. It gets `plot`'s check of a dynamics.json plus the spectral entries the claims table reads."""
    from looplm.errors import UserError
    from looplm.experiments.addition_report import write_report

    f = tmp_path / "runs" / "stars" / "dynamics.json"
    f.parent.mkdir(parents=True)
    f.write_text(text)
    with pytest.raises(UserError, match=rf"^{re.escape(str(f))}.*; delete it and run the same command again to "
                                        "compute it again$"):
        study.run_dynamics(tmp_path, "stars")
    with pytest.raises(UserError, match=rf"^{re.escape(str(f))}"):
        write_report(tmp_path, [_good_result("stars")], quick=True)


def test_a_quick_report_beside_runs_of_the_full_grid_counts_its_own_grid(tmp_path):
    """A --quick report in a folder that also held a full-grid run said "1 of the grid's 4 runs" (the quick grid
    has 3): the folder's other runs were counted as the grid's."""
    from looplm.experiments.addition import quick_grid
    from looplm.experiments.addition_report import write_report

    grid = [s.name for s in quick_grid()]
    results = [_good_result(grid[0]), _good_result("recipe-fixed8-s0")]  # the second is no run of the quick grid
    write_report(tmp_path, results, quick=True, missing=grid[1:], grid_size=len(grid))
    assert f"Not run yet ({len(grid) - 1} of the grid's {len(grid)} runs)" in (tmp_path / "report.md").read_text()
