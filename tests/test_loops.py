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
    notes = bound_notes(load_config("addition-prenorm-stars", ["loops.max_loops=4", "loops.mu=5"]).loops)
    assert notes == ["note: loops.mu=5 (the log of the median loop count): 100% of the steps run loops.max_loops=4, "
                     "the end of the range it is clipped to"]
    assert bound_notes(load_config("addition-prenorm-stars").loops) == []  # the preset's own draw: no note
