"""Round 42, HF data and eval: empty values said as empty (pathlib read "" as the folder "."), huggingface_hub's
log line on a README with no YAML header, analyze reading a folder's default config unsaid and unrecorded, an
empty gold in a task's data edited after write_lm_eval_task named neither task nor record, and a JSON file of
splits, each an object of columns, given the rename-fields advice."""

import json
import logging
import re

import pytest

pytest.importorskip("transformers")

from looplm.cli import main  # noqa: E402
from looplm.config import ConfigError  # noqa: E402
from looplm.errors import UserError  # noqa: E402
from looplm.hf.data import load_records  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402

FLAGS = ["--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]


@pytest.mark.parametrize("spec, said", [("", "is empty"), ("  ", "is blank ('  ')")])
def test_an_empty_chat_template_is_said_empty(spec, said):
    from looplm.hf.finetune import chat_template

    with pytest.raises(ConfigError, match=re.escape(f"data.chat_template {said}; leave it out")) as e:
        chat_template(spec)
    assert "is a folder" not in str(e.value)


@pytest.mark.parametrize("path", ["", " "])
def test_an_empty_model_path_is_said_empty(path):
    from looplm.hf.analysis import find_model_dir

    with pytest.raises(ValueError, match="the model path is (empty|blank)"):
        find_model_dir(path)


def test_an_empty_data_source_is_refused_and_an_edge_space_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(math_problems(2), tmp_path / "x.jsonl")  # ("" read the working folder's files)
    for source in ("", "  "):
        with pytest.raises(ValueError, match="the data source is (empty|blank)"):
            load_records(source)
    with pytest.raises(FileNotFoundError, match=r"data file ' x.jsonl' does not exist"):
        load_records(" x.jsonl")


def test_eval_lm_empty_tasks_and_include_path_are_said_empty():
    from looplm.hf.lm_eval_depths import _check_eval_args, _folders

    with pytest.raises(ValueError, match="tasks names no task; give one or more lm-eval task names"):
        _check_eval_args([], [1], None, None, 8, None, False, None)
    with pytest.raises(UserError, match="include_path is empty; give the folder of the task YAMLs"):
        _folders("")


def test_a_readme_with_no_yaml_header_logs_nothing(tmp_path, caplog):
    """huggingface_hub's "Repo card metadata block was not found" was printed on stderr (finetune and analyze)."""
    folder = tmp_path / "d"
    write_jsonl(math_problems(3), folder / "train.jsonl")
    (folder / "README.md").write_text("# My data\nplain card\n")
    with caplog.at_level(logging.INFO):
        assert len(load_records(str(folder))) == 3
    assert not [r for r in caplog.records if "Repo card metadata" in r.getMessage()]


def test_analyze_says_and_records_the_default_config_it_reads(tmp_path, capsys):
    """A folder of two configs, one `default: true`: analyze read the default one (as datasets and a fine-tune
    without data.config_name do) without a word, and dynamics.json did not say which."""
    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    rows = math_problems(10)
    c1 = tmp_path / "c1"
    write_jsonl(rows[:3], c1 / "main" / "train.jsonl")
    write_jsonl(rows[3:5], c1 / "main" / "test.jsonl")
    write_jsonl(rows[5:8], c1 / "soc" / "train.jsonl")
    write_jsonl(rows[8:], c1 / "soc" / "test.jsonl")
    (c1 / "README.md").write_text("---\nconfigs:\n- config_name: main\n  data_dir: main\n- config_name: soc\n"
                                  "  data_dir: soc\n  default: true\n---\n")
    capsys.readouterr()
    assert main(["analyze", str(base), "--data", str(c1), *FLAGS, "--out", str(tmp_path / "a")]) == 0
    assert "names several configs; analyze read its default one, 'soc'" in capsys.readouterr().out
    res = json.loads((tmp_path / "a" / "dynamics.json").read_text())
    assert res["config_name"] == "soc" and res["split"] == "test" and res["n"] == 2


def test_an_edited_gold_is_named_with_its_task_and_line(tmp_path):
    from looplm.hf.mathdata import check_task_golds, write_lm_eval_task

    rows = [{"question": "1+1?", "answer": "#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    data = write_jsonl(rows, tmp_path / "g.jsonl")
    write_lm_eval_task(tmp_path / "tk", data, name="gg")
    check_task_golds(tmp_path / "tk" / "gg.yaml", "gg")  # (sound golds: nothing said)
    write_jsonl([rows[0], {**rows[1], "answer": ""}], data)
    with pytest.raises(UserError, match=r"task gg: .*g\.jsonl:2: not a problem with a usable gold answer \(the "
                                        r"gold answer is ''"):
        check_task_golds(tmp_path / "tk" / "gg.yaml", "gg")


def test_a_json_file_of_splits_of_columns_is_said_so(tmp_path):
    f = tmp_path / "sc.json"
    f.write_text(json.dumps({"train": {"question": ["1+1?", "2+2?"], "answer": ["#### 2", "#### 4"]}}))
    with pytest.raises(ValueError, match=r"one JSON object of splits \(train\), each an object of columns "
                                         r"\(question, answer\), which is not read; write each split's records"):
        load_records(str(f))
