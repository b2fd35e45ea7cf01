import math

import torch

from looplm.config import LoopsConfig
from looplm.loops import sample_loops, training_range


def draws(cfg, n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_loops(cfg, g, step=10**9) for _ in range(n)]


def test_seeded_and_reproducible():
    cfg = LoopsConfig()
    assert draws(cfg, 200, 1) == draws(cfg, 200, 1)
    assert draws(cfg, 200, 1) != draws(cfg, 200, 2)


def test_lognormal_matches_its_distribution():
    cfg = LoopsConfig(sampler="lognormal", mu=2.0, sigma=0.7, min_loops=1, max_loops=100)
    x = torch.tensor(draws(cfg), dtype=torch.float64)
    assert x.min() >= 1 and x.max() <= 100 and (x == x.round()).all()
    # The median of round(exp(N(2, .7))) is round(e^2) = 7; the mean of the unclipped law is e^(2 + .245).
    assert x.median().item() == 7
    assert abs(x.mean().item() - math.exp(2 + 0.7**2 / 2)) < 0.6


def test_clipping_bounds_and_other_samplers():
    cfg = LoopsConfig(sampler="lognormal", mu=4.0, sigma=1.0, min_loops=3, max_loops=20)
    x = draws(cfg, 500)
    assert min(x) == 3 or min(x) > 3
    assert max(x) == 20  # e^4 ≈ 55 so the clip is hit
    u = draws(LoopsConfig(sampler="uniform", min_loops=2, max_loops=5), 2000)
    assert set(u) == {2, 3, 4, 5}
    p = torch.tensor(draws(LoopsConfig(sampler="poisson", rate=5.0, min_loops=1, max_loops=100)), dtype=torch.float64)
    assert abs(p.mean().item() - 5.0) < 0.25
    assert set(draws(LoopsConfig(sampler="fixed", num_loops=4), 10)) == {4}


def test_curriculum_is_fixed_first():
    cfg = LoopsConfig(sampler="uniform", min_loops=10, max_loops=20, num_loops=4, curriculum_steps=5)
    g = torch.Generator().manual_seed(0)
    assert [sample_loops(cfg, g, s) for s in range(5)] == [4] * 5
    assert all(10 <= sample_loops(cfg, g, s) <= 20 for s in range(5, 50))
    assert training_range(cfg) == (4, 20)


def test_a_sampler_that_puts_its_steps_at_one_end_is_noted():
    """loops.mu=5 read as "about 5 loops" (it is the log of the median: exp(5) = 148) made every step run
    max_loops, a fixed-depth run that recorded [min, max] as trained, with no word. The share clipped to each end is
    computed exactly and matches the sampler's own draws."""
    from looplm import load_config
    from looplm.loops import bound_notes, bound_share, sample_loops

    for extra in ([], ["loops.mu=5"], ["loops.mu=-3"], ["loops.sampler=poisson", "loops.rate=1000"],
                  ["loops.sampler=poisson", "loops.rate=2.5"]):
        c = load_config("addition-prenorm-stars", ["loops.max_loops=4", *extra]).loops
        g = torch.Generator().manual_seed(0)
        drawn = [sample_loops(c, g, 10**6) for _ in range(4000)]
        low, high = bound_share(c)
        assert abs(drawn.count(c.min_loops) / 4000 - low) < 0.03 and abs(drawn.count(c.max_loops) / 4000 - high) < 0.03
    notes = bound_notes(load_config("addition-prenorm-stars", ["loops.max_loops=4", "loops.mu=5",
                                                               "loops.num_loops=4"]).loops)
    assert notes == ["note: loops.mu=5 (the log of the median loop count): 100% of the steps run loops.max_loops=4, "
                     "the end of the range it is clipped to"]
    assert bound_notes(load_config("addition-prenorm-stars").loops) == []  # the preset's own draw: no note


def _tiny_model():
    from looplm import LoopedTransformer
    from looplm.config import ModelConfig

    torch.manual_seed(0)
    return LoopedTransformer(ModelConfig(vocab_size=14, d_model=16, n_heads=2, d_ff=32, max_seq_len=8))


def test_run_loop_checks_backprop_loops_and_first_as_it_checks_the_count():
    """backprop_loops=2.5 ran as 2, True as 1, -1 as full backprop, and '2' was Python's TypeError; first=0 read
    KV-cache slot -1. Both are now checked as num_loops is, by one checker naming the argument and its range."""
    import pytest

    from looplm.looped import run_loop

    m = _tiny_model()
    h0, ctx = m.embed(torch.randint(2, 14, (2, 5)))
    for kw, words in ((dict(backprop_loops=2.5), r"backprop_loops must be an integer >= 0 \(0: backprop through every "
                       r"loop\), got 2.5"), (dict(backprop_loops=True), "backprop_loops must be an integer >= 0"),
                      (dict(backprop_loops=-1), r"backprop_loops must be >= 0 \(0: backprop through every loop\), "
                       "got -1"),
                      (dict(backprop_loops="2"), "backprop_loops must be an integer >= 0 .*got '2'"),
                      (dict(backprop_loops=2**40), "backprop_loops must be at most 1,000,000"),
                      (dict(first=0), r"first must be >= 1 \(the index t of the first loop"),
                      (dict(first=1.0), "first must be an integer >= 1"), (dict(first=True), "first must be an int")):
        with pytest.raises(ValueError, match=words):
            run_loop(m, h0, ctx, 3, **kw)
    # what is valid still runs alike: truncated backprop changes no value, and numpy/torch integers pass
    ref = run_loop(m, h0, ctx, 3)
    assert torch.equal(run_loop(m, h0, ctx, 3, backprop_loops=torch.tensor(1), first=2), ref)


def test_both_generators_check_max_len_and_blame_the_limit_that_binds():
    """generate_cached ran max_len=5.5 and failed with "no room in max_seq_len=-5" for -5; and both generators
    blamed a caller's small max_len on the model ("max_seq_len=3"). One check now serves both."""
    import pytest

    from looplm.generate import generate, generate_cached

    m = _tiny_model()
    for gen in (generate, generate_cached):
        for bad in (5.5, -5, True, "4"):
            with pytest.raises(ValueError, match=f"max_len must be an integer >= 1, got {bad!r}"):
                gen(m, [[3, 4]], 2, 2, eos_id=1, max_len=bad)
        with pytest.raises(ValueError, match=r"prompt of 5 tokens leaves no position free below max_len=3; pass a "
                                             r"larger max_len \(at most the model's max_seq_len=8\)"):
            gen(m, [[3] * 5], 2, 2, eos_id=1, max_len=3)
        with pytest.raises(ValueError, match=r"prompt of 9 tokens leaves no position free below the model's "
                                             r"max_seq_len=8 \(max_len=100 is capped there\); shorten the prompt"):
            gen(m, [[3] * 9], 2, 2, eos_id=1, max_len=100)
        with pytest.raises(ValueError, match="below the model's max_seq_len=8; shorten the prompt"):
            gen(m, [[3] * 8], 2, 2, eos_id=1)
