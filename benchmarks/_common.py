"""Shared helpers for the benchmark scripts: the training step, timers, the closing JSON line.

Timing on a shared machine: every script sets torch to one intra-op thread and reports two clocks per step,
- wall: time.perf_counter, what a user waits for; inflated whenever other processes share the cores;
- cpu:  time.thread_time of the calling thread, which is where all of torch's work runs with one thread; it
        does not count time spent descheduled, so it is the steadier figure on a shared machine (cache and
        memory-bandwidth contention still leak into it).
Variants are interleaved round-robin (A B C A B C ...) so slow drifts in machine load hit all of them alike,
and each figure is a median over rounds. Ratios are computed within one run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from looplm import objective  # noqa: E402
from looplm.config import Config, load_config  # noqa: E402
from looplm.model import LoopedTransformer  # noqa: E402
from looplm.tasks import IGNORE, make_task  # noqa: E402
from looplm.train import Generators, make_optimizer  # noqa: E402


def setup_threads(n: int = 1) -> None:
    torch.set_num_threads(n)


def machine() -> dict:
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_1m_at_start": round(load[0], 2)}


class Trainer:
    """A model, optimizer and data stream at a config, with `step(n_loops)` = one training step of
    looplm/train.py (data, embed, loop + penalty, readout, CE, backward, clip, AdamW) without logging."""

    def __init__(self, cfg: Config, seed: int = 0):
        self.cfg = cfg
        self.task = make_task(cfg)
        torch.manual_seed(seed)
        self.model = LoopedTransformer(cfg.model)
        self.model.train()
        self.opt = make_optimizer(self.model, cfg)
        self.gens = Generators.seeded(seed)
        self.objective = objective.Objective(self.model, cfg.loops, cfg.reg)
        self.loop_fn = None  # a replacement for looplm.looped.run_loop (e.g. torch.compile of it)

    def step(self, n_loops: int) -> float:
        cfg, reg = self.cfg, self.cfg.reg
        batch = self.task.train_batch(cfg.train.batch_size, self.gens.data)
        reg_on = reg.kind != "none" and reg.weight > 0
        r = int(torch.randint(1, n_loops + 1, (1,), generator=self.gens.loops).item())
        at = {"final": n_loops, "random": r, "penultimate": n_loops - 1}[reg.at]
        saved = objective.run_loop
        if self.loop_fn is not None:
            objective.run_loop = self.loop_fn
        try:
            ce_sum, pen = self.objective(batch.input_ids, batch.targets, batch.mask, n_loops,
                                         at if reg_on else None, self.gens.probes)
        finally:
            objective.run_loop = saved
        ce = ce_sum / (batch.targets != IGNORE).sum()
        loss = ce if pen is None else (1 - reg.weight) * ce + reg.weight * pen
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.opt.step()
        return loss.item()


def demo_config(overrides: list[str] | None = None) -> Config:
    """The demo preset (addition-prenorm-stars), with the penalty on from step 0."""
    return load_config("addition-prenorm-stars", ["reg.start_step=0", *(overrides or [])])


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, dict[str, list]]:
    """Run each fn once per round, round-robin; per-call wall and thread-CPU seconds."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    out = {k: {"wall": [], "cpu": []} for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            f()
            out[k]["cpu"].append(time.thread_time() - c0)
            out[k]["wall"].append(time.perf_counter() - w0)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def finish(figures: dict) -> None:
    """The last line of every benchmark: one JSON object with its figures."""
    print(json.dumps(figures, sort_keys=False))
