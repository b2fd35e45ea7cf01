"""Round 45: what a text folder's refusals say (the files it holds, by their paths in it, a looplm run in it, a
zip named .txt), the char tokenizer's advice where it can be followed, and a note for windows shorter than the
model's positions."""

from __future__ import annotations

import pytest

from looplm import load_config
from looplm.tasks import TextTask
from looplm.tasks.text import read_text

TEXT = "the quick brown fox jumps over the lazy dog\n" * 20


def test_a_folder_of_unread_files_names_them_not_no_files(tmp_path):
    """A folder of .log files, or of text in a hidden folder, "holds no files": it holds files, none read."""
    d = tmp_path / "logonly"
    d.mkdir()
    (d / "notes.log").write_text(TEXT)
    (d / "b.csv.bak").write_text(TEXT)
    with pytest.raises(ValueError, match=r"logonly holds no text files \(\.txt, \.md, \.text, \.rst or no suffix; "
                                         r"hidden files are not read\); it holds b\.csv\.bak, notes\.log$"):
        read_text(d)
    h = tmp_path / "hid"
    (h / ".x").mkdir(parents=True)
    (h / ".x" / "a.txt").write_text(TEXT)
    with pytest.raises(ValueError, match=r"hid holds no text files .*; it holds \.x/a\.txt$"):
        read_text(h)
    for i in range(5):
        (h / f"n{i}.log").write_text(TEXT)
    with pytest.raises(ValueError, match=r"it holds \.x/a\.txt, n0\.log, n1\.log and 3 more$"):
        read_text(h)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no files$"):
        read_text(tmp_path / "empty")


def test_unread_files_are_named_by_their_paths_once_and_a_run_in_the_folder_as_a_run(tmp_path):
    """"(trainer_state.pt, trainer_state.pt, trainer_state.pt); convert them to .txt": bare names, the same one
    three times, for a looplm run's checkpoints, and a fix that cannot apply."""
    d = tmp_path / "proj"
    d.mkdir()
    (d / "notes.txt").write_text(TEXT)
    run = d / "sub" / "r1"
    for ck in (run / "checkpoint", run / "checkpoints" / "step-00000001", run / "checkpoints" / "step-00000002"):
        ck.mkdir(parents=True)
        (ck / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        (ck / "trainer_state.pt").write_bytes(b"PK\x03\x04rest")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError) as e:
        read_text(d)
    msg = str(e.value)
    assert msg == f"{d} holds a looplm run or model (sub/r1), whose checkpoints are not data: move it out of the folder"
    with pytest.raises(ValueError, match=r"r1 is a looplm run, not a folder of data"):
        read_text(run)
    # a zip named .txt was told to be converted to .txt; files of one name in two folders are told apart
    deep = tmp_path / "deep"
    (deep / "a" / "b").mkdir(parents=True)
    (deep / "a" / "b" / "x.txt").write_text(TEXT)
    (deep / "a" / "b" / "arch.txt").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match=r"holds data files looplm does not read \(a/b/arch\.txt\): their bytes are "
                                         r"compressed, an archive, Parquet or Arrow, whatever their names say; "
                                         r"unpack or convert them"):
        read_text(deep)
    (deep / "a" / "b" / "arch.txt").unlink()
    for sub in ("a", "a/b", "c", "d", "e"):
        (deep / sub).mkdir(parents=True, exist_ok=True)
        (deep / sub / "t.csv").write_text("x,y\n")
    with pytest.raises(ValueError, match=r"does not read \(a/b/t\.csv, a/t\.csv, c/t\.csv and 2 more\); convert "
                                         r"them to \.txt"):
        read_text(deep)


def test_the_char_tokenizers_advice_fits_the_command_and_counts_the_whole_text(tmp_path):
    """A sweep of a char run was told to set data.tokenizer=byte (it cannot), and a fine-tune of one too (then
    refused: "set data.tokenizer=char"); the fine-tune counted only the part before the held-out tail."""
    (tmp_path / "lower.txt").write_text(TEXT)
    saved = TextTask(str(tmp_path / "lower.txt"), window=8).tok
    upper = tmp_path / "upper.txt"
    upper.write_text("THE quick brown fox\n" * 40)  # 120 of T, H and E, half in the held-out tail
    with pytest.raises(ValueError, match=r"upper\.txt: 120 occurrences of 3 characters .*; a model's char tokenizer "
                                         r"knows only the characters of the text it was trained on; to train on it, "
                                         r"start a new run \(no train\.init_from\) with data\.tokenizer=byte or bpe"):
        TextTask(str(upper), window=8, test_fraction=0.5, saved=saved)
    task = TextTask(str(tmp_path / "lower.txt"), window=8, saved=saved, lazy=True)
    with pytest.raises(ValueError, match=r"120 occurrences .*trained on; score text written in them \(a model "
                                         r"trained with data\.tokenizer=byte or bpe reads any text\)$"):
        task.load_eval(str(upper), None)


def test_a_text_window_shorter_than_the_positions_is_noted_once():
    """data.window=4 with model.max_seq_len=16: generation went on through 12 positions training never reached."""
    from looplm.tasks import window_notes

    cfg = load_config("text-stars", ["data.path=x.txt", "data.window=4", "model.max_seq_len=16"])
    (note,) = window_notes(cfg)
    assert note.startswith("note: data.window=4 trains positions 0-3 of model.max_seq_len=16") and "\n" not in note
    assert "model.random_positions=true" in note and "model.max_seq_len=4" in note
    for more in (["data.window=4", "model.random_positions=true"], ["data.window=16"]):
        assert window_notes(load_config("text-stars", ["data.path=x.txt", "model.max_seq_len=16", *more])) == []
    assert window_notes(load_config("text-stars", ["data.path=x.txt"])) == []  # the preset's 64 of 64
    assert window_notes(load_config("addition-prenorm-stars")) == []
