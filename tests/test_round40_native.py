"""Round 40, native: --force replaces only an earlier looplm result (never a run's training file, wherever the
command runs), a second Ctrl-C cannot stop the restore of the earlier results, and analyze's --tol is checked
once, by the flag's name."""

from __future__ import annotations

import json

import pytest

from looplm import fit
from looplm.cli import main
from looplm.errors import UserError

from .test_round38_resume import TEXT, text_cfg


def test_sweep_force_from_another_folder_keeps_the_runs_training_file(tmp_path, monkeypatch, capsys):
    """A run's relative data.path was resolved against the current folder: from another folder the protection saw
    nothing there, and `sweep --force --out` replaced the run's training file with the sweep's JSON."""
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (tmp_path / "work" / "a.txt").write_text(TEXT)
    (tmp_path / "work" / "mine.txt").write_text(TEXT)
    fit(text_cfg(1, "a.txt"), tmp_path / "work" / "run", progress=False)
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["sweep", "../work/run", "--data", "../work/mine.txt", "--out", "../work/a.txt", "--force",
                 "--depths", "1:2", "--no-progress"]) == 2
    assert (tmp_path / "work" / "a.txt").read_text() == TEXT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ../work/a.txt exists and is not a looplm result") and "\n" not in err
    # an earlier sweep's result there is still replaced
    sweep = ["sweep", "../work/run", "--data", "../work/mine.txt", "--out", "s.json", "--no-progress"]
    assert main([*sweep, "--depths", "1:2"]) == 0
    assert main([*sweep, "--depths", "1:3", "--force"]) == 0
    assert json.loads((tmp_path / "elsewhere" / "s.json").read_text())["depths"] == [1, 2, 3]


def test_force_replaces_only_what_looplm_writes(tmp_path):
    from looplm.outputs import fresh_outputs

    own = {"s.json": '{"depths": [1], "accuracy": [0.5]}', "f.png": b"\x89PNG\r\n\x1a\nxx", "f.pdf": b"%PDF-1.4",
           "t.md": "# lm-eval by loop count: m\n"}
    for name, body in own.items():
        (tmp_path / name).write_bytes(body if isinstance(body, bytes) else body.encode())
        fresh_outputs([tmp_path / name], force=True)
    for name, body in {"rows.jsonl": '{"prompt": "1+1", "answer": "2"}\n', "c.json": "[1, 2]",
                       "x.png": "not a figure", "notes.md": "# mine"}.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(UserError, match=rf"^.*{name} exists and is not a looplm .*choose another --out$"):
            fresh_outputs([tmp_path / name], force=True)


def _second_ctrl_c(monkeypatch, module, name):
    """`module.name` sends this process a SIGINT (a second Ctrl-C) the first time it is called, then goes on."""
    import os
    import signal

    real, sent = getattr(module, name), []

    def once(*a, **k):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(module, name, once)
    return sent


def test_a_second_ctrl_c_during_the_restore_puts_every_earlier_result_back(tmp_path, monkeypatch):
    """all_or_nothing put the earlier results back one by one: a second SIGINT in that loop stopped it part way,
    and the earlier dynamics.json sat beside the interrupted command's figures."""
    import os

    from looplm import outputs

    paths = [tmp_path / f for f in ("dynamics.json", "dynamics.png", "trajectories.png")]
    for p in paths:
        p.write_text(f"earlier {p.name}")
    with pytest.raises(KeyboardInterrupt), outputs.all_or_nothing(paths):
        for p in paths:
            (tmp_path / "new").write_text(f"new {p.name}")
            os.replace(tmp_path / "new", p)
        sent = _second_ctrl_c(monkeypatch, outputs.os, "replace")
        raise KeyboardInterrupt
    assert sent and [p.read_text() for p in paths] == [f"earlier {p.name}" for p in paths]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no copy left


def test_a_second_ctrl_c_while_saying_interrupted_is_still_one_line(monkeypatch, capsys):
    """The second SIGINT in run_command's own cleanup printed a KeyboardInterrupt traceback (once exit 1)."""
    import signal

    from looplm import errors

    def body():
        raise KeyboardInterrupt

    sent = _second_ctrl_c(monkeypatch, errors, "say")
    try:
        rc = errors.run_command(body)
    except KeyboardInterrupt:  # (left to pytest, it would stop the whole session)
        pytest.fail("a KeyboardInterrupt came out of run_command")
    assert rc == 130 and sent
    assert capsys.readouterr().err.strip() == "error: interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are back


@pytest.mark.parametrize("tol", ["1", "0", "1.5"])
def test_analyze_tol_is_checked_once_by_the_flags_name(tol, capsys):
    """--tol 1 passed argparse (> 0) and was then refused by the API's name: `tol must be a number in (0, 1)`."""
    assert main(["analyze", "no-such-run", "--tol", tol]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"argument --tol: must be a finite number > 0 and < 1, got {tol}")


def test_a_file_of_the_users_where_a_result_goes_is_named_as_such_without_force(tmp_path):
    """It was "already exists (an earlier result); pass --force", and --force then refused it: the first check
    now tells the user's file from an earlier result, as --force does."""
    from looplm.outputs import fresh_outputs

    (tmp_path / "sweep.json").write_text("my notes\n")
    for force in (False, True):
        with pytest.raises(UserError, match=r"sweep.json exists and is not a looplm result .*move it, or choose "
                                            r"another --out$"):
            fresh_outputs([tmp_path / "sweep.json"], force=force)
    assert (tmp_path / "sweep.json").read_text() == "my notes\n"
