"""The `looplm` command line: one thin subcommand per library entry point.

Errors a user can cause (bad config, bad file, bad checkpoint path) print one `error:` line and exit 2,
without a traceback and before any work starts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import checkpoint as ckpt
from .config import ConfigError, load_config
from .evaluate import generate, parse_depths, sweep
from .loops import training_range
from .train import TrainingDiverged, make_task, resolve_device, train

DEMO_DEPTHS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 80, 100]


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


# --- subcommands: plain typed functions ------------------------------------------------------------------
def cmd_train(config: str, out: str, overrides: list[str], resume: bool = False, progress: bool = True) -> Path:
    cfg = load_config(config, overrides)
    return train(cfg, out, resume=resume, progress=progress)


def run_sweep(checkpoint: str, depths: str, data: str | None = None, n: int | None = None,
              batch_size: int = 500, device: str = "auto", progress: bool = True) -> dict:
    ds = parse_depths(depths)
    model, cfg = ckpt.load_model(checkpoint, resolve_device(device))
    task = make_task(cfg)
    if data is not None:
        from .tasks.addition import read_addition_jsonl

        a, b = read_addition_jsonl(data)
        if n is not None:
            a, b = a[:n], b[:n]
        batch = task.encode_problems(a, b, cfg.model.max_seq_len)
        source = str(data)
    else:
        size = n if n is not None else cfg.data.test_size
        batch = task.test_batch(size, cfg.data.test_seed, cfg.model.max_seq_len)
        source = f"held-out split (seed {cfg.data.test_seed})"
    t0 = time.perf_counter()
    res = sweep(model, batch, ds, batch_size=batch_size, progress=progress)
    out = res.to_json()
    out.update({"checkpoint": str(checkpoint), "data": source, "seconds": round(time.perf_counter() - t0, 2),
                "train_loops": list(training_range(cfg.loops)), "label": Path(checkpoint).resolve().name})
    return out


def cmd_generate(checkpoint: str, prompts: list[str], loops: int | None = None, device: str = "auto"
                 ) -> list[tuple[str, str]]:
    model, cfg = ckpt.load_model(checkpoint, resolve_device(device))
    task = make_task(cfg)
    n_loops = loops if loops is not None else cfg.loops.num_loops
    if n_loops < 1:
        raise ValueError(f"--loops must be >= 1, got {n_loops}")
    ids = [task.tok.encode(p) for p in prompts]
    for p, i in zip(prompts, ids, strict=True):
        if len(i) >= cfg.model.max_seq_len:
            raise ValueError(f"prompt {p!r} has {len(i)} tokens; the model's position table holds "
                             f"{cfg.model.max_seq_len}")
    outs = generate(model, ids, n_loops, max_new_tokens=cfg.model.max_seq_len)
    # The model writes the sum least-significant digit first; print it in normal order.
    return [(p, task.tok.decode(o)[::-1]) for p, o in zip(prompts, outs, strict=True)]


def depth_table(sw: dict, depths: list[int]) -> str:
    acc = dict(zip(sw["depths"], sw["accuracy"], strict=True))
    ds = [d for d in depths if d in acc]
    head = "loops    " + " ".join(f"{d:>6d}" for d in ds)
    row = "accuracy " + " ".join(f"{acc[d]:>6.3f}" for d in ds)
    return head + "\n" + row


def cmd_demo(out: str = "runs/demo", overrides: list[str] | None = None, progress: bool = True) -> dict:
    """Train the STARS preset (resuming if `out` has a checkpoint), sweep 1..100, print a table, draw a PNG."""
    from .plots import plot_accuracy

    cfg = load_config("addition-stars", overrides or [])
    t0 = time.perf_counter()
    run = train(cfg, out, resume=True, progress=progress)
    train_s = time.perf_counter() - t0
    sw = run_sweep(str(run), "1:100", progress=progress)
    sw["label"] = "STARS (demo)"
    _write_json(run / "sweep.json", sw)
    png = plot_accuracy([sw], run / "accuracy.png", title="looplm demo: STARS on 4-digit addition")
    print(f"\ntrained in {train_s / 60:.1f} min; exact match on {sw['n']} held-out problems:")
    print(depth_table(sw, DEMO_DEPTHS))
    lo = min(a for d, a in zip(sw["depths"], sw["accuracy"], strict=True) if d >= 4)
    print(f"minimum over depths 4..100: {lo:.3f}")
    print(f"wrote {run / 'sweep.json'} and {png}")
    return sw


def cmd_plot(inputs: list[str], out: str, labels: list[str] | None = None) -> Path:
    from .plots import plot_accuracy, read_json

    sweeps = [read_json(p) for p in inputs]
    if labels:
        if len(labels) != len(sweeps):
            raise ValueError(f"{len(labels)} labels for {len(sweeps)} inputs")
        for s, lab in zip(sweeps, labels, strict=True):
            s["label"] = lab
    return plot_accuracy(sweeps, out)


# --- argument parsing -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="looplm", description="Looped language models and STARS.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model from a preset or YAML config")
    t.add_argument("--config", required=True, help="YAML file or preset name (addition-stars, ...)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sweep", help="exact match at every depth in one forward pass")
    s.add_argument("checkpoint", help="run directory or its checkpoint/ folder")
    s.add_argument("--depths", default="1:100", help="e.g. 1:100, 1:1000:10, 1,2,4,8")
    s.add_argument("--data", help="JSONL with num1/num2/answer rows (default: the held-out split)")
    s.add_argument("--n", type=int, help="number of problems (default: data.test_size, or the whole file)")
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--out", help="output JSON (default: <run>/sweep.json)")
    s.add_argument("--device", default="auto")
    s.add_argument("--no-progress", action="store_true")

    g = sub.add_parser("generate", help="greedy decoding, batched")
    g.add_argument("checkpoint")
    g.add_argument("prompts", nargs="+", help='e.g. "1234+5678="')
    g.add_argument("--loops", type=int, help="loop count (default: loops.num_loops of the checkpoint)")
    g.add_argument("--device", default="auto")

    d = sub.add_parser("demo", help="train the STARS preset, sweep 1..100, plot (about 15 min on 2 CPU cores)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    d.add_argument("--no-progress", action="store_true")

    pl = sub.add_parser("plot", help="draw figures from saved sweep JSON files")
    pl.add_argument("inputs", nargs="+", help="sweep.json files or run directories")
    pl.add_argument("--labels", nargs="+")
    pl.add_argument("--out", required=True, help="PNG path")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "train":
            run = cmd_train(args.config, args.out, args.overrides, args.resume, not args.no_progress)
            print(f"run written to {run}")
        elif args.cmd == "sweep":
            if args.n is not None and args.n < 1:
                raise ValueError(f"--n must be >= 1, got {args.n}")
            res = run_sweep(args.checkpoint, args.depths, args.data, args.n, args.batch_size, args.device,
                            not args.no_progress)
            out = Path(args.out) if args.out else ckpt.resolve(args.checkpoint).parent / "sweep.json"
            _write_json(out, res)
            print(depth_table(res, res["depths"] if len(res["depths"]) <= 16 else
                              [d for d in res["depths"] if d in set(DEMO_DEPTHS) | {res["depths"][-1]}]))
            print(f"wrote {out}")
        elif args.cmd == "generate":
            for prompt, ans in cmd_generate(args.checkpoint, args.prompts, args.loops, args.device):
                print(f"{prompt} {ans}")
        elif args.cmd == "demo":
            cmd_demo(args.out, args.overrides, not args.no_progress)
        elif args.cmd == "plot":
            print(f"wrote {cmd_plot(args.inputs, args.out, args.labels)}")
    except (ConfigError, ckpt.CheckpointError, ValueError, FileNotFoundError, FileExistsError,
            TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
