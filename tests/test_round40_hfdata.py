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


GROUP = """group: tiny_all
task:
  - tiny_roll
  - tiny_math_mc
aggregate_metric_list:
  - metric: acc
    aggregation: mean
    weight_by_size: true
metadata:
  version: 1.0
"""


def test_a_groups_chat_templated_tasks_are_its_members_that_took_prompts(tmp_path, capsys):
    """eval-lm on a group recorded chat_template_tasks ['tiny_all'] and said the system prompt opened every prompt
    of tiny_all, beside the note that its rolling member tiny_roll took no template."""
    from looplm.hf.lm_eval_depths import eval_depths

    from .hf_fixtures import save_tiny_base, write_lm_eval_tasks
    from .test_round39_hfeval import ROLLING

    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    data = write_jsonl(math_problems(4), tmp_path / "m.jsonl")
    write_lm_eval_tasks(tmp_path / "tasks", data, max_gen_toks=2)
    (tmp_path / "tasks" / "tiny_roll.yaml").write_text(ROLLING.format(data=data.resolve()))
    (tmp_path / "tasks" / "grp.yaml").write_text(GROUP)
    res = eval_depths(str(base), ["tiny_all"], [1], tmp_path / "e", include_path=str(tmp_path / "tasks"), limit=1,
                      batch_size=1, apply_chat_template=True, device="cpu")
    out = capsys.readouterr().out
    assert res["settings"]["chat_template_tasks"] == ["tiny_math_mc"], out
    assert "not used by tiny_roll" in out
