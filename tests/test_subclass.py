"""A subclass of LoopedTransformer with its own embed or step is a module of one's own (docs/protocol.md): every
path written against the built-in internals (the hand-written JVP, KV-cached decoding) must leave it alone and
drive it through its methods; its runs' weights are named by class."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from looplm import checkpoint as ckpt
from looplm.dynamics import diagnose
from looplm.generate import generate
from looplm.looped import detach_ctx, phi, run_loop
from looplm.model import MLP, Block, LoopedTransformer, builtin_loop, twice_differentiable
from looplm.objective import regularized_loop
from looplm.regularizers import penalty, supports_fast_jvp
from looplm.tasks import make_task
from looplm.train import fit

from .conftest import tiny_config, tiny_model_config


class Damped(LoopedTransformer):
    """Φ'(h) = (Φ(h) + h) / 2: its Jacobian is (J + I) / 2, not the built-in J."""

    def step(self, h, ctx, loop=0):
        return 0.5 * super().step(h, ctx, loop) + 0.5 * h


class Scaled(LoopedTransformer):
    """An embed of the protocol's signature (no cache=, start=)."""

    def embed(self, input_ids, attention_mask=None):
        h, ctx = super().embed(input_ids, attention_mask)
        return h * 1.0, ctx


class Named(LoopedTransformer):
    """A subclass that replaces none of the protocol's methods: still the built-in model."""

    def describe(self):
        return "named"


def _float64(cls, **kw):
    torch.manual_seed(0)
    m = cls(tiny_model_config(d_model=16, n_heads=2, d_ff=32, **kw)).double()
    with torch.no_grad():
        for p in m.parameters():  # away from the near-identity init, so J is far from I
            p.add_(0.3 * torch.randn_like(p))
    return m


def test_only_the_built_in_methods_take_the_built_in_paths():
    cfg = tiny_model_config()
    assert builtin_loop(LoopedTransformer(cfg)) and builtin_loop(Named(cfg)) and supports_fast_jvp(Named(cfg))
    for m in (Damped(cfg), Scaled(cfg)):
        assert not builtin_loop(m) and not supports_fast_jvp(m)
    patched = LoopedTransformer(cfg)
    patched.step = lambda h, ctx, loop=0: h  # replaced on the instance
    assert not builtin_loop(patched)


@pytest.mark.parametrize("at_kind", ["penultimate", "final"])
def test_a_subclass_step_is_trained_and_penalized_as_written(at_kind):
    """reg.impl=auto ran the built-in core_jvp for such a subclass: the JSRR of the built-in Φ's Jacobian, and with
    reg.at=penultimate the forward's last loop was the built-in Φ too (14% off the subclass's own final state)."""
    m = _float64(Damped, injection="add", n_prelude=1)
    cfg = tiny_config(reg=dict(kind="jsrr", impl="auto", at=at_kind))
    b = make_task(cfg).held_out(4)
    h0, ctx = m.embed(b.input_ids, b.mask)
    n, at = 3, 2 if at_kind == "penultimate" else 3
    h, pen = regularized_loop(m, h0, ctx, n, at, cfg.reg, torch.Generator().manual_seed(1), b.mask)
    states = {}
    ref = run_loop(m, h0, ctx, n, keep=lambda t, s: states.__setitem__(t, s))
    with twice_differentiable():
        want = penalty("jsrr", phi(m, detach_ctx(ctx)), states[at].detach(), torch.Generator().manual_seed(1), 0,
                       b.mask)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pen, want, rtol=1e-10, atol=0)


def test_analyze_takes_rho_of_the_subclass_step():
    """diagnose recorded ρ of the built-in Φ (and "jvp": "regularizers.core_jvp") for a subclass with its own step."""
    m = _float64(Damped).eval()
    b = make_task(tiny_config()).held_out(1)
    res = diagnose(m, b, [1, 2], spectral_depths=[2], spectral_n=1, iters=400, hutchinson_samples=0, pca_n=0)
    assert res["spectral"]["jvp"] == "torch.func.jvp"
    assert res["spectral"]["rho"]["mean"][0] == pytest.approx(_rho(m, b), rel=1e-4)


def _rho(m, b):
    """ρ of the model's Φ at h(2) of one sequence, from its explicit Jacobian (autograd through its methods)."""
    real = b.mask[0].bool()
    h0, ctx = m.embed(b.input_ids, b.mask)
    with torch.no_grad():
        h = run_loop(m, h0, ctx, 2)
    with twice_differentiable():
        J = torch.autograd.functional.jacobian(phi(m, ctx), h)[0][real][:, :, 0][:, :, real]  # real tokens only
    n = int(real.sum()) * h.shape[-1]
    return torch.linalg.eigvals(J.reshape(n, n)).abs().max().item()


def test_cached_generation_refuses_a_subclass_with_its_own_embed():
    """Python's "Sub.embed() got an unexpected keyword argument 'cache'" from inside generate."""
    m = Scaled(tiny_model_config())
    assert len(generate(m, [[3, 4, 5]], 2, 3, 1)[0]) <= 3  # uncached: through its methods
    with pytest.raises(TypeError, match=r"^KV-cached generation is written for looplm's LoopedTransformer, not "
                                        r"Scaled \(a subclass with its own embed, step or readout\); use "
                                        r"generate\(\.\.\., use_cache=False\)$"):
        generate(m, [[3, 4, 5]], 2, 3, 1, use_cache=True)
    with pytest.raises(TypeError, match=r"^an exit rule .* not Scaled \(a subclass .*\); drop the exit rule$"):
        generate(m, [[3, 4, 5]], 2, 3, 1, exit_stable=1)


class Mine(nn.Module):
    def __init__(self, vocab=16, d=32, positions=16):
        super().__init__()
        self.e, self.p = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(positions, d))
        self.f, self.o = nn.Linear(d, d), nn.Linear(d, vocab)

    def embed(self, ids, mask=None):
        return self.e(ids) + self.p[: ids.shape[1]], None

    def step(self, h, ctx, loop=0):
        return torch.tanh(self.f(h)) + 0.5 * h

    def readout(self, h, ctx):
        return self.o(h)

    def loop_units(self):
        return [self.f]


def test_init_from_a_run_of_another_class_names_both_classes(tmp_path):
    """'model.safetensors does not match config.json: missing [16 names], unexpected [...]', though the checkpoint
    records the class its weights belong to."""
    c = tiny_config(train=dict(steps=1, eval_every=0, checkpoint_every=1), reg=dict(rho_every=0))
    run = fit(c, tmp_path / "mine", progress=False, model=Mine())
    with pytest.raises(ckpt.CheckpointError, match=r"^\S+/mine/checkpoint holds the weights of tests\.test_subclass\."
                                                   r"Mine, not of tests\.test_subclass\.Damped: load them into a Mine, "
                                                   r"or start from a run of Damped$"):
        ckpt.load_weights(run, Damped(c.model))
    c2 = tiny_config(train=dict(steps=1, eval_every=0, init_from=str(run)), reg=dict(rho_every=0))
    for model in (Damped(c2.model), LoopedTransformer(c2.model)):
        with pytest.raises(ckpt.CheckpointError, match=r"holds the weights of tests\.test_subclass\.Mine, not of "):
            fit(c2, tmp_path / "sub", progress=False, model=model)


class ReluMLP(MLP):
    """An activation ablation: a subclass of looplm's MLP with its own forward."""

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


class SwiGLU(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(d, f), nn.Linear(f, d), nn.Linear(d, f)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _edited(edit):
    m = _float64(LoopedTransformer, injection="add", n_prelude=1)
    for blk in m.core:
        if edit == "relu":
            new = ReluMLP(m.cfg).double()
            new.load_state_dict(blk.mlp.f.state_dict())
            blk.mlp.f = new
        elif edit == "swiglu":
            blk.mlp.f = SwiGLU(m.cfg.d_model, m.cfg.d_ff).double()
        else:  # a forward hook that changes the sublayer's output
            blk.mlp.f.register_forward_hook(lambda mod, args, out: 0.5 * out)
    return m


@pytest.mark.parametrize("edit", ["relu", "swiglu", "hook"])
def test_a_loopedtransformer_with_replaced_submodules_is_penalized_as_it_computes(edit):
    """builtin_loop looked at the top-level class only: a core MLP replaced by a ReLU subclass, or with a forward
    hook, got the hand-written GELU Φ (penalty, fused forward and ρ of another map, with no word); a SwiGLU failed
    inside it ("'SwiGLU' object has no attribute 'up'"). Now they go through the model's methods, as any module."""
    m = _edited(edit)
    assert not builtin_loop(m) and not supports_fast_jvp(m)
    cfg = tiny_config(reg=dict(kind="jsrr", impl="auto", at="penultimate"))
    b = make_task(cfg).held_out(4)
    h0, ctx = m.embed(b.input_ids, b.mask)
    h, pen = regularized_loop(m, h0, ctx, 3, 2, cfg.reg, torch.Generator().manual_seed(1), b.mask)
    states = {}
    ref = run_loop(m, h0, ctx, 3, keep=lambda t, s: states.__setitem__(t, s))
    with twice_differentiable():
        want = penalty("jsrr", phi(m, detach_ctx(ctx)), states[2].detach(), torch.Generator().manual_seed(1), 0,
                       b.mask)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pen, want, rtol=1e-10, atol=0)
    m.eval()
    b = make_task(tiny_config()).held_out(1)
    res = diagnose(m, b, [1, 2], spectral_depths=[2], spectral_n=1, iters=400, tol=1e-9, hutchinson_samples=0, pca_n=0)
    assert res["spectral"]["jvp"] == "torch.func.jvp"
    assert res["spectral"]["rho"]["mean"][0] == pytest.approx(_rho(m, b), rel=1e-4)


def test_cached_generation_says_what_makes_a_loopedtransformer_not_the_built_in_one():
    """"written for looplm's LoopedTransformer, not LoopedTransformer (a subclass ...)" for an instance's step."""
    m = LoopedTransformer(tiny_model_config())
    m.step = lambda h, ctx, loop=0: h
    with pytest.raises(TypeError, match=r"^KV-cached generation is written for looplm's LoopedTransformer, not a "
                                        r"LoopedTransformer whose step is replaced on the instance; use "):
        generate(m, [[3, 4, 5]], 2, 3, 1, use_cache=True)
    with pytest.raises(TypeError, match=r"not a LoopedTransformer changed after it was built \(core\.0\.mlp\.f is a "
                                        r"ReluMLP, not MLP\); use "):
        generate(_edited("relu"), [[3, 4, 5]], 2, 3, 1, use_cache=True)


@pytest.mark.parametrize("edit", ["core", "nobias", "relu"])
def test_fit_records_an_edited_loopedtransformer_as_a_module_of_ones_own(tmp_path, edit):
    """fit took a LoopedTransformer edited after it was built (checked by m.cfg only) as cfg.model's model: every
    command then refused the run blaming config.json, or (ReLU MLP) scored and exported the built-in GELU model."""
    c = tiny_config(train=dict(steps=1, eval_every=0, checkpoint_every=1), reg=dict(rho_every=0))
    m = LoopedTransformer(c.model)
    if edit == "core":
        m.core.append(Block(c.model))
    elif edit == "nobias":
        m.core[0].mlp.f.up = nn.Linear(c.model.d_model, c.model.d_ff, bias=False)
    else:
        m.core[0].mlp.f = ReluMLP(c.model)
    run = fit(c, tmp_path / "run", progress=False, model=m)
    assert ckpt.module_name(ckpt.resolve(run)) == "looplm.model.LoopedTransformer"
    with pytest.raises(ckpt.CheckpointError, match=r"holds the weights of a module of your own"):
        ckpt.load_model(run)
    plain = fit(c, tmp_path / "plain", progress=False, model=LoopedTransformer(c.model))
    assert ckpt.module_name(ckpt.resolve(plain)) is None
