"""Every row of docs/bad-inputs.md has a test: here (the rows whose test column names this file, run through the
CLI and compared with the table's error text exactly) or an existing test the table names (checked to exist).

Nothing may hang: each in-process case runs under a SIGALRM deadline, and the authors' failure (a loader
spinning forever on an empty file) is also checked in a real subprocess with a timeout.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from looplm.cli import main
from looplm.train import train

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
TRAIN = ["train", "--config", "addition-stars", "--out", "{tmp}/out", "--no-progress"]
ROW = {"num1": 1234, "num2": 5678, "answer": 6912}

# id -> (argv, files to create under {tmp}); `{run}` is a trained tiny run (max_seq_len 16), `{tmp}` a fresh dir.
CASES: dict[str, tuple[list[str], dict[str, str | bytes]]] = {
    # config
    "cfg-yaml-unknown-section": (["train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"],
                                 {"c.yaml": "optim:\n  lr: 1\n"}),
    "cfg-override-no-equals": ([*TRAIN, "--set", "train.steps"], {}),
    "cfg-float-for-int": ([*TRAIN, "--set", "train.steps=2.5"], {}),
    "cfg-int-for-bool": ([*TRAIN, "--set", "model.bias=1"], {}),
    "cfg-text-for-float": ([*TRAIN, "--set", "train.lr=abc"], {}),
    "cfg-list-for-float": ([*TRAIN, "--set", "train.lr=[1]"], {}),
    "cfg-inf": ([*TRAIN, "--set", "train.lr=.inf"], {}),
    "cfg-nan": ([*TRAIN, "--set", "loops.mu=.nan"], {}),
    "cfg-bad-device": ([*TRAIN, "--set", "train.device=tpu"], {}),
    "cfg-min-loops-zero": ([*TRAIN, "--set", "loops.min_loops=0"], {}),
    "cfg-lambda-negative": ([*TRAIN, "--set", "reg.weight=-0.1"], {}),
    "cfg-rate-zero": ([*TRAIN, "--set", "loops.rate=0"], {}),
    "cfg-dropout-one": ([*TRAIN, "--set", "model.dropout=1"], {}),
    "cfg-min-lr-above-lr": ([*TRAIN, "--set", "train.min_lr=1"], {}),
    "cfg-steps-zero": ([*TRAIN, "--set", "train.steps=0"], {}),
    "cfg-keep-zero": ([*TRAIN, "--set", "train.keep_checkpoints=0"], {}),
    "cfg-max-bad-zero": ([*TRAIN, "--set", "train.max_bad_steps=0"], {}),
    "cfg-digits-10": ([*TRAIN, "--set", "data.digits=10"], {}),
    "cfg-seq-too-short": ([*TRAIN, "--set", "model.max_seq_len=12"], {}),
    "cfg-vocab-too-small": ([*TRAIN, "--set", "model.vocab_size=10"], {}),
    "cfg-test-split-too-large": ([*TRAIN, "--set", "data.digits=1"], {}),
    "cfg-yaml-invalid": (["train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "model: [1, 2\n"}),
    "cfg-yaml-list": (["train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "- 1\n- 2\n"}),
    "cfg-yaml-section-scalar": (["train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "model: 3\n"}),
    # data files
    "data-dev-null": (["sweep", "{run}", "--data", "/dev/null", "--no-progress"], {}),
    "data-directory": (["sweep", "{run}", "--data", "{tmp}", "--no-progress"], {}),
    "data-nan": (["sweep", "{run}", "--data", "{tmp}/d.jsonl", "--no-progress"],
                 {"d.jsonl": '{"num1": NaN, "num2": 1, "answer": 1}\n'}),
    "data-exponent": (["sweep", "{run}", "--data", "{tmp}/d.jsonl", "--no-progress"],
                      {"d.jsonl": '{"num1": 1e3, "num2": 1, "answer": 1001}\n'}),
    "data-too-wide": (["sweep", "{run}", "--data", "{tmp}/d.jsonl", "--no-progress"],
                      {"d.jsonl": '{"num1": 1234, "num2": 5678, "answer": 6912}\n'
                                  '{"num1": 123456789, "num2": 1, "answer": 123456790}\n'}),
    "data-binary": (["sweep", "{run}", "--data", "{tmp}/d.jsonl", "--no-progress"], {"d.jsonl": b"\xff\xfe\x00junk"}),
    # generation
    "gen-space": (["generate", "{run}", "1 + 2="], {}),
    "gen-too-long": (["generate", "{run}", "1234567+1234567="], {}),
    "gen-empty-prompt": (["generate", "{run}", ""], {}),
    # sweep and checkpoints
    "ckpt-not-a-run": (["sweep", "{tmp}", "--no-progress"], {}),
    "depth-zero": (["sweep", "{run}", "--depths", "0:3", "--no-progress"], {}),
    "depth-step-zero": (["sweep", "{run}", "--depths", "1:10:0", "--no-progress"], {}),
    "depth-not-a-number": (["sweep", "{run}", "--depths", "a:b", "--no-progress"], {}),
    "sweep-n-zero": (["sweep", "{run}", "--n", "0", "--no-progress"], {}),
}


def doc_rows() -> dict[str, dict[str, str]]:
    """The bad-input table rows: id -> {input, example, error, test}."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `([a-z0-9-]+)` \|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 5, f"malformed row: {line}"
            assert m.group(1) not in rows, f"duplicate id {m.group(1)}"
            rows[m.group(1)] = dict(zip(("id", "input", "example", "error", "test"), cells, strict=True))
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tiny_config(train=dict(steps=1, eval_every=0)), tmp_path_factory.mktemp("bad") / "run",
                 progress=False)


@pytest.fixture(autouse=True)
def _deadline():
    if not hasattr(signal, "SIGALRM"):  # not on Windows; the subprocess test below still has its timeout
        yield
        return

    def hung(*_):
        raise TimeoutError("a bad input made looplm hang")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def first_error_line(err: str, run: Path, tmp: Path) -> str:
    line = err.strip().splitlines()[0]
    return line.replace(str(run), "<run>").replace(str(tmp), "<tmp>")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, run, tmp_path, capsys):
    argv, files = CASES[case]
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    row = doc_rows()[case]
    assert row["test"] == "`test_bad_inputs.py`"
    assert f"`{first_error_line(err, run, tmp_path)}`" == row["error"]
    # Failed before any work: no checkpoint, no training step logged.
    assert not (tmp_path / "out" / "checkpoint").exists() and not (tmp_path / "out" / "metrics.jsonl").exists()


def test_every_table_row_has_a_test():
    rows = doc_rows()
    assert len(rows) >= 60
    assert set(CASES) <= set(rows), f"cases missing from the table: {sorted(set(CASES) - set(rows))}"
    for rid, row in rows.items():
        if rid in CASES:
            continue
        refs = re.findall(r"`(test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`", row["test"])
        assert refs, f"row {rid} names no test: {row['test']}"
        for fname, func in refs:
            src = (ROOT / "tests" / fname).read_text()
            assert re.search(rf"^def {func}\(", src, re.M), f"row {rid}: {fname}::{func} does not exist"


def test_empty_data_file_does_not_hang_in_a_real_process(run, tmp_path):
    """The authors' loader spins forever on an empty file; ours exits at once with one line."""
    (tmp_path / "empty.jsonl").write_text("")
    r = subprocess.run([sys.executable, "-m", "looplm", "sweep", str(run), "--data", str(tmp_path / "empty.jsonl"),
                        "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'empty.jsonl'}: no problems (the file is empty)"
