import pytest
import torch

from looplm.config import NORM_PLACEMENTS
from looplm.looped import phi, run_loop
from looplm.model import LoopedTransformer, twice_differentiable

from .conftest import tiny_model_config


def ids(B=3, T=10, seed=0):
    return torch.randint(2, 14, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("placement", NORM_PLACEMENTS)
@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm", "simplenorm"])
def test_forward_shapes_and_states(placement, norm_type):
    m = LoopedTransformer(tiny_model_config(norm_placement=placement, norm_type=norm_type)).eval()
    x = ids()
    logits, states = m(x, 5, return_states=True)
    assert logits.shape == (3, 10, 16) and len(states) == 5 and states[0].shape == (3, 10, 32)
    # The last state is the one read out, and it equals a plain 5-loop forward.
    _, ctx = m.embed(x)
    torch.testing.assert_close(m.readout(states[-1], ctx), logits)
    torch.testing.assert_close(m(x, 5), logits)
    # State t+1 is one application of Φ to state t.
    torch.testing.assert_close(m.step(states[2], ctx), states[3])


def test_external_norm_bounds_the_state_and_internal_does_not():
    torch.manual_seed(1)
    x = ids(B=2, T=8)
    norms = {}
    for placement in ("pre", "post_sandwich"):
        m = LoopedTransformer(tiny_model_config(norm_placement=placement, norm_type="simplenorm")).eval()
        with torch.no_grad():
            # Make the residual branch matter: a larger init makes drift visible within 200 loops.
            for p in m.core.parameters():
                p.mul_(8.0)
            _, states = m(x, 200, return_states=True)
        norms[placement] = [s.norm(dim=-1).mean().item() for s in (states[9], states[199])]
    # post_sandwich ends every loop on the LayerNorm sphere: ||h|| per token = sqrt(D) exactly.
    assert norms["post_sandwich"] == pytest.approx([32**0.5] * 2, rel=1e-3)
    assert norms["pre"][1] > 3 * norms["pre"][0]  # pre-norm drifts


def test_prelude_coda_injection_and_deepnorm_change_the_function():
    x = ids()
    base = LoopedTransformer(tiny_model_config()).eval()
    for kw in (dict(n_prelude=1), dict(n_coda=1), dict(injection="add"), dict(n_core=2),
               dict(norm_type="deepnorm", norm_placement="post", deepnorm_alpha=2.0)):
        torch.manual_seed(0)
        m = LoopedTransformer(tiny_model_config(**kw)).eval()
        out = m(x, 3)
        assert out.shape == (3, 10, 16) and torch.isfinite(out).all()
        assert not torch.allclose(out, base(x, 3)), kw
    inj = LoopedTransformer(tiny_model_config(injection="add")).eval()
    e, ctx = inj.embed(x)
    torch.testing.assert_close(ctx.e, e)  # the prelude output is what every loop adds
    torch.testing.assert_close(inj.step(e, ctx), inj.core[0](e + e))


def test_causal():
    m = LoopedTransformer(tiny_model_config()).eval()
    x = ids()
    y = x.clone()
    y[:, 6:] = 3
    torch.testing.assert_close(m(x, 4)[:, :6], m(y, 4)[:, :6])


def test_bad_inputs():
    m = LoopedTransformer(tiny_model_config())
    with pytest.raises(ValueError, match="num_loops"):
        m(ids(), 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(ids(T=17), 2)
    with pytest.raises(ValueError, match="token ids"):
        m(torch.full((1, 4), 16), 2)


def test_truncated_backprop_and_checkpointing():
    x = ids()
    m = LoopedTransformer(tiny_model_config())
    e, ctx = m.embed(x)
    full = m.readout(run_loop(m, e, ctx, 6), ctx).sum()
    ckpt = m.readout(run_loop(m, e, ctx, 6, checkpoint=True), ctx).sum()
    g_full = torch.autograd.grad(full, m.core[0].mlp.f.up.weight)[0]
    g_ckpt = torch.autograd.grad(ckpt, m.core[0].mlp.f.up.weight)[0]
    torch.testing.assert_close(g_full, g_ckpt)  # checkpointing recomputes, it does not approximate
    trunc = m.readout(run_loop(m, e, ctx, 6, backprop_loops=2), ctx)
    torch.testing.assert_close(trunc.detach(), m.readout(run_loop(m, e, ctx, 6), ctx).detach())  # same values
    g_trunc = torch.autograd.grad(trunc.sum(), m.core[0].mlp.f.up.weight)[0]
    assert not torch.allclose(g_trunc, g_full)  # but the gradient sees only the last 2 loops


def test_double_backward_through_attention():
    m = LoopedTransformer(tiny_model_config())
    h = torch.randn(2, 8, 32, requires_grad=True)
    v = torch.randn(2, 8, 32)
    _, ctx = m.embed(ids(B=2, T=8))
    with twice_differentiable():
        (g,) = torch.autograd.grad(phi(m, ctx)(h), h, v, create_graph=True)
        (gw,) = torch.autograd.grad(g.pow(2).sum(), m.core[0].attn.f.qkv.weight)
    assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_random_positions_train_every_row_of_the_position_table_and_leave_inference_alone():
    torch.manual_seed(0)
    cfg = tiny_model_config(max_seq_len=32, random_positions=True)
    m = LoopedTransformer(cfg)
    x = torch.randint(0, cfg.vocab_size, (64, 6))
    m.eval()
    ref = LoopedTransformer(tiny_model_config(max_seq_len=32))
    ref.load_state_dict(m.state_dict())
    ref.eval()
    # Inference starts at position 0, exactly as a model trained without the option.
    assert torch.equal(m(x, num_loops=2), ref(x, num_loops=2))
    m.train()
    m(x, num_loops=2).square().mean().backward()
    rows = m.pos_emb.weight.grad.abs().sum(1) > 0
    # 64 random starts in [0, 26]: rows far past the 6 positions of the sequence get gradient.
    assert rows[6:].sum() >= 20 and rows[31]
    ref.train()
    ref.zero_grad()
    ref(x, num_loops=2).square().mean().backward()
    assert not (ref.pos_emb.weight.grad[6:] != 0).any()
