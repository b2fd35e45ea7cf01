"""The looped-model protocol: a module written here from scratch (none of looplm's blocks) trains, resumes,
sweeps and is analyzed through looplm's one trainer, sweep and diagnostics, with no other change."""

import json
import math

import pytest
import torch
import torch.nn as nn

from looplm.dynamics import diagnose
from looplm.evaluate import sweep
from looplm.looped import check_looped, phi, run_loop
from looplm.model import twice_differentiable
from looplm.regularizers import jsrr, unit_probes
from looplm.tasks import make_task
from looplm.train import fit

from .conftest import tiny_config
from .helpers import read_metrics, same_weights


class CumulativeMixer(nn.Module):
    """A looped LM of the user's own: Φ(h) = N(z + tanh(W mean_{s<=t} z_s) + MLP(.)), z = h + e, with e the
    embedding injected every loop and N an RMS norm written from primitive ops (exact higher derivatives)."""

    def __init__(self, vocab: int = 16, max_len: int = 16, d: int = 24):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.mix = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, d))
        self.gain = nn.Parameter(torch.ones(d))
        self.head = nn.Linear(d, vocab)

    def embed(self, input_ids, attention_mask=None):
        e = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1], device=input_ids.device))
        return e, {"e": e}  # (B, T, D) state and what every loop needs

    def step(self, h, ctx, loop=0):
        z = h + ctx["e"]
        n = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype).view(1, -1, 1)
        z = z + torch.tanh(self.mix(z.cumsum(1) / n))  # causal: position t sees positions <= t only
        z = z + self.mlp(z)
        return self.gain * z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)

    def readout(self, h, ctx):
        return self.head(h)

    def loop_units(self):
        return [self.mix, self.mlp]


def cfg(**train):
    return tiny_config(data=dict(digits=2, test_size=40), reg=dict(kind="jsrr", start_step=0, rho_every=5),
                       loops=dict(sampler="lognormal", max_loops=6, num_loops=3),
                       train=dict(dict(steps=10, batch_size=16, lr=3e-3, eval_every=5, eval_size=16,
                                       checkpoint_every=4), **train))


def test_a_users_module_trains_resumes_sweeps_and_is_analyzed(tmp_path):
    c = cfg()
    torch.manual_seed(0)
    run = fit(c, tmp_path / "run", progress=False, model=CumulativeMixer())
    rows = read_metrics(run)
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert all(r["reg_kind"] == "jsrr" and r["reg"] > 0 for r in rows)
    assert rows[-1]["ce"] < rows[0]["ce"]
    assert "rho" in rows[4] and math.isfinite(rows[4]["rho"]) and "acc" in rows[4]
    # Crash after the step-8 checkpoint; resumed into a fresh module, the run equals the uninterrupted one.
    torch.manual_seed(0)  # the same initial weights (the resumed module's own are overwritten by the checkpoint)
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(c, tmp_path / "cut", progress=False, fault={"crash_at_step": 9}, model=CumulativeMixer())
    fit(c, tmp_path / "cut", resume=True, progress=False, model=CumulativeMixer())
    assert same_weights(run, tmp_path / "cut")
    assert [r["ce"] for r in read_metrics(tmp_path / "cut")] == [r["ce"] for r in rows]
    # The same module object, resumed in the same process (a notebook): it holds gradients from its first fit.
    torch.manual_seed(0)
    m = CumulativeMixer()
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(c, tmp_path / "again", progress=False, fault={"crash_at_step": 9}, model=m)
    assert any(p.grad is not None for p in m.parameters())
    fit(c, tmp_path / "again", resume=True, progress=False, model=m)
    assert same_weights(run, tmp_path / "again")
    # The memory check is about the model section's LoopedTransformer, which a user's module is not.
    import dataclasses

    huge = dataclasses.replace(c, model=dataclasses.replace(c.model, d_model=65536, d_ff=262144, n_heads=8))
    fit(dataclasses.replace(huge, train=dataclasses.replace(c.train, steps=1, eval_every=0)), tmp_path / "own",
        progress=False, model=CumulativeMixer())

    from looplm import checkpoint as ckpt
    from looplm.cli import main

    # The checkpoint says whose weights it holds: the CLI (a LoopedTransformer from config.json) says so in one
    # line instead of listing every key its weights lack.
    with pytest.raises(ckpt.CheckpointError, match=r"holds the weights of a module of your own \(tests.test_protocol"
                                                   r".CumulativeMixer\), not of the LoopedTransformer"):
        ckpt.load_model(run)
    assert main(["sweep", str(run), "--depths", "1:2", "--no-progress", "--out", str(tmp_path / "s.json")]) == 2
    assert not (tmp_path / "s.json").exists()
    model = ckpt.load_weights(run, CumulativeMixer()).eval()
    batch = make_task(c).held_out(40)
    res = sweep(model, batch, [1, 2, 3, 6, 12])
    assert len(res.accuracy) == 5 and all(0 <= a <= 1 for a in res.accuracy)
    dyn = diagnose(model, batch, [1, 2, 3, 4], spectral_depths=[2, 4], spectral_n=4, iters=40, tol=1e-3,
                   hutchinson_samples=2, pca_n=2)
    assert dyn["accuracy"] == pytest.approx(sweep(model, batch, [1, 2, 3, 4]).accuracy)
    assert all(0.0 < x for x in dyn["metrics"]["state_norm"]["mean"])
    assert all(c > 0 for c in dyn["spectral"]["rho"]["converged_frac"])
    json.dumps(dyn)  # a JSON-ready result, as `looplm analyze` writes


def test_the_penalty_through_a_users_phi_matches_the_explicit_jacobian():
    torch.manual_seed(1)
    m = CumulativeMixer(d=8).double()
    ids = torch.randint(2, 14, (2, 5))
    h0, ctx = m.embed(ids)
    with torch.no_grad():
        h = run_loop(m, h0, ctx, 2)
    step = phi(m, {"e": ctx["e"].detach()})
    with twice_differentiable():
        got = jsrr(step, h, torch.Generator().manual_seed(3))
    J = torch.autograd.functional.jacobian(step, h, create_graph=True).reshape(2, 40, 2, 40)
    assert J[0, :, 1].abs().max() == 0  # samples never interact inside Φ
    v = unit_probes(h.shape, torch.Generator().manual_seed(3), h.device, h.dtype).reshape(2, 40)
    ref = torch.stack([J[i, :, i] @ v[i] for i in range(2)]).pow(2).sum(1).mean()
    torch.testing.assert_close(got, ref)
    w = m.mix.weight
    torch.testing.assert_close(torch.autograd.grad(got, w)[0], torch.autograd.grad(ref, w)[0])


def test_a_module_missing_a_method_is_refused_by_name():
    class Half(nn.Module):
        def embed(self, input_ids, attention_mask=None):
            return input_ids, None

    with pytest.raises(TypeError, match="lacks step, readout, loop_units"):
        check_looped(Half())


def test_a_variant_of_looplms_own_model_is_recorded_as_the_users(tmp_path):
    """A subclass of LoopedTransformer (a damped step, say) wrote no module.json, so every command rebuilt the
    plain model from config.json and scored another model; it is now recorded as the user's module. A
    LoopedTransformer built from other settings than cfg.model (4 heads under a 2-head config: the same shapes)
    is refused before anything is written, and so is a resume with another class than the run's."""
    import dataclasses

    from looplm import checkpoint as ckpt
    from looplm.config import ConfigError
    from looplm.model import LoopedTransformer

    class Damped(LoopedTransformer):
        def step(self, h, ctx, loop=0):
            return h + 0.5 * (super().step(h, ctx, loop) - h)

    c = cfg(steps=1, eval_every=0)
    run = fit(c, tmp_path / "damped", progress=False, model=Damped(c.model))
    with pytest.raises(ckpt.CheckpointError, match=r"module of your own \(tests.test_protocol.*Damped\)"):
        ckpt.load_model(run)
    # a resume continues with the class the run was trained by (its Φ would change mid-run, with no word)
    longer = dataclasses.replace(c, train=dataclasses.replace(c.train, steps=2))
    with pytest.raises(ConfigError, match=r"another module \(looplm.model.LoopedTransformer, but .* was trained by "
                                          r"tests.test_protocol.*Damped\)"):
        fit(longer, run, resume=True, progress=False, model=LoopedTransformer(c.model))
    assert fit(longer, run, resume=True, progress=False, model=Damped(c.model)) == run
    plain = fit(c, tmp_path / "plain", progress=False, model=LoopedTransformer(c.model))
    assert not (plain / "checkpoint" / ckpt.MODULE).exists() and ckpt.load_model(plain)[0].cfg == c.model
    other = LoopedTransformer(dataclasses.replace(c.model, n_heads=4))
    with pytest.raises(ConfigError, match=r"model.n_heads=4 \(the module's\) vs 2"):
        fit(c, tmp_path / "other", progress=False, model=other)
    assert not (tmp_path / "other").exists()


def test_a_users_module_with_tied_weights_is_saved_and_loaded(tmp_path):
    """An output layer tied to the embedding (the usual LM layout) could not be saved: safetensors refuses tensors
    that share memory, the run stopped with "is the disk full?", and its folder was removed. A module whose state
    dict is not the checkpoint's was said not to match config.json, which does not describe it."""
    from looplm import checkpoint as ckpt

    class Tied(CumulativeMixer):
        def __init__(self):
            super().__init__(d=16)
            self.head = nn.Linear(16, 16, bias=False)
            self.head.weight = self.tok.weight

    c = cfg(steps=2, eval_every=0, checkpoint_every=1)
    run = fit(c, tmp_path / "tied", progress=False, model=Tied())
    m = ckpt.load_weights(run, Tied())
    assert m.head.weight is m.tok.weight  # still one tensor: both names were loaded into it
    trained = Tied()
    assert fit(dataclasses_replace_steps(c, 3), run, resume=True, progress=False, model=trained) == run
    # another class's weights: named as such, not as a key mismatch
    with pytest.raises(ckpt.CheckpointError, match=r"holds the weights of tests\.test_protocol\..*\.Tied, not of "
                                                   r"tests\.test_protocol\.CumulativeMixer: load them into a Tied,"):
        ckpt.load_weights(run, CumulativeMixer(d=16))


def dataclasses_replace_steps(c, steps):
    import dataclasses

    return dataclasses.replace(c, train=dataclasses.replace(c.train, steps=steps))


def test_run_loop_and_the_native_forward_check_the_loop_count():
    """`run_loop` (public) and LoopedTransformer's forward took True as 1 loop, ran 2,000,000 loops past the
    documented cap, and gave Python's TypeError for 2.5: they now check the count as every HF forward does."""
    from looplm import LoopedTransformer
    from looplm.config import ModelConfig

    torch.manual_seed(0)
    m = LoopedTransformer(ModelConfig(vocab_size=14, d_model=16, n_heads=2, d_ff=32, max_seq_len=8))
    ids = torch.randint(2, 14, (2, 5))
    h0, ctx = m.embed(ids)
    for bad, words in ((True, "an integer >= 1, got True"), (2.5, "an integer >= 1, got 2.5"), (0, ">= 1, got 0"),
                       (2_000_000, "at most 1,000,000"), (None, "an integer >= 1, got None")):
        with pytest.raises(ValueError, match=f"num_loops must be {words}"):
            run_loop(m, h0, ctx, bad)
        with pytest.raises(ValueError, match=f"num_loops must be {words}"):
            m(ids, num_loops=bad)
    assert torch.equal(m(ids, num_loops=torch.tensor(3)), m(ids, num_loops=3))  # torch and numpy integers run
    from looplm.generate import generate

    for bad in (5.5, -5, True):  # generate's max_len: torch's TypeError, or "no room in max_seq_len=-5"
        with pytest.raises(ValueError, match="max_len must be"):
            generate(m, [[3, 4]], 2, 2, eos_id=1, max_len=bad)


class Wider(CumulativeMixer):
    def step(self, h, ctx, loop=0):
        return torch.cat([h, h], -1)


class Boxed(CumulativeMixer):
    def step(self, h, ctx, loop=0):
        return (super().step(h, ctx, loop),)


class Doubled(CumulativeMixer):
    def step(self, h, ctx, loop=0):
        return super().step(h, ctx, loop).double()


class Bare(CumulativeMixer):
    def embed(self, input_ids, attention_mask=None):
        return super().embed(input_ids)[0]


class Short(CumulativeMixer):
    def readout(self, h, ctx):
        return self.head(h)[..., :5]


class Frozen(CumulativeMixer):
    def __init__(self):
        super().__init__()
        self.requires_grad_(False)


@pytest.mark.parametrize("module, msg", [
    (Wider, r"Wider.step returned a tensor of shape \[2, 9, 48\] \(float32\) for an h of shape \[2, 9, 24\] "
            r"\(float32\); Φ must return a state of h's shape and dtype"),  # was "mat1 and mat2 shapes cannot be ..."
    (Boxed, r"Boxed.step returned a tuple for an h of shape \[2, 9, 24\]"),  # "argument 'input' must be Tensor"
    (Doubled, r"Doubled.step returned a tensor of shape \[2, 9, 24\] \(float64\)"),  # "must have the same dtype"
    (Bare, r"Bare.embed returned a tensor of shape \[2, 9, 24\] \(float32\); it must return \(h0, ctx\)"),  # unpack
    (Short, r"Short.readout returned a tensor of shape \[2, 9, 5\] \(float32\) for an h of shape \[2, 9, 24\] "
            r"\(float32\); it must return floating-point logits of shape \[2, 9, V\] with V >= 16"),
    (Frozen, r"model: Frozen has no parameter that requires grad; fit trains a module's parameters"),  # no grad_fn
])
def test_a_module_that_breaks_the_protocol_is_refused_naming_the_method(tmp_path, module, msg):
    """fit trained on, and each was torch's error from deep in the loop or the loss; now a pre-flight of one loop
    names the method, what it returned and what the protocol wants, before anything is written."""
    with pytest.raises(ValueError, match=f"^{msg}"):
        fit(cfg(steps=1, eval_every=0), tmp_path / "run", progress=False, model=module())
    assert not (tmp_path / "run").exists()
