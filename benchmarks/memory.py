"""Peak training memory against loop count: full backprop through time vs the bounded modes.

One training step (demo config, JSRR on, batch 128) at 10, 50 and 100 loops, each in a fresh subprocess, for
  full        backprop through every loop (loops.backprop_loops=0)
  tbptt k=8   truncated backprop: the first n-8 loops run without a graph (loops.backprop_loops=8)
  checkpoint  activation checkpointing per loop: one state kept per loop, the rest recomputed in backward
              (loops.checkpoint_loops=true)
  tbptt k=8 + checkpoint   both

How memory is measured (CPU has no torch.cuda.max_memory_allocated):
- peak MB (primary): torch.profiler with profile_memory + record_shapes + with_stack records every allocation
  and free of the torch CPU allocator; `export_memory_timeline` turns them into bytes live over time; the figure
  is the maximum of that curve over the step. It counts tensors only (activations, gradients, optimizer state
  created in the step), not the Python heap, and it is exact for what it counts. tracemalloc cannot be used:
  torch allocates outside Python's allocator.
- rss MB (cross-check): ru_maxrss of the child after the step minus its RSS just before it (after a warm-up
  step at 1 loop). It includes allocator slack and fragmentation, so it reads higher; it is an upper bound.

    python benchmarks/memory.py [--loops 10,50,100] [--quick]
    python benchmarks/memory.py --compare runs/demo/sweep.json runs/perf-tbptt8/sweep.json   # accuracy cost
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = {"full": [], "tbptt k=8": ["loops.backprop_loops=8"], "checkpoint": ["loops.checkpoint_loops=true"],
         "tbptt k=8 + checkpoint": ["loops.backprop_loops=8", "loops.checkpoint_loops=true"]}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(mode: str, loops: int, batch: int, seed: int) -> dict:
    import torch
    from _common import Trainer, demo_config
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    tr = Trainer(demo_config(MODES[mode] + [f"train.batch_size={batch}"]), seed)
    tr.step(1)  # warm-up: optimizer state, kernels, thread pools
    rss0 = _rss_mb()
    tr.step(loops)  # unprofiled, for the RSS figure (the profiler's own buffers would inflate it)
    max1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        tr.step(loops)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "timeline.json"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    live = [sum(s) for s in sizes]
    return {"peak_mb": (max(live) - live[0]) / 2**20, "rss_mb": max1 - rss0}


def compare(paths: list[str]) -> None:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    show = [1, 2, 4, 8, 16, 32, 64, 100]
    print("exact match by depth (from sweep.json files)")
    print(f"{'run':40s} " + " ".join(f"{d:>6d}" for d in show))
    for p, r in zip(paths, rows, strict=True):
        acc = dict(zip(r["depths"], r["accuracy"], strict=True))
        print(f"{p:40s} " + " ".join(f"{acc[d]:6.3f}" if d in acc else "     -" for d in show))
    figures = {"bench": "memory_accuracy", "runs": {p: {str(d): dict(zip(r["depths"], r["accuracy"], strict=True))
                                                         .get(d) for d in show} for p, r in zip(paths, rows,
                                                                                               strict=True)}}
    print(json.dumps(figures))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="10,50,100")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    ap.add_argument("--quick", action="store_true", help="batch 8 at 4 and 12 loops: a smoke run")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "LOOPS"), help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs="+", metavar="SWEEP_JSON", help="print exact match from sweep files")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), a.batch, a.seed)))
        return
    if a.compare:
        compare(a.compare)
        return
    loops = [4, 12] if a.quick else [int(x) for x in a.loops.split(",")]
    batch = 8 if a.quick else a.batch
    from _common import finish

    modes = [m.strip() for m in a.modes.split(",")]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}; choose from {list(MODES)}")
    res: dict[str, dict[int, dict]] = {}
    for mode in modes:
        res[mode] = {}
        for n in loops:
            if a.quick:  # in-process: fast, but the RSS figure then carries earlier configs' heap
                res[mode][n] = {**child(mode, n, batch, a.seed), "rss_mb": None}
            else:
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), "--batch", str(batch),
                                      "--seed", str(a.seed)], capture_output=True, text=True, check=True)
                res[mode][n] = json.loads(out.stdout.strip().splitlines()[-1])
            rss = res[mode][n]["rss_mb"]
            print(f"{mode:24s} {n:4d} loops: peak {res[mode][n]['peak_mb']:8.1f} MB (profiler), "
                  + (f"{rss:8.1f} MB (RSS delta)" if rss is not None else "RSS not measured in --quick"), flush=True)
    lo, hi = loops[0], loops[-1]
    print(f"\nbatch {batch}, JSRR on; peak at {hi} loops / peak at {lo} loops (profiler; RSS in brackets)")
    ratio = {}
    for mode in modes:
        r = res[mode][hi]["peak_mb"] / res[mode][lo]["peak_mb"]
        rr = res[mode][hi]["rss_mb"] / res[mode][lo]["rss_mb"] if res[mode][lo]["rss_mb"] else float("nan")
        ratio[mode] = round(r, 3)
        vs_full = (f"{res[mode][hi]['peak_mb'] / res['full'][hi]['peak_mb']:5.2f}x of full backprop" if "full" in res
                   else "")
        print(f"{mode:24s} {r:6.2f}x  ({rr:5.2f}x)   at {hi} loops: {vs_full}")
    finish({"bench": "memory", "batch": batch, "loops": loops, "quick": a.quick, "seed": a.seed, "goal_ratio": 1.5,
            "ratio_hi_over_lo": ratio,
            "peak_mb": {m: {str(n): round(v["peak_mb"], 1) for n, v in d.items()} for m, d in res.items()},
            "rss_mb": {m: {str(n): v["rss_mb"] and round(v["rss_mb"], 1) for n, v in d.items()}
                       for m, d in res.items()}})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
