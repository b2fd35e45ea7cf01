"""Round 40, HF data: a single data file of another suffix (.csv, .jsonl.gz) was a KeyError traceback, a folder
whose README.md is a plain dataset card dropped its files in no split without the note (analyze's note named a
data.split it does not have), a bos-first template on a model whose bos is its pad id, and eval-lm's chat-templated
tasks of a group."""

import gzip

import pytest

pytest.importorskip("transformers")

from looplm.hf.data import load_records  # noqa: E402

from .hf_fixtures import math_problems, tiny_chat_tokenizer, write_jsonl  # noqa: E402


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl.gz", "m.txt", "m_noext"])
def test_a_data_file_of_another_suffix_is_said_unsupported(tmp_path, name):
    f = tmp_path / name
    f.write_bytes(gzip.compress(b"{}\n") if name.endswith(".gz") else b"question,answer\n1+1?,2\n")
    with pytest.raises(ValueError, match=r"unsupported file type \(use \.jsonl, \.json, \.parquet\)"):
        load_records(str(f))


def _split_folder(folder, readme=None):
    rows = math_problems(6)
    write_jsonl(rows[:3], folder / "train.jsonl")
    write_jsonl(rows[3:], folder / "extra.jsonl")
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


@pytest.mark.parametrize("readme", ["---\nlicense: mit\ntask_categories:\n- question-answering\n---\n# My data\n",
                                    "# Just a title\n"])
def test_a_plain_dataset_card_keeps_the_note_on_files_in_no_split(tmp_path, capsys, readme):
    folder = _split_folder(tmp_path / "d", readme)
    assert len(load_records(str(folder))) == 3
    assert "extra.jsonl in no split" in capsys.readouterr().out


def test_a_card_whose_configs_choose_the_files_gives_no_note(tmp_path, capsys):
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: train.jsonl\n---\n"
    folder = _split_folder(tmp_path / "d", card)
    assert len(load_records(str(folder))) == 3
    assert "in no split" not in capsys.readouterr().out


def test_analyzes_note_on_files_in_no_split_names_no_data_split(tmp_path, capsys):
    from looplm.hf.analysis import text_batch

    folder = _split_folder(tmp_path / "d")
    text_batch(tiny_chat_tokenizer(), str(folder), 2, max_length=256)
    out = capsys.readouterr().out
    assert "extra.jsonl in no split" in out and "data.split" not in out
    assert "analyze (a split folder's test split, else validation, else its only one) reads the train files" in out


def test_examples_that_open_with_the_pad_id_are_named_before_training():
    """A bos-first template where bos = pad (Ouro's id 0) gave every step at >= 5 loops non-finite gradients (the
    pad row is kept at zero), and the refusal blamed the weights, the data and the settings."""
    from types import SimpleNamespace

    from looplm.hf.finetune import pad_first

    from .hf_fixtures import tiny_ouro

    model = tiny_ouro(64)
    bos_first = [SimpleNamespace(input_ids=[0, 5, 6]), SimpleNamespace(input_ids=[5, 6, 7])]
    said = pad_first(model, bos_first, 0)
    assert said and said.startswith("1 of 2 examples open with the pad token (id 0") and "without bos_token" in said
    assert pad_first(model, bos_first[1:], 0) is None
    assert pad_first(model, bos_first, 3) is None  # (padding_idx is another id: its row is not held at zero)
