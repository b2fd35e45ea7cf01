"""The shipped demo checkpoint loads and scores what its sweep.json records."""

import json
from pathlib import Path

import pytest

from looplm.checkpoint import load_model
from looplm.evaluate import sweep
from looplm.tasks import make_task

RUN = Path(__file__).resolve().parents[1] / "models" / "addition-prenorm-stars"


@pytest.mark.skipif(not RUN.exists(), reason="no shipped checkpoint in this checkout")
def test_shipped_checkpoint_scores_as_recorded():
    model, cfg = load_model(RUN)
    task = make_task(cfg)
    batch = task.test_batch(200, cfg.data.test_seed, cfg.model.max_seq_len)
    res = sweep(model, batch, [1, 4, 100])
    recorded = json.loads((RUN / "sweep.json").read_text())
    acc = dict(zip(recorded["depths"], recorded["accuracy"], strict=True))
    assert res.accuracy[1] == 1.0 and res.accuracy[2] >= 0.99  # the first 200 of the recorded 1,000
    assert acc[4] == 1.0 and acc[100] >= 0.99
    assert res.accuracy[0] < 0.5  # one loop is not enough: depth matters


EXTERNAL = Path(__file__).resolve().parents[1] / "models" / "addition-stars-external"


@pytest.mark.skipif(not EXTERNAL.exists(), reason="no shipped checkpoint in this checkout")
def test_shipped_external_norm_checkpoint_holds_its_accuracy_with_depth():
    """The study's stable recipe (post_sandwich, prelude + input injection, curriculum, STARS): flat accuracy
    and a bounded state far past the training depth, as its result.json records on 5,000 problems."""
    model, cfg = load_model(EXTERNAL)
    assert cfg.model.norm_placement == "post_sandwich" and cfg.model.injection == "add"
    task = make_task(cfg)
    batch = task.test_batch(200, cfg.data.test_seed, cfg.model.max_seq_len)
    res = sweep(model, batch, [1, 8, 300])
    assert res.accuracy[1] >= 0.99 and res.accuracy[2] >= 0.99
    assert res.state_norm[2] < 1.5 * res.state_norm[1]  # bounded: no drift between 8 and 300 loops
    recorded = json.loads((EXTERNAL / "result.json").read_text())
    acc = dict(zip(recorded["depths"], recorded["accuracy"], strict=True))
    assert recorded["n"] >= 5000 and min(a for d, a in acc.items() if 4 <= d <= 1000) >= 0.99


OURO_MINI = Path(__file__).resolve().parents[1] / "models" / "ouro-mini-base"


@pytest.mark.skipif(not OURO_MINI.exists(), reason="no shipped Ouro-architecture base in this checkout")
def test_shipped_ouro_mini_base_scores_as_recorded(tmp_path):
    """The base of `looplm study ouro-mini` (an OuroForCausalLM trained at a fixed 4 loops): lm-eval on the first
    held-out problems of its study, regenerated from the recorded settings, gives the recorded exact match."""
    pytest.importorskip("transformers")
    pytest.importorskip("lm_eval")
    from looplm.experiments import ouro_mini

    rec = json.loads((OURO_MINI / "check.json").read_text())
    keys = json.loads((OURO_MINI / "study_settings.json").read_text())
    s = ouro_mini.Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in keys.items()},
                           max_gen_toks=rec["max_gen_toks"])
    assert ouro_mini.base_check(OURO_MINI, s, tmp_path) == rec
    assert rec["exact_match"][0] > 0  # it learned something at its training depth
    # its run record (written before train.steps and train.epochs together were refused) still reads: analyze,
    # the study's last stage, refused it once the work was done
    import torch

    from looplm.hf.analysis import analyze_hf
    from looplm.hf.mathdata import write_split

    _, test = write_split(tmp_path / "md", n_train=4, n_test=4, seed=0)
    res = analyze_hf(OURO_MINI, str(test), [1, 2], 2, torch.device("cpu"), spectral_n=0, pca_n=0)
    assert res["train_loops"] == [4, 4] and res["n"] == 2


_ADDITION_TASK = """task: shipped_addition
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
process_results: !function shipped_addition_utils.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
generation_kwargs:
  until: ["<eos>"]
  do_sample: false
  max_gen_toks: 6
num_fewshot: 0
metadata:
  version: 1.0
"""


@pytest.mark.skipif(not RUN.exists(), reason="no shipped checkpoint in this checkout")
def test_shipped_checkpoint_exported_scores_the_same_through_lm_eval(tmp_path, capsys):
    """A model that learned, through the HF path: `export-hf` (weights and tokenizer) then `eval-lm` (transformers'
    generate() at each loop count, lm-eval's scoring) gives, problem for problem, the exact match of looplm's own
    one-pass sweep on the same problems."""
    pytest.importorskip("transformers")
    pytest.importorskip("lm_eval")
    from looplm.cli import main as cli

    model, cfg = load_model(RUN)
    task = make_task(cfg)
    a, b = task.test_pairs(40, cfg.data.test_seed)
    a[::4] //= 10  # every 4th problem has a 3-digit first operand: prompts of two lengths in one batch
    rows = [{"num1": int(x), "num2": int(y), "answer": int(x + y), "prompt": task.prompt(x, y),
             "target": task.target(x, y)} for x, y in zip(a, b, strict=True)]
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "shipped_addition.yaml").write_text(_ADDITION_TASK.format(data=data))
    (tmp_path / "tasks" / "shipped_addition_utils.py").write_text(
        "def process_results(doc, results):\n    return {'exact_match': float(results[0] == doc['target'])}\n")
    depths = [1, 2, 4]
    assert cli(["export-hf", str(RUN), "--out", str(tmp_path / "exp")]) == 0
    assert cli(["eval-lm", str(tmp_path / "exp"), "--tasks", "shipped_addition", "--include-path",
                str(tmp_path / "tasks"), "--depths", ",".join(map(str, depths)), "--device", "cpu",
                "--out", str(tmp_path / "lm")]) == 0
    assert cli(["sweep", str(RUN), "--data", str(data), "--depths", ",".join(map(str, depths)), "--no-progress",
                "--out", str(tmp_path / "sweep.json")]) == 0
    capsys.readouterr()
    # a generation budget the export's positions cannot hold: one line, before any result is written
    positions = cfg.model.max_seq_len
    assert cli(["eval-lm", str(tmp_path / "exp"), "--tasks", "shipped_addition", "--include-path",
                str(tmp_path / "tasks"), "--depths", "1", "--device", "cpu", "--max-gen-toks", str(positions),
                "--out", str(tmp_path / "lm2")]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]  # behind lm-eval's open bar
    assert len(errors) == 1 and f"{positions} positions; pass a --max-gen-toks of at most" in errors[0]
    assert not (tmp_path / "lm2").exists()
    lm = json.loads((tmp_path / "lm" / "eval_lm.json").read_text())
    native = json.loads((tmp_path / "sweep.json").read_text())
    assert native["depths"] == depths and native["n"] == 40
    assert lm["n_samples"]["shipped_addition"]["effective"] == 40
    hf_acc = [r["metrics"]["shipped_addition"]["exact_match,none"] for r in lm["rows"]]
    assert [r["loops"] for r in lm["rows"]] == depths and hf_acc == pytest.approx(native["accuracy"], abs=1e-6)
    assert native["accuracy"][0] < 0.5 <= native["accuracy"][-1]  # depth matters, so the match is not trivial
    assert lm["settings"]["batch_size"] == 8 and lm["settings"]["dtype"] == "float32"  # what made the numbers
    # `analyze` on the export reads chat records through the export's template (prompt, answer, <eos>: the task's
    # own layout) and scores what `analyze` on the run scores from the same problems.
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["target"]}) + "\n"
                                                 for r in rows))
    flags = ["--depths", "1:4", "--spectral-n", "0", "--pca-n", "0", "--no-plot", "--no-progress"]
    assert cli(["analyze", str(tmp_path / "exp"), "--data", str(tmp_path / "chat.jsonl"), *flags,
                "--out", str(tmp_path / "hf_an")]) == 0
    assert cli(["analyze", str(RUN), "--data", str(data), *flags, "--out", str(tmp_path / "an")]) == 0
    hf_an, an = (json.loads((tmp_path / d / "dynamics.json").read_text()) for d in ("hf_an", "an"))
    assert hf_an["n"] == an["n"] == 40 and hf_an["accuracy"] == an["accuracy"]
    assert hf_an["metrics"]["ce"]["mean"] == pytest.approx(an["metrics"]["ce"]["mean"], rel=1e-5)
