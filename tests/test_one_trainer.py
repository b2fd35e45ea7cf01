"""One trainer for both model kinds: every key `looplm finetune` accepts is honoured as `looplm train` honours
it, and a fine-tune's metrics, batch, divergence and checkpoints behave as a native run's do. Each test here
failed on the second trainer that `looplm finetune` used to be."""

import json

import pytest

pytest.importorskip("transformers")

from looplm import checkpoint as ckpt  # noqa: E402
from looplm import looped, objective  # noqa: E402
from looplm.cli import main as cli  # noqa: E402
from looplm.config import Config  # noqa: E402
from looplm.train import TrainingDiverged, fit  # noqa: E402

from .conftest import tiny_config  # noqa: E402
from .helpers import read_metrics, same_weights  # noqa: E402
from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    return save_tiny_base(d / "base", tiny_chat_tokenizer()), write_jsonl(math_problems(8), d / "math.jsonl")


def hf_cfg(base, **sections) -> Config:
    model, data = base
    d = {"model": {"name_or_path": str(model)}, "data": {"source": str(data), "max_length": 256},
         "loops": {"max_loops": 6}, "reg": {"kind": "jsrr"},
         "train": {"steps": 3, "batch_size": 2, "micro_batch_size": 1, "lr": 1e-3, "log_every": 1, "threads": 1,
                   "checkpoint_every": 0}}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v}
    return Config.from_dict(d)


def spy(monkeypatch, module, name):
    """Record the arguments of every call of module.name."""
    calls = []
    real = getattr(module, name)

    def wrapper(*a, **k):
        calls.append((a, k))
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_reg_at_penultimate_is_honoured(base, tmp_path, monkeypatch):
    calls = spy(monkeypatch, objective, "regularized_loop")
    fit(hf_cfg(base, reg={"at": "penultimate"}), tmp_path / "r", progress=False)
    ats = [(a[3], a[4]) for a, _ in calls]  # (num_loops, at)
    assert len(ats) == 6 and all(at == n - 1 for n, at in ats)  # the old fine-tuner drew a random depth


@pytest.mark.parametrize("kind", ["residual", "jsrr_release", "jsrr"])
def test_every_penalty_fine_tunes_under_per_layer_checkpointing(base, tmp_path, kind):
    """The default model.gradient_checkpointing=true recomputes layers in the backward; a VJP penalty's Φ runs
    under twice_differentiable()'s attention kernel, so its layers are not recomputed (the recomputation ran
    under another kernel, and the backward failed on tensors of other shapes). Each penalty trains, with the
    same loss as without checkpointing."""
    runs = {}
    for ckpt_on in (True, False):
        out = tmp_path / f"r{ckpt_on}"
        fit(hf_cfg(base, reg={"kind": kind, "start_step": 0}, model={"gradient_checkpointing": ckpt_on}), out,
            progress=False)
        runs[ckpt_on] = read_metrics(out)
    assert all(r["reg"] > 0 for r in runs[True])
    assert [r["loss"] for r in runs[True]] == pytest.approx([r["loss"] for r in runs[False]], rel=1e-4)


def test_loops_checkpoint_loops_is_honoured(base, tmp_path, monkeypatch):
    calls = spy(monkeypatch, looped, "_checkpoint")
    fit(hf_cfg(base, loops={"checkpoint_loops": True}, model={"gradient_checkpointing": False}), tmp_path / "r",
        progress=False)
    rows = read_metrics(tmp_path / "r")
    assert len(calls) == 2 * sum(r["loops"] for r in rows)  # every loop of every micro-batch, recomputed in backward


def test_the_metrics_mean_the_same_in_both_kinds(base, tmp_path):
    native = fit(tiny_config(reg=dict(kind="jsrr", start_step=0, rho_every=1),
                             train=dict(steps=2, eval_every=0)), tmp_path / "n", progress=False)
    hf = fit(hf_cfg(base, reg={"rho_every": 1}, train={"steps": 2}), tmp_path / "h", progress=False)
    a, b = read_metrics(native), read_metrics(hf)
    assert set(a[0]) == set(b[0]) >= {"step", "loops", "ce", "reg", "reg_kind", "loss", "lr", "grad_norm", "tokens",
                                      "tok_s", "rho", "rho_converged"}
    for rows in (a, b):
        for r in rows:
            assert r["loss"] == pytest.approx(0.9 * r["ce"] + 0.1 * r["reg"])
            assert 0 <= r["rho_converged"] <= 1 and r["tokens"] > 0
    # `tokens` is the step's scored tokens (the CE normalizer): for a fine-tune, its assistant tokens.
    from looplm.hf.data import ChatTask, build_examples, load_records
    from looplm.hf.finetune import load_tokenizer

    tok = load_tokenizer(str(base[0]))
    ex, _ = build_examples(load_records(str(base[1])), tok, 256)
    first = ChatTask(ex, tok.pad_token_id, 0).train_batch(2, None, 0)
    assert b[0]["tokens"] == int((first.targets != -100).sum())


def test_batch_size_is_the_global_batch_and_micro_batches_change_nothing(base, tmp_path):
    whole = fit(hf_cfg(base, reg={"kind": "none"}, train={"batch_size": 4, "micro_batch_size": 4, "steps": 0,
                                                          "epochs": 1}), tmp_path / "a", progress=False)
    parts = fit(hf_cfg(base, reg={"kind": "none"}, train={"batch_size": 4, "micro_batch_size": 1, "steps": 0,
                                                          "epochs": 1}), tmp_path / "b", progress=False)
    assert [r["step"] for r in read_metrics(whole)] == [1, 2]  # 8 examples, 4 a step
    for x, y in zip(read_metrics(whole), read_metrics(parts), strict=True):
        assert x["ce"] == pytest.approx(y["ce"], rel=1e-5) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-4)


def test_a_diverged_fine_tune_is_one_error_and_keeps_the_last_good_checkpoint(base, tmp_path):
    cfg = hf_cfg(base, train={"steps": 6, "checkpoint_every": 1, "keep_checkpoints": 2, "max_bad_steps": 2})
    with pytest.raises(TrainingDiverged, match="2 consecutive non-finite steps") as e:
        fit(cfg, tmp_path / "r", progress=False, fault={"nan_at_steps": [2, 3]})
    assert f"The last good checkpoint is in {tmp_path / 'r' / 'checkpoint'}" in str(e.value)
    assert ckpt.saved_step(tmp_path / "r" / "checkpoint") == 2  # saved before the streak, not after it
    assert ckpt.load_state(tmp_path / "r")["step"] == 2


def test_a_damaged_fine_tune_checkpoint_is_refused_on_resume(base, tmp_path, capsys):
    cfg = hf_cfg(base, train={"steps": 2})
    run = fit(cfg, tmp_path / "r", progress=False)
    f = run / "checkpoint" / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit in the weights
    f.write_bytes(bytes(raw))
    y = tmp_path / "c.yaml"
    y.write_text(json.dumps(cfg.to_dict()))
    capsys.readouterr()
    assert cli(["finetune", "--config", str(y), "--out", str(run), "--resume", "--no-progress",
                "--set", "train.steps=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors does not match its SHA-256" in err
    assert err.count("\n") == 1


def test_resuming_a_fine_tune_with_changed_settings_says_so(base, tmp_path, capsys):
    cfg = hf_cfg(base, train={"steps": 2})
    fit(cfg, tmp_path / "r", progress=False)
    capsys.readouterr()
    fit(hf_cfg(base, train={"steps": 3, "lr": 2e-3}), tmp_path / "r", resume=True, progress=False)
    out = capsys.readouterr()
    assert "resuming with changed settings" in out.out + out.err and "train.lr" in out.out + out.err
    assert [r["step"] for r in read_metrics(tmp_path / "r")] == [1, 2, 3]


def test_a_fine_tune_checkpoint_is_an_hf_directory_in_the_one_layout(base, tmp_path):
    run = fit(hf_cfg(base, train={"steps": 2, "checkpoint_every": 1, "keep_checkpoints": 2}), tmp_path / "r",
              progress=False)
    d = run / "checkpoint"
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["step"] == 2 and {"model.safetensors", "config.json", "trainer_state.pt",
                                      "looplm_config.json", "tokenizer.json"} <= set(manifest["files"])
    assert [s for s, _ in ckpt.history(run)] == [1]  # keep-last-K, as for a native run
    assert ckpt.load_config(run).kind == "hf" and json.loads((d / "config.json").read_text())["model_type"] == "ouro"
    from transformers import AutoModelForCausalLM

    from looplm.hf import OuroForCausalLM

    assert isinstance(AutoModelForCausalLM.from_pretrained(d), OuroForCausalLM)
    assert not same_weights(run, ckpt.history(run)[0][1])


def test_a_fixed_depth_fine_tune_saves_its_depth_as_the_default(base, tmp_path):
    """Trained at exactly loops.num_loops, the checkpoint's default depth at inference is that one; under a random
    sampler the base model's default is kept (it trained at many depths)."""
    import json

    base_default = json.loads((base[0] / "config.json").read_text())["total_ut_steps"]
    fit(hf_cfg(base, loops={"sampler": "fixed", "num_loops": base_default + 1}), tmp_path / "fixed",
        progress=False)
    fit(hf_cfg(base), tmp_path / "random", progress=False)
    saved = {r: json.loads((tmp_path / r / "checkpoint" / "config.json").read_text())["total_ut_steps"]
             for r in ("fixed", "random")}
    assert saved == {"fixed": base_default + 1, "random": base_default}
    # a base whose generation config names its own loop count: generate() read that (the base's), the forward the
    # trained one; the fixed-depth fine-tune moves both
    import shutil

    gc_base = shutil.copytree(base[0], tmp_path / "gc_base")
    gen = json.loads((gc_base / "generation_config.json").read_text())
    gen.pop("_from_model_config", None)  # (transformers drops the file's own keys on loading one derived so)
    (gc_base / "generation_config.json").write_text(json.dumps({**gen, "num_loops": base_default}))
    fit(hf_cfg((gc_base, base[1]), loops={"sampler": "fixed", "num_loops": base_default + 1}), tmp_path / "gc",
        progress=False)
    out = tmp_path / "gc" / "checkpoint"
    assert json.loads((out / "generation_config.json").read_text())["num_loops"] == base_default + 1
    assert json.loads((out / "config.json").read_text())["total_ut_steps"] == base_default + 1
