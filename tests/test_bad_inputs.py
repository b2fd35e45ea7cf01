"""A table of bad inputs and faults, each run through the CLI as a user would (`test_bad_input`).

Every case asserts: the exit code (2, or 130 for an interrupt); exactly one line on stderr, starting `error: `, equal
to the row of docs/bad-inputs.md for that case (after the normalizations in `normalize`); no traceback; and every
file of the run directories and of the scratch directory byte-identical before and after: a refusal changes
nothing. `python -m tests.test_bad_inputs` rewrites the tables of docs/bad-inputs.md from CASES and what the
commands print.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from looplm.cli import main

from .bad_input_cases import CASES as NATIVE_CASES
from .bad_input_cases import GOOD_CHAT, TINY, Case
from .bad_input_cases_demo import DEMO_CASES
from .bad_input_cases_hf import HF_CASES
from .bad_input_cases_paths import PATH_CASES
from .bad_input_damage import _HELD, PLACES

CASES = {**NATIVE_CASES, **PATH_CASES, **DEMO_CASES, **HF_CASES}  # native rows, the demo's, pretrained-model ones

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"


# --- the fixtures: a tiny trained run (with a history and earlier results), a tiny HF model and a fine-tune ------
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--config", "addition-prenorm-stars", "--out", str(d), "--no-progress", *TINY]) == 0
    assert main(["sweep", str(d), "--depths", "1:3", "--n", "4", "--no-progress"]) == 0
    assert main(["analyze", str(d), "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--pca-n", "0",
                 "--no-plot", "--no-progress"]) == 0
    return d


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer, write_jsonl

    d = tmp_path_factory.mktemp("hf")
    base = save_tiny_base(d / "base", tiny_chat_tokenizer())
    data = write_jsonl([json.loads(GOOD_CHAT)] * 4, d / "chat.jsonl")
    (d / "ft.yaml").write_text(f"model:\n  name_or_path: {base}\ndata:\n  source: {data}\n  max_length: 256\n"
                               "train:\n  steps: 1\n  batch_size: 2\n  threads: 1\n")
    assert main(["finetune", "--config", str(d / "ft.yaml"), "--out", str(d / "run"), "--no-progress"]) == 0
    return {"base": base, "hfrun": d / "run"}


def snapshot(*dirs: Path) -> dict[str, str]:
    """Every path under the directories: a file's SHA-256, a link's target, or 'dir'."""
    out = {}
    for root in dirs:
        for p in sorted([root, *root.rglob("*")]) if root.exists() else []:
            key = str(p)
            if p.is_symlink():
                out[key] = "-> " + str(p.readlink())
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


NORMALIZE = [(re.compile(r"\d+(\.\d+)? GiB"), "<n> GiB"), (re.compile(r"\d+ CPU cores"), "<n> CPU cores"),
             (re.compile(r"pytest-of-\w+/pytest-\d+/"), "")]


def normalize(line: str, places: dict[str, Path]) -> str:
    for name, p in sorted(places.items(), key=lambda kv: -len(str(kv[1]))):
        line = line.replace(str(p), f"<{name}>")
    for rx, rep in NORMALIZE:
        line = rx.sub(rep, line)
    return line


def run_case(case_id: str, run: Path, hf_paths: dict[str, Path] | None, tmp: Path, capsys) -> tuple[int, str, dict]:
    case = CASES[case_id]
    copy = tmp / "copy"
    shutil.copytree(run, copy, symlinks=True)
    places = {"tmp": tmp, "run": run, "copy": copy, **(hf_paths or {})}
    def fill(s: str) -> str:
        for name, p in places.items():
            s = s.replace("{" + name + "}", str(p))
        return s

    for name, content in case.files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(content if isinstance(content, bytes) else fill(content).encode())
    if case.prepare is not None:
        PLACES.clear()
        PLACES.update(places)
        case.prepare(tmp, copy)
    argv = [fill(a) for a in case.argv]
    watched = [tmp, run, *(hf_paths or {}).values()]
    before = snapshot(*watched)
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        for p in _HELD:
            p.kill()
            p.wait()
        _HELD.clear()
    err = capsys.readouterr().err
    return rc, err, {"before": before, "after": snapshot(*watched), "places": places}


def doc_rows() -> dict[str, str]:
    """id -> the error cell of its row in docs/bad-inputs.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \| .* \| `(error: .*)` \|$", line)
        if m:
            assert m.group(1) not in rows, f"duplicate id {m.group(1)}"
            rows[m.group(1)] = m.group(2)
    return rows


@pytest.fixture(autouse=True)
def _deadline():
    def hung(*_):
        raise TimeoutError("a bad input made looplm hang")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input(case_id, run, request, tmp_path, capsys):
    case = CASES[case_id]
    hf_paths = request.getfixturevalue("hf") if case.hf or "{hfrun}" in " ".join(case.argv) else None
    rc, err, snap = run_case(case_id, run, hf_paths, tmp_path, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == case.rc, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert snap["after"] == snap["before"], "a refused command changed files on disk"
    assert not (tmp_path / "RAN").exists(), "code from a model directory ran"
    assert doc_rows().get(case_id) == normalize(lines[0], snap["places"]), \
        f"docs/bad-inputs.md has no exact row for {case_id}; `python -m tests.test_bad_inputs` rewrites the tables"


def test_the_table_lists_every_case_and_no_other():
    rows = doc_rows()
    assert len(CASES) >= 100
    assert set(rows) == set(CASES), sorted(set(rows) ^ set(CASES))


def test_empty_data_file_does_not_hang_in_a_real_process(run, tmp_path):
    """The authors' loader spins forever on an empty file; ours exits at once with one line."""
    (tmp_path / "empty.jsonl").write_text("")
    r = subprocess.run([sys.executable, "-m", "looplm", "sweep", str(run), "--data", str(tmp_path / "empty.jsonl"),
                        "--no-progress", "--out", str(tmp_path / "s.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'empty.jsonl'}: no problems (the file is empty)"


# --- rewriting the tables ---------------------------------------------------------------------------------------------
def _render(case: Case) -> str:
    parts = ["looplm", *(a if a else "''" for a in case.argv)]
    text = case.shown or " ".join(p if " " not in p else repr(p) for p in parts)
    for name in ("tmp", "run", "copy", "base", "hfrun"):
        text = text.replace("{" + name + "}", f"<{name}>")
    if case.files:
        text += "; files: " + ", ".join(f"{k} = {v[:60]!r}" for k, v in case.files.items())
    if case.prepare is not None:
        text += f"; before: {case.before or case.prepare.__doc__ or case.prepare.__name__}"
    return text.replace("|", "\\|")


def write_doc() -> None:
    """Run every case (as the test does) and rewrite each group's table in docs/bad-inputs.md."""
    import tempfile

    class Capture:
        def __init__(self):
            self.err = ""

        def readouterr(self):
            out = type("R", (), {"err": sys.stderr.getvalue()})()
            sys.stderr.seek(0)
            sys.stderr.truncate()
            return out

    import io

    base = Path(tempfile.mkdtemp())
    run = base / "run"
    main(["train", "--config", "addition-prenorm-stars", "--out", str(run), "--no-progress", *TINY])
    main(["sweep", str(run), "--depths", "1:3", "--n", "4", "--no-progress"])
    main(["analyze", str(run), "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--pca-n", "0", "--no-plot",
          "--no-progress"])
    from .hf_fixtures import save_tiny_base, tiny_chat_tokenizer, write_jsonl

    b = save_tiny_base(base / "base", tiny_chat_tokenizer())
    data = write_jsonl([json.loads(GOOD_CHAT)] * 4, base / "chat.jsonl")
    (base / "ft.yaml").write_text(f"model:\n  name_or_path: {b}\ndata:\n  source: {data}\n  max_length: 256\n"
                                  "train:\n  steps: 1\n  batch_size: 2\n  threads: 1\n")
    main(["finetune", "--config", str(base / "ft.yaml"), "--out", str(base / "hfrun"), "--no-progress"])
    hf_paths = {"base": b, "hfrun": base / "hfrun"}
    rows: dict[str, list[str]] = {}
    real_err = sys.stderr
    for cid, case in CASES.items():
        tmp = Path(tempfile.mkdtemp(dir=base))
        sys.stderr = io.StringIO()
        try:
            rc, err, snap = run_case(cid, run, hf_paths if case.hf or "{hfrun}" in " ".join(case.argv) else None,
                                     tmp, Capture())
        finally:
            sys.stderr = real_err
        line = next((ln for ln in err.splitlines() if ln.strip()), "(no error)")
        rows.setdefault(case.group, []).append(
            f"| `{cid}` | {case.what} | `{_render(case)}` | `{normalize(line, snap['places'])}` |")
    text = DOC.read_text()
    for group, lines in rows.items():
        table = "| id | bad input | command | error (exact) |\n|---|---|---|---|\n" + "\n".join(lines) + "\n"
        text = re.sub(rf"(<!-- cases: {group} -->\n).*?(<!-- end -->)", lambda m, t=table: m.group(1) + t + m.group(2),
                      text, flags=re.S)
    tmp = DOC.with_name(DOC.name + ".tmp")  # whole or not at all: a row that cannot be written emptied the file
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(DOC)


if __name__ == "__main__":
    write_doc()
