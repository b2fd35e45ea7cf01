"""Depth-sweep speed: the one-pass sweep against batched greedy decoding at each depth separately.

Exact match on held-out 4-digit addition at every depth 1..100:
  one-pass      looplm.evaluate.sweep: one forward pass to depth 100, the head applied after every loop
  naive         batched greedy decoding at each depth d separately, every token rerunning the whole prefix
                through d loops (generate(..., use_cache=False)): the straightforward approach
  cached        the same per-depth decoding with the KV cache (generate_cached), for reference
Accuracies must be identical, sample by sample (asserted).

The naive side costs about 240x the one-pass sweep here, so it runs on the first --naive-n problems (all
depths) and its time is scaled by N / naive-n to the full set: decoding is batched in chunks of --batch-size,
so its cost is linear in the number of chunks. The script prints both the measured same-size ratio and the
extrapolated one.

    python benchmarks/sweep_speed.py [--checkpoint runs/demo] [--n 5000] [--naive-n 500] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import ROOT, finish, machine, setup_threads

from looplm import checkpoint as ckpt
from looplm.config import load_config
from looplm.evaluate import sweep
from looplm.generate import generate, generate_cached
from looplm.model import LoopedTransformer
from looplm.tasks import make_task
from looplm.tasks.addition import EOS
from looplm.tasks.base import IGNORE


def load(path: str | None):
    if path and Path(path).exists():
        model, cfg = ckpt.load_model(path, torch.device("cpu"))
        return model, cfg, str(path)
    cfg = load_config("addition-prenorm-stars")
    torch.manual_seed(0)
    return LoopedTransformer(cfg.model), cfg, "random init (no checkpoint found)"


def decode_correct(model, batch, depth: int, bs: int, cached: bool) -> torch.Tensor:
    """(N,) bool: does batched greedy decoding at `depth` reproduce each gold answer and its EOS?"""
    ok = []
    for s in range(0, len(batch), bs):
        ids, tgt = batch.input_ids[s:s + bs], batch.targets[s:s + bs]
        plen = (tgt != IGNORE).int().argmax(1) + 1  # the first scored position is the prompt's last token
        prompts = [ids[i, : int(plen[i])].tolist() for i in range(len(ids))]
        golds = [[int(x) for x in tgt[i][tgt[i] != IGNORE]] for i in range(len(ids))]  # answer digits + EOS
        max_new = max(len(g) for g in golds)
        if cached:
            outs = generate_cached(model, prompts, depth, max_new, EOS)[0]
        else:
            outs = generate(model, prompts, depth, max_new, EOS)
        # outs exclude EOS: right iff out + [EOS] == gold (decoding stops at EOS; a longer output is wrong)
        ok += [o + [EOS] == g for o, g in zip(outs, golds, strict=True)]
    return torch.tensor(ok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--naive-n", type=int, default=500)
    ap.add_argument("--max-depth", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="200 problems, depths 1..8, naive on 50: a smoke run")
    a = ap.parse_args()
    setup_threads(a.threads)
    if a.quick:
        a.n, a.naive_n, a.max_depth, a.batch_size = 200, 50, 8, 50
    model, cfg, source = load(a.checkpoint)
    model.eval()
    task = make_task(cfg)
    batch = task.test_batch(a.n, cfg.data.test_seed, cfg.model.max_seq_len)
    depths = list(range(1, a.max_depth + 1))

    c0, w0 = time.thread_time(), time.perf_counter()
    one = sweep(model, batch, depths, batch_size=a.batch_size)
    one_cpu, one_wall = time.thread_time() - c0, time.perf_counter() - w0

    sub = batch_slice(batch, a.naive_n)
    c0 = time.thread_time()
    one_sub = sweep(model, sub, depths, batch_size=a.batch_size)
    one_sub_cpu = time.thread_time() - c0

    times = {}
    for name, cached in (("naive", False), ("cached", True)):
        c0, w0 = time.thread_time(), time.perf_counter()
        rows = [decode_correct(model, sub, d, a.batch_size, cached) for d in depths]
        times[name] = (time.thread_time() - c0, time.perf_counter() - w0)
        got = torch.stack(rows)
        assert torch.equal(got, one_sub.correct), f"{name} decoding disagrees with the one-pass sweep"
        assert torch.equal(one.correct[:, : a.naive_n], one_sub.correct)
    scale = a.n / a.naive_n
    r_same = {k: v[0] / one_sub_cpu for k, v in times.items()}
    r_full = {k: v[0] * scale / one_cpu for k, v in times.items()}
    acc = one.accuracy
    print(f"model: {source}; {a.n} held-out problems, depths 1..{a.max_depth}, chunks of {a.batch_size}")
    print(f"one-pass sweep over all {a.n}: {one_cpu:.1f} s cpu ({one_wall:.1f} s wall)")
    print(f"on the first {a.naive_n} problems (every depth, accuracies identical sample by sample):")
    print(f"  one-pass {one_sub_cpu:.2f} s cpu")
    for k, (c, w) in times.items():
        print(f"  {k:8s} {c:8.1f} s cpu ({w:.1f} s wall): {r_same[k]:7.1f}x the one-pass sweep; extrapolated "
              f"to {a.n} problems {c * scale:8.0f} s, {r_full[k]:7.1f}x")
    shown = [d for d in (1, 2, 4, 8, 16, 32, 64, 100) if d <= a.max_depth]
    print("accuracy " + " ".join(f"d{d}={acc[d - 1]:.3f}" for d in shown))
    finish({"bench": "sweep_speed", "model": source, "n": a.n, "naive_n": a.naive_n, "max_depth": a.max_depth,
            "quick": a.quick, "goal_ratio": 20, "one_pass_cpu_s": round(one_cpu, 2),
            "one_pass_wall_s": round(one_wall, 2),
            "ratio_same_size": {k: round(v, 1) for k, v in r_same.items()},
            "ratio_extrapolated_full": {k: round(v, 1) for k, v in r_full.items()},
            "identical_accuracies": True, "accuracy": {str(d): acc[d - 1] for d in shown}, "machine": machine()})


def batch_slice(batch, n):
    return batch.rows(slice(0, n))


if __name__ == "__main__":
    main()
