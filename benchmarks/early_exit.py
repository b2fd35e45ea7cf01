"""Adaptive early exit at inference: exact match against mean loops used per generated token.

For each checkpoint (a STARS model and a fixed-depth baseline), on held-out 4-digit addition:
- fixed depth d = 1..cap: KV-cached greedy decoding at d loops for every token (loops used = d);
- exit rules, decoded by generate_cached with the cap as the most loops a token may use:
    stable m   stop a token once its argmax has been unchanged for m consecutive loops;
    tol r      stop a token once its relative step residual ||h(t)-h(t-1)|| / ||h(t)|| < r.
A problem is right iff the decoded answer and its EOS equal the gold. Loops are counted per generated token
(its EOS included); the prompt's positions share the depth of the first answer token.
Goal: on the STARS model, the accuracy of 32 fixed loops with at most half the loops (<= 16 per token).

    python benchmarks/early_exit.py --stars runs/demo --fixed runs/perf-fixed [--n 1000] [--cap 32]
        [--png docs/early_exit.png] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import ROOT, finish, machine, setup_threads

from looplm import checkpoint as ckpt
from looplm.generate import generate_cached
from looplm.tasks import make_task
from looplm.tasks.addition import EOS
from looplm.tasks.base import IGNORE

STABLE = [1, 2, 3, 4, 6]
TOLS = [0.3, 0.2, 0.1, 0.05, 0.02, 0.01]


def evaluate(model, prompts, golds, cap, bs, **rule) -> tuple[float, float]:
    right, used = 0, []
    for s in range(0, len(prompts), bs):
        outs, loops = generate_cached(model, prompts[s:s + bs], cap, max(len(g) for g in golds), EOS, **rule)
        right += sum(o + [EOS] == g for o, g in zip(outs, golds[s:s + bs], strict=True))
        used += [x for row in loops for x in row]
    return right / len(prompts), sum(used) / len(used)


def run_model(path: str, n: int, cap: int, bs: int, fixed_depths: list[int]) -> dict:
    model, cfg = ckpt.load_model(path, torch.device("cpu"))
    model.eval()
    task = make_task(cfg)
    b = task.test_batch(n, cfg.data.test_seed, cfg.model.max_seq_len)
    plen = (b.targets != IGNORE).int().argmax(1) + 1  # the first scored position is the prompt's last token
    prompts = [b.input_ids[i, : int(plen[i])].tolist() for i in range(n)]
    golds = [[int(x) for x in b.targets[i][b.targets[i] != IGNORE]] for i in range(n)]
    out: dict = {"fixed": {}, "stable": {}, "tol": {}}
    for d in fixed_depths:
        out["fixed"][d] = evaluate(model, prompts, golds, d, bs)
    for m in STABLE:
        out["stable"][m] = evaluate(model, prompts, golds, cap, bs, exit_stable=m)
    for r in TOLS:
        out["tol"][r] = evaluate(model, prompts, golds, cap, bs, exit_tol=r)
    return out


def plot(results: dict, cap: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    colors = {"STARS": "tab:blue", "fixed-depth baseline": "tab:red"}
    for label, res in results.items():
        c = colors.get(label)
        fx = sorted(res["fixed"].items())
        ax.plot([v[1] for _, v in fx], [v[0] for _, v in fx], "-", color=c, alpha=0.6, label=f"{label}: fixed depth")
        st = list(res["stable"].values())
        ax.plot([v[1] for v in st], [v[0] for v in st], "o", color=c, label=f"{label}: exit, argmax stable m")
        tl = list(res["tol"].values())
        ax.plot([v[1] for v in tl], [v[0] for v in tl], "^", color=c, mfc="none", label=f"{label}: exit, residual tol")
    ax.axvline(cap / 2, color="gray", ls=":", lw=1)
    ax.text(cap / 2, 0.02, " half of the cap", color="gray", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"mean loops per generated token (cap {cap})")
    ax.set_ylabel("exact match")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Adaptive early exit, 4-digit addition (KV-cached greedy decoding)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stars", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--fixed", default=str(ROOT / "runs" / "perf-fixed"))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cap", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--png", default=str(ROOT / "docs" / "early_exit.png"))
    ap.add_argument("--quick", action="store_true", help="50 problems, cap 8, no PNG: a smoke run")
    a = ap.parse_args()
    setup_threads(a.threads)
    if a.quick:
        a.n, a.cap = 50, 8
    fixed_depths = sorted({d for d in (1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, a.cap) if d <= a.cap})
    results, sources = {}, {}
    t0 = time.perf_counter()
    for label, path in (("STARS", a.stars), ("fixed-depth baseline", a.fixed)):
        if not Path(path).exists():
            print(f"{label}: {path} not found, skipped")
            continue
        results[label] = run_model(path, a.n, a.cap, a.batch_size, fixed_depths)
        sources[label] = path
    summary = {}
    for label, res in results.items():
        acc_cap = res["fixed"][a.cap][0]
        print(f"\n{label} ({sources[label]}), {a.n} problems; {a.cap} fixed loops: exact match {acc_cap:.3f}")
        print("  fixed  " + "  ".join(f"d{d}:{v[0]:.3f}" for d, v in sorted(res["fixed"].items())))
        for kind in ("stable", "tol"):
            for k, (acc, loops) in res[kind].items():
                mark = "  <- same accuracy as the cap" if acc >= acc_cap else ""
                print(f"  exit {kind}={k:<5} exact match {acc:.3f} at {loops:6.2f} loops/token "
                      f"({loops / a.cap:5.1%} of {a.cap}){mark}")
        ok = [(v[1], f"{kind}={k}", v[0]) for kind in ("stable", "tol") for k, v in res[kind].items()
              if v[0] >= acc_cap]
        best = min(ok) if ok else None
        summary[label] = {"acc_at_cap": acc_cap, "best_rule_matching_cap": best and best[1],
                          "its_loops_per_token": best and round(best[0], 2),
                          "loop_fraction_of_cap": best and round(best[0] / a.cap, 3)}
    if results and not a.quick:
        plot(results, a.cap, Path(a.png))
        print(f"\nwrote {a.png}")
    print(f"({time.perf_counter() - t0:.0f} s wall)")
    finish({"bench": "early_exit", "n": a.n, "cap": a.cap, "quick": a.quick, "goal_loop_fraction": 0.5,
            "models": sources, "summary": summary,
            "points": {lab: {kind: {str(k): [round(v[0], 4), round(v[1], 3)] for k, v in res[kind].items()}
                             for kind in ("fixed", "stable", "tol")} for lab, res in results.items()},
            "machine": machine()})


if __name__ == "__main__":
    main()
