"""Command outputs: written whole or not at all, an earlier result put back when a replacement stops, commands
writing into one folder taking turns, and figures drawn without library warnings."""

from pathlib import Path

import pytest


def test_outputs_are_written_whole_or_not_at_all(tmp_path):
    """A command stopped between its outputs (Ctrl-C after the JSON, before the figure) removes what it wrote,
    so no half result blocks a rerun; a file it did not write stays."""
    from looplm.outputs import all_or_nothing

    kept, new_json, new_png = tmp_path / "old.txt", tmp_path / "d.json", tmp_path / "d.png"
    kept.write_text("earlier")
    with pytest.raises(KeyboardInterrupt), all_or_nothing([kept, new_json, new_png]):
        new_json.write_text("{}")
        raise KeyboardInterrupt
    assert not new_json.exists() and kept.read_text() == "earlier"
    with all_or_nothing([new_json, new_png]):
        new_json.write_text("{}")
        new_png.write_bytes(b"png")
    assert new_json.exists() and new_png.exists()


def test_two_commands_writing_the_same_outputs_take_turns(tmp_path):
    """Two plots into one --out at once: the one that lost the race was refused (right), but its cleanup deleted
    the figure the other had written and reported. Commands writing into one folder now take turns, and the
    refused one leaves the other's files as they are."""
    import threading

    from looplm.checkpoint import write_result
    from looplm.errors import UserError
    from looplm.outputs import all_or_nothing

    png = tmp_path / "a.png"
    inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with all_or_nothing([png]):
            write_result(png, lambda f: f.write_bytes(b"first"))
            inside.set()
            release.wait(10)
            order.append("first done")

    def second() -> None:
        inside.wait(10)
        try:
            with all_or_nothing([png]):  # waits for the first command's outputs to be whole
                order.append("second in")
                write_result(png, lambda f: f.write_bytes(b"second"))  # without --force: the name is taken
        except UserError as e:
            order.append(str(e))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    threading.Timer(0.3, release.set).start()
    for t in threads:
        t.join(20)
    assert order[:2] == ["first done", "second in"] and "appeared while this command ran" in order[2]
    assert png.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_stopped_command_leaves_no_folder_it_made(tmp_path):
    """A refused or interrupted plot into a new --out folder left the (empty) folders it had created."""
    from looplm.outputs import all_or_nothing

    new = tmp_path / "a" / "b" / "p.png"
    (tmp_path / "keep").mkdir()
    with pytest.raises(KeyboardInterrupt), all_or_nothing([new, tmp_path / "keep" / "q.png"]):
        new.write_bytes(b"png")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    with all_or_nothing([new]):  # a finished one keeps them
        new.write_bytes(b"png")
    assert new.read_bytes() == b"png"


def test_an_interrupted_replacement_puts_the_earlier_result_back(tmp_path):
    """--force replaces an earlier result only with a finished one: a command stopped after it wrote the new JSON
    (and before its figure) restores the earlier JSON and figure, and leaves no kept copy behind."""
    from looplm.checkpoint import write_result
    from looplm.outputs import all_or_nothing

    js, png = tmp_path / "dynamics.json", tmp_path / "dynamics.png"
    js.write_text("earlier json")
    png.write_bytes(b"earlier png")
    with pytest.raises(KeyboardInterrupt), all_or_nothing([js, png]):
        write_result(js, lambda f: f.write_text("new json"), replace=True)
        raise KeyboardInterrupt
    assert js.read_text() == "earlier json" and png.read_bytes() == b"earlier png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamics.json", "dynamics.png"]
    with all_or_nothing([js, png]):  # finished: the new ones stay
        write_result(js, lambda f: f.write_text("new json"), replace=True)
        write_result(png, lambda f: f.write_bytes(b"new png"), replace=True)
    assert js.read_text() == "new json" and png.read_bytes() == b"new png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamics.json", "dynamics.png"]


def test_a_label_the_font_lacks_is_no_warning(tmp_path):
    """A run named in a script the font lacks (CJK), or a very long label, printed matplotlib's warnings with its
    source lines on stderr."""
    import warnings

    from looplm.plots import plot_accuracy

    sweep = {"depths": [1, 2, 3], "accuracy": [0.5, 0.75, 1.0], "n": 4}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        plot_accuracy([{**sweep, "label": "実験"}, {**sweep, "label": "x" * 3000}], tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert not [str(w.message) for w in seen if "Glyph" in str(w.message) or "Tight layout" in str(w.message)]


def test_a_path_through_the_checkpoint_folder_and_back_is_beside_the_run(tmp_path):
    """`--out run/checkpoint/../sweep.json` (the run given as `run/checkpoint/..`) was refused as writing into
    the checkpoint, and the message suggested the very path it would have written."""
    from looplm.config import load_config
    from looplm.errors import UserError
    from looplm.outputs import fresh_outputs

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    load_config("addition-prenorm-stars").save_yaml(run / "config.yaml")  # a run's own, as it starts
    fresh_outputs([run / "checkpoint" / ".." / "sweep.json"], False)
    with pytest.raises(UserError, match="belongs to the run"):
        fresh_outputs([run / "checkpoint" / ".." / "config.yaml"], True)
    from looplm import plots

    assert plots._style(10)[0] == plots._style(0)[0] and plots._style(10) != plots._style(0)  # run 11 vs run 1



def test_an_out_that_is_no_file_is_refused_unread(tmp_path):
    """`sweep --out FIFO` (or `--out /dev/stdout` into a pipe) hung: the earlier result was read to see whether it
    was a --sizes sweep before any check; with stdout redirected, /dev/stdout was "an earlier result" and --force
    replaced the link. And any JSON holding the word "sizes" had its neighbour .png deleted with --force."""
    import json
    import os

    from looplm.errors import UserError
    from looplm.outputs import fresh_outputs, not_a_file, sizes_figure

    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)
    assert sizes_figure(fifo) == []  # (returns at once: a read would block)
    with pytest.raises(UserError, match=r"is a FIFO \(named pipe\), not a file to write a result to"):
        fresh_outputs([fifo], True)
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    for p in (Path("/dev/stdout"), link):
        with pytest.raises(UserError, match="is a name under /(dev|proc), not a file to write a result to"):
            fresh_outputs([p], True)
    assert not_a_file(Path("/dev/shm/result.json")) is None  # a RAM disk is a place for files
    for doc in ({"model": "resnet", "sizes": [32, 64]}, "batch sizes", ["sizes"]):
        (tmp_path / "r.json").write_text(json.dumps(doc))
        assert sizes_figure(tmp_path / "r.json") == [], doc
    sweep = {"depths": [1, 2], "sizes": [2, 3], "accuracy_by_size": [[1.0, 1.0], [0.5, 1.0]], "scored_by": "exact"}
    (tmp_path / "r.json").write_text(json.dumps(sweep))
    assert sizes_figure(tmp_path / "r.json") == [tmp_path / "r.png"]


def test_an_earlier_result_kept_beside_one_output_is_never_anothers(tmp_path, capsys):
    """The backup a killed command left (`.NAME.kept-<id>`) was found by a glob of the output's name: `s[1].json`
    as a pattern matched `.s1.json.kept-*`, so s1.json's earlier result was moved into s[1].json (and lost with
    --force). Backups are now matched by exact name."""
    from looplm.outputs import all_or_nothing

    theirs = tmp_path / ".s1.json.kept-0123abcd"
    theirs.write_text("s1's earlier result")
    for name in ("s[1].json", "s?.json", "*.json"):
        with all_or_nothing([tmp_path / name]):
            pass
        assert not (tmp_path / name).exists() and theirs.read_text() == "s1's earlier result", name
    (tmp_path / ".s1.json.kept-0123abcd-mine").write_text("not a backup")  # a name of the user's own
    (tmp_path / "s1.json").write_text("half")
    with all_or_nothing([tmp_path / "s1.json"]):
        assert (tmp_path / "s1.json").read_text() == "s1's earlier result"
    assert (tmp_path / ".s1.json.kept-0123abcd-mine").exists()
    assert "its earlier content is back" in capsys.readouterr().err


def test_an_api_out_that_starts_with_a_tilde_is_refused(tmp_path, monkeypatch):
    """`fit(cfg, "~/runs/x")` made a folder named `~` in the current directory (the CLI refused `--out=~/x`)."""
    from looplm import fit, load_config
    from looplm.errors import UserError

    monkeypatch.chdir(tmp_path)
    for out in ("~/runs/x", "~root/x"):
        with pytest.raises(UserError, match=r"a path that starts with ~ is not expanded here"):
            fit(load_config("addition-prenorm-stars", ["train.steps=1"]), out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_output_name_with_no_room_for_its_temporary_names_is_refused_first(tmp_path):
    """A valid 253-byte --out name failed only after the work, when the temporary file beside it (18 bytes
    longer) could not be made, with errno's line naming that hidden file."""
    from looplm.errors import UserError
    from looplm.outputs import check_out_folder, fresh_outputs

    long_name = tmp_path / ("g" * 248 + ".json")
    with pytest.raises(UserError, match=r"its name is 253 bytes, and looplm writes beside it under names up to 16"):
        fresh_outputs([long_name], force=False)
    with pytest.raises(UserError, match="its name is 245 bytes"):
        check_out_folder(tmp_path / ("e" * 245))
    fresh_outputs([tmp_path / ("g" * 234 + ".json")], force=False)  # 239 + 16 fits in 255
    assert list(tmp_path.iterdir()) == []


def test_the_out_refusals_name_the_path_as_given_and_no_file_for_a_folder(tmp_path, monkeypatch):
    """"  two.json already exists" lost its edge spaces to the one-line error (named "two.json", which does not
    exist); a relative --out over a run's config.yaml was said to write "into" it; and analyze, which writes a
    folder, was told to write "run/sweep.json"."""
    from looplm.config import load_config
    from looplm.errors import UserError
    from looplm.outputs import fresh_outputs

    monkeypatch.chdir(tmp_path)
    Path("  two.json").write_text("{\"depths\": [1]}")  # an earlier result (a JSON with depths)
    with pytest.raises(UserError, match=r"^'  two\.json' already exists \(an earlier result\); pass --force"):
        fresh_outputs([Path("  two.json")], False)
    (tmp_path / "run" / "tensorboard").mkdir(parents=True)
    load_config("addition-prenorm-stars").save_yaml(tmp_path / "run" / "config.yaml")
    with pytest.raises(UserError, match=r"^--out run/config\.yaml would write over .*/run/config\.yaml, which "
                                        r"belongs to the run in .*; write the result beside the run's files, under "
                                        r"another name$"):
        fresh_outputs([Path("run/config.yaml")], True)
    with pytest.raises(UserError, match=r"^--out run/tensorboard/dynamics\.json would write into .*/run/tensorboard, "
                                        r"which belongs to the run in .*; write the result beside the run's files, "
                                        r"outside its tensorboard/$"):
        fresh_outputs([Path("run/tensorboard/dynamics.json")], True)


def test_fit_refuses_an_empty_out_and_gives_torch_its_threads_back(tmp_path, monkeypatch):
    """fit(cfg, "") and fit(cfg, Path("")) trained into the current directory (the CLI refuses an empty --out),
    and fit left torch's thread count at train.threads for the rest of a notebook session."""
    import torch

    from looplm import fit, load_config
    from looplm.errors import UserError

    from .conftest import tiny_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="out is empty"):
        fit(load_config("addition-prenorm-stars"), "", progress=False)
    for path in (Path(""), Path(".")):  # Path("") is "." itself: it trained here too
        with pytest.raises(UserError, match=r"^out is Path\('\.'\), as Path\(''\) is; give a folder for the run"):
            fit(tiny_config(train=dict(steps=1, eval_every=0)), path, progress=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fit(tiny_config(train=dict(steps=1, eval_every=0, threads=1)), tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_out_of_tilde_and_no_user_is_refused_for_what_it_is(tmp_path, monkeypatch, capsys):
    """`--out ~s.json` (no user 's.json': a shell leaves it as it is, with a space too) was refused as if no shell
    had expanded it after `--out=`, with the advice to write it with a space. ~, ~/x and ~root/x keep that advice."""
    from looplm.cli import main

    monkeypatch.chdir(tmp_path)
    for argv, said in ((["sweep", str(tmp_path / "run"), "--out", "~s.json"], "--out ~s.json: ~s.json is no home "
                        f"folder (there is no user 's.json'), and a name that starts with ~ is taken for one; to write "
                        f"a file or folder of that name here, give its full path ({tmp_path / '~s.json'})"),
                       (["train", "--config", "addition-prenorm-stars", "--out", "~looplm-nobody/r"],
                        "--out ~looplm-nobody/r: ~looplm-nobody is no home folder (there is no user 'looplm-nobody')"),
                       (["sweep", str(tmp_path / "run"), "--out", "~root/s.json"], "--out ~root/s.json: the shell "
                        "did not expand ~ (it does not after --out=); write --out ~/... with a space")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {said}") and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_analyze_out_over_a_runs_own_file_is_told_it_is_a_file(tmp_path, monkeypatch):
    """analyze --out RUN/metrics.jsonl was told to write "outside its metrics.jsonl/": the run's log file taken for a
    folder."""
    from looplm.config import load_config
    from looplm.errors import UserError
    from looplm.outputs import fresh_outputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    load_config("addition-prenorm-stars").save_yaml(tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match=r"^--out run/metrics\.jsonl/dynamics\.json would write under .*/run/metrics"
                                        r"\.jsonl, a file of the run in .*/run \(its own, not a folder\); give --out a "
                                        r"new name beside the run's files$"):
        fresh_outputs([Path("run/metrics.jsonl/dynamics.json")], True)


def test_default_legend_labels_that_collide_name_their_inputs(tmp_path, monkeypatch):
    """Two sweeps of one run (other data, depths or exit rules) were both drawn as "j1 (n=8)": the round-32 check
    covered only --labels. Each colliding label now names its input, as given."""
    import json

    from looplm import plots

    drawn = []

    def record(sweeps, out, **kw):
        drawn.extend(s["label"] for s in sweeps)
        Path(out).write_bytes(b"\x89PNG")
        return Path(out)

    monkeypatch.setattr(plots, "plot_accuracy", record)
    monkeypatch.chdir(tmp_path)
    sweep = {"depths": [1, 2], "accuracy": [0.5, 1.0], "n": 8, "label": "j1"}
    for name in ("x_h.json", "x_d.json"):
        Path(name).write_text(json.dumps(sweep))
    Path("other.json").write_text(json.dumps({**sweep, "label": "j2"}))
    plots.plot_inputs(["x_h.json", "x_d.json", "other.json"], tmp_path / "a.png")
    assert drawn == ["j1, x_h.json", "j1, x_d.json", "j2"]
    drawn.clear()
    plots.plot_inputs(["x_h.json", "x_d.json"], tmp_path / "b.png", labels=["a", "b"])
    assert drawn == ["a", "b"]


def test_an_empty_generated_answer_is_said(capsys):
    """A model that emits the end token at once printed the prompt and a trailing space, which could not be told
    from a dropped line or a blank answer."""
    from looplm.cli import main

    shipped = Path(__file__).resolve().parents[1] / "models" / "addition-prenorm-stars"
    assert main(["generate", str(shipped), "99+1=", "--loops", "16"]) == 0
    assert capsys.readouterr().out.endswith("\n99+1= [empty answer]\n")  # (after the note: not a 4-digit problem)
