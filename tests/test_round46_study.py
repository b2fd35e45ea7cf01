"""Round 46, the studies: a study's --out keeps the user's own report.md and figures (it rewrote both at its end,
with no --force), a study run kept without weights is named as one, and ouro-mini's init stage prints no
progress bar under --no-progress."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from looplm.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ADDITION = ROOT / "docs" / "results" / "addition"
RUN = "recipe-fixed8-s0"


def _looplm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "looplm", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # (a refusal takes seconds; the old code trained here)


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() if p.is_file() else b"" for p in sorted(d.rglob("*"))}


@pytest.mark.parametrize("mine", ["report", "figure"])
def test_the_addition_study_refuses_a_report_or_figure_it_did_not_write(tmp_path, mine):
    """`looplm study addition --out st --only NAME` replaced the user's st/report.md and st/figures/accuracy.png
    (not a PNG) with its own, rc 0. Both are refused now in one line, before any work, nothing changed."""
    st = tmp_path / "st"
    (st / "runs").mkdir(parents=True)
    shutil.copytree(ADDITION / "runs" / RUN, st / "runs" / RUN)
    if mine == "report":
        (st / "report.md").write_text("mine\n")
    else:
        (st / "figures").mkdir()
        (st / "figures" / "accuracy.png").write_text("user figure bytes\n")
    before = _tree(st)
    r = _looplm("study", "addition", "--out", "st", "--only", RUN, "--no-progress", cwd=tmp_path)
    name = "st/report.md" if mine == "report" else "st/figures/accuracy.png"
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"error: {name} exists and is not a looplm ") and r.stderr.count("\n") == 1
    assert "it replaces only its own results, never another file: move it, or choose another --out" in r.stderr
    assert _tree(st) == before


@pytest.mark.parametrize("task", ["addition", "ouro-mini"])
def test_a_folder_holding_only_the_users_report_is_no_study_folder(tmp_path, task):
    """A folder holding only the user's report.md passed the study-folder check (report.md is a study's name):
    both studies started training into it and wrote their report over the draft at the end."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "report.md").write_text("my paper draft\n")
    if task == "ouro-mini":
        pytest.importorskip("transformers")
    r = _looplm("study", task, "--out", "proj", "--no-progress", *(["--only", RUN] if task == "addition" else []),
                cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: proj/report.md exists and is not a looplm "), r.stderr
    assert sorted(os.listdir(tmp_path / "proj")) == ["report.md"]
    assert (tmp_path / "proj" / "report.md").read_text() == "my paper draft\n"


def test_the_studies_refuse_through_their_api_too(tmp_path, monkeypatch):
    """run_study / ouro_mini.study (the API) refuse the same way, before writing anything."""
    from looplm.experiments import addition, ouro_mini

    def started(*a, **kw):
        raise RuntimeError("the study started its work")

    monkeypatch.setattr(addition, "_run_one", started)
    monkeypatch.setattr(ouro_mini, "check_settings", started)
    (tmp_path / "report.md").write_text("draft\n")
    with pytest.raises(UserError, match=r"report\.md exists and is not a looplm report"):
        addition.run_study(tmp_path, addition.quick_grid()[:1], progress=False)
    with pytest.raises(UserError, match=r"report\.md exists and is not a looplm report"):
        ouro_mini.study(tmp_path, progress=False)
    assert os.listdir(tmp_path) == ["report.md"]


def test_a_study_folder_the_study_wrote_is_still_its_own(tmp_path):
    """The committed study results (written before this round) and a report written now count as the study's
    own: rerunning the study there rebuilds the report and figures as before."""
    from looplm.experiments.addition_report import write_report
    from looplm.outputs import check_study_outputs, is_result

    for d in (ADDITION, ROOT / "docs" / "results" / "ouro-mini-quick"):
        check_study_outputs(d)
        assert is_result(d / "report.md")
    from .test_study import _good_result

    write_report(tmp_path, [_good_result("stars")], quick=True)
    assert sorted(os.listdir(tmp_path / "figures")) == ["accuracy.png"]
    check_study_outputs(tmp_path)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written whole, through a temporary file


def test_a_study_run_kept_without_weights_is_named_as_one(tmp_path):
    """sweep of a study run kept without weights (as in docs/results/addition/runs/*) said "not a looplm
    checkpoint or run directory"; it says what the folder is and how to train it again."""
    st = tmp_path / "st"
    shutil.copytree(ADDITION / "runs" / RUN, st / "runs" / RUN)
    r = _looplm("sweep", f"st/runs/{RUN}", "--depths", "8", "--n", "5", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: st/runs/{RUN} is a run of `looplm study addition` whose weights were not "
                               "kept (its results only); train it again with `looplm study addition --out "
                               f"NEW_FOLDER --only {RUN}`"), r.stderr


def test_ouro_mini_init_prints_no_progress_bar(tmp_path, capfd):
    """The init stage's save_pretrained printed transformers' "Writing model shards" bar under --no-progress."""
    pytest.importorskip("transformers")
    from looplm.experiments import ouro_mini

    from .test_ouro_mini import TINY

    train_jsonl, _ = ouro_mini.write_data(tmp_path, TINY)
    capfd.readouterr()
    assert (ouro_mini.write_init(tmp_path, TINY, train_jsonl) / "model.safetensors").exists()
    err = capfd.readouterr().err
    assert "Writing model shards" not in err and "it/s" not in err, err
