"""A head wider than the tokenizer (model.vocab_size 16, the addition tokenizer's 14 ids): `looplm generate`, an
HF export's generate() and `looplm sweep` choose among the same ids, never a padded one (it decodes to '')."""

from pathlib import Path

import pytest
import torch

from looplm import checkpoint as ckpt
from looplm.evaluate import sweep
from looplm.generate import generate
from looplm.model import LoopedTransformer
from looplm.tasks import make_task
from looplm.tasks.base import IGNORE, Batch

from .conftest import tiny_config

LOOPS = 2


@pytest.fixture(scope="module")
def padded_wins(tmp_path_factory):
    """A model whose padded id 15 is the argmax over all 16 logits everywhere, and real id 5 over the 14 real ids:
    the final norm writes a constant direction u, and the head's rows 15 and 5 point along it."""
    torch.manual_seed(0)
    cfg = tiny_config(loops=dict(num_loops=LOOPS))
    model = LoopedTransformer(cfg.model).eval()
    tok = make_task(cfg).tok
    assert (cfg.model.vocab_size, tok.vocab_size) == (16, 14)
    with torch.no_grad():
        u = torch.randn(cfg.model.d_model)
        model.norm_f.weight.zero_()
        model.norm_f.bias.copy_(u)
        model.tok_emb.weight[15] = 3 * u
        model.tok_emb.weight[5] = 2 * u
    d = tmp_path_factory.mktemp("padded") / "checkpoint"
    ckpt.save(d, model, cfg)
    prompt = tok.encode("1234+5678=")
    assert int(model(torch.tensor([prompt]), LOOPS)[0, -1].argmax()) == 15  # the padded id wins unrestricted
    return d, model, cfg, tok, prompt


def test_generate_export_and_sweep_choose_the_same_real_ids(padded_wins, tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from looplm.hf import convert_checkpoint

    d, model, cfg, tok, prompt = padded_wins
    new = 4
    want = list(generate(model, [prompt], LOOPS, max_new_tokens=new, eos_id=1, vocab=tok.vocab_size)[0])
    assert want == [5] * new and tok.decode(want)

    out = convert_checkpoint(d, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    got = hf.generate(torch.tensor([prompt]), max_new_tokens=new, do_sample=False, num_loops=LOOPS)
    assert got[0, len(prompt):].tolist() == want
    assert hf.config.tokenizer_vocab_size == 14
    logits = hf(torch.tensor([prompt]), num_loops=LOOPS).logits
    torch.testing.assert_close(logits[..., :14], model(torch.tensor([prompt]), LOOPS)[..., :14])
    assert bool(torch.isneginf(logits[..., 14:]).all())  # eval-lm's scores: no mass on an undecodable id

    # sweep, teacher-forced on generate's answer: its argmax is generate's at every answer position
    ids = torch.tensor([prompt + want])
    tgt = torch.full_like(ids, IGNORE)
    tgt[0, len(prompt) - 1 : -1] = torch.tensor(want)
    res = sweep(model, Batch(ids, tgt, torch.ones_like(ids, dtype=torch.bool)), [LOOPS], vocab=tok.vocab_size)
    assert res.accuracy == [1.0]


def test_the_sweep_command_reads_only_the_tokenizers_ids(padded_wins, monkeypatch, tmp_path):
    import looplm.cli as cli

    d, *_ = padded_wins
    seen = []
    real = cli.sweep
    monkeypatch.setattr(cli, "sweep", lambda *a, **kw: seen.append(kw.get("vocab")) or real(*a, **kw))
    cli.run_sweep(str(d), "1:2", n=4, progress=False)
    assert seen == [14]


def test_an_export_config_refuses_a_tokenizer_wider_than_its_head():
    pytest.importorskip("transformers")
    from looplm.hf import LooplmConfig

    cfg = tiny_config()
    for bad in (17, -1, True, 2.5):
        with pytest.raises(ValueError, match="tokenizer_vocab_size must be an integer"):
            LooplmConfig.from_model_config(cfg.model, tokenizer_vocab_size=bad)
    assert LooplmConfig.from_model_config(cfg.model).tokenizer_vocab_size == 0  # an older export: every id


def _result(name: str, acc1000: float = 1.0, rho: float = 0.9) -> dict:
    return {"name": name, "depths": [1, 100, 1000], "accuracy": [1.0, 1.0, acc1000], "state_norm": [5.0, 5.0, 5.0],
            "rho_at_num_loops": rho}


def _dynamics(res: float, rho: float) -> dict:
    return {"metrics": {"step_residual": {"q50": [res]}}, "depths": [1000],
            "spectral": {"depths": [1000], "rho": {"q50": [rho], "converged_frac": [1.0]}}}


def test_the_fixed_point_claim_is_not_judged_without_its_inputs(monkeypatch):
    """A run with no dynamics.json (copied without weights) has no step residual nor ρ at 1000 loops: the claim
    read "agrees", counting the missing residual as a pass and ρ at the training depth as ρ@1000."""
    from looplm.experiments import addition_report as rep

    row = rep._fixed_point_row("", [_result("ext-prelude-inject-stars")], None)
    assert row[2].startswith("not measured") and "ext-prelude-inject-stars" in row[2], row[2]
    # a measured input that breaks the rule still disagrees; measured and stable agrees
    monkeypatch.setattr(rep, "_read_dynamics", lambda out, name: _dynamics(1e-6, 0.5 if name == "a" else 1.5))
    assert rep._fixed_point_row("", [_result("a")], Path("."))[2] == "agrees"
    assert rep._fixed_point_row("", [_result("a"), _result("b")], Path("."))[2] == "disagrees"


def test_analyze_of_one_depth_draws_no_trajectory(padded_wins, tmp_path):
    """One depth is one point per sample: the figure had "PC1 (0.0% of variance)". No trajectory is kept or drawn."""
    from looplm.cli import main as cli

    d, *_ = padded_wins
    out = tmp_path / "an"
    assert cli(["analyze", str(d), "--depths", "1", "--n", "4", "--pca-n", "2", "--spectral-n", "0", "--out",
                str(out), "--no-progress"]) == 0
    doc = __import__("json").loads((out / "dynamics.json").read_text())
    assert doc["pca"]["samples"] == [] and "one depth" in doc["pca"]["note"]
    assert (out / "dynamics.png").exists() and not (out / "trajectories.png").exists()


def test_the_docs_define_both_ce_averages():
    """`ce` in sweep.json (per scored token) and `metrics.ce` in dynamics.json (per problem) were two averages
    under one name, and sweep.json's was described nowhere."""
    doc = (Path(__file__).parents[1] / "docs" / "dynamics.md").read_text()
    assert "**`sweep.json`**" in doc and "nats per\nscored token" in doc and "`ce_per_token`" in doc


def test_analyze_scores_only_the_tokenizers_ids(padded_wins, monkeypatch):
    """analyze's exact match (and CE, entropy) read the same ids as sweep and generate: never the padded id."""
    import looplm.cli as cli
    import looplm.dynamics as dynamics
    from looplm.dynamics import diagnose

    d, model, cfg, tok, prompt = padded_wins
    ids = torch.tensor([prompt + [5, 5]])
    tgt = torch.full_like(ids, IGNORE)
    tgt[0, len(prompt) - 1 : -1] = 5  # generate's answer (the first test)
    doc = diagnose(model, Batch(ids, tgt, torch.ones_like(ids, dtype=torch.bool)), [1, LOOPS], spectral_n=0,
                   pca_n=0, vocab=tok.vocab_size)
    assert doc["accuracy"][-1] == 1.0
    seen = []
    monkeypatch.setattr(dynamics, "diagnose", lambda *a, **kw: seen.append(kw.get("vocab")) or diagnose(*a, **kw))
    cli.run_analyze(str(d), "1:2", 4, spectral_depths="none", spectral_n=0, pca_n=0, progress=False)
    assert seen == [14]
