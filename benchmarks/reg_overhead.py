"""Regularizer overhead: median training-step time with JSRR over the same step without it.

Demo config (addition-prenorm-stars: d_model 128, 4 heads, d_ff 256, 1 core block, pre-norm, batch 128, 4-digit
addition, T = 15), loop count fixed at 9 (the lognormal(2, 0.7) mean is about 9.4), one torch thread.
Each variant trains its own copy of the model from the same seed; variants run interleaved, one step each
per round (benchmarks/_common.py explains the two clocks).

Variants:
  none                  plain cross-entropy step
  jsrr autograd         the paper's JSRR at h(t) by torch.func.jvp through the module (math SDPA, composite
                        LayerNorm): the path before this benchmark existed, kept as reg.impl=autograd
  jsrr                  the default: the same penalty by the hand-written JVP (regularizers.core_jvp)
  jsrr penultimate      the penalty at h(t-1), fused into the last loop (reg.at=penultimate)
  jsrr samples=32       the default penalty over 32 of the 128 samples (reg.samples=32; unbiased, noisier)
  jsrr pen. samples=32  both
  release autograd      the authors' estimator (one VJP, one unit vector over the batch), for reference

    python benchmarks/reg_overhead.py [--rounds 30] [--loops 9] [--profile] [--quick]
"""

from __future__ import annotations

import argparse

import torch
from _common import Trainer, demo_config, finish, interleaved, machine, med, setup_threads

VARIANTS = {
    "none": ["reg.kind=none"],
    "jsrr autograd": ["reg.impl=autograd"],
    "jsrr": [],
    "jsrr penultimate": ["reg.at=penultimate"],
    "jsrr samples=32": ["reg.samples=32"],
    "jsrr penultimate samples=32": ["reg.at=penultimate", "reg.samples=32"],
    "release autograd": ["reg.kind=jsrr_release", "reg.impl=autograd"],
}


def profile(tr: Trainer, loops: int, label: str) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof_ctx

    with prof_ctx(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            tr.step(loops)
    print(f"\n--- profile: {label}, 3 steps, top ops by self CPU time ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--loops", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also print the top ops of the jsrr variants")
    ap.add_argument("--quick", action="store_true", help="a few rounds at batch 32: a smoke run, not a figure")
    a = ap.parse_args()
    setup_threads(a.threads)
    extra = ["train.batch_size=32"] if a.quick else []
    rounds = 3 if a.quick else a.rounds
    trainers = {k: Trainer(demo_config(v + extra), a.seed) for k, v in VARIANTS.items()}
    res = interleaved({k: (lambda t=t: t.step(a.loops)) for k, t in trainers.items()}, rounds,
                      warmup=1 if a.quick else 2)
    base = {c: med(res["none"][c]) for c in ("cpu", "wall")}
    print(f"training step at {a.loops} loops, batch {trainers['none'].cfg.train.batch_size}, {rounds} interleaved "
          f"rounds, {a.threads} thread(s); median per step")
    print(f"{'variant':32s} {'cpu ms':>8s} {'ratio':>7s} {'wall ms':>8s} {'ratio':>7s}")
    ratios_cpu, ratios_wall, ms = {}, {}, {}
    for k in VARIANTS:
        c, w = med(res[k]["cpu"]), med(res[k]["wall"])
        ratios_cpu[k], ratios_wall[k], ms[k] = round(c / base["cpu"], 3), round(w / base["wall"], 3), round(c * 1e3, 1)
        print(f"{k:32s} {c * 1e3:8.1f} {ratios_cpu[k]:7.3f} {w * 1e3:8.1f} {ratios_wall[k]:7.3f}")
    if a.profile:
        for k in ("jsrr autograd", "jsrr"):
            profile(trainers[k], a.loops, k)
    finish({"bench": "reg_overhead", "loops": a.loops, "batch": trainers["none"].cfg.train.batch_size,
            "rounds": rounds, "quick": a.quick, "seed": a.seed, "goal_ratio": 1.10,
            "ratio_cpu": ratios_cpu, "ratio_wall": ratios_wall, "cpu_ms_per_step": ms, "machine": machine(),
            "torch_version": torch.__version__})


if __name__ == "__main__":
    main()
