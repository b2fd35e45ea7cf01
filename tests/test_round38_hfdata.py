"""Round 38, HF data: a folder of data files in two formats, analyze reading a fine-tune's data as the run read it,
datasets' README `configs:` errors, config files outside the folder, a mistyped local folder name read as a hub
name, and an empty data.config_name."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.cli import main  # noqa: E402
from looplm.config import ChatDataConfig, ConfigError  # noqa: E402
from looplm.hf.data import build_examples, load_records  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402

FLAGS = ["--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def _parquet(rows, path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def test_a_folder_of_data_files_in_two_formats_is_refused(tmp_path):
    """data.jsonl beside data.parquet (the same records converted) trained every record twice; datasets reads one
    format per folder. The same under a split's files, under a README.md, and data.json beside data.jsonl."""
    rows = [{"question": r["question"], "answer": r["answer"]} for r in math_problems(6)]
    both = tmp_path / "both"
    write_jsonl(rows, both / "data.jsonl")
    _parquet(rows, both / "data.parquet")
    with pytest.raises(ValueError, match=r"both holds data files in 2 formats \(json: data.jsonl; parquet: "
                                         r"data.parquet\).*keep one format in the folder"):
        load_records(str(both))
    split = tmp_path / "split"  # train.jsonl + train.parquet + test.jsonl: datasets refuses the folder
    write_jsonl(rows[:4], split / "train.jsonl")
    _parquet(rows[:4], split / "train.parquet")
    write_jsonl(rows[4:], split / "test.jsonl")
    with pytest.raises(ValueError, match="in 2 formats"):
        load_records(str(split))
    card = tmp_path / "card"  # a README.md with no configs: datasets' "Couldn't infer the same data file format"
    write_jsonl(rows[4:], card / "test.jsonl")
    _parquet(rows[:4], card / "train.parquet")
    (card / "README.md").write_text("# My math data\n")
    with pytest.raises(ValueError, match=r"in 2 formats \(json: test.jsonl; parquet: train.parquet\)"):
        load_records(str(card))
    twice = tmp_path / "twice"
    write_jsonl(rows, twice / "data.jsonl")
    (twice / "data.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"holds data.json, data.jsonl: one name under two suffixes"):
        load_records(str(twice))
    apart = tmp_path / "apart"  # two files of one format (as datasets reads them): both read
    write_jsonl(rows[:2], apart / "a.jsonl")
    (apart / "b.json").write_text(json.dumps(rows[2:]))
    assert len(load_records(str(apart))) == 6


def test_finetune_names_the_settings_for_records_of_other_field_names(tok):
    """query/response (MetaMathQA) and prompt/completion (TRL) records got only "check the records' shape"."""
    rows = [{"query": "What is 2+2?", "response": "#### 4"}]
    with pytest.raises(ValueError, match="text fields are query, response: set data.prompt_field and "
                                         "data.response_field"):
        build_examples(rows, tok, 256)


@pytest.fixture(scope="module")
def qr_run(tmp_path_factory, tok):
    """A fine-tune on query/response records of config `main` of a two-config folder."""
    d = tmp_path_factory.mktemp("qr")
    base = save_tiny_base(d / "base", tok)
    rows = [{"query": r["question"], "response": r["answer"]} for r in math_problems(10)]
    gh = d / "gh"
    for name, part in (("main", rows[:5]), ("socratic", rows[5:])):
        write_jsonl(part[:3], gh / name / "train.jsonl")
        write_jsonl(part[3:], gh / name / "test.jsonl")
    lines = ["---", "configs:"]
    for name in ("main", "socratic"):
        lines += [f"- config_name: {name}", "  data_files:", f"  - split: train\n    path: {name}/train.jsonl",
                  f"  - split: test\n    path: {name}/test.jsonl"]
    (gh / "README.md").write_text("\n".join(lines + ["---", ""]))
    settings = {"model.name_or_path": base, "data.source": gh, "data.config_name": "main",
                "data.prompt_field": "query", "data.response_field": "response", "data.max_length": 256,
                "loops.sampler": "fixed", "loops.num_loops": 1, "reg.kind": "none", "train.steps": 1,
                "train.batch_size": 2, "train.threads": 1}
    (d / "ft.yaml").write_text("model:\n  name_or_path: base\n")
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--config", str(d / "ft.yaml"), *sets, "--out", str(d / "run"), "--no-progress"]) == 0
    return {"dir": d, "run": d / "run", "base": base, "gh": gh, "rows": rows}


def test_analyze_reads_a_fine_tunes_data_by_its_fields_and_config(qr_run, capsys):
    """analyze refused a fine-tune's own query/response data (no known field pair) and its two-config folder
    (no config name); it reads the run's data.prompt_field/response_field and data.config_name now, and says so."""
    d = qr_run["dir"]
    capsys.readouterr()
    assert main(["analyze", str(qr_run["run"]), "--data", str(qr_run["gh"]), *FLAGS, "--out", str(d / "a")]) == 0
    out = capsys.readouterr().out
    assert "note: the run's data.prompt_field/response_field (query/response) read the --data records" in out
    assert "note: the run's data.config_name='main' chooses the config of" in out
    res = json.loads((d / "a" / "dynamics.json").read_text())
    assert res["split"] == "test" and res["n"] == 2
    flat = write_jsonl(qr_run["rows"][:3], d / "mm.jsonl")  # another file of the run's fields: no config there
    assert main(["analyze", str(qr_run["run"]), "--data", str(flat), *FLAGS, "--out", str(d / "b")]) == 0
    out = capsys.readouterr().out
    assert "(query/response)" in out and "data.config_name" not in out
    # a model looplm did not fine-tune: the refusal says what to do
    assert main(["analyze", str(qr_run["base"]), "--data", str(flat), *FLAGS, "--out", str(d / "c")]) == 2
    assert "rename the prompt's and the reply's fields to one of these pairs" in capsys.readouterr().err


@pytest.mark.parametrize("card, said", [
    ("configs: main", "Expected configs to be a list"),
    ("configs:\n- config_name: a\n  default: true\n- config_name: b\n  default: true", "several default configs"),
    ("- a\n- b", "should be a dict"),
    ("configs:\n- data_files: d.jsonl", "config_name"),
])
def test_datasets_configs_errors_name_the_readme(tmp_path, card, said):
    """datasets' own `configs:` errors ("Expected configs to be a list, but got 'main'") named no file."""
    write_jsonl(math_problems(2), tmp_path / "f" / "d.jsonl")
    (tmp_path / "f" / "README.md").write_text(f"---\n{card}\n---\n")
    with pytest.raises(ValueError, match=r"f/README.md: datasets could not read its `configs:` \(.*" + said):
        load_records(str(tmp_path / "f"))


def test_a_config_of_files_outside_the_folder_is_said_as_such(tmp_path):
    """`path: ../outside.jsonl` (datasets reads it) was said as "holds no .jsonl, .json, .parquet files"."""
    write_jsonl(math_problems(2), tmp_path / "outside.jsonl")
    write_jsonl(math_problems(2), tmp_path / "f" / "d" / "a.jsonl")
    (tmp_path / "f" / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n"
                                              "  - split: train\n    path: ../outside.jsonl\n---\n")
    with pytest.raises(ValueError, match=r"its `configs:` give split 'train' files looplm does not read from the "
                                         r"folder \(.*outside.jsonl\).*move them in"):
        load_records(str(tmp_path / "f"))


def test_a_mistyped_local_folder_is_said_missing_beside_the_hub_error(tmp_path, monkeypatch):
    """`data.source=my_math_data` offline said only "Couldn't reach 'my_math_data' on the Hub"."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"nor is my_math_data a local file or folder: it does not exist "
                                         r"\(relative to "):
        load_records("my_math_data")


def test_an_empty_config_name_is_refused():
    """data.config_name='' was read as unset (the default config, or "set data.config_name to one")."""
    with pytest.raises(ConfigError, match="data.config_name: is empty"):
        ChatDataConfig(source="x.jsonl", config_name="")
