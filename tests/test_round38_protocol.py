"""Round 38 (protocol and API): a dict-subclass ctx keeps its type through detach_ctx/slice_ctx, and a dataclass
ctx's attributes set after construction are walked; ctx leaves that hold no tensor (numpy numbers, slices, bytes)
are accepted; jsrr_release is 0, not NaN, on an all-padding mask; OuroForCausalLM and LooplmForCausalLM refuse each
other's config.json; eval-lm notes that a fine-tune is scored on raw text without --apply-chat-template."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
import torch
import torch.nn as nn

from looplm.looped import _check_ctx_leaves, detach_ctx, slice_ctx


class AttrDict(dict):
    """An attribute dict, as EasyDict or ml_collections users write ctx."""

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None


@dataclasses.dataclass
class Ctx:
    x: torch.Tensor


def _x(rows: int = 4) -> torch.Tensor:
    return torch.randn(rows, 3, 2, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("kind", ["attr", "ordered", "default"])
def test_dict_subclass_ctx_keeps_its_type(kind):
    x, mem = _x(), torch.randn(5, 2, dtype=torch.float64)
    ctx = {"attr": AttrDict, "ordered": OrderedDict, "default": lambda **kw: defaultdict(list, kw)}[kind](x=x, mem=mem)
    cut, det = slice_ctx(ctx, 2, 4), detach_ctx(ctx)
    for got in (cut, det):
        assert type(got) is type(ctx) and list(got) == ["x", "mem"]
    assert torch.equal(cut["x"], x[:2]) and torch.equal(cut["mem"], mem)  # the (5, 2) table is not the batch's
    assert torch.equal(det["x"], x) and not det["x"].requires_grad
    if kind == "attr":
        assert torch.equal(cut.x, x[:2])  # the user's step reads ctx.x (was: 'dict' object has no attribute 'x')
    if kind == "default":
        assert cut.default_factory is list and cut["new"] == []
    assert ctx["x"] is x  # the caller's ctx untouched


def test_dataclass_ctx_attribute_set_later_is_walked():
    x, scale = _x(), torch.randn(4, 1, 1, dtype=torch.float64, requires_grad=True)
    ctx = Ctx(x=x)
    ctx.scale = scale  # per-sample, set after construction: not an init field
    cut, det = slice_ctx(ctx, 2, 4), detach_ctx(ctx)
    assert torch.equal(cut.x, x[:2]) and torch.equal(cut.scale, scale[:2])  # (was: AttributeError 'scale')
    assert torch.equal(det.scale, scale) and not det.scale.requires_grad
    assert not hasattr(Ctx(x=x), "scale")


def test_a_dict_subclass_that_cannot_be_copied_is_refused_up_front():
    class Sealed(dict):
        def __copy__(self):
            raise TypeError("sealed")

    with pytest.raises(ValueError, match=r"ctx\['inner'\] is a Sealed, a dict looplm cannot copy .*plain dict"):
        _check_ctx_leaves("Mod", {"inner": Sealed(x=_x())})


@pytest.mark.parametrize("leaf", [np.int64(2), np.float32(0.5), slice(0, None), ..., b"x", frozenset({1, "a"}),
                                  range(3), torch.float16, 2.5, "s", None], ids=repr)
def test_tensor_free_leaves_are_accepted(leaf):
    _check_ctx_leaves("Mod", {"x": _x(), "k": leaf})
    assert slice_ctx({"x": _x(), "k": leaf}, 2, 4)["k"] is leaf


@pytest.mark.parametrize("leaf, shown", [(np.zeros(4), r"a numpy\.ndarray"), (object(), "an object"),
                                         (slice(torch.tensor(1), None), "a slice"),
                                         (frozenset({torch.tensor(1.0)}), "a frozenset"),
                                         (nn.Linear(2, 2), r"a torch\.nn\.modules\.linear\.Linear")])
def test_leaves_that_could_hold_a_tensor_are_refused(leaf, shown):
    with pytest.raises(ValueError, match=f"^Mod.embed returned a ctx holding {shown} at ctx\\['k'\\]"):
        _check_ctx_leaves("Mod", {"x": _x(), "k": leaf})


class AttrMod(nn.Module):
    """The probe's module: an attribute-dict ctx, read by attribute in step."""

    def __init__(self, V: int = 32, D: int = 16):
        super().__init__()
        self.emb, self.lin, self.out = nn.Embedding(V, D), nn.Linear(D, D), nn.Linear(D, V)

    def embed(self, input_ids, attention_mask=None):
        e = self.emb(input_ids)
        return e, AttrDict(x=e)

    def step(self, h, ctx, loop=0):
        return torch.tanh(self.lin(h) + ctx.x)

    def readout(self, h, ctx):
        return self.out(h)

    def loop_units(self):
        return [self.lin]


def test_fit_with_an_attribute_dict_ctx_and_a_penalty(tmp_path):
    from looplm import fit, load_config

    sets = ["model.d_model=32", "model.d_ff=64", "model.n_heads=2", "train.steps=2", "train.batch_size=8",
            "train.eval_every=0", "data.test_size=16", "loops.max_loops=4", "model.max_seq_len=16", "reg.rho_every=0",
            "reg.start_step=0", "reg.samples=2", "train.threads=1"]
    torch.manual_seed(0)
    fit(load_config("addition-prenorm-stars", sets), tmp_path / "run", model=AttrMod(), progress=False)
    assert (tmp_path / "run" / "checkpoint").is_dir()


def _penalties():
    from looplm import fixed_point_residual, hutchinson, jsrr, jsrr_release, power_penalty

    return {"jsrr": jsrr, "jsrr_release": jsrr_release, "hutchinson": hutchinson, "residual": fixed_point_residual,
            "power": lambda f, h, g, m: power_penalty(f, h, g, 2, mask=m)[0]}


@pytest.mark.parametrize("name", ["jsrr", "jsrr_release", "hutchinson", "residual", "power"])
def test_every_penalty_is_zero_on_an_all_padding_mask(name):
    lin = nn.Linear(4, 4).double()
    h = torch.randn(2, 3, 4, dtype=torch.float64)
    for mask in (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)):
        value = _penalties()[name](lambda s: torch.tanh(lin(s)), h, torch.Generator().manual_seed(0), mask)
        assert float(value.detach()) == 0.0  # jsrr_release was NaN (0 / 0 in its probe's norm)
        grads = torch.autograd.grad(value, list(lin.parameters()), allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_jsrr_fast_is_zero_on_an_all_padding_mask():
    from looplm.config import ModelConfig
    from looplm.model import LoopedTransformer
    from looplm.regularizers import jsrr_fast

    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(vocab_size=8, d_model=16, n_heads=2, d_ff=32, max_seq_len=8)).double()
    h = torch.randn(2, 3, 16, dtype=torch.float64)
    value = jsrr_fast(model, h, None, torch.Generator().manual_seed(0), mask=torch.zeros(2, 3))
    assert float(value.detach()) == 0.0
    grads = torch.autograd.grad(value, [p for p in model.core.parameters()], allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


# --- HF ---------------------------------------------------------------------------------------------------------


def test_each_hf_class_refuses_the_other_architectures_config(tmp_path):
    pytest.importorskip("transformers")
    from looplm.config import ModelConfig
    from looplm.hf.looplm_hf import LooplmConfig, LooplmForCausalLM
    from looplm.hf.modeling_ouro import OuroForCausalLM

    from .hf_fixtures import tiny_ouro

    tiny_ouro(16).save_pretrained(tmp_path / "ouro")
    cfg = LooplmConfig.from_model_config(ModelConfig(vocab_size=16, d_model=16, n_heads=2, d_ff=32, max_seq_len=8))
    LooplmForCausalLM(cfg).save_pretrained(tmp_path / "export")
    with pytest.raises(ValueError, match="model_type 'looplm': load it with LooplmForCausalLM .*not OuroForCausalLM"):
        OuroForCausalLM.from_pretrained(tmp_path / "export")
    with pytest.raises(ValueError, match="model_type 'ouro': load it with OuroForCausalLM .*not LooplmForCausalLM"):
        LooplmForCausalLM.from_pretrained(tmp_path / "ouro")
    assert LooplmForCausalLM.from_pretrained(tmp_path / "export").config.vocab_size == 16  # its own still loads
    assert OuroForCausalLM.from_pretrained(tmp_path / "ouro").config.vocab_size == 16


def test_eval_lm_notes_a_fine_tune_scored_on_raw_text(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    from looplm.cli import main

    from .hf_fixtures import math_problems, save_tiny_base, tiny_chat_tokenizer, write_jsonl, write_lm_eval_tasks

    base = save_tiny_base(tmp_path / "base", tiny_chat_tokenizer())
    settings = {"model.name_or_path": base, "data.source": write_jsonl(math_problems(4), tmp_path / "m.jsonl"),
                "data.max_length": 256, "loops.sampler": "fixed", "loops.num_loops": 1, "reg.kind": "none",
                "train.steps": 1, "train.batch_size": 2, "train.threads": 1}
    (tmp_path / "ft.yaml").write_text("model:\n  name_or_path: base\n")
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), *sets, "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    write_lm_eval_tasks(tmp_path / "tasks", write_jsonl(math_problems(2), tmp_path / "t.jsonl"), max_gen_toks=2)
    capsys.readouterr()
    for model, flags in ((tmp_path / "run" / "checkpoint", []), (tmp_path / "run" / "checkpoint",
                                                                  ["--apply-chat-template"]), (base, [])):
        out = tmp_path / f"e{len(flags)}{model.name}"
        assert main(["eval-lm", str(model), "--tasks", "tiny_math_mc", "--include-path", str(tmp_path / "tasks"),
                     "--depths", "1", "--limit", "1", "--device", "cpu", "--batch-size", "1", "--out", str(out),
                     *flags]) == 0
        said = capsys.readouterr().out
        assert ("trained on prompts its chat template rendered" in said) == (model.name == "checkpoint" and not flags)
