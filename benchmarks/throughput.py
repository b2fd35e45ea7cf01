"""Training throughput (tokens/s) of looplm against a plain reference implementation, regularizer on.

Demo config (addition-prenorm-stars; batch 128 x T 15 tokens per step), loop counts drawn from the preset's
lognormal(2, 0.7) clipped to [1, 100] with a fixed seed: every variant runs the same sequence of loop counts,
interleaved step by step (A B C A B C ...), one torch thread. tokens/s = Σ tokens / Σ step time, on both
clocks (benchmarks/_common.py). The reference is benchmarks/reference_impl.py: explicit softmax attention,
the authors' regularizer recipe (separate block forward, one unit vector per batch, VJP by double backward).

Variants: reference (reg on), reference (no reg); looplm jsrr (the default: the paper's per-sample JVP at
h(t)), jsrr at h(t-1) fused (reg.at=penultimate), jsrr over 32 of 128 samples (reg.samples=32), the
torch.func path (reg.impl=autograd), the authors' estimator in looplm (kind=jsrr_release), and no reg.

    python benchmarks/throughput.py [--steps 40] [--quick]
    python benchmarks/throughput.py --compile     # torch.compile of the looped block, and recompilation
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import Trainer, demo_config, finish, machine, setup_threads
from reference_impl import RefTrainer

from looplm.looped import run_loop
from looplm.loops import sample_loops

LOOPLM = {
    "looplm jsrr": [],
    "looplm jsrr penultimate": ["reg.at=penultimate"],
    "looplm jsrr samples=32": ["reg.samples=32"],
    "looplm jsrr penult. samples=32": ["reg.at=penultimate", "reg.samples=32"],
    "looplm jsrr tbptt k=8": ["loops.backprop_loops=8"],
    "looplm jsrr autograd": ["reg.impl=autograd"],
    "looplm release autograd": ["reg.kind=jsrr_release", "reg.impl=autograd"],
    "looplm no reg": ["reg.kind=none"],
}


class RefRunner:
    def __init__(self, cfg, seed: int, reg: bool):
        self.tr = Trainer(cfg, seed)  # only for its task and data stream
        m = cfg.model
        self.ref = RefTrainer(self.tr.task.tok.vocab_size, m.max_seq_len, m.d_model, m.n_heads, m.d_ff,
                              cfg.train.lr, cfg.reg.weight, seed)
        self.reg = reg

    def step(self, n: int) -> None:
        cfg = self.tr.cfg
        b = self.tr.task.train_batch(cfg.train.batch_size, self.tr.gens.data)
        self.ref.step(b.input_ids, b.targets, n, self.reg)


def schedule(cfg, steps: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [sample_loops(cfg.loops, g, 10**9) for _ in range(steps)]


def throughput(a) -> None:
    extra = ["train.batch_size=32", "loops.max_loops=12"] if a.quick else []
    base = demo_config(extra)
    steps = 4 if a.quick else a.steps
    loops = schedule(base, steps + 2, a.seed)
    runners = {"reference": RefRunner(base, a.seed, True), "reference no reg": RefRunner(base, a.seed, False)}
    runners.update({k: Trainer(demo_config(v + extra), a.seed) for k, v in LOOPLM.items()})
    tokens = base.train.batch_size * make_T(base)
    wall = {k: 0.0 for k in runners}
    cpu = {k: 0.0 for k in runners}
    for i, n in enumerate(loops):
        for k, r in runners.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            r.step(n)
            if i >= 2:  # the first two steps are warm-up
                cpu[k] += time.thread_time() - c0
                wall[k] += time.perf_counter() - w0
    n_tok = tokens * steps
    tps_cpu = {k: n_tok / v for k, v in cpu.items()}
    tps_wall = {k: n_tok / v for k, v in wall.items()}
    print(f"{steps} steps, loop counts {loops[2:]} (mean {sum(loops[2:]) / steps:.1f}), {tokens} tokens/step")
    print(f"{'variant':28s} {'tok/s cpu':>10s} {'vs ref':>7s} {'tok/s wall':>11s} {'vs ref':>7s}")
    for k in runners:
        print(f"{k:28s} {tps_cpu[k]:10.0f} {tps_cpu[k] / tps_cpu['reference']:7.2f} {tps_wall[k]:11.0f} "
              f"{tps_wall[k] / tps_wall['reference']:7.2f}")
    finish({"bench": "throughput", "steps": steps, "quick": a.quick, "seed": a.seed, "goal_ratio": 1.5,
            "loops": loops[2:], "tokens_per_step": tokens,
            "ratio_vs_reference_cpu": {k: round(v / tps_cpu["reference"], 3) for k, v in tps_cpu.items()},
            "ratio_vs_reference_wall": {k: round(v / tps_wall["reference"], 3) for k, v in tps_wall.items()},
            "tok_s_cpu": {k: round(v) for k, v in tps_cpu.items()}, "machine": machine()})


def make_T(cfg) -> int:
    from looplm.tasks import make_task

    return make_task(cfg).seq_len


def compile_study(a) -> None:
    """torch.compile of the looped block on CPU: speed at a fixed loop count, and what varying it costs."""
    import torch._dynamo as dynamo

    steps = 3 if a.quick else 12
    cfg = demo_config(["reg.kind=none"] + (["train.batch_size=32"] if a.quick else []))
    eager, comp, comp_loop = Trainer(cfg, a.seed), Trainer(cfg, a.seed), Trainer(cfg, a.seed)
    dynamo.reset()
    # (1) compile one application of Φ: the Python loop calls the compiled block t times.
    comp.model.step = torch.compile(comp.model.step)
    t0 = time.perf_counter()
    comp.step(9)
    first_block = time.perf_counter() - t0
    frames0 = dict(dynamo.utils.counters["frames"])
    for n in (3, 9, 17, 40):
        comp.step(n)
    recompiles_block = dynamo.utils.counters["frames"]["ok"] - frames0.get("ok", 0)
    # (2) compile the whole loop (t iterations unrolled): the loop count is baked into the graph.
    comp_loop.loop_fn = torch.compile(run_loop)
    t0 = time.perf_counter()
    comp_loop.step(9)
    first_loop = time.perf_counter() - t0
    frames1 = dict(dynamo.utils.counters["frames"])
    per_n = {}
    for n in (3, 17):
        t0 = time.perf_counter()
        comp_loop.step(n)
        per_n[n] = round(time.perf_counter() - t0, 2)
    recompiles_loop = dynamo.utils.counters["frames"]["ok"] - frames1.get("ok", 0)
    res = {"eager": [], "compiled block": [], "compiled loop": []}
    for _ in range(steps):
        for k, tr in (("eager", eager), ("compiled block", comp), ("compiled loop", comp_loop)):
            c0 = time.thread_time()
            tr.step(9)
            res[k].append(time.thread_time() - c0)
    import statistics

    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"torch.compile on CPU, training step at 9 loops, no regularizer, median of {steps}:")
    for k, v in med.items():
        print(f"  {k:16s} {v * 1e3:8.1f} ms cpu  speed-up {med['eager'] / v:5.2f}x")
    print(f"  compiled block: first step {first_block:.1f} s (compile); frames compiled for loop counts 3, 9, 17, "
          f"40 afterwards: {recompiles_block}")
    print(f"  compiled loop:  first step {first_loop:.1f} s; new loop counts 3, 17 took {per_n} s, "
          f"{recompiles_loop} more frames compiled (one graph per loop count)")
    finish({"bench": "compile", "quick": a.quick, "speedup_vs_eager": {k: round(med["eager"] / v, 3)
                                                                     for k, v in med.items()},
            "first_step_s": {"block": round(first_block, 1), "loop": round(first_loop, 1)},
            "recompiles_when_loop_count_varies": {"block": recompiles_block, "loop": recompiles_loop},
            "new_loop_count_step_s_compiled_loop": per_n, "machine": machine()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="run the torch.compile study instead")
    ap.add_argument("--quick", action="store_true", help="4 steps at batch 32, loops <= 12: a smoke run")
    a = ap.parse_args()
    setup_threads(a.threads)
    compile_study(a) if a.compile else throughput(a)


if __name__ == "__main__":
    main()
