"""Round 35, the native side's inputs and outputs: paths past the file system's limits, an --out folder that
cannot be made, large text corpora, stepped depth ranges, the weights' file mode, and a deleted working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from looplm.errors import UserError, guarded


def test_a_name_past_the_limit_is_explained_wherever_the_os_refuses_it(tmp_path, capsys):
    long = "r" * 300

    def body():
        (tmp_path / long / "x").mkdir(parents=True)  # any OSError of errno 36, from any command

    assert guarded(body) == 2
    err = capsys.readouterr().err.strip()
    assert "Errno" not in err and err.startswith(f"error: {tmp_path}/rrrrrrrrrrrrrrrrrrrr…rrrrrrrrrr/x: the name ")
    assert err.endswith("is 300 bytes, past this file system's limit of 255 bytes for one name; choose a shorter name")


def test_a_whole_path_past_path_max_is_explained():
    from looplm.errors import name_too_long

    line = name_too_long("/".join(["d" * 200] * 25))
    assert line.startswith("a path of 5024 bytes is past this system's limit of 4096 bytes for a whole path")


def test_an_out_folder_that_cannot_be_made_says_so_before_any_work(tmp_path):
    from looplm.outputs import check_out_folder

    with pytest.raises(UserError, match=r"^cannot create out /proc/looplm_x: /proc does not allow making a folder "
                                        r"in it \(No such file or directory\)"):
        check_out_folder(Path("/proc/looplm_x"))
    check_out_folder(tmp_path / "new" / "run")  # one that can be made passes, and nothing is left behind
    assert list(tmp_path.iterdir()) == []


def test_a_text_corpus_too_big_for_memory_is_refused_by_name_before_it_is_read(tmp_path, monkeypatch):
    from looplm import memory
    from looplm.tasks.text import TextTask

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world. " * 1000)  # 13,000 bytes: about 234 kB to read and tokenize
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000)
    with pytest.raises(UserError, match=r"^not enough memory: the text corpus .*corpus.txt \(0.0 MB\) and its token "
                                        r"ids need at least .* \(about 18 bytes for each byte of text\); use a "
                                        r"smaller corpus"):
        TextTask(str(corpus), window=8)
    monkeypatch.setattr(memory, "available_bytes", lambda: 300_000)
    TextTask(str(corpus), window=8)  # fits
    with pytest.raises(UserError, match=r"about 200 bytes for each byte"):  # training BPE merges takes far more
        TextTask(str(corpus), window=8, tokenizer="bpe")


def test_nul_bytes_are_found_while_reading_not_after_the_whole_file(tmp_path, monkeypatch):
    from looplm.tasks import text

    f = tmp_path / "t.txt"
    f.write_bytes(b"\x00" + b"a" * 100 + b"\xff")  # the NUL first: the old reader read on to the invalid byte
    with pytest.raises(ValueError, match="holds NUL bytes, so it is binary data"):
        text.read_text(f)
    # past the first look (SNIFF_BYTES): found in the piece that holds it, before the rest is read
    monkeypatch.setattr(text, "SNIFF_BYTES", 4, raising=False)
    monkeypatch.setattr(text, "CHUNK_CHARS", 16, raising=False)
    f.write_bytes(b"a" * 20 + b"\x00" + b"b" * 100_000 + b"\xff")  # (past the decoder's 8 KiB buffer)
    with pytest.raises(ValueError, match="holds NUL bytes, so it is binary data"):
        text.read_text(f)


def test_a_stepped_depth_range_ends_at_its_stated_end():
    from looplm.evaluate import parse_depths

    assert parse_depths("1:1000:10")[-3:] == [981, 991, 1000]  # the help's own example swept to 991, never 1000
    assert len(parse_depths("1:1000:10")) == 101
    assert parse_depths("1:10:20") == [1, 10]
    assert parse_depths("1:10:3") == [1, 4, 7, 10]  # on the step already: not twice
    assert parse_depths("5:5:3") == [5]
    assert parse_depths("2:12:5", "size") == [2, 7, 12]


def test_the_weights_follow_the_umask_like_every_other_file(tmp_path):
    import stat

    from looplm import fit, load_config

    cfg = load_config("addition-prenorm-stars", [
        "model.d_model=16", "model.d_ff=32", "model.n_heads=2", "train.steps=2", "train.batch_size=4",
        "train.eval_every=0", "data.test_size=8", "loops.max_loops=2", "model.max_seq_len=16", "reg.rho_every=0",
        "train.checkpoint_every=1", "train.keep_checkpoints=3"])
    old = os.umask(0o002)  # a group-shared run folder
    try:
        fit(cfg, tmp_path / "run", progress=False)
        pytest.importorskip("transformers")
        from looplm.hf.looplm_hf import convert_checkpoint

        convert_checkpoint(tmp_path / "run", tmp_path / "exp")  # (transformers' save_pretrained made 0600 too)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    weights = [run / "checkpoint/model.safetensors", *(run / "checkpoints").glob("*/model.safetensors"),
               tmp_path / "exp/model.safetensors"]
    assert len(weights) >= 3
    for w in weights:  # safetensors made them 0600: collaborators could read every file but these
        assert stat.S_IMODE(w.stat().st_mode) == 0o664, w
        assert stat.S_IMODE((w.parent / "config.json").stat().st_mode) == 0o664


def test_the_vocabulary_message_counts_occurrences_of_distinct_characters(tmp_path):
    from looplm.tasks.text import TextTask

    (tmp_path / "train.txt").write_text("abcabc " * 50)
    task = TextTask(str(tmp_path / "train.txt"), window=4)
    (tmp_path / "other.txt").write_text("ab\nl.l\nl")  # 6 occurrences of 3 characters (\n . l)
    with pytest.raises(ValueError, match=r"other.txt: 6 occurrences of 3 characters the model's vocabulary lacks "
                                         r"\('\\n', '\.', 'l'\)"):
        task.load_eval(str(tmp_path / "other.txt"), None)


def test_a_deleted_working_directory_is_one_error_line(tmp_path):
    import subprocess
    import sys

    gone = tmp_path / "gone"
    gone.mkdir()
    code = f"import os, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv = ['looplm', '--help']; " \
           "from looplm.launch import main; raise SystemExit(main())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 2, r.stderr
    assert r.stderr == "error: the working directory no longer exists; cd to another one\n"
    assert "torch" not in r.stderr and "FATAL" not in r.stderr


def test_a_metrics_log_that_is_a_directory_is_named_one(tmp_path):
    from looplm.rundir import check_metrics

    (tmp_path / "metrics.jsonl").mkdir()
    # it was called "not a regular file (a FIFO, device or socket)"
    with pytest.raises(UserError, match=r"metrics\.jsonl is a directory; a run writes its log there"):
        check_metrics(tmp_path / "metrics.jsonl")
