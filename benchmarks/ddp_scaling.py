"""Training throughput with 1 and 2 processes (torchrun, gloo) at the demo config; prints a ratio.

Each process runs one torch thread, so 2 processes use the 2 cores the way 1 process with 2 threads would.
Throughput is the median of the logged global tokens/s over the steps after the first 10 (warm-up).
The last line of output is a JSON object with the figures.

    python benchmarks/ddp_scaling.py [--steps 60] [--loops 9]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(nproc: int, steps: int, loops: int, threads: int, out: Path) -> float:
    sets = [f"train.steps={steps}", "train.eval_every=0", "reg.rho_every=0", f"train.threads={threads}",
            "loops.sampler=fixed", f"loops.num_loops={loops}", "reg.start_step=0", "train.log_every=1",
            "train.checkpoint_every=0"]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
                if nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "looplm", "train", "--config", "addition-prenorm-stars", "--out", str(out), "--no-progress",
           *[x for s in sets for x in ("--set", s)]]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tok_s"] for r in rows[10:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--loops", type=int, default=9)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        one_1t = run(1, a.steps, a.loops, 1, Path(d) / "one1")
        one_2t = run(1, a.steps, a.loops, 2, Path(d) / "one2")
        two = run(2, a.steps, a.loops, 1, Path(d) / "two")
    print(f"demo config (STARS, JSRR on, {a.loops} loops, global batch 128), median global tokens/s:")
    print(f"  1 process, 1 thread : {one_1t:9.0f}")
    print(f"  1 process, 2 threads: {one_2t:9.0f}")
    print(f"  2 processes (torchrun, gloo), 1 thread each: {two:9.0f}")
    print(f"  2 processes / 1 process 1 thread: {two / one_1t:.2f}x; / 1 process 2 threads: {two / one_2t:.2f}x")
    print(json.dumps({"bench": "ddp_scaling", "loops": a.loops, "tok_s_1proc_1thread": round(one_1t),
                      "tok_s_1proc_2threads": round(one_2t), "tok_s_2proc": round(two),
                      "speedup_vs_1thread": round(two / one_1t, 3), "speedup_vs_2threads": round(two / one_2t, 3)}))


if __name__ == "__main__":
    main()
