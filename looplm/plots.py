"""Figures drawn from saved JSON only, so any figure can be rebuilt without retraining.

Matplotlib runs on the Agg backend: no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_json(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e.msg})") from None


def plot_accuracy(sweeps: list[dict], out: str | Path, title: str = "Exact match vs loop count") -> Path:
    """Overlay accuracy-vs-depth curves; each sweep dict may carry `label` and `train_loops` [lo, hi],
    which is shaded so extrapolation beyond the training range is visible at a glance."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=130)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, s in enumerate(sweeps):
        c = colors[i % len(colors)]
        label = s.get("label", f"run {i + 1}")
        ax.plot(s["depths"], [100 * a for a in s["accuracy"]], marker="." if len(s["depths"]) < 40 else None,
                color=c, lw=1.8, label=f"{label} (n={s.get('n', '?')})")
        if s.get("train_loops"):
            lo, hi = s["train_loops"]
            ax.axvspan(lo - 0.5 if lo == hi else lo, hi + 0.5 if lo == hi else hi, color=c, alpha=0.08, lw=0)
    depths = [d for s in sweeps for d in s["depths"]]
    if depths and max(depths) / max(1, min(depths)) >= 30:
        ax.set_xscale("log")
    ax.set_xlabel("loops at test time (t)")
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title + "  (shaded: loop counts seen in training)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
