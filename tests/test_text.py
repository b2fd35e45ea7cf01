"""The text task's reading of a folder: files joined with a newline, and an error that says so."""

import json

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


def test_bpe_cuts_a_long_letter_run_into_bounded_pieces_and_ordinary_text_as_before():
    """BPE training is quadratic in a pre-tokenized word's length, and a one-line DNA sequence is one word: 600 KB
    took 157 s to train on. Words are now cut into pieces of at most MAX_PIECE characters, in training and in
    encoding (the split is saved in tokenizer.json); ordinary text, whose words are shorter, is cut as before."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from looplm.tasks import tokenizers
    from looplm.tasks.tokenizers import BpeTokenizer

    tok = BpeTokenizer.train(["ACGT" * 200 + "\n", "the cat sat on the mat\n"], 300)
    pieces = tok.tok.pre_tokenizer.pre_tokenize_str("GATTACA" * 100)
    assert len(pieces) == 7 and max(len(p) for p, _ in pieces) == 100  # MAX_PIECE
    assert tok.decode(tok.encode("GATTACA" * 100)) == "GATTACA" * 100
    again = tokenizers.from_json(json.loads(json.dumps(tok.to_json())))  # saved and loaded: the same cut
    assert again.encode("ACGT" * 300) == tok.encode("ACGT" * 300)
    # parity: on ordinary text the merges and the ids are those of the plain byte-level tokenizer
    text = ["The quick brown fox jumps over the lazy dog.\n  Indented line, numbers 12345 and symbols #!?\n" * 50,
            "naïve café — ünïcode text; tabs\tand  spaces\r\n" * 50]
    old = Tokenizer(models.BPE())
    old.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    old.decoder = decoders.ByteLevel()
    old.encode_special_tokens = True
    old.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                                      show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    new = BpeTokenizer.train(text, 400)
    assert new.tok.get_vocab() == old.get_vocab()
    for s in [*text, "An unseen sentence, with  double spaces and a tab\t.\n"]:
        assert new.encode(s) == old.encode(s).ids


def test_a_corpus_error_says_whitespace_and_where_the_first_bad_byte_is(tmp_path):
    """A corpus of blank lines was called "no text (empty)"; a file with one stray non-UTF-8 byte was refused
    with no position, which in a large corpus cannot be found."""
    from looplm.tasks.text import read_text

    (tmp_path / "blank.txt").write_text("\n\n   \n\t\n" * 500)
    with pytest.raises(ValueError, match=r"blank.txt: no text \(only whitespace, 4,000 characters\)"):
        read_text(tmp_path / "blank.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"no text \(empty\)"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("line one\nline two\nit’s ".encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not a UTF-8 text file \(byte 0xe9 at offset 28, line 3\)"):
        read_text(tmp_path / "latin1.txt")
    from looplm.records import read_rows  # a JSON Lines file too: its other errors name file:line already

    (tmp_path / "d.jsonl").write_bytes(b'{"prompt": "ab", "answer": "ba"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl: not a UTF-8 text file \(byte 0xe9 at offset 48, line 2\)"):
        read_rows(tmp_path / "d.jsonl")


def test_a_character_outside_the_vocabulary_shows_code_points_and_names_a_normalization_mismatch():
    """A prompt typed in NFC ("é", one code point) against a vocabulary trained in NFD ("e" + U+0301) was refused
    with ['é'], which looks the same as the vocabulary's printed é."""
    from looplm.tasks.tokenizers import CharTokenizer

    tok = CharTokenizer("0123456789=e\u0301")
    with pytest.raises(ValueError, match=r"character\(s\) \['é' \(U\+00E9\)\] in .* are outside the vocabulary .*; "
                                         r"the text differs from the vocabulary only in Unicode normalization: in "
                                         r"NFD form it fits .*; the vocabulary holds U\+0301$"):
        tok.encode("\u00e95=")
    with pytest.raises(ValueError, match=r"\['x'\] in '1x' are outside the vocabulary '0123456789=e\u0301'$"):
        tok.encode("1x")
