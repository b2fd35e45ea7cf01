"""Correctness of the fast paths (issue 5): they must compute exactly what the plain paths compute.

- core_jvp / jsrr_fast: the hand-written JVP of Φ against the explicit float64 Jacobian.
- fused_loop / regularized_loop: the penalty fused into a loop gives the same penalty and the same gradients
  (every parameter, embeddings included) as a plain loop plus a separate penalty at the same detached state.
- generate_cached: KV-cached decoding equals full-recompute decoding; its exit rule equals an independent
  full-recompute implementation of the same semantics.
- sweep's exit rule agrees with the per-depth exact-match matrix.
No timing assertions; the benchmarks live in benchmarks/.
"""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from looplm.config import load_config
from looplm.evaluate import sweep
from looplm.generate import generate, generate_cached
from looplm.looped import phi
from looplm.model import Context, LoopedTransformer, twice_differentiable
from looplm.objective import regularized_loop
from looplm.regularizers import core_jvp, jsrr, jsrr_fast, supports_fast_jvp
from looplm.tasks.addition import EOS, make_batch
from looplm.train import train

from .conftest import tiny_config, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]


def perturbed(seed=0, scale=0.3, **kw):
    torch.manual_seed(seed)
    m = LoopedTransformer(tiny_model_config(**kw)).double()
    with torch.no_grad():  # away from the near-identity init, so J is far from I
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    return m


def explicit_jv(step, h, v):
    """Per-sample J_i v_i from the full (B,T,D,B,T,D) Jacobian, kept differentiable in the parameters."""
    J = torch.autograd.functional.jacobian(step, h, create_graph=True)
    n = h[0].numel()
    J = J.reshape(h.shape[0], n, h.shape[0], n)
    Js = torch.stack([J[i, :, i] for i in range(h.shape[0])])
    return torch.einsum("bij,bj->bi", Js, v.reshape(h.shape[0], -1))


def grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("kw", [
    dict(norm_placement="pre"),
    dict(norm_placement="post_sandwich", norm_type="simplenorm", injection="add"),
    dict(norm_placement="pre_sandwich", norm_type="rmsnorm", n_core=2),
    dict(norm_placement="post", norm_type="deepnorm"),
])
def test_core_jvp_matches_the_explicit_jacobian(kw):
    m = perturbed(d_model=8, n_heads=2, d_ff=16, **kw)
    assert supports_fast_jvp(m)
    B, T, D = 2, 4, 8
    h = torch.randn(B, T, D, dtype=torch.float64)
    e = torch.randn(B, T, D, dtype=torch.float64)
    v = torch.randn(B, T, D, dtype=torch.float64)
    y, jv = core_jvp(m, h, v, e)
    ctx = Context(e if m.cfg.injection == "add" else None)
    torch.testing.assert_close(y, m.step(h, ctx))
    with twice_differentiable():
        ref = explicit_jv(phi(m, ctx), h, v)
    torch.testing.assert_close(jv.reshape(B, -1), ref)
    # The penalty's parameter gradients (second derivatives of Φ) agree too.
    ps = list(m.core.parameters())
    for a, b in zip(grads(jv.pow(2).sum(), ps), grads(ref.pow(2).sum(), ps), strict=True):
        torch.testing.assert_close(a, b)


def test_jsrr_fast_equals_jsrr_and_subsamples_honestly():
    m = perturbed(d_model=16, n_heads=2, d_ff=32)
    h = torch.randn(6, 5, 16, dtype=torch.float64)
    with twice_differentiable():
        ref = jsrr(phi(m, Context(None)), h, torch.Generator().manual_seed(4))
    got = jsrr_fast(m, h, None, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, ref)
    ps = list(m.core.parameters())
    for a, b in zip(grads(got, ps), grads(ref, ps), strict=True):
        torch.testing.assert_close(a, b)
    # samples=k is the same penalty over the first k samples, with their own probes.
    sub = jsrr_fast(m, h, None, torch.Generator().manual_seed(4), samples=2)
    with twice_differentiable():
        torch.testing.assert_close(sub, jsrr(phi(m, Context(None)), h[:2], torch.Generator().manual_seed(4)))


def _loss_and_grads(m, ids, n, at, impl, samples=0, bp=0, ck=False):
    reg = types.SimpleNamespace(kind="jsrr", impl=impl, samples=samples, power_iters=1)
    e, ctx = m.embed(ids)
    h, pen = regularized_loop(m, e, ctx, n, at, reg, torch.Generator().manual_seed(3), backprop_loops=bp,
                              checkpoint=ck)
    ce = m.readout(h, ctx).logsumexp(-1).mean()  # any function of the final state stands in for the CE
    loss = 0.9 * ce + 0.1 * pen
    return pen.detach(), grads(loss, list(m.parameters()))


@pytest.mark.parametrize("kw", [dict(norm_placement="pre"),
                                dict(norm_placement="post_sandwich", injection="add", n_prelude=1)])
@pytest.mark.parametrize("n,at,samples,bp,ck", [
    (5, 4, 0, 0, False),  # reg.at=penultimate: fused into the last loop
    (5, 2, 0, 0, False),  # reg.at=random with r < t: fused into loop r+1
    (5, 0, 0, 0, False),  # h(0) = e, t = 5
    (1, 0, 0, 0, False),  # one loop: the fused loop is the only one
    (5, 4, 2, 0, False),  # penalty over the first 2 samples only
    (6, 5, 0, 3, True),  # truncated backprop + checkpointing around the fused loop
    (6, 3, 0, 3, False),  # the fused loop is the first one with a graph
    (5, 5, 0, 0, False),  # reg.at=final: not fusable, the hand-written JVP at h(t)
])
def test_fused_penalty_equals_plain_penalty_at_the_same_state(kw, n, at, samples, bp, ck):
    """Float64: penalty value and the gradient of (0.9·f(h(t)) + 0.1·penalty) w.r.t. every parameter agree
    between reg.impl=auto (fused / hand-written) and reg.impl=autograd (loop, then torch.func JVP at h(at))."""
    m = perturbed(seed=1, scale=0.2, d_model=16, n_heads=2, d_ff=32, **kw)
    ids = torch.randint(2, 14, (4, 7), generator=torch.Generator().manual_seed(0))
    p0, g0 = _loss_and_grads(m, ids, n, at, "autograd", samples, bp, ck)
    p1, g1 = _loss_and_grads(m, ids, n, at, "auto", samples, bp, ck)
    torch.testing.assert_close(p1, p0)
    assert any(g.abs().sum() > 0 for g in g0)
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b)


def test_fused_penalty_does_not_reach_the_trajectory():
    """The penalty alone (no CE) must give h(t-1), and so the embeddings, no gradient at all."""
    m = perturbed(seed=2, d_model=16, n_heads=2, d_ff=32)
    reg = types.SimpleNamespace(kind="jsrr", impl="auto", samples=0, power_iters=1)
    e, ctx = m.embed(torch.randint(2, 14, (3, 6)))
    _, pen = regularized_loop(m, e, ctx, 4, 3, reg, torch.Generator().manual_seed(0))
    pen.backward()
    assert m.tok_emb.weight.grad is None or m.tok_emb.weight.grad.abs().max() == 0
    assert m.core[0].mlp.f.up.weight.grad.abs().sum() > 0


def test_training_with_the_fast_paths_matches_the_autograd_path(tmp_path):
    """A few real training steps (float32): impl=auto and impl=autograd log the same ce and penalty."""
    import json

    logs = {}
    for impl in ("auto", "autograd"):
        cfg = tiny_config(reg=dict(kind="jsrr", at="penultimate", impl=impl, rho_every=0),
                          train=dict(steps=4, eval_every=0))
        run = train(cfg, tmp_path / impl, progress=False)
        logs[impl] = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(logs["auto"], logs["autograd"], strict=True):
        assert a["loops"] == b["loops"]
        assert a["ce"] == pytest.approx(b["ce"], rel=1e-4, abs=1e-6)
        assert a["reg"] == pytest.approx(b["reg"], rel=1e-4, abs=1e-6)


# --- generation ---------------------------------------------------------------------------------------------
def sharp(seed=0, **kw):
    torch.manual_seed(seed)
    m = LoopedTransformer(tiny_model_config(max_seq_len=16, **kw)).eval()
    with torch.no_grad():  # a sharper random model, so greedy outputs vary with depth
        m.tok_emb.weight.mul_(20)
        for p in m.core.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def prompts_(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 14, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


@pytest.mark.parametrize("kw", [dict(), dict(norm_placement="post_sandwich"),
                                dict(norm_placement="pre_sandwich", norm_type="rmsnorm"),
                                dict(n_prelude=1, n_coda=1, injection="add", n_core=2)])
def test_kv_cached_generation_equals_full_recompute(kw):
    m = sharp(**kw)
    ps = prompts_()
    for d in (1, 4, 9):
        plain = generate(m, ps, d, 8, eos_id=EOS)
        cached, loops = generate_cached(m, ps, d, 8, eos_id=EOS)
        assert cached == plain
        assert generate(m, ps, d, 8, eos_id=EOS, use_cache=True) == plain
        assert all(x == d for row in loops for x in row)
        # An exit rule that can never fire changes nothing.
        assert generate_cached(m, ps, d, 8, eos_id=EOS, exit_tol=0.0, exit_stable=10**6)[0] == plain


def reference_exit_decode(m, prompt, cap, stable, max_new):
    """Full recompute of every step, no cache: the exit semantics of generate_cached written independently
    (pre-norm, one core block). A position that exits at loop d keeps its state afterwards, and later loops
    read its K/V from loop d."""
    blk = m.core[0]
    a = blk.attn.f
    D = m.cfg.d_model
    H = a.n_heads
    seq, depth, out, used = list(prompt), {}, [], []
    for _ in range(max_new):
        T = len(seq)
        h, ctx = m.embed(torch.tensor([seq]))
        deciding = [p for p in range(T) if p not in depth]
        latest: dict[int, tuple] = {}
        exited, run, prev, d_new = False, 0, None, cap
        for t in range(1, cap + 1):
            live = [depth.get(p, cap + 1) >= t and not (p in deciding and exited) for p in range(T)]
            q, k, v = a.qkv(blk.attn.n_in(h)).split(D, dim=-1)
            q, k, v = (x.view(1, T, H, D // H).transpose(1, 2).clone() for x in (q, k, v))
            for p in range(T):
                if live[p]:
                    latest[p] = (k[:, :, p].clone(), v[:, :, p].clone())
                else:
                    k[:, :, p], v[:, :, p] = latest[p]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            z = h + a.proj(y.transpose(1, 2).reshape(1, T, D))
            z = z + blk.mlp.f(blk.mlp.n_in(z))
            h = torch.where(torch.tensor(live).view(1, T, 1), z, h)
            if not exited:
                arg = int(m.readout(h, ctx)[0, -1].argmax())
                run = run + 1 if prev is not None and arg == prev else 0
                prev = arg
                if run >= stable:
                    exited, d_new = True, t
        for p in deciding:
            depth[p] = d_new
        used.append(d_new)
        tok = int(m.readout(h, ctx)[0, -1].argmax())
        if tok == EOS:
            break
        out.append(tok)
        seq.append(tok)
    return out, used


@torch.inference_mode()
def test_exit_rule_in_cached_generation_matches_an_uncached_reference():
    m = sharp(seed=3)
    ps = [p for p in prompts_(40, seed=5) if len(p) == 5][:8]  # one length: one lockstep group
    outs, loops = generate_cached(m, ps, 12, 6, eos_id=EOS, exit_stable=2)
    assert any(x < 12 for row in loops for x in row), "the rule never fired: the test would be vacuous"
    assert len({x for row in loops for x in row}) > 1
    for p, o, lo in zip(ps, outs, loops, strict=True):
        ro, rl = reference_exit_decode(m, p, 12, 2, 6)
        assert (o, lo) == (ro, rl)


def test_exit_tolerance_extremes():
    m = sharp(seed=4)
    ps = prompts_(6)
    _, loops = generate_cached(m, ps, 7, 4, eos_id=EOS, exit_tol=1e9)  # always below: exit after the first loop
    assert all(x == 1 for row in loops for x in row)
    _, loops = generate_cached(m, ps, 7, 4, eos_id=EOS, exit_tol=0.0)  # never: the cap
    assert all(x == 7 for row in loops for x in row)


def test_sweep_exit_rule_agrees_with_the_depth_matrix():
    m = sharp(seed=5)
    ps = prompts_(30, seed=2)
    greedy = generate(m, ps, 3, 5, eos_id=EOS)
    batch = make_batch([p + g + [EOS] for p, g in zip(ps, greedy, strict=True)], [len(p) for p in ps])
    depths = list(range(1, 11))
    for kw in (dict(exit_stable=2), dict(exit_tol=0.05), dict(exit_stable=1, exit_tol=0.01)):
        res = sweep(m, batch, depths, batch_size=7, **kw)
        assert res.exit_depth.min() >= 1 and res.exit_depth.max() <= 10
        idx = res.exit_depth - 1
        torch.testing.assert_close(res.exit_correct, res.correct[idx, torch.arange(len(ps))])
        js = res.to_json()["exit"]
        assert js["mean_loops"] == pytest.approx(res.exit_depth.float().mean().item())
    plain = sweep(m, batch, depths, batch_size=7)
    assert torch.equal(plain.correct, res.correct) and plain.exit_depth is None


@pytest.mark.skipif(os.environ.get("LOOPLM_BENCH_SMOKE") != "1",
                    reason="runs every benchmark's --quick mode (minutes on a shared CPU); set LOOPLM_BENCH_SMOKE=1")
@pytest.mark.parametrize("script", ["reg_overhead.py", "memory.py", "throughput.py", "sweep_speed.py",
                                    "early_exit.py"])
def test_benchmark_quick_modes_run(script):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    assert isinstance(json.loads(out.stdout.strip().splitlines()[-1]), dict)


def test_config_accepts_the_new_reg_options():
    cfg = load_config("addition-prenorm-stars", ["reg.at=penultimate", "reg.samples=32", "reg.impl=autograd"])
    assert (cfg.reg.at, cfg.reg.samples, cfg.reg.impl) == ("penultimate", 32, "autograd")
    from looplm.config import ConfigError

    with pytest.raises(ConfigError, match="reg.impl"):
        load_config("addition-prenorm-stars", ["reg.impl=fast"])
    with pytest.raises(ConfigError, match="reg.samples"):
        load_config("addition-prenorm-stars", ["reg.samples=-1"])
