"""The text task's reading of a folder: files joined with a newline, and an error that says so."""

import pytest

from looplm.tasks.text import TextTask
from looplm.tasks.tokenizers import CharTokenizer


def test_a_folders_files_are_joined_with_a_newline_and_the_error_says_so(tmp_path):
    """A folder of files with no newline in them was refused for lacking '\\n', a character none of them holds:
    the newline looplm puts between files. The join is documented, and the error names it."""
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.txt").write_text("the lazy dog")
    (tmp_path / "two" / "b.txt").write_text("the quick fox")
    task = TextTask(str(tmp_path / "two"), window=4, test_fraction=0.3)
    assert task.tok.decode(task.train_ids.tolist() + task.test_ids.tolist()) == "the lazy dog\nthe quick fox"
    saved = CharTokenizer("".join(sorted(set("the lazy dog quick fox"))))
    with pytest.raises(ValueError, match=r"\('\\n'; a folder's files are joined with a newline between them\)"):
        TextTask(str(tmp_path / "two"), window=4, test_fraction=0.3, saved=saved)


def test_a_run_started_from_a_bpe_run_refuses_another_bpe_size(tmp_path):
    """train.init_from a BPE run keeps that run's tokenizer (its weights read those ids): a different
    data.bpe_vocab went unread, without a word, and config.yaml recorded it as if it applied."""
    pytest.importorskip("tokenizers")
    from looplm.cli import main

    from .bad_input_cases import TINY

    (tmp_path / "corpus.txt").write_text("the cat sat on a mat, hello world\n" * 300)
    base = ["train", "--config", "text-fixed", "--no-progress", *TINY, "--set", f"data.path={tmp_path / 'corpus.txt'}",
            "--set", "data.window=12", "--set", "data.tokenizer=bpe"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    start = ["--set", f"train.init_from={tmp_path / 'a'}", "--out", str(tmp_path / "b")]
    assert main([*base, "--set", "data.bpe_vocab=2000", *start]) == 2 and not (tmp_path / "b").exists()
    assert main([*base, *start]) == 0  # the same size (the default) starts from it


def test_a_module_built_from_a_presets_zero_vocabulary_is_told_the_size(tmp_path):
    """fit(cfg, out, model=LoopedTransformer(cfg.model)) on the text preset was refused with "build it with
    LoopedTransformer(cfg.model)", what the user had done: the preset's vocab_size 0 means the task's."""
    from looplm import LoopedTransformer, fit, load_config
    from looplm.config import ConfigError

    (tmp_path / "c.txt").write_text("the cat sat on the mat\n" * 40)
    cfg = load_config("text-fixed", [f"data.path={tmp_path / 'c.txt'}", "data.window=8", "model.max_seq_len=16"])
    assert cfg.model.vocab_size == 0
    with pytest.raises(ConfigError, match=r"build it with model.vocab_size=\d+: a preset's 0 means the task's"):
        fit(cfg, tmp_path / "run", progress=False, model=LoopedTransformer(cfg.model))
    assert not (tmp_path / "run").exists()
