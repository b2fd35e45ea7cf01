"""Round 36, HF data: Alpaca records' `input` in fine-tuning, local folders whose README.md names configs, the split
analyze reads, and conversations whose roles are ShareGPT's or Gemini's."""

import json

import pytest

pytest.importorskip("transformers")

from looplm.cli import main  # noqa: E402
from looplm.hf.data import build_examples, load_records  # noqa: E402

from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return tiny_chat_tokenizer()


def test_finetune_joins_an_alpaca_records_input_to_its_instruction(tok):
    """data.prompt_field=instruction / response_field=output (the pair looplm advises for Alpaca data) trained
    "Summarize the passage." -> summary without the passage; analyze joined it. Both read the prompt one way now."""
    rows = [{"instruction": "Summarize the passage.", "input": "The quick brown fox jumps.", "output": "A fox jumps."},
            {"instruction": "What is 2 times 5?", "input": "", "output": "It is 10."}]
    examples, stats = build_examples(rows, tok, 256, fmt="prompt_response", prompt_field="instruction",
                                     response_field="output")
    assert stats.kept == 2
    texts = [tok.decode(e.input_ids) for e in examples]
    assert "Summarize the passage.\n\nThe quick brown fox jumps.<|im_end|>" in texts[0]
    assert "What is 2 times 5?<|im_end|>" in texts[1]
    with pytest.raises(ValueError, match="input must be a string"):
        build_examples([{**rows[0], "input": 3}], tok, 256, prompt_field="instruction", response_field="output")


def _card(folder, configs):
    """A README.md whose YAML `configs:` maps each config's files to splits, as a hub dataset card does."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {k}\n    path: {v}" for k, v in splits.items()]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("\n".join(lines + ["---", "# card", ""]))


def test_a_folder_of_several_configs_is_read_by_data_config_name(tmp_path):
    """`hf download openai/gsm8k --local-dir gh` holds main/ and socratic/ with a README.md naming both configs:
    both were trained together (every question twice), and data.config_name was refused as "read whole"."""
    rows = math_problems(10)
    gh = tmp_path / "gh"
    for name, part in (("main", rows[:5]), ("socratic", rows[5:])):
        write_jsonl(part[:3], gh / name / "train-00000-of-00001.jsonl")
        write_jsonl(part[3:], gh / name / "test-00000-of-00001.jsonl")
    _card(gh, {n: {"train": f"{n}/train-*", "test": f"{n}/test-*"} for n in ("main", "socratic")})
    with pytest.raises(ValueError, match=r"names 2 configs \(main, socratic\) and no default one.*set "
                                         "data.config_name to one"):
        load_records(str(gh))
    assert [r["question"] for r in load_records(str(gh), config_name="socratic")] == [
        r["question"] for r in rows[5:8]]
    assert [r["question"] for r in load_records(str(gh), config_name="main", split="test")] == [
        r["question"] for r in rows[3:5]]
    with pytest.raises(ValueError, match=r"data.config_name='other' is none of .*configs \(its README.md names main, "
                                         "socratic\\)"):
        load_records(str(gh), config_name="other")
    # one config whose data_files map files to train and test: its test rows were trained on
    rc = tmp_path / "rc"
    write_jsonl(rows[:6], rc / "part_a.jsonl")
    write_jsonl(rows[6:], rc / "part_b.jsonl")
    _card(rc, {"default": {"train": "part_a.jsonl", "test": "part_b.jsonl"}})
    assert len(load_records(str(rc))) == 6 and len(load_records(str(rc), split="test")) == 4
    # a split folder with no configs takes no config name (datasets' file-name patterns split it)
    write_jsonl(rows[:2], tmp_path / "hub" / "train.jsonl")
    with pytest.raises(ValueError, match="names no configs"):
        load_records(str(tmp_path / "hub"), config_name="main")


def test_analyze_reads_a_split_folders_test_split_and_says_so(tok, tmp_path, capsys):
    """analyze read a split folder's train split (the fine-tune's own problems) with no note, and a test-only folder
    was refused with advice to set data.split, which analyze does not take."""
    d = save_tiny_base(tmp_path / "model", tok)
    rows = math_problems(7)
    write_jsonl(rows[:4], tmp_path / "md" / "train.jsonl")
    write_jsonl(rows[4:], tmp_path / "md" / "test.jsonl")
    flags = ["--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]
    capsys.readouterr()
    assert main(["analyze", str(d), "--data", str(tmp_path / "md"), *flags, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "note: " + str(tmp_path / "md") + " is split as datasets.load_dataset splits it (test, train); analyze " \
        "read its test split" in out
    res = json.loads((tmp_path / "a" / "dynamics.json").read_text())
    assert res["n"] == 3 and res["split"] == "test"
    assert main(["analyze", str(d), "--data", str(tmp_path / "md"), *flags, "--n", "4", "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "md (its test split) holds only 3 usable records" in err and "data.split" not in err
    write_jsonl(rows[4:], tmp_path / "evd" / "test.jsonl")  # a test-only folder (MATH-500's test.jsonl)
    assert main(["analyze", str(d), "--data", str(tmp_path / "evd"), *flags, "--out", str(tmp_path / "c")]) == 0
    assert "analyze read its test split" in capsys.readouterr().out
    write_jsonl(rows[:2], tmp_path / "gh" / "main" / "train.jsonl")  # several configs: analyze has no config_name
    write_jsonl(rows[2:4], tmp_path / "gh" / "socratic" / "train.jsonl")
    _card(tmp_path / "gh", {n: {"train": f"{n}/train.jsonl"} for n in ("main", "socratic")})
    assert main(["analyze", str(d), "--data", str(tmp_path / "gh"), *flags, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "give --data the folder or files of one config" in err and "data.config_name" not in err


def test_conversations_without_an_assistant_role_name_the_roles_they_have(tok, tmp_path, capsys):
    """`messages` whose roles are ShareGPT's human/gpt (or Gemini's model) got "check the records' shape and field
    names", and analyze's refusal pointed at finetune's settings; a ShareGPT `conversations` record got analyze's
    "needs a `messages` list" with no word of ShareGPT."""
    sg = [{"messages": [{"role": "human", "content": "What is 2+2?"}, {"role": "gpt", "content": "4"}]}]
    with pytest.raises(ValueError, match=r"no turn has role assistant \(roles: gpt, human\); ShareGPT's and Gemini's "
                                         r"role names become user \(human\) and assistant \(gpt, model\)$"):
        build_examples(sg, tok, 256)
    d = save_tiny_base(tmp_path / "model", tok)
    flags = ["--depths", "1:2", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]
    capsys.readouterr()
    data = write_jsonl(sg, tmp_path / "sg.jsonl")
    assert main(["analyze", str(d), "--data", str(data), *flags, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no turn has role assistant (roles: gpt, human)" in err and "data." not in err
    share = write_jsonl([{"conversations": [{"from": "human", "value": "1+1?"}, {"from": "gpt", "value": "2"}]}],
                        tmp_path / "share.jsonl")
    assert main(["analyze", str(d), "--data", str(share), *flags, "--out", str(tmp_path / "b")]) == 2
    assert "ShareGPT `conversations`" in capsys.readouterr().err


@pytest.mark.parametrize("header", [b"---\ntitle: My data: math\n---\n# card\n",
                                    b"---\nlicense: mit\n\tpretty_name: x\n---\n",
                                    "---\nlicense: mit\npretty_name: caf\u00e9\n---\n".encode("latin-1")])
def test_a_readme_whose_header_datasets_cannot_read_is_named(tmp_path, header):
    """Reading a folder's README.md for its configs (round 36) made a YAML slip in its header, or a README that is
    not UTF-8, a yaml/codec traceback (or a message naming no file) in folders that trained before."""
    d = tmp_path / "d"
    write_jsonl(math_problems(4), d / "data.jsonl")
    (d / "README.md").write_bytes(header)
    with pytest.raises(ValueError, match=r"d/README\.md: datasets reads its header .* fix the header, or remove it"):
        load_records(str(d))
