"""`looplm demo`: the STARS recipe on 4-digit addition, end to end, in one command (the README's first result)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from . import checkpoint as ckpt
from . import rundir
from .config import PRESET_DIR, ConfigError, apply_overrides, load_config
from .errors import UserError, demo_stages
from .evaluate import exit_cap_reason, parse_depths
from .outputs import all_or_nothing, fresh_outputs, write_json
from .tasks import make_task, task_of_checkpoint, with_task_vocab
from .train import Interrupted, check_memory, fit

DEMO_DEPTHS = [1, 2, 3, 4, 8, 16, 32, 64, 100, 200, 300, 500, 1000]  # the depths its table shows
DEMO_SWEEP = "1:100,125,160,200,250,300,400,500,630,800,1000"
DEMO_N = 1000
# the shipped presets by path: a bare name is the preset too, but notes a ./<name>.yaml beside it as not read, and
# the demo takes no --config to read that file instead
FIXED8, STARS = PRESET_DIR / "addition-fixed8.yaml", PRESET_DIR / "addition-stars.yaml"
# What the demo writes in its --out: a folder holding anything else is refused.
DEMO_FILES = ("stage1", "stage2", "sweep.json", "dynamics.json", "accuracy.png", "dynamics.png")


def table_depths(res: dict, result: Path) -> tuple[list[int], str]:
    """The columns of a sweep's printed table (`res`: its JSON), and a caption to print above it: every depth up to
    16 of them, else the demo's depths and the last, with a caption that says so (depths were left out without a
    word); and where the states overflowed, a note (those rows are scored wrong, not measured)."""
    depths, over = res["depths"], res.get("overflow")
    note = "" if not over else (f"note: the states or logits overflow (not finite, or a state's norm past float32's "
                                f"range) at {len(over)} depth(s) from {over[0]}: rows there are scored as wrong and "
                                "their CE is null\n")
    if len(depths) <= 16:
        return depths, note
    shown = [d for d in depths if d in set(DEMO_DEPTHS) | {depths[-1]}]
    return shown, f"{note}showing {len(shown)} of the {len(depths)} depths; every depth is in {result}\n"


def exit_summary(x: dict) -> str:
    """The sweep's exit-rule line (`x`: its JSON's `exit`), and a note where the rule cannot stop a row before the
    cap: a count of k stable loops first holds at loop k + 1, and a tolerance of 0 never (a step never changes a
    state by less than nothing). Every row then ran to the cap, and the line read as the rule's own result."""
    line = (f"exit rule (tol={x['tol']}, stable={x['stable']}, cap {x['max_loops']}): accuracy {x['accuracy']:.3f} "
            f"at {x['mean_loops']:.2f} loops on average")
    cap = x["max_loops"]
    why = exit_cap_reason(x["tol"], x["stable"], cap)
    if why is not None:
        line += (f"\nnote: the exit rule cannot stop a row before the cap ({why}the deepest depth is {cap}): every "
                 f"row ran {cap} loop(s), so its accuracy is depth {cap}'s; sweep deeper or loosen the rule")
    return line


def restart_stage2(stage2: Path, stage1: Path) -> None:
    """Stage 2 starts from stage 1's weights: once stage 1 has trained on (a rerun with more train.steps), stage 2
    starts again from them, as the recipe says; resumed, it went on from the old stage 1 without a word."""
    src = rundir.resume_point(stage2, True)
    change = rundir.origin_change(src, str(stage1)) if src is not None else None
    if change:
        print(f"note: stage 1 has changed since stage 2 started from it ({change}); stage 2 starts again from the "
              f"new stage 1, replacing its earlier training in {stage2}")
        with rundir.lock(stage2):  # not while another process writes there
            shutil.rmtree(stage2)


def cmd_demo(out: str = "runs/demo", overrides: list[str] | None = None, progress: bool = True,
             n: int | None = None, force: bool = False) -> dict:
    """The STARS recipe on 4-digit addition, end to end: stage 1 (addition-fixed8: external norm, injection, fixed
    8 loops until the held-out split is solved), stage 2 (addition-stars: random loops + JSRR, fine-tuned from
    stage 1), then a one-pass sweep to 1000 loops, the per-loop dynamics, a table and two figures. `overrides`
    apply to both stages; each stage resumes if its directory holds a checkpoint (stage 2 starts again once stage 1
    has trained on since it started). `n` held-out problems are swept (None: DEMO_N, or the whole split if it is
    smaller). The results of an earlier demo in `out` are replaced only with `force` (checked before any
    training)."""
    from .cli import depth_table, held_out_source, run_sweep
    from .dynamics import diagnose
    from .plots import plot_accuracy, plot_dynamics

    out = Path(out)
    # --set read by the config loader's own parser (read here by hand, `data.task` with no `=`, a YAML comment or
    # a tag was taken for another task), before its checks (data.task=text: "needs data.path", not what is wrong)
    asked = apply_overrides(load_config(FIXED8).to_dict(), overrides or [])
    if asked["train"]["init_from"]:
        raise ConfigError("train.init_from: the demo sets it (stage 2 starts from stage 1); to fine-tune another "
                          "run, use `looplm train --config addition-stars --set train.init_from=RUN`")
    if isinstance(asked["data"]["task"], str) and asked["data"]["task"] != "addition":  # (the loader types others)
        raise ConfigError(f"data.task={asked['data']['task']}: the demo is the recipe on addition; its --set takes "
                          "the model, loops, reg and train settings and data.digits, test_size, test_seed; for "
                          "another task use `looplm train --config <task>-stars` (text, parity, chain, jsonl)")
    try:  # stage 1's errors say their stage, as stage 2's do (`train.eval_every=0` blamed a setting never given)
        cfg1 = load_config(FIXED8, overrides or [])
    except UserError as e:
        way_out = "; or --set train.stop_at_acc=0" if str(e).startswith("train.stop_at_acc") else ""
        raise UserError(f"stage 1 (preset addition-fixed8, which stops at train.stop_at_acc=0.98 and which --set "
                        f"changes too): {e}{way_out}") from None
    stage2 = [*(overrides or []), f"train.init_from={out / 'stage1'}"]
    try:  # both stages' settings, and whether stage 2 fits in memory, checked before stage 1 trains
        task = make_task(cfg1)
        check_memory(with_task_vocab(load_config(STARS, stage2), task), seq_len=task.seq_len)
    except UserError as e:
        raise UserError(f"stage 2 (preset addition-stars, which --set changes too): {e}") from None
    if n is None:  # --n left out: a default above what exists is reported with the number used, not refused
        n = min(DEMO_N, cfg1.data.test_size)  # (docs/bad-inputs.md; `--set data.test_size=16` named no --n)
        if n < DEMO_N:
            print(f"note: the sweep scores the whole held-out split, {n} problems (data.test_size), fewer than "
                  f"--n's default {DEMO_N}")
    elif n > cfg1.data.test_size:  # checked here, not after both stages have trained
        raise UserError(f"--n {n}: the held-out split (data.test_size={cfg1.data.test_size}) holds only "
                        f"{cfg1.data.test_size} problems; ask for at most {cfg1.data.test_size}")
    results = [out / f for f in DEMO_FILES if "." in f]  # sweep.json, dynamics.json and their figures
    fresh_outputs(results, force)
    rundir.resume_point(out / "stage2", True)  # a stage2/ that is no run is refused now, not after stage 1 trained
    t0 = time.perf_counter()
    try:
        with demo_stages():  # (the runs speak of the demo's stages, not of a --resume the user never gave)
            stage1 = fit(cfg1, out / "stage1", resume=True, progress=progress)
            restart_stage2(out / "stage2", stage1)
            cfg = load_config(STARS, [*(overrides or []), f"train.init_from={stage1}"])
            run = fit(cfg, out / "stage2", resume=True, progress=progress)
    except Interrupted as e:  # the demo continues by its own command (it takes no --resume)
        e.hint = "run the same `looplm demo` command again to continue"
        raise
    train_s = time.perf_counter() - t0
    sw = run_sweep(str(run), DEMO_SWEEP, n=n, progress=progress)
    sw["label"] = "STARS (demo)"
    model, cfg = ckpt.load_model(run)
    task = task_of_checkpoint(cfg, run)
    # only the tokenizer's ids, as the sweep and `looplm analyze` read them: the head is wider (16 over 14 tokens)
    dyn = diagnose(model, task.held_out(64), parse_depths(DEMO_SWEEP), vocab=task.tok.vocab_size,
                   spectral_depths=[1, 2, 4, 8, 16, 32, 100, 300, 1000], spectral_n=min(8, cfg.data.test_size),
                   iters=60, tol=1e-3, hutchinson_samples=0, pca_n=0, progress=progress)
    # the sweep's checkpoint: its step, and the loops training saw up to it
    dyn.update({"label": "STARS (demo)", "train_loops": sw["train_loops"], "checkpoint": str(run),
                "step": sw["step"], "data": held_out_source(cfg)})
    with all_or_nothing(results):  # one set of results: never this run's sweep beside an earlier dynamics
        # (without --force, a result that appeared while the stages trained is not replaced)
        write_json(out / "sweep.json", sw, force)
        write_json(out / "dynamics.json", dyn, force)
        pngs = [plot_accuracy([sw], out / "accuracy.png", title="looplm demo: STARS on 4-digit addition",
                              replace=force),
                plot_dynamics(dyn, out / "dynamics.png", replace=force)]
    total_s = time.perf_counter() - t0
    print(f"\ntrained in {train_s / 60:.1f} min ({total_s / 60:.1f} min with the sweep and the dynamics); "
          f"exact match on {sw['n']} held-out problems:")
    print(depth_table(sw, DEMO_DEPTHS))
    lo = min(a for d, a in zip(sw["depths"], sw["accuracy"], strict=True) if d >= 4)
    print(f"minimum over depths 4..1000: {lo:.3f}")
    at = dict(zip(dyn["depths"], range(len(dyn["depths"])), strict=True))
    rho = dict(zip(dyn["spectral"]["depths"], dyn["spectral"]["rho"]["q50"], strict=True))
    res, norm = dyn["metrics"]["step_residual"]["q50"], dyn["metrics"]["state_norm"]["mean"]
    print(f"at 1000 loops: step residual {res[at[1000]]:.1e}, ‖h‖ per token {norm[at[1000]]:.1f} (at 100: "
          f"{norm[at[100]]:.1f}), ρ(∂Φ/∂h) {rho.get(1000) or float('nan'):.3f}")
    print(f"wrote {out / 'sweep.json'}, {out / 'dynamics.json'}, {pngs[0]} and {pngs[1]}")
    return sw
