"""Round 38: config files with a tab, a local copy of a preset beside `--config NAME`, the demo's stage-1 errors."""

import shutil

import pytest

from looplm.config import PRESET_DIR, ConfigError, load_config
from looplm.errors import UserError


@pytest.mark.parametrize(("text", "said"), [
    ("train:\n\tsteps: 2\n", "tab.yaml: line 2: YAML indents with spaces, not tabs"),
    ("train:\n  steps:\t2\n", "tab.yaml: line 2, column 9: a tab here is not valid YAML; write spaces"),
])
def test_a_tab_in_a_config_file_is_named(tmp_path, text, said):
    (tmp_path / "tab.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "tab.yaml")
    assert str(e.value).endswith(said) and "cannot start any token" not in str(e.value)


def test_a_local_copy_of_a_preset_is_noted_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("looplm.config_files._NOTED", set(), raising=False)
    text = (PRESET_DIR / "addition-stars.yaml").read_text()
    (tmp_path / "addition-stars.yaml").write_text(text.replace("steps:", "steps: 2 #", 1))
    shipped = load_config("addition-stars")
    load_config("addition-stars")
    err = capsys.readouterr().err
    assert err == ("note: ./addition-stars.yaml exists and is not read: --config addition-stars is the shipped "
                   "preset; --config ./addition-stars.yaml reads it\n")
    assert shipped == load_config(PRESET_DIR / "addition-stars.yaml")  # the preset, as before
    load_config("./addition-stars.yaml")  # the file, when given as a path: no note
    assert capsys.readouterr().err == ""


def test_a_run_directory_named_after_a_preset_gets_no_note(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("looplm.config_files._NOTED", set(), raising=False)
    (tmp_path / "addition-stars").mkdir()
    load_config("addition-stars")
    assert capsys.readouterr().err == ""


def test_demo_names_stage_1_preset_and_the_way_out(tmp_path, monkeypatch, capsys):
    from looplm.demo import cmd_demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("looplm.config_files._NOTED", set(), raising=False)
    shutil.copy(PRESET_DIR / "addition-fixed8.yaml", tmp_path)  # the demo takes no --config: no note about it
    with pytest.raises(UserError) as e:
        cmd_demo(str(tmp_path / "dm"), overrides=["train.eval_every=0"], progress=False)
    assert str(e.value) == ("stage 1 (preset addition-fixed8, which stops at train.stop_at_acc=0.98 and which --set "
                            "changes too): train.stop_at_acc: needs train.eval_every > 0; or --set train.stop_at_acc=0")
    assert not (tmp_path / "dm").exists() and capsys.readouterr().err == ""
    load_config(PRESET_DIR / "addition-fixed8.yaml", ["train.eval_every=0", "train.stop_at_acc=0"])  # the way out
