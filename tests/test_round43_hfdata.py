"""Round 43b, HF data: a data folder's dataset metadata that datasets cannot read (a traceback, or blamed on
README.md's `configs:`), a model or run directory given as the data, a UTF-8 BOM and a blank line beside mixed
answer types in write_lm_eval_task's data, and a pathlib.Path set on a config's text field."""

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("datasets")

from looplm.config import Config  # noqa: E402
from looplm.hf.analysis import held_out_split  # noqa: E402
from looplm.hf.data import load_records  # noqa: E402
from looplm.hf.mathdata import check_task_golds, write_lm_eval_task  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


@pytest.mark.parametrize("infos", ['{"a": 1}', "[]", '{"main": 5}', "not json"])
def test_a_dataset_infos_json_datasets_cannot_read_is_named(tmp_path, infos):
    """`{"a": 1}` was an AttributeError traceback from inside datasets (finetune and analyze); `not json` was blamed
    on README.md's `configs:`, which the folder does not have."""
    write_jsonl(math_problems(2), tmp_path / "d" / "train.jsonl")
    (tmp_path / "d" / "README.md").write_text("# card\n")
    (tmp_path / "d" / "dataset_infos.json").write_text(infos)
    said = r"d/dataset_infos.json: datasets reads it with the folder, and cannot \(.*\); fix it, or remove it"
    with pytest.raises(ValueError, match=said):
        load_records(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=said):
        held_out_split(str(tmp_path / "d"))


@pytest.mark.parametrize("info", ["features: [1, 2]", "features:\n  - name: q\n    dtype: strin"])
def test_a_readme_dataset_info_datasets_cannot_read_is_named(tmp_path, info):
    """README `dataset_info: features: [1, 2]` was an AttributeError traceback; `dtype: strin` was blamed on the
    `configs:` the header does not hold."""
    write_jsonl(math_problems(2), tmp_path / "d" / "train.jsonl")
    indented = "\n".join("  " + line for line in info.splitlines())
    (tmp_path / "d" / "README.md").write_text(f"---\ndataset_info:\n{indented}\n---\n# card\n")
    with pytest.raises(ValueError, match=r"d/README.md: its `dataset_info:` block: datasets reads it with the folder"):
        load_records(str(tmp_path / "d"))


def test_a_model_or_run_directory_given_as_data_is_said_as_such(tmp_path):
    """A model directory as the data was "config.json: expected a list of records"; a run directory (or its
    checkpoint) was told to convert trainer_state.pt to .jsonl."""
    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    with pytest.raises(ValueError, match=r"base is a model directory \(config.json, model.safetensors\), not chat"):
        load_records(str(base))
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "trainer_state.pt").write_bytes(b"\x80\x02}q\x00.")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match=r"run is a run directory \(checkpoint/trainer_state.pt\), not chat data"):
        held_out_split(str(run))
    with pytest.raises(ValueError, match=r"checkpoint is a model directory \(trainer_state.pt\), not chat data"):
        load_records(str(run / "checkpoint"))


def test_a_utf8_bom_jsonl_is_a_task_as_datasets_reads_it(tmp_path):
    """BOM + CRLF (as Windows tools write it): datasets, finetune and analyze read it; write_lm_eval_task refused it
    as "not a JSONL file of problems", blaming its fields."""
    import datasets

    rows = math_problems(3)
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in rows).encode())
    assert write_lm_eval_task(tmp_path / "tk", data, name="tb", max_gen_toks=4) == "tb"
    check_task_golds(tmp_path / "tk" / "tb.yaml", "tb")
    read = datasets.load_dataset("json", data_files={"test": str(data)}, split="test", cache_dir=str(tmp_path / "c"))
    assert read["answer"] == [r["answer"] for r in rows]  # (lm-eval's loader reads the BOM file whole)


def test_a_blank_line_beside_text_and_number_answers_is_refused(tmp_path):
    """Each alone loads; together lm-eval failed after the model was loaded ("Expected object or value")."""
    lines = [json.dumps({"question": "a?", "answer": "#### 108"}), json.dumps({"question": "b?", "answer": 60}), "",
             json.dumps({"question": "c?", "answer": "#### 3"})]
    data = tmp_path / "t.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"t.jsonl:3: a blank line in a file whose answers are both text and numbers"):
        write_lm_eval_task(tmp_path / "tk", data, name="tb")
    assert not (tmp_path / "tk").exists()
    data.write_text("\n".join(lines[:2] + lines[3:]) + "\n")  # mixed, no blank line: datasets reads it
    assert write_lm_eval_task(tmp_path / "tk", data, name="tb") == "tb"


def test_a_pathlib_path_on_a_text_field_is_its_text():
    """cfg.data.source = Path(...) from Python was refused with advice to quote it in YAML."""
    cfg = Config.from_dict({"model": {"name_or_path": Path("/m")}, "data": {"source": Path("/x/y.jsonl")}})
    assert (cfg.model.name_or_path, cfg.data.source) == ("/m", "/x/y.jsonl")  # (fit reads its config so)
    assert Config.from_dict({"data": {"task": "text", "path": Path("c.txt")}}).data.path == "c.txt"
