"""Round 45 (API, probe n43): the entry points refuse, in one TypeError line, a model class where an instance was
meant, a task or a tuple where a Batch was meant, fit's arguments swapped, and a whole Config for
LoopedTransformer; before, each failed deep inside torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from looplm.dynamics import diagnose, perturbation_recovery
from looplm.evaluate import sweep
from looplm.generate import generate
from looplm.looped import check_looped, run_loop
from looplm.model import LoopedTransformer
from looplm.tasks import make_task
from looplm.train import fit

from .conftest import tiny_config
from .test_protocol import CumulativeMixer

CLASS = r"^model: got the class CumulativeMixer, not a module; pass an instance \(CumulativeMixer\(\.\.\.\)\)$"
NOT_BATCH = r"^batch must be a looplm Batch \(task.held_out\(n\) gives one\), got "


@pytest.fixture(scope="module")
def task():
    return make_task(tiny_config())


def test_a_model_class_is_refused_by_every_entry_point(task):
    """sweep/diagnose/generate were "named_parameters() missing 1 required positional argument: 'self'",
    perturbation_recovery "modules() missing ...", run_loop "'int' object is not subscriptable", and check_looped
    accepted the class (it has the methods)."""
    b = task.held_out(4)
    calls = [lambda: sweep(CumulativeMixer, b, [1, 2]), lambda: diagnose(CumulativeMixer, b, [1, 2]),
             lambda: perturbation_recovery(CumulativeMixer, b, 1, [0.1], [1]),
             lambda: generate(CumulativeMixer, [[3, 4]], 2, 3, 1),
             lambda: run_loop(CumulativeMixer, torch.zeros(1, 2, 24), {}, 2), lambda: check_looped(CumulativeMixer)]
    for call in calls:
        with pytest.raises(TypeError, match=CLASS):
            call()


def test_a_task_or_a_tuple_is_refused_where_a_batch_is_meant(task):
    """A task was "object of type 'AdditionTask' has no len()", a tuple "'tuple' object has no attribute
    'targets'"."""
    model = LoopedTransformer(tiny_config().model)
    b = task.held_out(4)
    for run in (sweep, diagnose):
        with pytest.raises(TypeError, match=NOT_BATCH + r"an AdditionTask$"):
            run(model, task, [1, 2])
        with pytest.raises(TypeError, match=NOT_BATCH + r"a tuple; Batch\(input_ids, targets, mask\) builds one"):
            run(model, (b.input_ids, b.targets, b.mask), [1, 2])
    with pytest.raises(TypeError, match=NOT_BATCH + r"an AdditionTask$"):
        perturbation_recovery(model, task, 1, [0.1], [1])
    assert sweep(model, b, [1]).depths == [1]  # a Batch still runs


def test_fit_checks_cfg_before_out_and_names_swapped_arguments(tmp_path):
    """fit("out", cfg) was "expected str, bytes or os.PathLike object, not Config"."""
    cfg = tiny_config(train=dict(steps=1, eval_every=0))
    with pytest.raises(TypeError, match=r"^cfg must be a looplm Config \(looplm.load_config\(...\)\), got str; the "
                                        r"two are swapped: fit takes \(cfg, out\)$"):
        fit(str(tmp_path / "x"), cfg)
    with pytest.raises(TypeError, match=r"pass an instance \(model=CumulativeMixer\(\.\.\.\)\)$"):
        fit(cfg, tmp_path / "y", model=CumulativeMixer)  # fit's keyword, still said as one
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_looped_transformer_given_a_whole_config_says_pass_cfg_model():
    """It was "'Config' object has no attribute 'vocab_size'"."""
    cfg = tiny_config()
    with pytest.raises(TypeError, match=r"^LoopedTransformer takes a ModelConfig, got Config; pass cfg.model"):
        LoopedTransformer(cfg)
    with pytest.raises(TypeError, match=r"got dict; build one: ModelConfig\(\.\.\.\)$"):
        LoopedTransformer(cfg.to_dict()["model"])
    LoopedTransformer(cfg.model)


def test_analyze_help_says_data_is_in_the_tasks_format():
    """analyze --help said --data was "JSONL with num1/num2/answer rows"; it reads the task's own format (a text
    file for a text run, prompt/answer rows for jsonl), as sweep --help says."""
    from looplm.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "analyze" in a.choices)
    text = " ".join(sub.choices["analyze"].format_help().split())
    assert "num1/num2/answer rows (default" not in text
    assert "--data DATA test problems in the task's format, as sweep --data" in text


def test_a_history_folder_or_a_demo_folder_is_named_as_such(tmp_path):
    """`sweep RUN/checkpoints` (the history, a slip for checkpoint/) and a `looplm demo` --out were "no
    model.safetensors in X or X/checkpoint: not a looplm checkpoint or run directory"."""
    import shutil

    from looplm import checkpoint as ckpt

    run = tmp_path / "run"
    fit(tiny_config(train=dict(steps=2, eval_every=0, checkpoint_every=1, keep_checkpoints=2), reg=dict(rho_every=0)),
        run, progress=False)
    with pytest.raises(ckpt.CheckpointError, match=rf"^{run}/checkpoints is a run's checkpoint history, not a "
                                                   rf"checkpoint: give the run \({run}\) for its latest checkpoint, "
                                                   rf"or one of the saved ones \(newest: {run}/checkpoints/step-"):
        ckpt.resolve(run / "checkpoints")
    dm = tmp_path / "dm"
    shutil.copytree(run, dm / "stage1")
    (dm / "stage2").mkdir()
    with pytest.raises(ckpt.CheckpointError, match=rf"^{dm} is a `looplm demo` folder, not a run: stage 2 has not "
                                                   rf"trained; stage 1's model is {dm}/stage1$"):
        ckpt.resolve(dm)
    shutil.rmtree(dm / "stage2")
    shutil.copytree(run, dm / "stage2")
    with pytest.raises(ckpt.CheckpointError, match=rf"^{dm} is a `looplm demo` folder, not a run: its model is "
                                                   rf"{dm}/stage2 \(stage 1's: {dm}/stage1\)$"):
        ckpt.resolve(dm)
    assert ckpt.resolve(dm / "stage2") == dm / "stage2" / "checkpoint"


def test_plot_of_api_json_names_curves_by_their_inputs_and_shades_nothing_unsaid(tmp_path, monkeypatch, task):
    """JSON written by the API (SweepResult.to_json(), diagnose) has no label: the legend said "run 1", "run 2",
    and the title "shaded: loop counts seen in training" with nothing shaded."""
    import json

    from looplm import plots

    model = LoopedTransformer(tiny_config().model)
    b = task.held_out(4)
    (tmp_path / "apisw").mkdir()
    (tmp_path / "apisw" / "sweep.json").write_text(json.dumps(sweep(model, b, [1, 2]).to_json()))
    (tmp_path / "mine.json").write_text(json.dumps(sweep(model, b, [1, 3]).to_json()))
    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, replace=True, tight=True: figs.append(fig) or Path(out))
    plots.plot_inputs([str(tmp_path / "apisw"), str(tmp_path / "mine.json")], tmp_path / "p.png")
    ax = figs[0].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["apisw (n=4)", "mine (n=4)"]
    assert "shaded" not in ax.get_title()
    figs.clear()
    plots.plot_accuracy([dict(depths=[1, 2], accuracy=[0.5, 1.0], train_loops=[1, 2])], tmp_path / "q.png")
    assert "(shaded: loop counts seen in training)" in figs[0].axes[0].get_title()


def test_models_readme_commands_write_outside_the_repository():
    """`looplm sweep models/addition-stars-external ...` had no --out, so it wrote sweep.json into the
    repository's models/ folder."""
    readme = Path(__file__).resolve().parents[1] / "models" / "README.md"
    writing = [ln for ln in readme.read_text().splitlines() if ln.startswith(("looplm sweep ", "looplm analyze "))]
    assert len(writing) >= 4
    assert all(" --out /tmp/" in ln for ln in writing), [ln for ln in writing if "--out" not in ln]


def test_train_from_a_module_runs_config_yaml_says_its_model_section_is_not_the_runs(tmp_path, capsys):
    """A run trained with fit(model=MyModule) writes a config.yaml whose model section describes a LoopedTransformer
    it never had; `train --config RUN` pointed at that file and `train --config RUN/config.yaml` then trained a
    LoopedTransformer without a word."""
    from looplm.cli import main

    run = fit(tiny_config(train=dict(steps=1, eval_every=0), reg=dict(rho_every=0)), tmp_path / "cm", progress=False,
              model=CumulativeMixer())
    said = ("whose model section is not its model: the run trained its own module, tests.test_protocol."
            "CumulativeMixer, with fit(model=...)")
    capsys.readouterr()
    assert main(["train", "--config", str(run), "--out", str(tmp_path / "a"), "--no-progress"]) == 2
    assert f"a run's settings are its {run}/config.yaml ({said})" in capsys.readouterr().err
    assert main(["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"note: {run}/config.yaml is the config of a run {said}; this trains a LoopedTransformer" in err
    plain = fit(tiny_config(train=dict(steps=1, eval_every=0), reg=dict(rho_every=0)), tmp_path / "lt", progress=False)
    capsys.readouterr()
    assert main(["train", "--config", str(plain / "config.yaml"), "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert "note:" not in capsys.readouterr().err  # a LoopedTransformer run's config.yaml is its model
