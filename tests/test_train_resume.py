"""How a run starts and resumes: a train.init_from source that trained on, a log that ends before the checkpoint,
and the model argument of fit (tests/test_train.py holds the training itself)."""

import shutil

import pytest
import torch

from looplm.train import train

from .conftest import tiny_config
from .test_train import read_metrics


def test_a_resume_goes_on_with_a_note_once_the_run_it_started_from_has_trained_on(tmp_path, monkeypatch, capsys):
    """A run started with train.init_from records that checkpoint's step, weights and absolute path. Once the
    source had trained on, a resume was refused with no way past (the resume never reads the source: it continues
    the run's own checkpoint, which is what a preempted fine-tune needs); and the source was looked up at the path
    as typed, relative to the working directory, so the check ran or not depending on where the resume ran, and a
    deleted source skipped it. Now the resume goes on with a note, from any directory, and a deleted source gets
    one too."""
    from looplm.train import Interrupted

    fast = dict(eval_every=0, checkpoint_every=0)
    monkeypatch.chdir(tmp_path)
    train(tiny_config(train=dict(steps=2, **fast)), tmp_path / "base", progress=False)
    cfg = tiny_config(train=dict(steps=5, init_from="base", **fast))  # relative, as typed
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "b", progress=False, fault={"interrupt_at_step": 1})
    state = torch.load(tmp_path / "b" / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["init_from"]["step"] == 2 and len(state["init_from"]["sha256"]) == 64
    assert state["init_from"]["path"] == str(tmp_path / "base")
    with pytest.raises(Interrupted):  # the source unchanged: the resume goes on, and keeps the record
        train(cfg, tmp_path / "b", resume=True, progress=False, fault={"interrupt_at_step": 2})
    assert "note: train.init_from" not in capsys.readouterr().out
    train(tiny_config(train=dict(steps=3, **fast)), tmp_path / "base", resume=True, progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # "base" is not here: the recorded absolute path is what is checked
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "b", resume=True, progress=False, fault={"interrupt_at_step": 3})
    assert (f"note: train.init_from {tmp_path / 'base'} has changed since this run started from it (step 2 -> 3); "
            "the resume goes on from this run's own checkpoint, which started from the old weights; start a new run "
            "to fine-tune from the new ones") in capsys.readouterr().out
    assert torch.load(tmp_path / "b" / "checkpoint" / "trainer_state.pt", weights_only=True)["init_from"] == \
        state["init_from"]  # the record still names where the run started
    shutil.rmtree(tmp_path / "base")
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert f"note: train.init_from {tmp_path / 'base'} no longer exists" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "b")][-1] == 5


def test_the_log_gap_note_counts_the_final_step_as_due_a_line(tmp_path, capsys):
    """A run always logs its final step: a log cut back from step 25 to 20 (log_every 10), or a finished run copied
    without its log, left steps without lines, yet the resume said nothing (only multiples of log_every were
    counted as due a line)."""
    def cfg(steps: int):
        return tiny_config(reg=dict(rho_every=0), train=dict(steps=steps, eval_every=0, checkpoint_every=0,
                                                             log_every=10))

    train(cfg(25), tmp_path / "g", progress=False)
    log = tmp_path / "g" / "metrics.jsonl"
    assert [r["step"] for r in read_metrics(tmp_path / "g")] == [10, 20, 25]
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    train(cfg(26), tmp_path / "g", resume=True, progress=False)
    assert f"note: {log} ends at step 20, but the checkpoint is at step 25; steps 21-25 have no log lines" \
        in capsys.readouterr().out
    train(cfg(3), tmp_path / "s", progress=False)
    (tmp_path / "s" / "metrics.jsonl").unlink()  # a run copied without its log
    train(cfg(4), tmp_path / "s", resume=True, progress=False)
    assert "steps 1-3 have no log lines" in capsys.readouterr().out


def test_a_resume_says_when_the_log_ends_before_the_checkpoint(tmp_path, capsys):
    """A run copied without its metrics.jsonl, or with a log cut short, resumed and left a silent hole in the
    record of the run."""
    from looplm.train import Interrupted

    cfg = tiny_config(train=dict(steps=6, eval_every=0, checkpoint_every=0))
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "r", progress=False, fault={"interrupt_at_step": 4})
    log = tmp_path / "r" / "metrics.jsonl"
    full = log.read_text()
    log.write_text("".join(full.splitlines(keepends=True)[:2]))
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "r", resume=True, progress=False, fault={"interrupt_at_step": 5})
    assert f"note: {log} ends at step 2, but the checkpoint is at step 4; steps 3-4 have no log lines" \
        in capsys.readouterr().out
    log.unlink()
    train(cfg, tmp_path / "r", resume=True, progress=False)
    assert f"note: {log} is missing, but the checkpoint is at step 5; steps 1-5 have no log lines" \
        in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "r")] == [6]
    train(tiny_config(train=dict(steps=8, eval_every=0, log_every=3)), tmp_path / "r", resume=True, progress=False)
    assert "have no log lines" not in capsys.readouterr().out  # steps 7-8 were not due a record before step 9


def test_fit_refuses_a_class_or_a_non_module_and_names_the_tasks_sizes(tmp_path):
    """model=MyLooped (the class) or model=object() gave torch's AttributeError from model.to(device); a module
    whose embedding or position table is smaller than the task's gave a bare IndexError at the first step."""
    from .test_protocol import CumulativeMixer

    cfg = tiny_config(train=dict(steps=2, eval_every=0))
    with pytest.raises(TypeError, match=r"got the class CumulativeMixer, not a module; pass an instance "
                                        r"\(model=CumulativeMixer\(...\)\)"):
        train(cfg, tmp_path / "a", progress=False, model=CumulativeMixer)
    with pytest.raises(TypeError, match="object is not a looped model: it lacks embed"):
        train(cfg, tmp_path / "a", progress=False, model=object())
    assert not (tmp_path / "a").exists()
    for small in (CumulativeMixer(vocab=5), CumulativeMixer(max_len=4)):
        with pytest.raises(ValueError, match=r"model: the module failed on the task's batch \(IndexError: .*\): the "
                                             r"task's vocabulary has \d+ tokens, this batch ids up to \d+ in \d+ "
                                             "positions; a module whose embedding or position table is smaller"):
            train(cfg, tmp_path / "a", progress=False, model=small)
        assert not (tmp_path / "a").exists()


def test_a_python_caller_is_told_resume_true_not_the_flag(tmp_path):
    """fit's refusal of a run directory said "pass --resume", a flag of the command line; from Python it is
    resume=True (the command line still says --resume)."""
    from looplm.errors import UserError
    from looplm.train import Interrupted

    cfg = tiny_config(train=dict(steps=4, eval_every=0))
    with pytest.raises(RuntimeError, match="injected crash"):  # before any checkpoint: config.yaml and a log
        train(cfg, tmp_path / "r", progress=False, fault={"crash_at_step": 1})
    with pytest.raises(UserError, match=r"has no checkpoint yet \(config.yaml, metrics.jsonl\); pass resume=True to "
                                        "start it again"):
        train(cfg, tmp_path / "r", progress=False)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "r", resume=True, progress=False, fault={"interrupt_at_step": 2})
    with pytest.raises(UserError, match="already holds a checkpoint; pass resume=True to continue it"):
        train(cfg, tmp_path / "r", progress=False)


def test_fit_refuses_a_cfg_that_is_no_config(tmp_path):
    """fit(cfg.to_dict(), out) was Python's "'dict' object has no attribute 'to_dict'"."""
    from looplm import fit

    with pytest.raises(TypeError, match=r"^cfg must be a looplm Config \(looplm.load_config\(...\)\), got dict"):
        fit(tiny_config().to_dict(), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def _files(d) -> dict:
    return {str(p): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_run_that_never_updated_blames_its_start_and_says_what_it_kept(tmp_path):
    """A run none of whose steps applied an update said "Lower train.lr" (every step ran on the starting weights, so
    the rate was never the cause) and "nothing was saved", though it left config.yaml and metrics.jsonl, so the
    same command, fixed, was refused; and --resume, which the refusal offered, was refused too (its skipped records
    read as a log past a lost checkpoint). Now it names the weights it started from, says what is kept, and a
    resume starts it again; a resume that never updates names its checkpoint and keeps it as it was."""
    from looplm.train import TrainingDiverged

    out = tmp_path / "r"
    cfg = tiny_config(reg=dict(rho_every=0), train=dict(steps=3, eval_every=0, checkpoint_every=1))
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, out, progress=False, fault={"nan_at_steps": [0, 1, 2]})
    assert str(e.value) == (
        "no step of this run applied an update: all 3 were non-finite (max_bad_steps=5), from the first on, with "
        "freshly initialized weights. The learning rate is not the cause (every step ran on those same weights): "
        f"check them, the data and the model settings; no checkpoint was written, but {out} "
        "keeps config.yaml, metrics.jsonl: pass resume=True to start it again (with other settings), or choose "
        "another out")
    assert {p.name for p in out.iterdir()} - {".looplm.lock"} == {"config.yaml", "metrics.jsonl"}
    train(cfg, out, resume=True, progress=False)  # as the message says
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3] and not any("skipped" in r for r in read_metrics(out))
    kept = _files(out / "checkpoint")
    said = r"^no step of this run applied an update: all 5 were non-finite \(max_bad_steps=5\), from the first on, " \
        r"with the weights of its checkpoint at step 3\. The learning rate is not the cause .*; that checkpoint is " \
        "kept as it was"
    with pytest.raises(TrainingDiverged, match=said):
        train(tiny_config(reg=dict(rho_every=0), train=dict(steps=9, eval_every=0, checkpoint_every=1)), out,
              resume=True, progress=False, fault={"nan_at_steps": list(range(3, 9))})
    assert _files(out / "checkpoint") == kept


def test_a_resume_of_non_finite_weights_is_refused_and_changes_nothing(tmp_path):
    """train.init_from of NaN weights is refused by name; a resume of a checkpoint holding them went on, appended a
    null record per step to the log, and stopped blaming train.lr. It is refused the same way, before anything is
    written."""
    from looplm.checkpoint import CheckpointError

    from .bad_input_cases_paths import _embedding

    out = tmp_path / "r"
    train(tiny_config(train=dict(steps=2, eval_every=0)), out, progress=False)
    _embedding("nan")(tmp_path, out)  # the weights edited, and their manifest with them
    before = _files(tmp_path)
    with pytest.raises(CheckpointError, match=r"^resume=True: the checkpoint .*r/checkpoint holds weights that are not "
                                              r"finite \(tok_emb.weight\); move it aside to continue from an earlier "
                                              "checkpoint"):
        train(tiny_config(train=dict(steps=4, eval_every=0)), out, resume=True, progress=False)
    assert _files(tmp_path) == before


def test_the_api_refusals_name_fits_arguments_not_the_cli_flags(tmp_path):
    """fit's refusals told a Python caller to pass --resume or to choose another --out (the resume refusal for
    another module can only be reached from Python): they name resume=True and out, as resume_flag() did in some."""
    from looplm.config import ConfigError
    from looplm.errors import UserError
    from looplm.train import Interrupted

    fast = dict(steps=2, eval_every=0, checkpoint_every=1)
    out = tmp_path / "r"
    train(tiny_config(train=fast), out, progress=False)
    with pytest.raises(UserError, match=r"already holds a checkpoint; pass resume=True to continue it, or choose "
                                        r"another out$"):
        train(tiny_config(train=fast), out, progress=False)
    with pytest.raises(ConfigError, match=r"^resume=True would change the run in .*, or choose another out$"):
        train(tiny_config(train=dict(fast, seed=5)), out, resume=True, progress=False)
    shutil.rmtree(out / "checkpoint")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    with pytest.raises(UserError, match=r"holds no checkpoint now \(.* is missing\); resume=True would start the run "
                                        r"over and replace its log\. Put the checkpoint back, or choose another out$"):
        train(tiny_config(train=fast), out, resume=True, progress=False)
    assert str(Interrupted("interrupted: saved a checkpoint")).endswith("; continue with resume=True")


def test_fit_refuses_an_out_under_a_file_or_too_long_naming_out_not_the_flag(tmp_path):
    """Two of fit's refusals (an out under a file, a name past the file system's limit) still said --out to a
    Python caller: outputs.check_reachable and check_name_length wrote the flag literally."""
    from looplm.errors import UserError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"afile is a file, not a directory; choose another out$"):
        train(tiny_config(), tmp_path / "afile" / "run", progress=False)
    with pytest.raises(UserError, match=r"^out .*: its name is 250 bytes"):
        train(tiny_config(), tmp_path / ("x" * 250), progress=False)


def test_fit_takes_resume_and_progress_as_true_or_false_only(tmp_path):
    """fit(cfg, out, resume="no") resumed the run ("no" is truthy) and progress="no" drew the bar."""
    out = tmp_path / "r"
    for kw in (dict(resume="no"), dict(progress="no"), dict(resume=1)):
        with pytest.raises(TypeError, match=rf"^{next(iter(kw))} must be True or False, got "):
            train(tiny_config(train=dict(steps=1, eval_every=0)), out, **kw)
    assert not out.exists()


def test_a_metrics_record_whose_step_is_a_bool_is_refused(tmp_path):
    """check_metrics took `{"step": true}` for a record with an integer step (isinstance(True, int)); 2.5 and 1e0
    were refused. A resume would have kept it in the log."""
    from looplm.errors import UserError
    from looplm.rundir import check_metrics

    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": true}\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics\.jsonl:2: not a looplm metrics record \(a JSON object with an "
                                        r"integer step\)$"):
        check_metrics(f)
    f.write_text('{"step": 1}\n{"step": 3}\n')
    check_metrics(f)
