"""The Ouro experiment in miniature, end to end on a CPU: a small Ouro-architecture model trained from scratch
at a fixed 4 loops on GSM8K-style word problems, then fine-tuned three ways from it (SFT at 4 loops, random
loops alone, STARS), each evaluated through lm-eval at several loop counts and analyzed for its dynamics.

It mirrors the paper's Ouro-1.4B setting at CPU scale: the base is an `OuroForCausalLM` (the whole stack looped,
the final norm after every loop, the exit gate present) with its own BPE tokenizer; the fine-tunes use the
paper's loop distribution round(lognormal(1.7, 0.4)) clipped to [1, 16] and JSRR with λ = 0.1. Everything goes
through the commands' own code: `fit` (looplm finetune), `eval_depths` (looplm eval-lm), `analyze_hf`
(looplm analyze).

Layout of `out`: settings.json, data/ (train.jsonl, test.jsonl), tasks/ (the lm-eval task), init/ (the base's
random initialization), runs/<name>/ (a run directory; eval/eval_lm.json; dynamics.json), report.md, figures/.
Every stage skips what is already on disk, and a partial run resumes from its checkpoint, so the command
resumes; a directory made with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import write_result
from ..errors import UserError
from ..outputs import check_study_outputs

DEPTHS = (1, 2, 3, 4, 6, 8, 12, 16)  # the loop counts every model is evaluated at
TASK = "ouro_mini_math"
METRIC = "exact_match,none"
KINDS = ("sft", "random", "stars")
SHIPPED_BASE = Path(__file__).resolve().parents[2] / "models" / "ouro-mini-base"
BASE_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja", "looplm_config.json", "data_stats.json")


@dataclass(frozen=True)
class Settings:
    """Everything the study's numbers depend on; recorded in settings.json and checked on every resume."""

    # data: looplm.hf.mathdata, two-digit values so a CPU-sized model can learn the arithmetic
    n_train: int = 20000
    n_test: int = 500
    problem_steps: tuple[int, int] = (1, 3)
    max_value: int = 99
    data_seed: int = 0
    # the base model (OuroConfig): Ouro's layout, small
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_length: int = 320  # tokens per chat example (the longest is about 205)
    # training
    batch_size: int = 32
    micro_batch_size: int = 8
    base_steps: int = 2000
    base_lr: float = 1e-3
    ft_steps: int = 200
    ft_lr: float = 3e-4
    seeds: tuple[int, ...] = (0, 1, 2)
    # evaluation
    depths: tuple[int, ...] = DEPTHS  # must include 4, 8 and 16: the paper's comparisons
    eval_n: int = 200  # held-out problems per lm-eval call
    max_gen_toks: int = 160
    analyze_n: int = 16
    analyze_depth: int = 32

    def __post_init__(self) -> None:
        if not {4, 8, 16} <= set(self.depths) or sorted(set(self.depths)) != list(self.depths):
            raise ValueError(f"depths must be sorted, unique and include 4, 8 and 16, got {self.depths}")
        if not self.seeds:
            raise ValueError("seeds: at least one fine-tuning seed")

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FULL = Settings()
# --quick: the same data and base (the shipped one, which the full study's base stage trains), shorter
# fine-tunes and fewer evaluation problems.
QUICK = dataclasses.replace(FULL, ft_steps=100, eval_n=100)


def _data_keys(s: Settings) -> dict[str, Any]:
    """The settings a base model depends on: a base is reusable exactly when these agree."""
    keys = ("n_train", "n_test", "problem_steps", "max_value", "data_seed", "vocab_size", "hidden_size",
            "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_length",
            "batch_size", "micro_batch_size", "base_steps", "base_lr")
    return {k: v for k, v in s.to_json().items() if k in keys}


def check_settings(out: Path, s: Settings) -> None:
    """Refuse a directory whose settings.json differs (the runs in it would mix two experiments)."""
    f = out / "settings.json"
    if f.exists():
        old = json.loads(f.read_text())
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in s.to_json().items() if old.get(k) != v]
        if diff:
            raise UserError(f"{out} holds a study with other settings ({'; '.join(diff)}); use another --out")


# --- stages -------------------------------------------------------------------------------------------------
def write_data(out: Path, s: Settings) -> tuple[Path, Path]:
    from ..hf.mathdata import write_lm_eval_task, write_split

    data = out / "data"
    if not (data / "test.jsonl").exists():
        write_split(data, s.n_train, s.n_test, seed=s.data_seed, steps=s.problem_steps, max_value=s.max_value)
    if not (out / "tasks" / f"{TASK}.yaml").exists():
        write_lm_eval_task(out / "tasks", data / "test.jsonl", TASK, max_gen_toks=s.max_gen_toks)
    return data / "train.jsonl", data / "test.jsonl"


def write_init(out: Path, s: Settings, train_jsonl: Path) -> Path:
    """init/: the base's random initialization (seed 0) and its tokenizer, an HF model directory that `fit`
    trains from like any pretrained model."""
    init = out / "init"
    if (init / "model.safetensors").exists():
        return init
    import torch

    from ..hf import OuroConfig, OuroForCausalLM
    from ..hf.finetune import quiet_transformers
    from ..hf.tokenizer import train_chat_tokenizer

    records = [json.loads(x) for x in train_jsonl.read_text().splitlines()]
    tok = train_chat_tokenizer((r["question"] + "\n" + r["answer"] for r in records), s.vocab_size)
    cfg = OuroConfig(vocab_size=len(tok), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                     num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
                     num_key_value_heads=s.num_key_value_heads, max_position_embeddings=512, total_ut_steps=4,
                     rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    tmp = out / "init.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():  # (its "Writing model shards" bar broke --no-progress; export-hf shows none)
        OuroForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    tmp.rename(init)
    return init


def run_config(s: Settings, name_or_path: Path, train_jsonl: Path, kind: str, seed: int, threads: int):
    """The looplm config of one run: `base` (fixed 4 loops from scratch) or a fine-tune (`sft`, `random`,
    `stars`) from the base. The fine-tunes differ only in `loops` and `reg`."""
    from ..config import Config

    loops = {"sampler": "fixed", "num_loops": 4}
    paper = {"sampler": "lognormal", "mu": 1.7, "sigma": 0.4, "min_loops": 1, "max_loops": 16, "num_loops": 4}
    base = kind == "base"
    d = {
        "model": {"name_or_path": str(name_or_path), "gradient_checkpointing": False, "freeze_exit_gate": True},
        "data": {"source": str(train_jsonl), "max_length": s.max_length, "overlong": "drop"},
        "loops": paper if kind in ("random", "stars") else loops,
        "reg": {"kind": "jsrr", "weight": 0.1, "start_step": 0} if kind == "stars" else {"kind": "none"},
        "train": {"steps": s.base_steps if base else s.ft_steps, "batch_size": s.batch_size,
                  "micro_batch_size": s.micro_batch_size, "lr": s.base_lr if base else s.ft_lr,
                  "min_lr": (s.base_lr if base else s.ft_lr) / 10, "warmup_steps": 100 if base else 20,
                  "weight_decay": 0.0, "checkpoint_every": 250, "seed": seed, "threads": threads,
                  "device": "cpu"},
    }
    return Config.from_dict(d)


def train(out: Path, name: str, cfg: Any, progress: bool) -> Path:
    """Train (or resume) runs/<name>; returns its checkpoint, an HF model directory."""
    from .. import checkpoint as ckpt
    from ..train import Interrupted, fit

    run = out / "runs" / name
    done = run / "train.json"
    if done.exists():
        return run / "checkpoint"
    t0 = time.perf_counter()
    resumed_from = ckpt.saved_step(run / "checkpoint")
    try:
        fit(cfg, run, resume=True, progress=progress)
    except Interrupted as e:  # a study continues by its own command, which resumes every unfinished run
        e.hint = "run the same `looplm study` command again to continue"
        raise
    done.write_text(json.dumps({"train_seconds": round(time.perf_counter() - t0, 1),
                                "resumed_from_step": resumed_from}) + "\n")
    return run / "checkpoint"


def evaluate(out: Path, name: str, model_dir: Path, s: Settings, threads: int) -> dict:
    """lm-eval at every loop count of DEPTHS (runs/<name>/eval/eval_lm.json, as `looplm eval-lm` writes)."""
    f = out / "runs" / name / "eval" / "eval_lm.json"
    if f.exists():
        return json.loads(f.read_text())
    import torch

    from ..hf.lm_eval_depths import eval_depths

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    res = eval_depths(str(model_dir), [TASK], list(s.depths), f.parent, include_path=str(out / "tasks"),
                      limit=s.eval_n, batch_size=32, apply_chat_template=True,
                      device="cpu", dtype="float32")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    f.write_text(json.dumps(res, indent=1) + "\n")
    return res


def analyze(out: Path, name: str, model_dir: Path, test_jsonl: Path, s: Settings) -> dict:
    """runs/<name>/dynamics.json: state norm, step residual and ρ(∂Φ/∂h) per loop on held-out problems."""
    f = out / "runs" / name / "dynamics.json"
    if f.exists():
        return json.loads(f.read_text())
    import torch

    from ..hf.analysis import analyze_hf

    depths = list(range(1, s.analyze_depth + 1))
    spectral = [d for d in (1, 2, 4, 8, 16, 32, 64) if d <= s.analyze_depth]
    with torch.random.fork_rng():
        res = analyze_hf(model_dir, str(test_jsonl), depths, s.analyze_n, torch.device("cpu"),
                         spectral_depths=spectral, spectral_n=min(8, s.analyze_n), iters=60, tol=1e-3,
                         hutchinson_samples=2, pca_n=0, seed=0)
    res["label"] = name
    f.write_text(json.dumps(res) + "\n")
    return res


CHECK_N, CHECK_DEPTHS = 20, (4, 8)  # the shipped base's self-check: its scores on the first held-out problems


def check_problems(folder: Path, s: Settings) -> tuple[Path, str]:
    """The first CHECK_N held-out problems of the study's test split (the test side of `write_split` does not
    depend on how many training problems are drawn) and an lm-eval task over them, in `folder`."""
    from ..hf.mathdata import write_lm_eval_task, write_split

    _, test = write_split(folder / "data", 0, CHECK_N, seed=s.data_seed, steps=s.problem_steps,
                          max_value=s.max_value, overwrite=True)  # a scratch copy, the same problems each time
    return folder / "tasks", write_lm_eval_task(folder / "tasks", test, TASK, max_gen_toks=s.max_gen_toks,
                                                overwrite=True)


def base_check(model_dir: Path, s: Settings, scratch: Path) -> dict:
    """lm-eval exact match of `model_dir` at CHECK_DEPTHS on the CHECK_N problems of `check_problems`."""
    from ..hf.lm_eval_depths import eval_depths

    tasks, name = check_problems(scratch, s)
    res = eval_depths(str(model_dir), [name], list(CHECK_DEPTHS), scratch / "eval", include_path=str(tasks),
                      limit=CHECK_N, batch_size=32, apply_chat_template=True, device="cpu", dtype="float32")
    return {"n": CHECK_N, "depths": list(CHECK_DEPTHS), "max_gen_toks": s.max_gen_toks,
            "exact_match": [accuracy(res)[d] for d in CHECK_DEPTHS]}


def ship_base(out: Path, dest: Path) -> Path:
    """Copy the trained base's model files (not the optimizer state) to `dest`, with the study settings, its
    lm-eval scores and a self-check (`check.json`: exact match on CHECK_N held-out problems, which a test
    reproduces), so it can be shipped and reused by `--quick`."""
    import tempfile

    src = out / "runs" / "base" / "checkpoint"
    s = _settings_of(out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
    (dest / "study_settings.json").write_text(json.dumps(_data_keys(s), indent=1) + "\n")
    shutil.copy2(out / "runs" / "base" / "eval" / "eval_lm.json", dest / "eval_lm.json")
    with tempfile.TemporaryDirectory() as scratch:
        check = base_check(dest, s, Path(scratch))
    (dest / "check.json").write_text(json.dumps(check, indent=1) + "\n")
    return dest


def _settings_of(out: Path) -> Settings:
    d = json.loads((out / "settings.json").read_text())
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def use_base(out: Path, s: Settings, base: Path) -> Path:
    """A trained base (e.g. the shipped one) in place of the base stage: it must come from the same data and
    base settings, or the fine-tunes would start from a model of another experiment."""
    f = base / "study_settings.json"
    if not f.exists():
        raise UserError(f"{base} has no study_settings.json: not a base written by `looplm study ouro-mini`")
    theirs, ours = json.loads(f.read_text()), _data_keys(s)
    diff = [f"{k}: {theirs.get(k)!r} vs {v!r}" for k, v in ours.items() if theirs.get(k) != v]
    if diff:
        raise UserError(f"{base} was trained with other settings ({'; '.join(diff)})")
    from ..hf.finetune import load_pretrained, require_tokenizer

    require_tokenizer(base)
    load_pretrained(str(base))  # weights whole and covering the model, before the study writes anything
    return base


def study(out: str | Path, quick: bool = False, base: str | Path | None = None, progress: bool = True,
          threads: int = 0, settings: Settings | None = None) -> Path:
    """Run (or resume) the study into `out` and write its report; returns the report's path.

    quick: fine-tunes of QUICK's length from a trained base (`base`, default: the shipped one) instead of
    training the base. The full study trains the base from scratch (base_steps at a fixed 4 loops).
    `settings` replaces FULL / QUICK (tests use tiny ones); `threads` caps torch's threads (0: its default)."""
    out = Path(out)
    check_study_outputs(out)  # the report and figures it rewrites at the end: its own, or none
    s = settings or (QUICK if quick else FULL)
    if quick and base is None:
        base = SHIPPED_BASE
        if not (base / "model.safetensors").exists():
            raise UserError(f"--quick starts from the shipped base model ({base}), which this checkout lacks; "
                            "run the full study, or pass --base")
    base = use_base(out, s, Path(base)) if base is not None else None
    check_settings(out, s)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps({**s.to_json()}, indent=1) + "\n")
    t0 = time.perf_counter()
    train_jsonl, test_jsonl = write_data(out, s)
    say = print if progress else (lambda *a, **k: None)
    if base is None:
        init = write_init(out, s, train_jsonl)
        say(f"[ouro-mini] base: {s.base_steps} steps at a fixed 4 loops from scratch")
        base = train(out, "base", run_config(s, init, train_jsonl, "base", 0, threads), progress)
    names = ["base"] + [f"{k}-s{seed}" for k in KINDS for seed in s.seeds]
    models = {"base": base}
    for name in names[1:]:
        kind, seed = name.rsplit("-s", 1)
        say(f"[ouro-mini] {name}: {s.ft_steps} fine-tuning steps from the base")
        models[name] = train(out, name, run_config(s, base, train_jsonl, kind, int(seed), threads), progress)
    for name in names:
        say(f"[ouro-mini] {name}: lm-eval at loops {', '.join(map(str, s.depths))}; dynamics to "
            f"{s.analyze_depth} loops")
        evaluate(out, name, models[name], s, threads)
        analyze(out, name, models[name], test_jsonl, s)
    seconds = time.perf_counter() - t0
    return write_report(out, s, quick, base_src=None if base == out / "runs" / "base" / "checkpoint" else base,
                        seconds=seconds)


# --- the report ---------------------------------------------------------------------------------------------
def accuracy(ev: dict) -> dict[int, float]:
    """loop count -> exact match (0..1) from an eval_lm.json."""
    return {r["loops"]: r["metrics"][TASK][METRIC] for r in ev["rows"]}


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pm(xs: list[float], scale: float = 100.0) -> str:
    m, sd = _mean_sd([scale * x for x in xs])
    return f"{m:.1f} ± {sd:.1f}" if len(xs) > 1 else f"{m:.1f}"


def _peak(acc: dict[int, float]) -> tuple[float, int]:
    d = max(acc, key=lambda k: (acc[k], -k))
    return acc[d], d


def _rho(dyn: dict, depth: int) -> float | None:
    sp = dyn.get("spectral") or {}
    if depth not in sp.get("depths", []):
        return None
    return sp["rho"]["q50"][sp["depths"].index(depth)]


def _at(dyn: dict, key: str, depth: int) -> float | None:
    return dyn["metrics"][key]["q50"][dyn["depths"].index(depth)] if depth in dyn["depths"] else None


def _paired(a: list[float], b: list[float]) -> str:
    """A same-seed comparison: 'every seed' when all pairs agree in sign (by more than 0.5 points)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if all(d > 0.005 for d in diffs):
        return "higher"
    if all(d < -0.005 for d in diffs):
        return "lower"
    return "mixed"


def verdicts(acc: dict[str, dict[int, float]], seeds: tuple[int, ...]) -> list[tuple[str, str, str, str]]:
    """(claim, measured, verdict, rule) rows: the base's degradation, then the paper's two Ouro claims."""
    rows = []
    b = acc["base"]
    drop_b = b[4] - b[8]
    rows.append(("The base model (trained at a fixed 4 loops) degrades past 4 loops",
                 f"{100 * b[4]:.1f}% at 4 loops, {100 * b[8]:.1f}% at 8, {100 * b[16]:.1f}% at 16 "
                 f"(drop 4→8: {100 * drop_b:.1f} points)",
                 "yes" if drop_b > 0.02 else "no" if drop_b < -0.02 else "about flat", "drop 4→8 > 2 points"))
    drops = {k: [acc[f"{k}-s{s}"][4] - acc[f"{k}-s{s}"][8] for s in seeds] for k in KINDS}
    cmp = _paired(drops["stars"], drops["sft"])
    rows.append(("STARS cuts the 4→8 drop relative to SFT (Ouro-1.4B, GSM8K: 20.0 points for SFT, 7.5 for STARS)",
                 f"drop 4→8 in points: SFT {_pm(drops['sft'])}, random loops {_pm(drops['random'])}, STARS "
                 f"{_pm(drops['stars'])} ({len(seeds)} seeds)",
                 {"lower": "agrees", "higher": "disagrees"}.get(cmp, "inconclusive (no difference in every seed)"),
                 "STARS's drop below SFT's in every seed"))
    peaks = {k: [_peak(acc[f"{k}-s{s}"])[0] for s in seeds] for k in KINDS}
    cmp = _paired(peaks["stars"], peaks["sft"])
    rows.append(("STARS raises peak accuracy over SFT (Ouro-1.4B, GSM8K at 4 loops: 80.1% SFT, 82.0% STARS)",
                 f"peak over loop counts, %: SFT {_pm(peaks['sft'])}, random loops {_pm(peaks['random'])}, "
                 f"STARS {_pm(peaks['stars'])}",
                 {"higher": "agrees", "lower": "disagrees"}.get(cmp, "inconclusive (no difference in every seed)"),
                 "STARS's peak above SFT's in every seed"))
    return rows


def _shown(p: Path) -> Path:
    """A path as a report shows it: relative to the working directory when inside it (a report committed to a
    repository should not carry one machine's absolute paths)."""
    try:
        return Path(p).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(p)


def write_report(out: Path, s: Settings, quick: bool, base_src: Path | None = None,
                 seconds: float | None = None) -> Path:
    from ..plots import plot_accuracy, plot_dynamics_overlay

    names = ["base"] + [f"{k}-s{seed}" for k in KINDS for seed in s.seeds]
    evs = {n: json.loads((out / "runs" / n / "eval" / "eval_lm.json").read_text()) for n in names}
    dyns = {n: json.loads((out / "runs" / n / "dynamics.json").read_text()) for n in names}
    acc = {n: accuracy(e) for n, e in evs.items()}
    groups = [("base", ["base"])] + [(k, [f"{k}-s{seed}" for seed in s.seeds]) for k in KINDS]
    label = {"base": "base (fixed 4 loops, from scratch)", "sft": "SFT (fixed 4 loops)",
             "random": "random loops, lognormal(1.7, 0.4) in [1, 16]", "stars": "STARS (random loops + JSRR, λ 0.1)"}
    fig_dir = out / "figures"
    curves = []
    for k, ns in groups:
        curves.append({"label": f"{label[k]}" + (f", mean of {len(ns)} seeds" if len(ns) > 1 else ""),
                       "depths": list(s.depths), "accuracy": [statistics.mean(acc[n][d] for n in ns) for d in s.depths],
                       "train_loops": [4, 4] if k in ("base", "sft") else [1, 16]})
    plot_accuracy(curves, fig_dir / "accuracy.png", title="ouro-mini: held-out exact match (lm-eval)")
    plot_dynamics_overlay([{**dyns[ns[0]], "label": f"{k} ({ns[0]})"} for k, ns in groups], fig_dir / "dynamics.png",
                          title="ouro-mini: latent dynamics on held-out problems (seed 0 of each fine-tune)")

    cols = " | ".join(f"T={d}" for d in s.depths)
    lines = [
        "# ouro-mini: the Ouro experiment in miniature",
        "",
        f"Generated by `looplm study ouro-mini --out {out}{' --quick' if quick else ''}` "
        + (f"in {seconds / 60:.0f} min " if seconds else "") + "(this report lists every setting below).",
        "",
        "A small Ouro-architecture model (`OuroForCausalLM`: the whole stack looped, the final norm after every "
        "loop, the exit gate present) with its own BPE tokenizer is trained from scratch at a fixed 4 loops on "
        "synthetic GSM8K-style word problems (`looplm.hf.mathdata`), then fine-tuned from that base three ways "
        "with the same data, steps and seeds. Every model is scored through lm-eval (greedy generation, the "
        "final `#### N` answer against the gold one, exact match) on held-out problems at each loop count, and "
        "analyzed with `looplm analyze` (medians over tokens of held-out problems).",
        "",
        "![accuracy](figures/accuracy.png)",
        "",
        "## Exact match (%) by loop count",
        "",
        f"Mean ± sample standard deviation over seeds {', '.join(map(str, s.seeds))} (the base: one model). "
        f"{s.eval_n} held-out problems.",
        "",
        f"| model | {cols} | drop 4→8 | peak (T) |",
        "|---" * (len(s.depths) + 3) + "|",
    ]
    for k, ns in groups:
        cells = [_pm([acc[n][d] for n in ns]) for d in s.depths]
        drop = _pm([acc[n][4] - acc[n][8] for n in ns])
        pk = [_peak(acc[n]) for n in ns]
        peak = _pm([p for p, _ in pk]) + " (" + "/".join(str(d) for _, d in pk) + ")"
        lines.append(f"| {label[k]} | " + " | ".join(cells) + f" | {drop} | {peak} |")
    lines += ["", "Per seed (same seeds across the three fine-tunes: the same data order; random loops and STARS "
              "also draw the same loop counts):", "", f"| run | {cols} |", "|---" * (len(s.depths) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{100 * acc[n][d]:.1f}" for d in s.depths) + " |")
    lines += ["", "## The paper's claims", "", "| claim | measured here | verdict | rule |", "|---|---|---|---|"]
    for row in verdicts(acc, s.seeds):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Dynamics", "", "![dynamics](figures/dynamics.png)", "",
              "Medians over the real tokens of the first "
              f"{s.analyze_n} held-out problems: state norm ‖h‖, relative step residual ‖h(t) − h(t−1)‖ / ‖h(t)‖ "
              "and ρ(∂Φ/∂h) (Arnoldi, 60 JVPs, converged estimates only).", "",
              "| run | ρ@4 | ρ@16 | ρ@32 | residual@4 | residual@16 | residual@32 | ‖h‖@4 | ‖h‖@32 |",
              "|---" * 9 + "|"]
    for n in names:
        d = dyns[n]
        f = lambda x, p=3: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{p}f}"  # noqa: E731
        g = lambda x: "–" if x is None else f"{x:.1e}"  # noqa: E731
        lines.append(f"| {n} | {f(_rho(d, 4))} | {f(_rho(d, 16))} | {f(_rho(d, 32))} | "
                     f"{g(_at(d, 'step_residual', 4))} | {g(_at(d, 'step_residual', 16))} | "
                     f"{g(_at(d, 'step_residual', 32))} | {f(_at(d, 'state_norm', 4), 1)} | "
                     f"{f(_at(d, 'state_norm', 32), 1)} |")
    train_s = {n: json.loads(f.read_text())["train_seconds"] for n in names
               if (f := out / "runs" / n / "train.json").exists()}
    lines += ["", "## Settings", "",
              "Base: " + (f"`{_shown(base_src)}` (trained by the full study's base stage with the settings below)"
                          if base_src else "trained here (runs/base)") + ".", "",
              "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.to_json().items()]
    lines += ["", "Fine-tunes: SFT at a fixed 4 loops, no penalty; random loops round(lognormal(1.7, 0.4)) clipped "
              "to [1, 16], no penalty; STARS: the same loops + JSRR (one JVP per step at the final state), "
              "loss = 0.9·CE + 0.1·JSRR. AdamW, cosine schedule to lr/10, assistant tokens only, float32, CPU. "
              "Each run's full config is runs/<name>/config.yaml.", "",
              "Training time (s): " + ", ".join(f"{n} {t:.0f}" for n, t in train_s.items()) + ".", ""]
    # whole or absent (a torn report would no longer read as the study's own, and be refused)
    return write_result(out / "report.md", lambda f: f.write_text("\n".join(lines)), replace=True)
