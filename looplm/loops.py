"""Loop-count samplers: pure functions of a seeded torch.Generator.

One count is drawn per training step for the whole batch (every rank must draw the same one; docs/distributed.md),
so a sampler returns a Python int. Using torch's generator, not `random`, lets the sampler state be saved
and restored bit-exactly with the rest of the trainer state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from .arguments import strict_int
from .config import LoopsConfig, build_sections


def _clip(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def sample_fixed(num_loops: int) -> int:
    return num_loops


def sample_uniform(gen: torch.Generator, lo: int, hi: int) -> int:
    """Uniform on the integers lo..hi inclusive."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen).item())


def sample_poisson(gen: torch.Generator, rate: float, lo: int, hi: int) -> int:
    """Poisson(rate), clipped to [lo, hi]."""
    n = torch.poisson(torch.tensor([rate], dtype=torch.float64), generator=gen)
    return _clip(int(n.item()), lo, hi)


def sample_lognormal(gen: torch.Generator, mu: float, sigma: float, lo: int, hi: int) -> int:
    """round(exp(N(mu, sigma^2))), clipped to [lo, hi]. STARS on addition: mu=2, sigma=0.7, [1, 100]."""
    z = torch.randn(1, generator=gen, dtype=torch.float64).item()
    # Capped in log space: exp of a huge mu would overflow, and any value above hi is clipped to hi anyway.
    return _clip(int(round(math.exp(min(mu + sigma * z, math.log(hi) + 1.0)))), lo, hi)


_CHECKED: dict[tuple, LoopsConfig] = {}  # LoopsConfig values sample_loops has validated -> the section


def sample_loops(cfg: LoopsConfig, gen: torch.Generator, step: int = 0) -> int:
    """The loop count for training step `step` under `cfg` (fixed during the curriculum phase)."""
    if not isinstance(cfg, LoopsConfig):
        raise TypeError(f"cfg must be a LoopsConfig (a Config's .loops), got {type(cfg).__name__}")
    # Validated again, as fit does: a field set after construction (max_loops=0, mu=nan, sigma=-1) skipped the
    # section's checks, and was a math error here or drew counts from the wrong distribution without a word
    # (once per distinct set of values, not on every training step: a rebuild costs ~170 µs)
    values = tuple(getattr(cfg, f.name) for f in dataclasses.fields(cfg))
    try:
        cfg = _CHECKED[values]
    except (KeyError, TypeError):  # new values, or a list set on a field (no key): checked, and refused if wrong
        cfg = build_sections({"loops": dataclasses.asdict(cfg)}, {"loops": LoopsConfig})["loops"]
        _CHECKED[values] = cfg  # (NaN is never equal to itself: such a config is checked, and refused, each time)
    if not isinstance(gen, torch.Generator):  # (0 was torch's list of randn overloads)
        raise TypeError(f"gen must be a torch.Generator (torch.Generator().manual_seed(seed)), got "
                        f"{type(gen).__name__}")
    try:  # ("5" and None were "'<' not supported between instances of 'str' and 'int'")
        step = strict_int(step)  # not bools, floats or strings
    except TypeError:
        raise TypeError(f"step must be an integer (the training step), got {step!r:.80}") from None
    if cfg.sampler == "fixed" or step < cfg.curriculum_steps:
        return sample_fixed(cfg.num_loops)
    if cfg.sampler == "uniform":
        return sample_uniform(gen, cfg.min_loops, cfg.max_loops)
    if cfg.sampler == "poisson":
        return sample_poisson(gen, cfg.rate, cfg.min_loops, cfg.max_loops)
    if cfg.sampler == "lognormal":
        return sample_lognormal(gen, cfg.mu, cfg.sigma, cfg.min_loops, cfg.max_loops)
    raise ValueError(f"unknown sampler {cfg.sampler!r}")


def bound_share(cfg: LoopsConfig) -> tuple[float, float]:
    """The probabilities that a draw of the poisson or lognormal sampler is clipped to loops.min_loops and to
    loops.max_loops ((0, 0) for the others): exact, from the distributions' CDFs."""
    lo, hi = cfg.min_loops, cfg.max_loops
    if cfg.sampler == "lognormal":  # round(exp(X)) <= lo iff X < log(lo + 0.5); >= hi iff X >= log(hi - 0.5)
        cdf = lambda x: 0.5 * math.erfc(-(x - cfg.mu) / (cfg.sigma * math.sqrt(2)))  # noqa: E731
        return cdf(math.log(lo + 0.5)), 1 - cdf(math.log(hi - 0.5)) if hi > lo else 0.0
    if cfg.sampler == "poisson":
        def cdf(k: int) -> float:  # P(N <= k), summed in log space (a rate of thousands underflows exp(-rate))
            return sum(math.exp(j * math.log(cfg.rate) - cfg.rate - math.lgamma(j + 1)) for j in range(k + 1)) \
                if cfg.rate > 0 else 1.0
        return cdf(lo), 1 - cdf(hi - 1) if hi > lo else 0.0
    return 0.0, 0.0


def bound_notes(cfg: LoopsConfig, share: float = 0.9) -> list[str]:
    """A note when the sampler puts at least `share` of the steps at one end of [min_loops, max_loops]: a mu read
    as a loop count (it is its log) made a fixed-depth run of one that records the whole range as trained."""
    low, high = bound_share(cfg)
    param = f"loops.mu={cfg.mu:g} (the log of the median loop count)" if cfg.sampler == "lognormal" else \
        f"loops.rate={cfg.rate:g} (the mean loop count)"
    notes = [f"note: {param}: {100 * p:.0f}% of the steps run loops.{key}={n}, the end of the range it is clipped to"
             for p, key, n in ((low, "min_loops", cfg.min_loops), (high, "max_loops", cfg.max_loops)) if p >= share]
    return _depth_note(cfg) + notes


def _depth_note(cfg: LoopsConfig) -> list[str]:
    """A note when loops.num_loops, the depth a random sampler's run is evaluated at during training (and that
    generate and export-hf default to), lies outside the range the sampler trains and no curriculum trains it:
    the logged accuracy, and train.stop_at_acc, then scored a depth the run never saw."""
    n, lo, hi = cfg.num_loops, cfg.min_loops, cfg.max_loops
    if cfg.sampler == "fixed" or cfg.curriculum_steps or lo <= n <= hi:
        return []
    return [f"note: loops.num_loops={n} is outside the {cfg.sampler} sampler's range (loops.min_loops..max_loops = "
            f"{lo}..{hi}): the run's evaluations, and generate's default depth, use {n} loops, a depth it never "
            "trains; set loops.num_loops within the range"]


def backprop_notes(cfg: LoopsConfig, steps: int, model: Any = None) -> list[str]:
    """A note when loops.backprop_loops is not below the most loops the run trains: truncation needs more loops
    than it keeps the graph of, so every step backpropagates through all its loops, as with 0. With the model
    section (`model`: ModelConfig) a note too when it is below every loop count the run trains and the loop has
    no input injection: the graph then starts after h(0) on every step, so nothing reaches the embedding's
    positions or the prelude (their weights stay as initialized; a resume found no optimizer state for them)."""
    lo, hi = training_range(cfg, steps)
    counts = str(lo) if lo == hi else f"{lo}..{hi}"
    if cfg.backprop_loops and cfg.backprop_loops < lo and getattr(model, "injection", None) == "none":
        what = "the position table and the prelude get" if getattr(model, "n_prelude", 0) else "the position table gets"
        return [f"note: loops.backprop_loops={cfg.backprop_loops} is below every loop count this run trains "
                f"({counts}) and model.injection=none: only the last loops keep a graph and nothing of the input "
                f"enters them, so {what} no gradient (the token embedding trains only "
                "through the tied head); set model.injection=add, or loops.backprop_loops to at least the fewest "
                "loops trained"]
    if not cfg.backprop_loops or cfg.backprop_loops < hi:
        return []
    return [f"note: loops.backprop_loops={cfg.backprop_loops} is not below the most loops this run trains ({hi}): "
            "every step backpropagates through all its loops, as with 0; it has no effect on this run"]


def describe(cfg: LoopsConfig) -> str:
    if cfg.sampler == "fixed":
        return f"fixed {cfg.num_loops}"
    rng = f"[{cfg.min_loops}, {cfg.max_loops}]"
    body = {"uniform": f"uniform {rng}", "poisson": f"poisson(λ={cfg.rate}) clipped to {rng}",
            "lognormal": f"lognormal(μ={cfg.mu}, σ={cfg.sigma}) clipped to {rng}"}[cfg.sampler]
    if cfg.curriculum_steps:
        body = f"fixed {cfg.num_loops} for {cfg.curriculum_steps} steps, then {body}"
    return body


def training_range(cfg: LoopsConfig, steps: int = 0) -> tuple[int, int]:
    """The loop counts training can see, for shading plots; `steps`: the run's length (0: not known), whose
    curriculum may cover all of it (then every step ran num_loops)."""
    if cfg.sampler == "fixed" or (steps and cfg.curriculum_steps >= steps):
        return cfg.num_loops, cfg.num_loops
    lo, hi = cfg.min_loops, cfg.max_loops
    if cfg.curriculum_steps:
        lo, hi = min(lo, cfg.num_loops), max(hi, cfg.num_loops)
    return lo, hi


def trained_loops(cfg: Any, step: int | None = None) -> list[int]:
    """[lo, hi] of a run's config (`Config`): the loop counts its training saw up to `step` (a checkpoint's; None:
    the whole run, train.steps), as results record them. A checkpoint taken inside a loop curriculum (one of the
    history, or a run stopped early by train.stop_at_acc) saw only loops.num_loops."""
    return list(training_range(cfg.loops, cfg.train.steps if step is None else step))
