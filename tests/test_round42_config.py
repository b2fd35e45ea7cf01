"""Round 42, config and resume: an explicit YAML tag (`!!int`, `!!float`, `!!bool`) reads only YAML 1.2's forms
and a bad value is a ConfigError naming the key, file and line; a URL given as a data path is refused as a URL;
a complete run resumed with another train.init_from (or other settings) says they are not used; resume notes
call an empty metrics.jsonl empty and another run's result another run's; a random sampler's run whose
loops.num_loops (its evaluation depth) lies outside the sampler's range gets a note."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from looplm import fit, load_config
from looplm.config import ConfigError
from looplm.loops import bound_notes
from looplm.records import missing_data
from looplm.rundir import log_gap

TINY = {"model.d_model": 32, "model.d_ff": 64, "model.n_heads": 2, "train.batch_size": 8, "train.eval_every": 0,
        "data.test_size": 16, "loops.max_loops": 4, "model.max_seq_len": 16, "reg.rho_every": 0}


def add_cfg(steps: int, **more) -> object:
    sets = {**TINY, "train.steps": steps, **more}
    return load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in sets.items()])


@pytest.mark.parametrize("value", ["!!int 1:30", "!!int 0b11", "!<tag:yaml.org,2002:int> 1_000", "!!int 3.0"])
def test_an_explicit_int_tag_reads_only_yaml_12_integers(value):
    """`!!int 1:30` was Python's "invalid literal for int()" with no key; `!<tag:...:int> 1_000` read 1000."""
    with pytest.raises(ConfigError, match=r"train\.steps.*not a YAML 1\.2 int"):
        load_config("addition-prenorm-stars", [f"train.steps={value}"])


@pytest.mark.parametrize("key, value", [("train.lr", "!!float 1:30"), ("train.lr", "!!float 1_0.5"),
                                        ("train.lr", "!!float 0x10"), ("loops.checkpoint_loops", "!!bool yes")])
def test_an_explicit_float_or_bool_tag_has_no_yaml_11_forms(key, value):
    """`!!float 1:30` was the sexagesimal 90.0: that run trained at lr 90."""
    with pytest.raises(ConfigError, match="not a YAML 1.2"):
        load_config("addition-prenorm-stars", [f"{key}={value}"])


def test_explicit_tags_on_yaml_12_values_still_read(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("train:\n  lr: !!float 3\n  steps: !!int 0x10\n  eval_every: !<tag:yaml.org,2002:int> 4\n")
    cfg = load_config(str(f))
    assert (cfg.train.lr, cfg.train.steps, cfg.train.eval_every) == (3.0, 16, 4)


def test_a_bad_tagged_value_in_a_file_names_the_file_line_and_key(tmp_path):
    """load_config raised a plain ValueError, and the CLI said only "invalid literal for int()"."""
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  steps: !!int 0b11\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line 2: train\.steps: !!int '0b11'"):
        load_config(str(f))
    r = subprocess.run([sys.executable, "-m", "looplm", "train", "--config", str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "line 2: train.steps" in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key", ["data.path", "data.test_path"])
def test_a_url_as_a_data_path_is_refused_as_a_url(key):
    """`data.path=file:///tmp/x/d.jsonl` was "data file file:/tmp/x/d.jsonl does not exist in ...": the //
    collapsed, and nothing said that URLs are not read."""
    sets = {"data.task": "jsonl", "data.path": "d.jsonl", key: "file:///tmp/x/d.jsonl"}
    with pytest.raises(ConfigError, match=rf"{key}: file:///tmp/x/d.jsonl is a URL; looplm reads local files"):
        load_config("addition-prenorm-stars", [f"{k}={v}" for k, v in sets.items()])


def test_a_data_file_path_that_was_a_url_says_so():
    """sweep --data https://host/d.jsonl: the path reaches the reader as a Path (https:/host/d.jsonl)."""
    assert "looks like a URL (https://...): looplm reads local files" in missing_data(Path("https://h/d.jsonl"))
    assert "does not exist in" in missing_data(Path("nothere.jsonl"))


def test_a_complete_run_resumed_with_another_init_from_says_it_is_not_used(tmp_path, capsys):
    """The "already complete" answer dropped the note a resume that trains gives: train.init_from=OTHER (and
    any other changed setting) was ignored without a word."""
    fit(add_cfg(2), tmp_path / "a", progress=False)
    fit(add_cfg(2), tmp_path / "b", progress=False)
    capsys.readouterr()
    fit(add_cfg(2, **{"train.init_from": tmp_path / "a", "train.log_every": 7}), tmp_path / "b", resume=True,
        progress=False)
    out = capsys.readouterr().out
    assert "already complete" in out
    assert f"train.init_from={tmp_path / 'a'} is not read" in out
    assert "not used (the run is complete): train.log_every" in out


def test_resume_notes_name_an_empty_log_and_another_runs_result(tmp_path, capsys):
    fit(add_cfg(2), tmp_path / "other", progress=False)
    fit(add_cfg(2), tmp_path / "run", progress=False)
    (tmp_path / "run" / "sweep.json").write_text(json.dumps({"depths": [1], "step": 2, "label": "other"}))
    (tmp_path / "run" / "dynamics.json").write_text(json.dumps({"step": 2, "label": "run"}))
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    capsys.readouterr()
    fit(add_cfg(3), tmp_path / "run", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "metrics.jsonl is empty, but the checkpoint is at step 2" in out  # was "ends at step 0"
    assert "sweep.json (run other, step 2) in" in out and "results of another run" in out
    assert "dynamics.json (step 2) in" in out and "score other weights" in out  # this run's own: as before
    assert "sweep.json (step" not in out


def test_a_log_of_no_step_records_is_not_said_to_end_at_step_0(tmp_path):
    cfg = add_cfg(4, **{"train.log_every": 1})
    (tmp_path / "metrics.jsonl").write_text("\n")
    assert "holds no step's record" in log_gap(tmp_path, 2, cfg.train)


def test_num_loops_outside_a_random_samplers_range_is_noted():
    """loops.num_loops is the depth training evaluates at (and train.stop_at_acc reads): outside the sampler's
    range it scored a depth the run never trains, unsaid."""
    notes = bound_notes(add_cfg(2, **{"loops.num_loops": 8}).loops)
    assert any("loops.num_loops=8 is outside the lognormal sampler's range" in n for n in notes), notes
    assert not any("num_loops" in n for n in bound_notes(add_cfg(2, **{"loops.num_loops": 3}).loops))
    curriculum = add_cfg(2, **{"loops.num_loops": 8, "loops.curriculum_steps": 1}).loops  # trained in the curriculum
    assert not any("num_loops" in n for n in bound_notes(curriculum))
    fixed = add_cfg(2, **{"loops.num_loops": 8, "loops.sampler": "fixed"}).loops
    assert not any("num_loops" in n for n in bound_notes(fixed))


def test_a_misspelled_setting_set_from_python_is_refused():
    """`cfg.train.stpes = 5` made a new attribute that nothing read: the run trained its preset's steps."""
    from looplm import load_config

    cfg = load_config("addition-stars")
    for section, name in ((cfg.train, "stpes"), (cfg.model, "d_modle"), (cfg.loops, "max_loop"), (cfg, "trian")):
        with pytest.raises(AttributeError, match=f"object has no attribute '{name}'"):
            setattr(section, name, 5)
    cfg.train.steps = 5  # a real setting is still set
    assert cfg.train.steps == 5
