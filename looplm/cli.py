"""The `looplm` command line: one thin subcommand per library entry point.

Errors a user can cause (a bad argument, config, file, checkpoint or device, a disk that is full or read-only,
memory that cannot hold the job) print one `error:` line and exit 2, without a traceback; Ctrl-C exits 130.
Checks run before anything on disk changes, and no command replaces an earlier result without `--force`
(docs/bad-inputs.md).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from pathlib import Path

from . import checkpoint as ckpt
from . import rundir
from .arguments import MAX_DEPTH
from .config import REAL_NUMBER, Config, load_config
from .datanotes import print_data_notes
from .demo import DEMO_FILES, DEMO_N, cmd_demo, exit_summary, table_depths
from .errors import DISTRIBUTED_COMMANDS, UserError, command, emptiness, guarded, rank_zero, run_command, say
from .evaluate import overflow_of, parse_depths, perplexity, sweep
from .generate import check_prompts, exit_cap_note, generate, generate_cached, pads_said
from .loops import trained_loops
from .outputs import (
    all_or_nothing,
    data_flag_input,
    default_out_dir,
    drop_stale,
    dynamics_figures,
    fresh_outputs,
    run_data,
    sizes_figure,
    unexpanded_home,
    with_stale,
    write_json,
)
from .tasks import eval_file, task_of_checkpoint
from .tasks.tokenizers import token_unit
from .train import fit, resolve_device, set_threads

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
ANALYZE_N = 256  # analyze's problems without --n (fewer if the split or file holds fewer)
# What each study writes in its --out (looplm/experiments): a folder holding anything else is refused.
STUDY_FILES = {"addition": ("runs", "figures", "report.md"),
               "ouro-mini": ("settings.json", "data", "tasks", "init", "init.tmp", "runs", "figures", "report.md")}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        message = "give a command: " + ", ".join(self._actions[-1].choices) if message.endswith(": cmd") else message
        if self.prog.endswith(" generate") and "prompts" in message:
            message += "; " + PROMPT_HINT
        # under torchrun every rank parses the same command line (a command that torchrun does not run speaks)
        cmd = self.prog.split()[1] if " " in self.prog else None  # None: the top-level parser
        if rank_zero() or (cmd is not None and cmd not in DISTRIBUTED_COMMANDS):
            say(f"error: {message}")
        raise SystemExit(2)


PROMPT_HINT = "a value that starts with '-' but is no option (a generate prompt) goes after `--`"


_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only (re's [0-9] is ASCII)


def count_arg(lo: int, hi: int | None = None) -> object:
    """An argparse type: an integer >= lo (and <= hi)."""
    def parse(s: str) -> int:
        # int() also takes `1_0` and non-ASCII digits (Arabic-Indic, full-width): a typo read as a number.
        if not _INT.fullmatch(s.strip()):
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}")
        v = int(s)
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi:,}, got {v:,}")
        return v
    return parse


class SetAction(argparse.Action):
    """`--set SECTION.KEY=VALUE`, repeatable. A key given twice is refused, as a duplicate YAML key is: which of
    the two values was meant would be a guess."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: str,
                 option_string: str | None = None) -> None:
        given = list(getattr(namespace, self.dest) or [])  # a copy: the default list is shared between parses
        key = value.split("=", 1)[0].strip()
        first = next((g for g in given if "=" in value and g.split("=", 1)[0].strip() == key), None)
        if first is not None:
            parser.error(f"argument --set: {key} given twice ({first}, then {value}); give each key once")
        setattr(namespace, self.dest, [*given, value])


def real_arg(positive: bool, below: float = math.inf) -> object:
    """An argparse type: a finite float, > 0 (positive) or >= 0, and < `below` (--tol: the API's range, said once)."""
    def parse(s: str) -> float:
        if not REAL_NUMBER.fullmatch(s.strip()):  # float() would also take `1_0` and non-ASCII digits
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}")
        if not math.isfinite(v := float(s)) or v < 0 or (positive and v == 0) or v >= below:
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if positive else '>='} 0"
                                             f"{f' and < {below:g}' if below < math.inf else ''}, got {s}")
        return v
    return parse


# --- subcommands: plain typed functions ------------------------------------------------------------------
def cmd_train(config: str, out: str, overrides: list[str], resume: bool = False, progress: bool = True) -> Path:
    cfg = load_config(rundir.noted_config(config), overrides)
    return fit(cfg, out, resume=resume, progress=progress)


def eval_problems(task, cfg, data: str | None, n: int | None, default: int | None = None, folder=None):
    """(batch, source): the first n problems of a file of the user's (the task's format), or n of the held-out
    split. Without n: `default` problems, or fewer if there are fewer (default: all, the split's data.test_size).
    An n larger than what exists is refused: a result on fewer problems than asked for would pass for n."""
    want = n if n is not None else default
    if data is not None:
        if not hasattr(task, "load_eval") or not data.strip():  # ("" was the working folder: "data file . is a ...")
            raise ValueError(f"--data is {emptiness(data)}; give a data file" if hasattr(task, "load_eval") else
                             f"the {cfg.data.task} task reads no --data file")
        batch, source = task.load_eval(data, want), eval_file(cfg, data, folder)  # (a note: training data)
        print_data_notes(task, data, want)  # (rows of another shape, a prompt with two answers: as generate, train)
    else:
        batch = task.held_out(want if want is not None else cfg.data.test_size)
        source = held_out_source(cfg)
    if n is not None and len(batch) < n:
        are, s = ("is", "") if len(batch) == 1 else ("are", "s")  # (was "there are only 1 window")
        what = ("window" if task.scored_by == "perplexity" else "problem") + s
        where = data if data is not None else "the " + source
        raise ValueError(f"--n {n}: there {are} only {len(batch)} {what} in {where}; ask for at most {len(batch)}")
    # a sweep without --n scores data.test_size of the held-out rows (or windows): where there are more (a
    # data.test_path file of 50 rows, test_size 16), its result was taken for the whole file's
    if data is None and n is None and default is None and len(task.held_out(len(batch) + 1)) > len(batch):
        of = f" of the {len(task.test[0])} problems" if cfg.data.task == "jsonl" else " windows"
        print(f"note: the sweep scores the first {len(batch)}{of} of the {source}, as data.test_size="
              f"{cfg.data.test_size} sets; --n N scores up to N of them")
    return batch, source


def held_out_source(cfg: Config) -> str:
    """Where a run's held-out problems come from, said as what decides them (recorded in results as `data`)."""
    d = cfg.data
    if d.task == "jsonl" and d.test_path:
        return f"held-out file {d.test_path} (data.test_path)"
    if d.task == "jsonl":
        return f"held-out rows of {d.path} (a hash split, data.test_fraction={d.test_fraction}, seed {d.test_seed})"
    if d.task == "text":
        return f"held-out tail of {d.path} (its last data.test_fraction={d.test_fraction})"
    return f"held-out split (data.test_size={d.test_size}, seed {d.test_seed})"


def data_inputs(cfg: Config, data: str | None) -> dict[Path, str]:
    """The data files (or folders) a command on a run reads: no output may be written over or into them."""
    # (a fine-tune's: its train.init_from run's data too); the --data label wins where both name one path
    return {**run_data(cfg), **({Path(data): data_flag_input(data)} if data else {})}


def run_sweep(checkpoint: str, depths: str, data: str | None = None, n: int | None = None,
              batch_size: int = 500, device: str = "auto", progress: bool = True, exit_tol: float | None = None,
              exit_stable: int | None = None, before: object = None, sizes: str | None = None) -> dict:
    """One pass of the largest depth scores every depth: exact match (answer tasks) and CE per scored token
    (every task). `sizes` (size-graded tasks): one sweep per instance size. `before()` runs once the inputs are
    read, before the work."""
    ds = parse_depths(depths)
    (model, cfg), step = ckpt.loaded_at_step(ckpt.resolve(checkpoint),
                                             lambda: ckpt.load_model(checkpoint, resolve_device(device)))
    task = task_of_checkpoint(cfg, checkpoint, held_out=data is None)
    if (exit_tol is not None or exit_stable is not None) and task.scored_by == "perplexity":
        raise ValueError("an exit rule is scored by exact match of an answer; a text run is scored by perplexity "
                         "(a whole window is never exactly right): drop --exit-tol / --exit-stable")
    if sizes is not None:
        if not hasattr(task, "sized_batch"):
            raise ValueError(f"--sizes needs a size-graded task (parity, chain); this run's is {cfg.data.task}")
        if data is not None:
            raise ValueError("--sizes draws each size's held-out problems; drop --data")
        if exit_tol is not None or exit_stable is not None:
            raise ValueError("--sizes scores every depth of each size; an exit rule (--exit-tol, --exit-stable) is "
                             "scored on one set of problems: drop --sizes or the exit rule")
        size_list = parse_depths(sizes, "size")
        # --n is a promise (refused where a size has fewer distinct problems); the default, up to test_size.
        batches = [task.sized_batch(s, n if n is not None else cfg.data.test_size, strict=n is not None)
                   for s in size_list]
        source = f"held-out problems of sizes {sizes} (seed {cfg.data.test_seed})"
    else:
        batch, source = eval_problems(task, cfg, data, n, folder=checkpoint)
    if before is not None:
        before(data_inputs(cfg, data))
    t0 = time.perf_counter()
    kw = dict(batch_size=batch_size, progress=progress, exit_tol=exit_tol, exit_stable=exit_stable)
    if sizes is not None:
        per = [sweep(model, b, ds, vocab=task.tok.vocab_size, **kw).to_json() for b in batches]
        n_all = sum(r["n"] for r in per)
        # `accuracy` and `n` cover every size swept (a plot of the file draws them as its one curve); the
        # per-size figures are in accuracy_by_size / n_by_size
        out = {"depths": ds, "sizes": size_list, "n": n_all, "n_by_size": [r["n"] for r in per],
               "accuracy_by_size": [r["accuracy"] for r in per],
               "ce_by_size": [r["ce"] for r in per],
               "train_sizes": [cfg.data.min_size, cfg.data.max_size], **overflow_of(per),
               "accuracy": [sum(r["accuracy"][i] * r["n"] for r in per) / n_all for i in range(len(ds))]}
    else:
        out = sweep(model, batch, ds, vocab=task.tok.vocab_size, **kw).to_json()
    out.update({"task": cfg.data.task, "scored_by": task.scored_by, "checkpoint": str(checkpoint), "step": step,
                "data": source, "seconds": round(time.perf_counter() - t0, 2), "train_loops": trained_loops(cfg, step),
                "label": ckpt.run_label(checkpoint), **per_token(task)})
    return out


def per_token(task) -> dict:
    """What a perplexity's token is ({"token": unit}), so that a plot does not overlay two units as one."""
    return {"token": token_unit(task.tok)} if task.scored_by == "perplexity" else {}


def cmd_generate(checkpoint: str, prompts: list[str], loops: int | None = None, device: str = "auto",
                 use_cache: bool = True, exit_tol: float | None = None, exit_stable: int | None = None,
                 show_loops: bool = False) -> list[tuple[str, str]]:
    """Greedy answers. With an exit rule, `loops` is the cap; show_loops appends the loops used per token."""
    model, cfg = ckpt.load_model(checkpoint, resolve_device(device))
    task = task_of_checkpoint(cfg, checkpoint, held_out=False)
    n_loops = loops if loops is not None else cfg.loops.num_loops
    if note := exit_cap_note(exit_tol, exit_stable, n_loops):  # every token runs the cap, as with no rule
        print(note)
    notes = check_prompts(task, prompts)  # (refuses one not UTF-8; notes one that is not a task problem)
    ids = [task.tok.encode(p) for p in prompts]
    for p, i in zip(prompts, ids, strict=True):
        if len(i) >= cfg.model.max_seq_len:
            raise ValueError(f"prompt {p!r} has {len(i)} tokens; the model's position table holds "
                             f"{cfg.model.max_seq_len}: at most {cfg.model.max_seq_len - 1} leave room for an answer")
    for note in notes:  # (after the refusals: a refused prompt gets its one error line only)
        print(note)
    vocab = task.tok.vocab_size  # the model's head may be wider (model.vocab_size): only ids the task can decode
    if use_cache or exit_tol is not None or exit_stable is not None:
        outs, used = generate_cached(model, ids, n_loops, cfg.model.max_seq_len, task.eos_id, exit_tol, exit_stable,
                                     vocab=vocab)
    else:
        outs = generate(model, ids, n_loops, cfg.model.max_seq_len, task.eos_id, task.pad_id, cfg.model.max_seq_len,
                        vocab=vocab)
        # one entry per forward pass, as the cached path reports: each kept token, plus the end token if reached
        used = [[n_loops] * (len(o) + done) for o, done in zip(outs, outs.finished, strict=True)]
    # An answer task's answer ends with the end token; a language model's continuation simply fills the positions.
    cut = "" if task.scored_by == "perplexity" else \
        f"  [cut off: no end token within the model's {cfg.model.max_seq_len} positions]"
    # an answer with no text (the end token first) is said: a bare prompt read as a dropped line or a blank answer
    return [(p, (one_line(task.format_answer(task.tok.decode(o))) or "[empty answer]") + ("" if done else cut)
             + pads_said(o, task.pad_id) + (f"  [loops per token: {' '.join(map(str, u))}]" if show_loops else ""))
            for p, o, u, done in zip(prompts, outs, used, outs.finished, strict=True)]


def one_line(text: object) -> str:
    """`text` (an answer, or a path such as `--out $'ru\\nn'`) on one line of output: a control character (a newline,
    a carriage return) as its escape, `\\n`, and a backslash doubled, so what is printed is one line, read back."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text).replace("\\", "\\\\"))


def depth_table(sw: dict, depths: list[int], label: str = "accuracy", key: str = "accuracy") -> str:
    vals = dict(zip(sw["depths"], sw[key], strict=True))
    ds = [d for d in depths if d in vals]  # whole numbers from 1000 (one significant digit made 1499 "1e+03")
    cells = ["overflow" if v is None else f"{v:.3f}" if v < 1e3 else f"{v:.0f}" if v < 1e6 else f"{v:.3g}"
             for v in map(vals.get, ds)]  # (None: a perplexity beyond a float's range)
    w, c = max(9, len(label) + 1), max([6, *map(len, cells), *(len(str(d)) for d in ds)])  # (1000000 is 7 wide)
    return "loops".ljust(w) + " ".join(f"{d:>{c}d}" for d in ds) + "\n" + label.ljust(w) + " ".join(
        s.rjust(c) for s in cells)


def cmd_plot(inputs: list[str], out: str, labels: list[str] | None = None, force: bool = False) -> list[Path]:
    """Accuracy overlay at `out`; for each dynamics.json also its diagnostics panel and PCA trajectories. An
    existing figure is replaced only with `force`."""
    from .plots import plot_inputs

    def before(paths: list[Path], read: list[Path]) -> None:
        fresh_outputs(paths, force, {p: "a file this plot reads" for p in read})

    return plot_inputs(inputs, out, labels, before=before, replace=force)


def run_analyze(checkpoint: str, depths: str = "1:100", n: int | None = None, data: str | None = None,
                spectral_depths: str = "auto", spectral_n: int | None = None, iters: int | None = None,
                tol: float | None = None, method: str | None = None, hutchinson: int | None = None,
                pca_n: int | None = None, seed: int | None = None,
                batch_size: int = 256, device: str = "auto", progress: bool = True, threads: int = 1,
                before: object = None, max_length: int | None = None) -> dict:
    """Per-loop latent dynamics of a checkpoint on held-out problems (looplm.dynamics.diagnose); `before()` runs
    once the inputs are read, before the work. `iters`, `tol`, `method`, `hutchinson`, `seed`: None is diagnose's
    default."""
    from .dynamics import diagnose, spectral_subset

    ds = parse_depths(depths)
    if spectral_depths == "none" and spectral_n:
        raise ValueError(f"--spectral-n {spectral_n} with --spectral-depths none: no depth is probed; drop one of "
                         "the two")
    if spectral_depths == "auto":
        sdeps = spectral_subset(ds)
    elif spectral_depths == "none":
        sdeps = []
    else:
        sdeps = parse_depths(spectral_depths)
        if not set(sdeps) <= set(ds):
            raise ValueError(f"--spectral-depths {sorted(set(sdeps) - set(ds))} are not among --depths")
        if spectral_n == 0:  # the named depths would get no spectra
            raise ValueError(f"--spectral-depths {spectral_depths} with --spectral-n 0: no sample is probed at them; "
                             "drop one of the two")
    # settings of the Jacobian estimates, when none is taken, would be recorded as if they had been used
    spectral = {k: v for k, v in (("iters", iters), ("tol", tol), ("method", method), ("hutchinson", hutchinson),
                                  ("seed", seed)) if v is not None}  # (the seed draws the estimates' probes only)
    if (not sdeps or spectral_n == 0) and {k for k, v in spectral.items() if v != 0}:
        raise ValueError(f"{' '.join(f'--{k} {v}' for k, v in spectral.items())} with "
                         f"{'--spectral-n 0' if sdeps else '--spectral-depths none'}: no Jacobian estimate is taken; "
                         "drop one of the two")
    set_threads(threads, "--threads")
    kw = {"spectral_depths": sdeps, "spectral_n": spectral_n if sdeps else 0, "pca_n": pca_n,
          "batch_size": batch_size, "progress": progress,
          **{"hutchinson_samples" if k == "hutchinson" else k: v for k, v in spectral.items()}}
    from .hf.analysis import find_model_dir  # standard library only; transformers is imported if it is one

    hf_dir = find_model_dir(checkpoint)
    if hf_dir is not None:  # an HF looped model (Ouro, a looplm export, a finetune run): text data
        from .hf.commands import require_hf

        require_hf("analyze (an HF model directory)")
        from .hf.analysis import analyze_hf

        return analyze_hf(hf_dir, data, ds, n, resolve_device(device), max_length=max_length, default_n=ANALYZE_N,
                          before=before, **kw)
    if max_length is not None:
        raise ValueError("--max-length is for HF models (chat records); a looplm run's problems fit its positions")
    (model, cfg), step = ckpt.loaded_at_step(ckpt.resolve(checkpoint),
                                             lambda: ckpt.load_model(checkpoint, resolve_device(device)))
    task = task_of_checkpoint(cfg, checkpoint, held_out=data is None)
    batch, source = eval_problems(task, cfg, data, n, default=ANALYZE_N, folder=checkpoint)
    if before is not None:
        before(data_inputs(cfg, data))
    res = diagnose(model, batch, ds, vocab=task.tok.vocab_size, **kw)
    if task.scored_by == "perplexity":  # the text's score, per depth, beside the diagnostics (as `sweep` gives it)
        res["ppl"] = [perplexity(c) for c in res["ce_per_token"]]
    res.update({"checkpoint": str(checkpoint), "step": step, "data": source, "scored_by": task.scored_by,
                **per_token(task), "train_loops": trained_loops(cfg, step),
                "label": ckpt.run_label(checkpoint),
                "model": {k: getattr(cfg.model, k) for k in ("d_model", "n_heads", "d_ff", "n_core",
                                                             "norm_placement", "norm_type", "injection")}})
    return res


# --- argument parsing -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="looplm", description="Looped language models and STARS.")
    from . import __version__

    p.add_argument("--version", action="version", version=f"looplm {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model from a preset or YAML config")
    t.add_argument("--config", required=True, help="YAML file or preset name (addition-prenorm-stars, ...)")
    t.add_argument("--set", dest="overrides", action=SetAction, default=[], metavar="SECTION.KEY=VALUE")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out (starts fresh if there is none yet, so a restart "
                        "script can always pass it); without it, an --out holding a checkpoint is an error")
    t.add_argument("--no-progress", action="store_true")

    s = sub.add_parser("sweep", help="exact match at every depth in one forward pass")
    s.add_argument("checkpoint", help="run directory or its checkpoint/ folder")
    s.add_argument("--depths", default="1:100", help="e.g. 1:100, 1:1000:10 (1, 11, ..., 991, 1000), 1,2,4,8")
    s.add_argument("--data", help="a file of your own test problems in the task's format (addition: num1/num2/answer "
                   "rows; jsonl: prompt/answer rows; text: a text file); default: the held-out split")
    s.add_argument("--sizes", help="size-graded tasks (parity, chain): sweep each instance size, e.g. 6:12; writes "
                   "accuracy by (size, depth) and a heatmap next to the JSON")
    s.add_argument("--n", type=count_arg(1), help="number of problems (default: data.test_size, or the whole file)")
    s.add_argument("--batch-size", type=count_arg(1), default=500)
    s.add_argument("--out", help="output JSON (default: <run>/sweep.json)")
    s.add_argument("--force", action="store_true", help="replace an existing output file")
    s.add_argument("--device", default="auto")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--exit-tol", type=real_arg(False), help="also score an adaptive exit: stop a sample once "
                   "||h(t)-h(t-1)||/||h(t)|| < this (capped at the largest depth)")
    s.add_argument("--exit-stable", type=count_arg(1), help="also score an adaptive exit: stop a sample once its "
                   "answer's argmax has been unchanged for this many loops")

    g = sub.add_parser("generate", help="greedy decoding, batched, with a KV cache per (loop, block)")
    g.add_argument("checkpoint")
    g.add_argument("prompts", nargs="+", help='e.g. "1234+5678="')
    g.add_argument("--loops", type=count_arg(1, MAX_DEPTH), help="loop count, or the cap with an exit rule "
                   "(default: loops.num_loops of the checkpoint)")
    g.add_argument("--device", default="auto")
    g.add_argument("--exit-tol", type=real_arg(False), help="stop looping a token once ||h(t)-h(t-1)||/||h(t)|| < this")
    g.add_argument("--exit-stable", type=count_arg(1), help="stop looping a token once its argmax is unchanged this "
                   "many loops")
    g.add_argument("--no-cache", action="store_true", help="rerun the whole prefix for every token (no exit rule)")
    g.add_argument("--show-loops", action="store_true", help="print the loops used for each generated token")

    d = sub.add_parser("demo", help="the STARS recipe on addition, trained in two stages, swept to 1000 loops, with "
                       "its dynamics and figures")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--set", dest="overrides", action=SetAction, default=[], metavar="SECTION.KEY=VALUE")
    d.add_argument("--n", type=count_arg(1), help=f"held-out problems to sweep (default {DEMO_N}, or all if fewer)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--force", action="store_true", help="replace the results of an earlier demo in --out (its "
                   "stages resume either way)")

    st = sub.add_parser("study", help="train a grid of presets and write a report (resumes; skips finished runs)")
    st.add_argument("task", choices=["addition", "ouro-mini"],
                    help="addition: the native grid; ouro-mini: a small Ouro trained from scratch, then SFT, "
                         "random-loop and STARS fine-tunes, lm-eval by loop count [hf]")
    st.add_argument("--out", required=True)
    st.add_argument("--quick", action="store_true",
                    help="addition: the three headline runs (seed 0) of the full grid, swept on 1,000 problems "
                         "(26 min on 2 CPU cores with --jobs 2); ouro-mini: fine-tunes from the shipped base, "
                         "shorter, on fewer problems")
    st.add_argument("--jobs", type=count_arg(1), default=1, help="addition: runs in parallel (1 torch thread each)")
    st.add_argument("--only", nargs="+", help="addition: run names to train (default: the whole grid)")
    st.add_argument("--base", help="ouro-mini: a trained base (a directory written by this study) instead of "
                                   "training one")
    st.add_argument("--no-progress", action="store_true")

    an = sub.add_parser("analyze", help="per-loop latent dynamics: norms, residuals, spectra, entropy, PCA")
    an.add_argument("checkpoint", help="run directory or its checkpoint/ folder, or an HF looped model directory "
                    "(Ouro, `looplm export-hf` output, a `looplm finetune` run; needs --data and the hf extra)")
    an.add_argument("--depths", default="1:100", help="depths to analyze, e.g. 1:100 (every depth is cheap)")
    an.add_argument("--n", type=count_arg(1), help=f"held-out problems for the cheap per-depth statistics (default: "
                    f"{ANALYZE_N}, or all there are if fewer)")
    an.add_argument("--out", help="output directory for dynamics.json and figures (default: the run directory)")
    an.add_argument("--force", action="store_true", help="replace an existing dynamics.json and its figures")
    an.add_argument("--data", help="test problems in the task's format, as sweep --data (default: held-out); for an HF "
                    "model: a JSONL/JSON/parquet file or datasets name with messages or question/answer records")
    an.add_argument("--spectral-depths", default="auto",
                    help="depths for the Jacobian estimates: auto (about 12 log-spaced), none, or a depth spec")
    an.add_argument("--spectral-n", type=count_arg(0), help="samples for the Jacobian estimates (default: 16, or "
                    "all there are if fewer)")
    an.add_argument("--iters", type=count_arg(1, MAX_DEPTH), help="max JVPs (Krylov dimension) per spectral estimate "
                    "(default: 60)")
    an.add_argument("--tol", type=real_arg(True, 1), help="relative eigen-residual accepted as converged "
                    "(default: 0.001)")
    an.add_argument("--method", choices=["arnoldi", "power"], help="eigen-solver (default: arnoldi)")
    an.add_argument("--hutchinson", type=count_arg(0, MAX_DEPTH), help="probes for the Frobenius estimate (0 = skip; "
                    "default: 8)")
    an.add_argument("--pca-n", type=count_arg(0), help="samples whose trajectories get a 2-D PCA (default: 8, or "
                    "all there are if fewer)")
    an.add_argument("--seed", type=count_arg(0), help="seed of the Jacobian estimates' random probes (default: 0)")
    an.add_argument("--batch-size", type=count_arg(1), default=256)
    an.add_argument("--device", default="auto")
    an.add_argument("--threads", type=count_arg(0), default=1,
                    help="torch CPU threads (0 = torch's default). The Jacobian work is many small ops, so one "
                         "thread is about as fast and does not fight other jobs on a shared machine")
    an.add_argument("--max-length", type=count_arg(1), help="HF models: skip records longer than this many tokens "
                    "(default: the model's position table); the count skipped is printed")
    an.add_argument("--no-plot", action="store_true", help="write dynamics.json only")
    an.add_argument("--no-progress", action="store_true")

    pl = sub.add_parser("plot", help="draw figures from saved sweep.json / dynamics.json files")
    pl.add_argument("inputs", nargs="+", help="sweep.json or dynamics.json files, or directories holding them")
    pl.add_argument("--labels", nargs="+")
    pl.add_argument("--out", required=True,
                    help="PNG path of the accuracy overlay; dynamics figures go next to it (<stem>-dynamics.png, "
                         "<stem>-trajectories.png)")
    pl.add_argument("--force", action="store_true", help="replace existing figures")

    from .hf.commands import add_parsers as add_hf_parsers  # finetune, export-hf, eval-lm (no transformers import)

    add_hf_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI. Ctrl-C anywhere in it prints `error: interrupted` and exits 130; SIGTERM is made to do the same
    (`error: terminated`, 143); training handles both by saving a checkpoint first (looplm.train.fit)."""
    return run_command(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # what the hint is depends on the command: a prompt for generate, a setting for the rest
            hint = (PROMPT_HINT if args.cmd == "generate" and any(a.startswith("-") for a in extra) else
                    f"looplm {args.cmd} --help lists its options"
                    + (" (a setting is --set section.key=value)" if hasattr(args, "overrides") else ""))
            parser.error(f"unrecognized arguments: {' '.join(extra)}; {hint}")
    except SystemExit as e:  # --help, or one error line from _Parser
        return int(e.code or 0)
    with command(args.cmd):
        return guarded(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    out = getattr(args, "out", None)
    if isinstance(out, str) and (not out.strip() or out == "-"):  # "" is the working folder to pathlib; - no stdout
        raise UserError(f"--out is {emptiness(out)}; give a path" if out.strip() != "-" else
                        "--out -: looplm writes files, not to standard output; give a path (./- names a file -)")
    if isinstance(out, str) and unexpanded_home(out):  # (~, ~/x, ~user/x) a folder named ~ or ~user made here
        raise UserError(f"--out {out}: {unexpanded_home(out)}")
    if args.cmd == "study":  # before any work: a file, or a folder of other files, is no study directory
        rundir.check_owned(Path(args.out), STUDY_FILES[args.task], f"a `looplm study {args.task}` directory")
    if args.cmd == "demo":  # the demo rewrites its own results when run again; nobody else's (a run, a folder)
        rundir.check_owned(Path(args.out), DEMO_FILES, "a `looplm demo` directory")
    if args.cmd == "train":
        before = rundir.latest_step(args.out)
        run = cmd_train(args.config, args.out, args.overrides, args.resume, not args.no_progress)
        # (a finished run resumed has said that nothing changed; under torchrun, rank 0 speaks for all)
        if rundir.latest_step(run) != before and rank_zero():
            print(f"run written to {one_line(run)}")
    elif args.cmd == "sweep":
        out = Path(args.out) if args.out else default_out_dir(args.checkpoint) / "sweep.json"
        # pathlib drops a trailing slash and `/.`: the folder named would be written as a file
        if args.out and (args.out.endswith(("/", os.sep)) or os.path.basename(args.out) in (".", "..")):
            raise UserError(f"--out {args.out} names a folder; give the path of the file to write (e.g. "
                            f"{out / 'sweep.json'})")
        if out.suffix.lower() in FIGURE_SUFFIXES:  # JSON under an image's name: no viewer opens it
            raise UserError(f"--out {out}: sweep writes its result as JSON (looplm plot draws it); give a .json path")
        written = [out, *([out.with_suffix(".png")] if args.sizes else [])]
        outs = with_stale(written, [out, *sizes_figure(out)])
        res = run_sweep(args.checkpoint, args.depths, args.data, args.n, args.batch_size, args.device,
                        not args.no_progress, args.exit_tol, args.exit_stable,
                        before=lambda inputs: fresh_outputs(outs, args.force, inputs), sizes=args.sizes)
        shown, caption = table_depths(res, out)  # (the caption: which depths, when not all)
        if "sizes" in res:
            from .plots import plot_size_depth

            few = len(set(res["n_by_size"])) > 1  # a size with fewer distinct problems says so (its figure is coarser)
            rows = [f"size {s}" + (f" (n={m})" if few else "") for s, m in zip(res["sizes"], res["n_by_size"],
                                                                             strict=True)]
            for k, (row, acc) in enumerate(zip(rows, res["accuracy_by_size"], strict=True)):
                table = depth_table({"depths": res["depths"], "accuracy": acc}, shown, row.ljust(max(map(len, rows))))
                print(caption + table if k == 0 else table.splitlines()[1])
            with all_or_nothing(outs):  # the JSON and its figure
                write_json(out, res, args.force)
                figure = plot_size_depth(res, out.with_suffix(".png"), replace=args.force)
            print(f"wrote {one_line(figure)}")  # once both are whole: a closed pipe (| head) must not undo them
        else:
            with all_or_nothing(outs):
                write_json(out, res, args.force)  # one file, written atomically
                drop_stale(outs, written)
            print(caption + depth_table(res, shown, "ppl" if res["scored_by"] == "perplexity" else "accuracy",
                              "ppl" if res["scored_by"] == "perplexity" else "accuracy"))
        if "exit" in res:
            print(exit_summary(res["exit"]))
        print(f"wrote {one_line(out)}")
    elif args.cmd == "generate":
        if args.no_cache and (args.exit_tol is not None or args.exit_stable is not None):
            raise ValueError("an exit rule needs the KV cache; drop --no-cache")
        for prompt, ans in cmd_generate(args.checkpoint, args.prompts, args.loops, args.device,
                                        not args.no_cache, args.exit_tol, args.exit_stable, args.show_loops):
            print(f"{one_line(prompt)} {ans}")
    elif args.cmd == "demo":
        cmd_demo(args.out, args.overrides, not args.no_progress, args.n, args.force)
    elif args.cmd == "study" and args.task == "ouro-mini":
        if args.jobs != 1 or args.only:
            raise ValueError("--jobs and --only belong to the addition study; ouro-mini runs its stages in order")
        from .hf.commands import require_hf

        require_hf("study ouro-mini")
        from .experiments.ouro_mini import study

        print(f"wrote {one_line(study(args.out, args.quick, args.base, not args.no_progress))}")
    elif args.cmd == "study":
        if args.base:
            raise ValueError("--base belongs to the ouro-mini study")
        from .experiments.addition import full_grid, quick_grid, run_study

        grid = quick_grid() if args.quick else full_grid()
        print(f"wrote {one_line(run_study(args.out, grid, args.quick, args.jobs, not args.no_progress, args.only))}")
    elif args.cmd == "analyze":
        out_dir = Path(args.out) if args.out else default_out_dir(args.checkpoint)
        if out_dir.suffix.lower() in (".json", *FIGURE_SUFFIXES):  # it would be made a folder of that name
            raise UserError(f"--out {out_dir}: analyze writes a folder (dynamics.json and its figures); give a folder")
        figures = [] if args.no_plot else ["dynamics.png", *(["trajectories.png"] if args.pca_n != 0 else [])]
        written = [out_dir / f for f in ["dynamics.json", *figures]]  # every file it will write, checked first
        outs = with_stale(written, [out_dir / "dynamics.json", *dynamics_figures(out_dir)])
        res = run_analyze(args.checkpoint, args.depths, args.n, args.data, args.spectral_depths,
                          args.spectral_n, args.iters, args.tol, args.method, args.hutchinson, args.pca_n,
                          args.seed, args.batch_size, args.device, not args.no_progress, args.threads,
                          before=lambda inputs: fresh_outputs(outs, args.force, inputs), max_length=args.max_length)
        res["figures"] = [f for f in figures if f == "dynamics.png" or res["pca"]["samples"]]  # ours to replace
        done = [f"{out_dir / 'dynamics.json'} ({res['seconds']:.1f} s)"]
        with all_or_nothing(outs):
            write_json(out_dir / "dynamics.json", res, args.force)
            if not args.no_plot:
                from .plots import plot_dynamics, plot_trajectories

                done.append(str(plot_dynamics(res, out_dir / "dynamics.png", replace=args.force)))
                if res["pca"]["samples"]:
                    done.append(str(plot_trajectories(res, out_dir / "trajectories.png", replace=args.force)))
            drop_stale(outs, [p for p in written if p.exists()])
        for line in done:  # once all are whole: a closed pipe (| head) must not undo them
            print(f"wrote {one_line(line)}")
    elif args.cmd in ("finetune", "export-hf", "eval-lm"):
        from .hf.commands import run as run_hf  # imports transformers only now

        run_hf(args)
    elif args.cmd == "plot":
        for f in cmd_plot(args.inputs, args.out, args.labels, args.force):
            print(f"wrote {one_line(f)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
