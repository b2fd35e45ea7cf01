"""Figures drawn from saved JSON only, so any figure can be rebuilt without retraining.

Matplotlib runs on the Agg backend: no display is needed. Text that comes from users and run names (labels,
titles) is drawn verbatim: its `$` is a dollar sign, not the start of a formula (`_verbatim`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

# Agg is used whatever MPLBACKEND says: a value matplotlib does not know failed its import ("Key backend:
# 'nonsense' is not a valid value"), naming no variable, for figures that never needed that backend
_ = os.environ.pop("MPLBACKEND", None)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .errors import emptiness, not_there, shown_path, special_kind  # noqa: E402


def _verbatim(text: object) -> str:
    """A user's text as matplotlib draws it literally: `$` escaped, so it never opens mathtext (matplotlib's own
    tick labels, e.g. 10^2 on a log axis, still use it)."""
    return str(text).replace("$", r"\$")


def _style(i: int) -> tuple[str, str]:
    """Curve i's color and line style: past the color cycle (10 colors) the colors come round again with another
    dash, so run 11 is not drawn exactly as run 1."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return colors[i % len(colors)], ("-", "--", ":", "-.")[(i // len(colors)) % 4]


def _legend(text: object) -> str:
    """A user's text as a legend entry: verbatim, and never hidden (matplotlib leaves out of the legend every
    label that starts with `_`, e.g. a run folder named `_baseline`; a zero-width space before it keeps it)."""
    t = _verbatim(text)
    return "\u200b" + t if t.startswith("_") else t


def _save(fig: plt.Figure, out: str | Path, replace: bool = True, tight: bool = True) -> Path:
    """Write the figure whole or not at all; without `replace`, never over a file that exists
    (looplm.checkpoint.write_result)."""
    from .checkpoint import write_result

    # A label in a script the font lacks (a CJK run name) is drawn as boxes, and a very long one leaves no room for
    # the tight layout: matplotlib's warnings about either, with its source lines, are not the user's to act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(Glyph \d+ .*missing from font|Tight layout not applied)")
        if tight:
            fig.tight_layout()
        try:
            return write_result(out, fig.savefig, replace)
        finally:
            plt.close(fig)


def read_json(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "sweep.json"
    odd = special_kind(p)  # a FIFO, `plot <(...)`, is read: it ends
    if odd is not None and "FIFO" not in odd:  # /dev/zero was read until memory ran out; a socket was "[Errno 6]"
        raise ValueError(f"{p} is {odd}, not a result file (sweep.json or dynamics.json)")
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} {not_there(p)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({getattr(e, 'msg', type(e).__name__)})") from None
    _check_doc(doc, p)
    return doc


def _numbers(x: object, n: int | None = None) -> bool:
    return (isinstance(x, list) and (n is None or len(x) == n)
            and all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in x))


def _check_doc(doc: object, p: Path) -> None:
    """What the figures read: depths (increasing integers >= 1) and a number per depth for each series."""
    if isinstance(doc, dict) and "accuracy" not in doc and {"depths", "rows", "table"} <= set(doc):
        # (it has depths, and was "neither a sweep.json nor a dynamics.json": the user had the right file kind)
        raise ValueError(f"{p} is eval-lm's result (eval_lm.json), not a sweep.json or dynamics.json: its figure is "
                         f"{p.with_name('eval_lm.png')}, which eval-lm writes beside it (its table is eval_lm.md)")
    if not isinstance(doc, dict) or "depths" not in doc or "accuracy" not in doc:
        raise ValueError(f"{p}: neither a sweep.json nor a dynamics.json (no depths/accuracy)")
    d = doc["depths"]
    if not (_numbers(d) and d and all(isinstance(x, int) and x >= 1 for x in d) and d == sorted(set(d))):
        raise ValueError(f"{p}: `depths` must be increasing integers >= 1")
    if not _numbers(doc["accuracy"], len(d)):
        raise ValueError(f"{p}: `accuracy` must hold one number per depth ({len(d)})")
    # A plot of an impossible score would look like a result: exact match is a finite fraction, and perplexity
    # a finite number >= 1 (on a log axis, a value below it would silently fall off the figure).
    if doc.get("scored_by") == "perplexity":
        ppl = doc.get("ppl")
        if not _numbers(ppl, len(d)) or any(v is not None and not (1 <= v < math.inf) for v in ppl):
            raise ValueError(f"{p}: `ppl` must hold one finite perplexity >= 1 per depth ({len(d)})")
    else:
        series = [doc["accuracy"]]
        if "accuracy_by_size" in doc:
            by, sizes = doc["accuracy_by_size"], doc.get("sizes")
            if not (isinstance(by, list) and isinstance(sizes, list) and len(by) == len(sizes)
                    and all(_numbers(r, len(d)) for r in by)):
                raise ValueError(f"{p}: `accuracy_by_size` must hold one list per size, each one number per depth")
            series += by
        if any(v is not None and not (0 <= v <= 1) for r in series for v in r):  # NaN fails both tests
            raise ValueError(f"{p}: an accuracy outside [0, 1] (or NaN); exact match is a fraction")
    for key in ("train_loops", "train_sizes"):  # shaded ranges: a wrong one would shade the wrong depths or sizes
        r = doc.get(key)  # None or []: no range (an HF model's analysis)
        if r not in (None, []) and not (_numbers(r, 2) and all(isinstance(x, int) and x >= 1 for x in r)
                                        and r[0] <= r[1]):
            raise ValueError(f"{p}: `{key}` must be two integers 1 <= lo <= hi")
    if is_dynamics(doc):
        ok = isinstance(doc.get("metrics"), dict) and all(
            isinstance(s, dict) and all(_numbers(s.get(k), len(d)) for k in ("mean", "q10", "q50", "q90"))
            for s in doc["metrics"].values()) and isinstance(doc.get("spectral"), dict) \
            and isinstance(doc.get("pca"), dict) and isinstance(doc["pca"].get("samples"), list)
        if not ok:
            raise ValueError(f"{p}: a dynamics.json whose metrics, spectral or pca entries are not what "
                             "`looplm analyze` writes")


def plot_accuracy(sweeps: list[dict], out: str | Path, title: str = "Exact match vs loop count",
                  ylabel: str = "exact match (%)", replace: bool = True, shading_note: bool = True) -> Path:
    """Overlay accuracy-vs-depth curves; each sweep dict may carry `label` and `train_loops` [lo, hi],
    which is shaded so extrapolation beyond the training range is visible at a glance. Sweeps of a language
    model (`scored_by: perplexity`) are drawn as perplexity on a log axis instead; the two are not mixed."""
    check_overlay(sweeps)
    ppl = bool(sweeps) and all(s.get("scored_by") == "perplexity" for s in sweeps)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=130)
    for i, s in enumerate(sweeps):
        c, ls = _style(i)
        label = _legend(s.get("label", f"run {i + 1}"))
        ys = s["ppl"] if ppl else [100 * a for a in s["accuracy"]]
        ax.plot(s["depths"], ys, marker="." if len(s["depths"]) < 40 else None,
                color=c, ls=ls, lw=1.8, label=f"{label} (n={s['n']})" if "n" in s else label)
        if s.get("train_loops"):
            lo, hi = s["train_loops"]
            ax.axvspan(lo - 0.5 if lo == hi else lo, hi + 0.5 if lo == hi else hi, color=c, alpha=0.08, lw=0)
    depths = [d for s in sweeps for d in s["depths"]]
    if depths and max(depths) / max(1, min(depths)) >= 30:
        ax.set_xscale("log")
    ax.set_xlabel("loops at test time (t)")
    if ppl:  # perplexity spans orders of magnitude where a model diverges with depth
        ax.set_yscale("log")
        ax.set_ylabel("held-out perplexity per token")
        title = "Perplexity vs loop count" if title == "Exact match vs loop count" else title
    else:
        ax.set_ylabel(ylabel)
        ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3, which="both")
    shaded = shading_note and any(s.get("train_loops") for s in sweeps)  # (JSON from the API has no training range)
    ax.set_title(_verbatim(title) + ("  (shaded: loop counts seen in training)" if shaded else ""), fontsize=10)
    if sweeps:  # an empty figure (eval-lm with no metric that is a fraction) has no legend to draw
        ax.legend(fontsize=8, loc="upper right" if ppl else "lower left")
    return _save(fig, out, replace)


def check_overlay(curves: list[dict]) -> None:
    """Curves drawn on one axis must share a unit: exact match or perplexity, and perplexity per the same token
    (a character, a byte, one BPE vocabulary's piece; `token` in sweep.json): a per-byte perplexity beside a
    per-BPE-piece one looks like a better model. Results written before `token` was recorded pass unchecked."""
    if len({c.get("scored_by") == "perplexity" for c in curves}) > 1:
        def kind(ppl: bool) -> str:  # what the files are: two dynamics.json files were called "sweeps"
            found = {is_dynamics(c) for c in curves if (c.get("scored_by") == "perplexity") == ppl}
            return "results" if len(found) > 1 else "analyses" if found == {True} else "sweeps"
        raise ValueError(f"cannot overlay perplexity {kind(True)} (text) with exact-match {kind(False)} in one figure")
    units = {c["token"]: c.get("label", "?") for c in curves if c.get("scored_by") == "perplexity" and c.get("token")}
    if len(units) > 1:
        raise ValueError("cannot overlay perplexities per token of different tokenizers ("
                         f"{'; '.join(f'{lb}: {u}' for u, lb in units.items())}): a token is not the "
                         "same unit in each; plot them apart")


def plot_size_depth(res: dict, out: str | Path, replace: bool = True) -> Path:
    """Exact match by (instance size, loops) for a size-graded task: a heatmap, one labelled row per size swept
    (sizes need not be contiguous), training sizes marked, so a reader sees at once whether more loops solve
    larger instances."""
    acc = [[100 * a for a in row] for row in res["accuracy_by_size"]]
    sizes, depths = res["sizes"], res["depths"]
    fig, ax = plt.subplots(figsize=(8.0, 0.5 + 0.35 * len(sizes) + 1.5), dpi=130)
    im = ax.imshow(acc, aspect="auto", origin="lower", vmin=0, vmax=100, cmap="viridis",
                   extent=(0.5, len(depths) + 0.5, 0.5, len(sizes) + 0.5))
    step = max(1, len(depths) // 12)
    ax.set_xticks(range(1, len(depths) + 1, step), [str(d) for d in depths[::step]])
    ystep = max(1, len(sizes) // 16)
    ax.set_yticks(range(1, len(sizes) + 1, ystep), [str(s) for s in sizes[::ystep]])
    ax.set_xlabel("loops at test time")
    ax.set_ylabel("instance size")
    lo, hi = res.get("train_sizes", [None, None])
    rows = [i + 1 for i, s in enumerate(sizes) if lo is not None and lo <= s <= hi]  # sizes are increasing
    if rows:
        ax.axhspan(rows[0] - 0.5, rows[-1] + 0.5, fill=False, edgecolor="white", lw=1.2, ls="--")
    fig.colorbar(im, ax=ax, label="exact match (%)")
    ax.set_title(f"{_verbatim(res.get('label', ''))}: exact match by size and depth (dashed: sizes seen in training)",
                 fontsize=9)
    return _save(fig, out, replace)


# --- inputs ----------------------------------------------------------------------------------------------
def is_dynamics(doc: dict) -> bool:
    return doc.get("kind") == "looplm.dynamics"


def read_inputs(path: str | Path) -> list[dict]:
    """The JSON documents one `looplm plot` input names: a sweep.json or dynamics.json file, or a directory
    holding either or both."""
    p = Path(path)
    if p.is_dir():
        found = [p / f for f in ("sweep.json", "dynamics.json") if (p / f).is_file()]
        if not found:
            raise FileNotFoundError(f"{p} holds neither sweep.json nor dynamics.json")
        return [read_json(f) for f in found]
    return [read_json(p)]


def _input_name(p: str | Path) -> str:
    """A curve's name from its input: the folder given, or the file's name (its folder's for a sweep.json or
    dynamics.json, which name no run)."""
    p = Path(p).resolve()
    if p.is_dir():
        return p.name
    return p.parent.name if p.stem in ("sweep", "dynamics") else p.stem


def plot_inputs(inputs: list[str], out: str | Path, labels: list[str] | None = None,
                before: Callable[[list[Path]], None] | None = None, replace: bool = True) -> list[Path]:
    """Draw everything the inputs hold: the accuracy overlay at `out` (one curve per input: its sweep, or
    its dynamics' accuracy when it has no sweep), and per dynamics.json the diagnostics panel and the PCA
    trajectories next to it (`<out stem>-dynamics.png`, `<out stem>-trajectories.png`). `before(paths)` sees
    every figure to be written, and the files read, once the inputs are read, before any is drawn."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png path, got {out}")
    if labels and len(labels) != len(inputs):
        raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")
    blank = next((p for p in inputs if not str(p).strip()), None)
    if blank is not None:  # pathlib reads "" as the working folder: its sweep.json was plotted, exit 0
        raise ValueError(f"an input is {emptiness(str(blank))}; give a sweep.json or dynamics.json, or their folder")
    if labels and not all(lb.strip() for lb in labels):
        raise ValueError("an empty --labels entry; give each input a name")
    twice = sorted({lb for lb in labels or [] if labels.count(lb) > 1})
    if twice:  # the legend could not tell those curves apart
        raise ValueError(f"--labels {twice[0]!r} is given {labels.count(twice[0])} times; give each input its own name")
    files = {p: [Path(p) / n for n in ("sweep.json", "dynamics.json")] if Path(p).is_dir() else [Path(p)]
             for p in inputs}
    seen: dict[tuple[int, int], str] = {}
    for p in inputs:  # a run and its own sweep.json, or one file twice: the same curve drawn twice, one hidden
        for f in (f for f in files[p] if f.exists()):
            st = f.stat()
            key = (st.st_dev, st.st_ino)  # the file itself: by any path, symbolic link or hard link
            if key in seen:
                raise ValueError(f"{f} is given twice (as {seen[key]} and as {p}); give each result once")
            seen[key] = p
    curves, dyns = [], []
    for i, p in enumerate(inputs):
        docs = read_inputs(p)
        for d in docs:
            if labels:
                d["label"] = labels[i]
            elif "label" not in d:  # JSON written by the API (SweepResult.to_json(), diagnose) was "run 1", "run 2"
                d["label"] = _input_name(p)
        sweeps = [d for d in docs if not is_dynamics(d)]
        dyn = [d for d in docs if is_dynamics(d)]
        curves.append(sweeps[0] if sweeps else dyn[0])
        dyns.extend(dyn)
        c = curves[-1]
        if c.get("scored_by") == "perplexity" and not any(x is not None for x in c.get("ppl", [0])):
            # (its axes were drawn empty, with no word): the states or the perplexity overflowed at every depth
            raise ValueError(f"{shown_path(p)}: its perplexity is null (overflow: too large to measure) at every "
                             "depth, so there is no curve to draw; leave it out")
    check_overlay(curves)  # checked here, so that it is not reported as a malformed file
    # default labels (each run's name, and n) of two curves can be the same (two sweeps of one run): the input,
    # as given, tells them apart in the legend (`--labels` given twice is refused above)
    shown = [(c.get("label"), c.get("n")) for c in curves]
    for c, p, key in zip(curves, inputs, shown, strict=True):
        if not labels and key[0] is not None and shown.count(key) > 1:
            c["label"] = f"{c['label']}, {p}"
    jobs = [(plot_accuracy, curves, out)]
    for k, d in enumerate(dyns):
        suffix = "" if len(dyns) == 1 else f"-{k + 1}"
        jobs.append((plot_dynamics, d, out.with_name(f"{out.stem}-dynamics{suffix}.png")))
        if d["pca"]["samples"]:  # analyze --pca-n 0 keeps no trajectories
            jobs.append((plot_trajectories, d, out.with_name(f"{out.stem}-trajectories{suffix}.png")))
    from .outputs import all_or_nothing, drop_stale, with_stale

    written = [path for _, _, path in jobs]
    # an earlier plot's dynamics and trajectories figures under this --out, which this one does not draw
    mine = re.compile(rf"{re.escape(out.stem)}-(?:dynamics|trajectories)(?:-[0-9]+)?\.png")  # the names drawn above
    outs = with_stale(written, sorted(p for p in out.parent.glob(f"{glob.escape(out.stem)}-*.png")
                                      if mine.fullmatch(p.name)))
    if before is not None:
        before(outs, [f for p in inputs for f in files[p]])

    try:  # the documents are the user's files: a field of the wrong shape is their error, not a crash
        with all_or_nothing(outs):  # every figure, or none (earlier ones kept)
            drawn = [draw(doc, path, replace=replace) for draw, doc, path in jobs]
            drop_stale(outs, written)
            return drawn
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{', '.join(inputs)}: a field is missing or has the wrong shape for plotting "
                         f"({type(e).__name__}: {e})") from None


# --- dynamics ------------------------------------------------------------------------------------------------
def _nan(xs: list) -> list[float]:
    return [float("nan") if x is None else float(x) for x in xs]


def _shade_training(ax, dyn: dict) -> None:
    if dyn.get("train_loops"):
        lo, hi = dyn["train_loops"]
        ax.axvspan(lo - 0.5 if lo == hi else lo, hi + 0.5 if lo == hi else hi, color="0.5", alpha=0.12, lw=0)


def _band(ax, depths: list[int], series: dict, color: str, label: str | None = None, marker: str | None = None,
          positive: bool = False) -> None:
    """The median as a line and the 10-90% quantile band over samples (`positive`: drop values <= 0, for
    log axes)."""
    def clean(xs: list) -> list[float]:
        v = _nan(xs)
        return [x if (x > 0 or not positive) else float("nan") for x in v]

    ax.fill_between(depths, clean(series["q10"]), clean(series["q90"]), color=color, alpha=0.2, lw=0)
    ax.plot(depths, clean(series["q50"]), color=color, lw=1.6, marker=marker, ms=4, label=label)


def plot_dynamics(dyn: dict, out: str | Path, replace: bool = True) -> Path:
    """Eight panels against the loop count t: exact match, state norm, step residual, distance to the final
    state, predictive entropy, ρ(∂Φ/∂h), σ_max and the RMS singular value, and the fraction of spectral
    estimates that converged. Lines are medians over samples, bands the 10-90% quantiles; the grey span is
    the loop range seen in training."""
    depths = dyn["depths"]
    m, sp = dyn["metrics"], dyn.get("spectral", {})
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.4), dpi=110, sharex=True)
    (a_acc, a_norm, a_res, a_dist), (a_ent, a_rho, a_sig, a_conv) = axes
    log_x = max(depths) / max(1, min(depths)) >= 30
    last = depths[-1]

    if dyn.get("scored_by") == "perplexity" and "ce" in m:  # a text window is never exactly right: its score is ppl
        a_acc.plot(depths, [math.exp(min(c, 700.0)) if c is not None else float("nan") for c in m["ce"]["mean"]],
                   color="C0", lw=1.8)
        a_acc.set_yscale("log")
        a_acc.set_ylabel("perplexity per token")
        a_acc.set_title(f"Held-out perplexity (n={dyn['n']} windows)", fontsize=10)
    else:
        a_acc.plot(depths, [100 * a for a in dyn["accuracy"]], color="C0", lw=1.8)
        a_acc.set_ylim(-2, 102)
        a_acc.set_ylabel("exact match (%)")
        a_acc.set_title(f"Exact match, greedy (n={dyn['n']})", fontsize=10)

    _band(a_norm, depths, m["state_norm"], "C1")
    med = [x for x in _nan(m["state_norm"]["q50"]) if x == x and x > 0]
    if med and max(med) / min(med) > 10:  # drift: on log-log axes ||h|| ∝ t is a straight line of slope 1
        a_norm.set_yscale("log")
    a_norm.set_ylabel("||h|| per token (L2 norm)")
    a_norm.set_title("State norm", fontsize=10)

    _band(a_res, depths, m["step_residual"], "C2", positive=True)
    a_res.set_yscale("log")
    a_res.set_ylabel("||h(t) − h(t−1)|| / ||h(t)||")
    a_res.set_title("Relative step residual", fontsize=10)

    _band(a_dist, depths, m["dist_to_final"], "C3", positive=True)
    a_dist.set_yscale("log")
    a_dist.set_ylabel(f"||h(t) − h({last})|| / ||h({last})||")
    a_dist.set_title(f"Distance to the state at t={last}", fontsize=10)

    _band(a_ent, depths, m["entropy"], "C4", "entropy (median, 10–90%)")
    if "ce" in m:
        a_ent.plot(depths, _nan(m["ce"]["mean"]), color="k", ls="--", lw=1.1, label="cross-entropy (mean)")
    text = dyn.get("scored_by") == "perplexity"  # a text window scores every next token; a task, its answer
    a_ent.set_ylim(0, a_ent.get_ylim()[1] * 1.35)  # headroom: the legend above the curves, not over them
    a_ent.set_ylabel("nats per token" if text else "nats per answer token")
    a_ent.set_title("Next-token entropy" + (" (every token)" if text else " on answer positions"), fontsize=10)
    a_ent.legend(fontsize=8, loc="upper right")

    sd = sp.get("depths", [])
    n_spec = sp.get("n")
    if sd and "rho" in sp:
        _band(a_rho, sd, sp["rho"], "C0", "median, 10–90%", marker="o")
        a_rho.axhline(1.0, color="k", lw=0.9, ls=":", label="ρ = 1 (stability edge)")
        a_rho.legend(fontsize=8)
        for key, color, marker, name in (("sigma_max", "C3", "s", "σ_max(J)"),
                                         ("frobenius_rms", "C2", "^", "||J||_F / √n (RMS singular value)")):
            if key in sp:
                _band(a_sig, sd, sp[key], color, name, marker=marker)
        a_sig.axhline(1.0, color="k", lw=0.9, ls=":")
        hi = [x for k in ("sigma_max", "frobenius_rms") if k in sp for x in _nan(sp[k]["q90"]) if x == x]
        if hi and max(hi) / max(1e-12, min(hi)) > 10:
            a_sig.set_yscale("log")
        a_sig.legend(fontsize=8)
        for key, color, marker, name in (("rho", "C0", "o", "ρ"), ("sigma_max", "C3", "s", "σ_max")):
            cf = [100 * c if c is not None else float("nan") for c in sp[key]["converged_frac"]]
            a_conv.plot(sd, cf, color=color, marker=marker, ms=5 if key == "rho" else 3.5, lw=1.4,
                        ls="-" if key == "rho" else "--", label=name)
        a_conv.set_ylim(-3, 103)
        a_conv.legend(fontsize=8)
        a_conv.set_title(f"Estimates converged (tol {sp.get('tol')}, ≤{sp.get('iters')} steps)", fontsize=10)
    else:
        for ax in (a_rho, a_sig, a_conv):
            ax.text(0.5, 0.5, "no spectral estimates\n(analyze --spectral-depths none)", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9)
        a_conv.set_title("Estimates converged", fontsize=10)
    a_rho.set_ylabel("spectral radius ρ(∂Φ/∂h)")
    about = f" (n={n_spec}, {sp.get('method', '')})" if sd else ""
    a_rho.set_title(f"Spectral radius at h(t){about}", fontsize=10)
    a_sig.set_ylabel("gain per loop")
    a_sig.set_title(f"Singular values of ∂Φ/∂h at h(t){about}", fontsize=10)
    a_conv.set_ylabel("% of samples")

    for ax in axes.flat:
        _shade_training(ax, dyn)
        ax.grid(alpha=0.3, which="both")
        if log_x:
            ax.set_xscale("log")
    for ax in axes[1]:
        ax.set_xlabel("loops at test time (t)")
    label = _verbatim(dyn.get("label") or "run")
    fig.suptitle(f"Latent dynamics per loop: {label}.  Lines: median over samples, bands: 10–90% quantiles; "
                 "grey: loop counts seen in training. Jacobians on real (non-pad) tokens only.", fontsize=10.5)
    return _save(fig, out, replace)


def plot_trajectories(dyn: dict, out: str | Path, max_samples: int = 5, replace: bool = True) -> Path:
    """Each sample's trajectory over the loops, projected on that sample's own top-2 principal components
    and colored by the loop count: the states h(t) (top row) and, where stored, their per-token directions
    h/||h|| (bottom row), which an internal norm's drift of ||h|| cannot dominate."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm, Normalize

    pca = dyn.get("pca", {})
    samples = pca.get("samples", [])[:max_samples]
    depths = pca.get("depths", dyn["depths"])
    if not samples:
        raise ValueError("this dynamics.json has no PCA trajectories (analyze --pca-n 0)")
    spaces = [("coords", "explained", "states h(t)")]
    if all("coords_direction" in s for s in samples):
        spaces.append(("coords_direction", "explained_direction", "directions h/||h|| per token"))
    cols, rows = len(samples), len(spaces)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1.2, 3.0 * rows + 0.4), dpi=120, squeeze=False,
                             layout="constrained")
    log_c = max(depths) / max(1, min(depths)) >= 30
    norm = LogNorm(min(depths), max(depths)) if log_c else Normalize(min(depths), max(depths))
    cmap = plt.get_cmap("viridis")
    for r, (key, ev_key, space) in enumerate(spaces):
        for c, s in enumerate(samples):
            ax = axes[r, c]
            xy = s[key]
            xs, ys = [p[0] for p in xy], [p[1] for p in xy]
            segs = [[(xs[i], ys[i]), (xs[i + 1], ys[i + 1])] for i in range(len(xs) - 1)]
            lc = LineCollection(segs, cmap=cmap, norm=norm, lw=1.5)
            lc.set_array(depths[1:])
            ax.add_collection(lc)
            ax.scatter(xs, ys, c=depths, cmap=cmap, norm=norm, s=9, zorder=3)
            ax.plot(xs[0], ys[0], "o", mfc="none", mec="k", ms=8, label=f"t={depths[0]}")
            ax.plot(xs[-1], ys[-1], "*", color="crimson", ms=10, label=f"t={depths[-1]}")
            ax.autoscale()
            ev = s.get(ev_key, [0, 0])
            ax.set_xlabel(f"PC1 ({100 * ev[0]:.1f}% of variance)", fontsize=8)
            ax.set_ylabel(f"PC2 ({100 * ev[1]:.1f}%)", fontsize=8)
            ok = "right" if s.get("correct_final") else "wrong"
            ax.set_title(f"sample {s['index']} ({ok} at t={depths[-1]})" if r == 0 else f"sample {s['index']}",
                         fontsize=9)
            if c == 0:
                ax.annotate(space, (-0.32, 0.5), xycoords="axes fraction", rotation=90, ha="center", va="center",
                            fontsize=10, fontweight="bold")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes, fraction=0.025, pad=0.02).set_label("loop t")
    label = _verbatim(dyn.get("label") or "run")
    fig.suptitle(f"Trajectories over the loops, 2-D PCA per sample (real tokens, T·D dims): {label}", fontsize=10)
    return _save(fig, out, replace, tight=False)  # the layout is constrained already


def plot_dynamics_overlay(dyns: list[dict], out: str | Path, title: str = "Latent dynamics") -> Path:
    """Several runs on shared axes: exact match, state norm (drift), step residual (convergence to a fixed
    point) and ρ(∂Φ/∂h) against the loop count. Medians over samples; one color per run."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.3), dpi=110)
    a_acc, a_norm, a_res, a_rho = axes
    for i, d in enumerate(dyns):
        (c, ls), label = _style(i), _legend(d.get("label") or f"run {i + 1}")
        ds, m, sp = d["depths"], d["metrics"], d.get("spectral", {})
        a_acc.plot(ds, [100 * a for a in d["accuracy"]], color=c, ls=ls, lw=1.6, label=label)
        a_norm.plot(ds, _nan(m["state_norm"]["q50"]), color=c, ls=ls, lw=1.6)
        a_res.plot(ds, [x if x > 0 else float("nan") for x in _nan(m["step_residual"]["q50"])], color=c, ls=ls,
                   lw=1.6)
        if sp.get("depths") and "rho" in sp:
            a_rho.plot(sp["depths"], _nan(sp["rho"]["q50"]), color=c, ls=ls, lw=1.6, marker="o", ms=4)
    a_rho.axhline(1.0, color="k", lw=0.9, ls=":")
    for ax, ylabel, ttl in ((a_acc, "exact match (%)", "Exact match"), (a_norm, "||h|| per token", "State norm"),
                            (a_res, "||h(t) − h(t−1)|| / ||h(t)||", "Relative step residual"),
                            (a_rho, "ρ(∂Φ/∂h) (median)", "Spectral radius (dotted: 1)")):
        ax.set_xscale("log")
        ax.set_xlabel("loops at test time (t)")
        ax.set_ylabel(ylabel)
        ax.set_title(ttl, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in (a_norm, a_res):
        ax.set_yscale("log")
    a_acc.set_ylim(-2, 102)
    a_acc.legend(fontsize=7.5, loc="lower left")
    fig.suptitle(title, fontsize=11)
    return _save(fig, out)
