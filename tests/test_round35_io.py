"""Round 35, the native side's inputs and outputs: paths past the file system's limits, an --out folder that
cannot be made, large text corpora, stepped depth ranges, the weights' file mode, and a deleted working directory."""

from __future__ import annotations

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
