"""The table of bad inputs and faults that tests/test_bad_inputs.py runs through the CLI: each case's command,
the files it writes first, and what it damages before the run (the `prepare` helpers). docs/bad-inputs.md lists
them, grouped by mechanism."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .bad_input_damage import (
    _checkpoints_gone,
    _damage_all,
    _dangling_link,
    _dynamics_without_state_norm,
    _export,
    _flip,
    _foreign_dir,
    _hold_lock,
    _lose_latest,
    _manifest,
    _metrics,
    _partial_run,
    _replace_with_file,
    _rewrite_state,
    _symlink_loop,
    _write,
)

TRAIN = ["train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress"]
TINY = ["--set", "model.d_model=32", "--set", "model.d_ff=64", "--set", "model.n_heads=2", "--set", "train.steps=2",
        "--set", "train.batch_size=8", "--set", "train.eval_every=0", "--set", "data.test_size=16",
        "--set", "loops.max_loops=4", "--set", "model.max_seq_len=16", "--set", "train.checkpoint_every=1",
        "--set", "train.keep_checkpoints=3", "--set", "reg.rho_every=0"]


def setting(argv: list[str], item: str) -> list[str]:
    """`argv` with the value of one --set key replaced (the CLI refuses a key given twice)."""
    key = item.split("=", 1)[0] + "="
    return [item if a.startswith(key) else a for a in argv]


def unset(argv: list[str], key: str) -> list[str]:
    """`argv` without its --set of `key`, so that the config's value applies."""
    i = next(i for i, a in enumerate(argv) if a.startswith(key + "="))
    return argv[:i - 1] + argv[i + 1:]


RESUME = setting(["train", "--config", "addition-prenorm-stars", "--out", "{copy}", "--resume", "--no-progress",
                  *TINY], "train.steps=3")  # one step more than the run's
ROW = '{"num1": 1234, "num2": 5678, "answer": 6912}\n'


@dataclass
class Case:
    group: str
    what: str
    argv: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)  # written under {tmp} before the command
    prepare: Callable[[Path, Path], None] | None = None  # (tmp, copy of the run) -> None, before the snapshot
    rc: int = 2
    hf: bool = False  # needs the hf extra
    before: str = ""  # what `prepare` does, for the table
    shown: str = ""  # the command as the table shows it, when argv is too long to print


S = ["sweep", "{run}", "--no-progress"]
A = ["analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--pca-n", "0",
     "--no-plot"]
G = ["generate", "{run}"]
FT = ["finetune", "--config", "{tmp}/ft.yaml", "--out", "{tmp}/ft", "--no-progress"]
FT_YAML = ("model:\n  name_or_path: {base}\ndata:\n  source: {tmp}/chat.jsonl\n  max_length: 256\n"
           "train:\n  steps: 1\n  batch_size: 2\n")


def chat(*rows: str) -> dict[str, str]:
    return {"ft.yaml": FT_YAML, "chat.jsonl": "".join(r + "\n" for r in rows)}


def template(text: str) -> dict[str, str]:
    """A fine-tune whose data.chat_template is the file t.jinja holding `text`."""
    return {"ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  chat_template: {tmp}/t.jinja\n"),
            "chat.jsonl": GOOD_CHAT + "\n", "t.jinja": text}


# A YAML "billion laughs": nine anchors, each a list of nine of the one before (9^9 items if expanded; small as
# PyYAML builds it, with shared lists, but its full repr would be hundreds of megabytes).
BOMB = "train:\n  steps:\n    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"    - &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))
DEEP = "[" * 100_000 + "]" * 100_000  # nested far past Python's recursion limit
GOOD_CHAT = '{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "#### 2"}]}'

def _lose_history(copy: Path) -> None:
    shutil.rmtree(copy / "checkpoints", ignore_errors=True)


CASES: dict[str, Case] = {
    # --- config: keys, types, ranges, strict YAML -------------------------------------------------------------
    "cfg-unknown-key": Case("config", "unknown key (--set)", [*TRAIN, "--set", "model.bogus=1"]),
    "cfg-unknown-section": Case("config", "unknown section (--set)", [*TRAIN, "--set", "nope.x=1"]),
    "cfg-override-no-equals": Case("config", "override without a value", [*TRAIN, "--set", "train.steps"]),
    "cfg-override-not-dotted": Case("config", "override key not section.key", [*TRAIN, "--set", "trainsteps=3"]),
    "cfg-yaml-unknown-key": Case("config", "unknown key (YAML file)", ["train", "--config", "{tmp}/c.yaml", "--out",
                                 "{tmp}/out"], {"c.yaml": "model:\n  d_modle: 64\n"}),
    "cfg-yaml-unknown-section": Case("config", "unknown section (YAML file)", ["train", "--config", "{tmp}/c.yaml",
                                     "--out", "{tmp}/out"], {"c.yaml": "optim:\n  lr: 1\n"}),
    "cfg-yaml-invalid": Case("config", "invalid YAML", ["train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"],
                             {"c.yaml": "model: [1, 2\n"}),
    "cfg-yaml-list": Case("config", "YAML that is not a mapping", ["train", "--config", "{tmp}/c.yaml", "--out",
                          "{tmp}/out"], {"c.yaml": "- 1\n- 2\n"}),
    "cfg-yaml-section-scalar": Case("config", "a section that is not a mapping", ["train", "--config",
                                    "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "model: 3\n"}),
    "cfg-yaml-duplicate-key": Case("config", "duplicate key (YAML file)", ["train", "--config", "{tmp}/c.yaml",
                                   "--out", "{tmp}/out"], {"c.yaml": "train:\n  steps: 5\n  steps: 50\n"}),
    "cfg-yaml-nonstring-key": Case("config", "non-string key (YAML file)", ["train", "--config", "{tmp}/c.yaml",
                                   "--out", "{tmp}/out"], {"c.yaml": "train:\n  1: 5\n"}),
    "cfg-yaml-binary": Case("config", "config file that is not text", ["train", "--config", "{tmp}/c.yaml", "--out",
                            "{tmp}/out"], {"c.yaml": b"\xff\xfe\x00\x00bin"}),
    "cfg-config-dir": Case("config", "--config names a directory", ["train", "--config", "{tmp}", "--out",
                           "{tmp}/out"]),
    "cfg-missing-file": Case("config", "config neither a file nor a preset", ["train", "--config",
                             "{tmp}/missing.yaml", "--out", "{tmp}/out"]),
    "cfg-set-invalid-yaml": Case("config", "--set value that is invalid YAML", [*TRAIN, "--set", "train.lr=[1"]),
    "cfg-sexagesimal": Case("config", "YAML 1.1 sexagesimal (1:30 read as 90)", [*TRAIN, "--set",
                            "train.steps=1:30"]),
    "cfg-yes-for-bool": Case("config", "YAML 1.1 yes/no for a bool", [*TRAIN, "--set", "model.bias=yes"]),
    "cfg-text-for-int": Case("config", "text for an int", [*TRAIN, "--set", "train.steps=many"]),
    "cfg-bool-for-int": Case("config", "bool for an int", [*TRAIN, "--set", "train.steps=true"]),
    "cfg-float-for-int": Case("config", "float for an int", [*TRAIN, "--set", "train.steps=2.5"]),
    "cfg-empty-for-int": Case("config", "empty value for an int", [*TRAIN, "--set", "train.steps="]),
    "cfg-int-for-bool": Case("config", "int for a bool", [*TRAIN, "--set", "model.bias=1"]),
    "cfg-text-for-float": Case("config", "text for a float", [*TRAIN, "--set", "train.lr=abc"]),
    "cfg-list-for-float": Case("config", "list for a float", [*TRAIN, "--set", "train.lr=[1]"]),
    "cfg-inf": Case("config", "infinite float", [*TRAIN, "--set", "train.lr=.inf"]),
    "cfg-nan": Case("config", "NaN float", [*TRAIN, "--set", "loops.mu=.nan"]),
    "cfg-bad-choice": Case("config", "value not among the choices", [*TRAIN, "--set", "model.norm_placement=middle"]),
    "cfg-bad-device": Case("config", "unknown device in the config", [*TRAIN, "--set", "train.device=tpu"]),
    "cfg-beta2-range": Case("config", "train.beta2 out of range (named, not beta1)", [*TRAIN, "--set",
                            "train.beta2=1.5"]),
    "cfg-alias-bomb": Case("config", "a YAML alias bomb (9^9 items if expanded) for an int", [
        "train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": BOMB}),
    "cfg-yaml-deep": Case("config", "a YAML value nested 100,000 levels deep", [
        "train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "train:\n  lr: " + DEEP + "\n"}),
    "cfg-set-deep": Case("config", "a --set value nested 1,000 levels deep", [
        *TRAIN, "--set", "train.lr=" + "[" * 1000 + "]" * 1000],
        shown="looplm train --config addition-prenorm-stars --out <tmp>/out --no-progress --set "
              "'train.lr=[[[...]]]' (1,000 levels)"),
    "cfg-blocks-huge": Case("config", "a hundred million core blocks", [*TRAIN, "--set", "model.n_core=100000000"]),
    "cfg-reg-samples-above-batch": Case("config", "reg.samples above the batch", [
        *TRAIN, *TINY, "--set", "reg.samples=100"]),
    "cfg-reg-samples-uneven": Case("config", "reg.samples that micro-batches cannot share evenly", [
        *TRAIN, *TINY, "--set", "reg.samples=3", "--set", "train.micro_batch_size=4"]),
    "cfg-count-underscore": Case("arguments", "a count written 1_0 (int() reads 10)", [*S, "--n", "1_0"]),
    "cfg-count-arabic-digits": Case("arguments", "a count in Arabic-Indic digits", [*S, "--n", "\u0661\u0660"]),
    "cfg-depths-underscore": Case("arguments", "a depth written 1_0", [*S, "--depths", "1_0"]),
    "cfg-real-underscore": Case("arguments", "a number written 1_0", [*A, "--tol", "1_0"]),
    "cfg-bad-strategy": Case("config", "unknown distributed strategy", [*TRAIN, "--set", "train.strategy=zero3"]),
    "cfg-min-loops-zero": Case("config", "min_loops < 1", [*TRAIN, "--set", "loops.min_loops=0"]),
    "cfg-min-above-max": Case("config", "min_loops > max_loops", [*TRAIN, "--set", "loops.max_loops=5", "--set",
                              "loops.min_loops=9"]),
    "cfg-num-loops-zero": Case("config", "num_loops < 1", [*TRAIN, "--set", "loops.num_loops=0"]),
    "cfg-sigma-zero": Case("config", "σ = 0", [*TRAIN, "--set", "loops.sigma=0"]),
    "cfg-rate-zero": Case("config", "Poisson rate 0", [*TRAIN, "--set", "loops.rate=0"]),
    "cfg-lambda-negative": Case("config", "λ < 0", [*TRAIN, "--set", "reg.weight=-0.1"]),
    "cfg-lambda-above-one": Case("config", "λ > 1", [*TRAIN, "--set", "reg.weight=1.5"]),
    "cfg-dropout-one": Case("config", "dropout = 1", [*TRAIN, "--set", "model.dropout=1"]),
    "cfg-heads-divide": Case("config", "d_model not divisible by n_heads", [*TRAIN, "--set", "model.n_heads=3"]),
    "cfg-deepnorm-pre": Case("config", "DeepNorm with a pre-norm placement", [*TRAIN, "--set",
                             "model.norm_type=deepnorm", "--set", "model.norm_placement=pre"]),
    "cfg-min-lr-above-lr": Case("config", "min_lr > lr", [*TRAIN, "--set", "train.min_lr=1"]),
    "cfg-steps-zero": Case("config", "no steps and no epochs", [*TRAIN, "--set", "train.steps=0"]),
    "cfg-epochs-native": Case("config", "epochs instead of steps for looplm's own model", [*TRAIN, "--set",
                              "train.steps=0", "--set", "train.epochs=1"]),
    "cfg-epochs-with-steps-native": Case("config", "epochs beside steps for looplm's own model (would be ignored)",
                                         [*TRAIN, *TINY, "--set", "train.epochs=5"]),
    "cfg-float-underscore": Case("config", "a float with an underscore (float() reads 1_0e-4)", [
        *TRAIN, "--set", "train.lr=1_0e-4"]),
    "cfg-float-arabic-digit": Case("config", "a float in Arabic-Indic digits", [*TRAIN, "--set", "loops.mu=\u0661"]),
    "cfg-float-fullwidth-digit": Case("config", "a float in full-width digits", [
        *TRAIN, "--set", "train.min_lr=\uff10"]),
    "cfg-bpe-vocab-huge": Case("config", "a BPE vocabulary of five billion tokens", [
        *TRAIN, "--set", "data.task=text", "--set", "data.path={tmp}/t.txt", "--set", "data.tokenizer=bpe",
        "--set", "data.bpe_vocab=5000000000"], {"t.txt": "some text " * 50}),
    "cfg-addition-test-size-huge": Case("config", "a held-out split larger than 4-digit addition reserves", [
        *TRAIN, *setting(TINY, "data.test_size=100000000")]),
    "cfg-path-is-a-date": Case("config", "a data path that YAML reads as a date", [
        *TRAIN, "--set", "data.task=text", "--set", "data.path=2024-01-01"]),
    "cfg-weight-decay-flips": Case("config", "a weight decay that would flip the weights' signs", [
        *TRAIN, "--set", "train.weight_decay=1e300"]),
    "cfg-keep-zero": Case("config", "keep_checkpoints < 1", [*TRAIN, "--set", "train.keep_checkpoints=0"]),
    "cfg-max-bad-zero": Case("config", "max_bad_steps < 1", [*TRAIN, "--set", "train.max_bad_steps=0"]),
    "cfg-micro-not-dividing": Case("config", "micro-batch that does not divide the batch", [*TRAIN, "--set",
                                   "train.batch_size=8", "--set", "train.micro_batch_size=3"]),
    "cfg-digits-10": Case("config", "operands wider than 9 digits", [*TRAIN, "--set", "data.digits=10"]),
    "cfg-seq-too-short": Case("config", "positions too few for the task", [*TRAIN, "--set", "model.max_seq_len=12"]),
    "cfg-vocab-too-small": Case("config", "vocabulary too small for the task", [*TRAIN, "--set",
                                "model.vocab_size=10"]),
    "cfg-test-split-too-large": Case("config", "held-out split larger than the reserved slice", [*TRAIN, "--set",
                                     "data.digits=2"]),
    "cfg-test-fraction-with-test-path": Case("config", "data.test_fraction beside data.test_path (the file is the "
                                             "held-out split: the fraction was ignored)", [
        *TRAIN, "--set", "data.task=jsonl", "--set", "data.path={tmp}/t.jsonl", "--set", "data.test_path={tmp}/e.jsonl",
        "--set", "data.test_fraction=0.3"], {"t.jsonl": '{"prompt": "ab", "answer": "ba"}\n',
                                              "e.jsonl": '{"prompt": "cd", "answer": "dc"}\n'}),
    "cfg-digits-1": Case("config", "1-digit operands (no pair is left to hold out, whatever test_size says)", [
        *TRAIN, "--set", "data.digits=1"]),
    "cfg-init-from-missing": Case("config", "train.init_from that does not exist", [*TRAIN, "--set",
                                  "train.init_from={tmp}/nowhere"]),
    "cfg-yaml-section-zero": Case("config", "a section that is 0", ["train", "--config", "{tmp}/c.yaml", "--out",
                                  "{tmp}/out"], {"c.yaml": "model: 0\n"}),
    "cfg-yaml-section-false": Case("config", "a section that is false", ["train", "--config", "{tmp}/c.yaml",
                                   "--out", "{tmp}/out"], {"c.yaml": "model: false\n"}),
    "cfg-yaml-section-empty-string": Case("config", "a section that is an empty string", [
        "train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": 'model: ""\n'}),
    "cfg-yaml-section-empty-list": Case("config", "a section that is an empty list", ["train", "--config",
                                        "{tmp}/c.yaml", "--out", "{tmp}/out"], {"c.yaml": "train: []\n"}),
    "cfg-yaml-zero": Case("config", "a config that is 0", ["train", "--config", "{tmp}/c.yaml", "--out",
                          "{tmp}/out"], {"c.yaml": "0\n"}),
    "cfg-set-twice": Case("config", "the same --set key twice", [*TRAIN, "--set", "train.steps=2", "--set",
                          "train.steps=4"]),
    "cfg-seed-huge": Case("config", "a seed past 32 bits", [*TRAIN, "--set", "train.seed=99999999999999999999"]),
    "cfg-test-seed-negative": Case("config", "a negative held-out seed", [*TRAIN, "--set", "data.test_seed=-1"]),
    "cfg-poisson-rate-huge": Case("config", "a Poisson rate past what torch can sample", [*TRAIN, "--set",
                                  "loops.sampler=poisson", "--set", "loops.rate=1e19"]),
    "cfg-threads-too-many": Case("config", "more threads than CPU cores", [*TRAIN, "--set", "train.threads=100000"]),
    "cfg-init-from-hf-dir": Case("config", "train.init_from an HF model directory", [*TRAIN, "--set",
                                 "train.init_from={base}"], hf=True),
    # --- command-line arguments -------------------------------------------------------------------------------
    "arg-unknown-command": Case("arguments", "unknown command", ["trian", "--config", "addition-prenorm-stars"]),
    "arg-missing-out": Case("arguments", "a required option missing", ["train", "--config", "addition-prenorm-stars"]),
    "arg-sweep-batch-negative": Case("arguments", "negative batch size", [*S, "--batch-size", "-1"]),
    "arg-analyze-max-length-native": Case("arguments", "analyze --max-length on looplm's own model (HF records only)",
                                          [*A, "--max-length", "8", "--out", "{tmp}/a"]),
    "arg-sweep-batch-zero": Case("arguments", "zero batch size", [*S, "--batch-size", "0"]),
    "arg-sweep-batch-text": Case("arguments", "batch size that is not a number", [*S, "--batch-size", "many"]),
    "arg-sweep-n-zero": Case("arguments", "zero problems", [*S, "--n", "0"]),
    "arg-sweep-out-png": Case("arguments", "sweep --out naming a figure (JSON)", [*S, "--out", "{tmp}/a.pdf"]),
    "arg-sweep-out-slash": Case("arguments", "sweep --out a new folder/ (a file)", [*S, "--out", "{tmp}/newfolder/"]),
    "arg-sweep-out-dangling-link": Case("arguments", "sweep --out a link to nothing", [*S, "--out", "{tmp}/dang"],
                                        prepare=_dangling_link),
    "arg-sweep-out-in-dangling-link": Case("arguments", "sweep --out inside a link to no folder",
                                           [*S, "--out", "{tmp}/dang/s.json"], prepare=_dangling_link),
    "arg-analyze-out-json": Case("arguments", "analyze --out naming a .json file (it writes a folder)", [
        "analyze", "{run}", "--no-progress", "--out", "{tmp}/an.json"]),
    "arg-sweep-exit-tol-negative": Case("arguments", "negative exit tolerance", [*S, "--exit-tol", "-0.1"]),
    "arg-sweep-exit-tol-nan": Case("arguments", "NaN exit tolerance", [*S, "--exit-tol", "nan"]),
    "arg-sweep-exit-stable-zero": Case("arguments", "exit after 0 stable loops", [*S, "--exit-stable", "0"]),
    "arg-analyze-batch-zero": Case("arguments", "analyze with batch size 0", [*A, "--batch-size", "0"]),
    "arg-analyze-iters-zero": Case("arguments", "zero spectral iterations", [*A, "--iters", "0"]),
    "arg-analyze-tol-zero": Case("arguments", "zero spectral tolerance", [*A, "--tol", "0"]),
    "arg-analyze-spectral-n-negative": Case("arguments", "negative spectral sample count", [*A, "--spectral-n",
                                            "-2"]),
    "arg-analyze-threads-negative": Case("arguments", "negative thread count", [*A, "--threads", "-1"]),
    "arg-analyze-method": Case("arguments", "unknown spectral method", [*A, "--method", "lanczos"]),
    "arg-analyze-spectral-not-among": Case("arguments", "spectral depths outside --depths", [*A,
                                           "--spectral-depths", "50"]),
    "arg-gen-loops-zero": Case("arguments", "zero loops for generation", [*G, "1+1=", "--loops", "0"]),
    "arg-gen-exit-stable-zero": Case("arguments", "generation exit after 0 stable loops", [*G, "1+1=",
                                     "--exit-stable", "0"]),
    "arg-gen-no-cache-exit": Case("arguments", "exit rule without the KV cache", [*G, "1+1=", "--no-cache",
                                  "--exit-tol", "0.1"]),
    "arg-study-jobs-zero": Case("arguments", "zero parallel jobs", ["study", "addition", "--out", "{tmp}/s",
                                "--jobs", "0"]),
    "arg-study-unknown-run": Case("arguments", "unknown run name in a study", ["study", "addition", "--out",
                                  "{tmp}/s", "--only", "no-such-run"]),
    "arg-analyze-threads-too-many": Case("arguments", "more threads than CPU cores", [*A, "--threads", "100000"]),
    "arg-gen-loops-huge": Case("arguments", "generation past a million loops", [*G, "1+1=", "--loops",
                               "100000000"]),
    "arg-sweep-n-above-split": Case("arguments", "more problems than the held-out split holds", [
        *S, "--n", "100", "--out", "{tmp}/s.json"]),
    "arg-sweep-n-above-file": Case("arguments", "more problems than the --data file holds", [
        *S, "--data", "{tmp}/d.jsonl", "--n", "10", "--out", "{tmp}/s.json"], {"d.jsonl": ROW * 3}),
    "arg-analyze-n-above-split": Case("arguments", "analyze more problems than the held-out split holds", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "100", "--spectral-n", "0", "--pca-n", "0",
        "--no-plot", "--out", "{tmp}/a"]),
    "depth-zero": Case("arguments", "depth < 1", [*S, "--depths", "0:3"]),
    "depth-step-zero": Case("arguments", "depth range with step 0", [*S, "--depths", "1:10:0"]),
    "depth-not-a-number": Case("arguments", "depth spec that is not numbers", [*S, "--depths", "a:b"]),
    "depth-reversed": Case("arguments", "reversed depth range", [*S, "--depths", "9:2"]),
    "depth-empty": Case("arguments", "empty depth spec", [*S, "--depths", ""]),
    "depth-billion": Case("arguments", "a billion depths (memory)", [*S, "--depths", "1:1000000000"]),
    "depth-too-deep": Case("arguments", "a depth past a million loops", [*S, "--depths", "5,2000000"]),
    # --- run directories: new or whole, one writer, refusals change nothing --------------------------------------
    "run-exists-no-resume": Case("rundir", "--out holds a checkpoint, no --resume", [*TRAIN[:4], "{copy}", *TINY]),
    "run-history-only-no-resume": Case("rundir", "checkpoint/ lost, checkpoints/ kept, no --resume",
                                       [*TRAIN[:4], "{copy}", *TINY], prepare=_lose_latest),
    "run-resume-model-mismatch": Case("rundir", "--resume with another model", setting(RESUME, "model.d_model=48")),
    "run-partial-no-resume": Case("rundir", "a run with no checkpoint yet, no --resume",
                                  [*TRAIN[:4], "{tmp}/partial", *TINY], prepare=_partial_run),
    "run-foreign-dir": Case("rundir", "--out a directory of other files", [*TRAIN[:4], "{tmp}/docs", *TINY],
                            prepare=_foreign_dir),
    "run-foreign-dir-resume": Case("rundir", "--resume into a directory of other files", [*TRAIN[:4], "{tmp}/docs",
                                   "--resume", *TINY], prepare=_foreign_dir),
    "run-foreign-config-resume": Case("rundir", "--resume into a folder whose config.yaml and metrics.jsonl are "
                                      "someone else's", [*TRAIN[:4], "{tmp}/notes", "--resume", *TINY], {
        "notes/config.yaml": "title: my notes\n", "notes/metrics.jsonl": "accuracy went up\n"}),
    "run-out-is-file": Case("rundir", "--out is a file", [*TRAIN[:4], "{tmp}/f", *TINY], {"f": "x"}),
    "run-checkpoint-symlink": Case("rundir", "checkpoint/ is a symlink to itself", RESUME, prepare=_symlink_loop),
    "run-out-inside-checkpoint": Case("rundir", "--out inside another run's checkpoint/ (its resume deletes it)",
                                      [*TRAIN[:4], "{run}/checkpoint/x", *TINY]),
    "run-out-inside-history": Case("rundir", "--out inside another run's checkpoints/",
                                   [*TRAIN[:4], "{run}/checkpoints/x", *TINY]),
    "run-out-inside-corpus": Case("rundir", "train a text run with --out inside its corpus folder", [
        *TRAIN[:2], "text-stars", "--out", "{tmp}/corpus/run", "--no-progress", *TINY, "--set",
        "data.path={tmp}/corpus"], {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20}),
    "run-locked": Case("rundir", "another process holds the run", RESUME, prepare=_hold_lock),
    "run-metrics-bad-middle": Case("rundir", "metrics.jsonl with a bad line before the last", RESUME,
                                   prepare=_metrics("{\"step\": 1, \"lo")),
    "run-metrics-not-object": Case("rundir", "metrics.jsonl with a line that is not an object", RESUME,
                                   prepare=_metrics("[1, 2]")),
    "run-no-whole-checkpoint": Case("rundir", "--resume when every checkpoint is damaged", RESUME, prepare=_damage_all),
    "run-resume-fewer-steps": Case("rundir", "--resume with train.steps below the checkpoint's step",
                                   setting(RESUME, "train.steps=1")),
    "run-resume-fewer-kept": Case("rundir", "--resume without the run's train.keep_checkpoints (default 1 < 3)",
                                  unset(RESUME, "train.keep_checkpoints")),
    "run-resume-other-preset": Case("rundir", "--resume with another preset", [
        "train", "--config", "addition-prenorm-random", *RESUME[3:]]),
    "run-resume-other-seed": Case("rundir", "--resume with another seed", [*RESUME, "--set", "train.seed=1"]),
    "run-checkpoints-gone": Case("rundir", "--resume a run whose checkpoints were all moved away (it logged saved "
                                 "steps)", RESUME, prepare=_checkpoints_gone),
    "run-checkpoint-file": Case("rundir", "checkpoint is a file", RESUME, prepare=_replace_with_file("checkpoint")),
    "run-history-file": Case("rundir", "checkpoints is a file", RESUME, prepare=_replace_with_file("checkpoints")),
    # --- checkpoints ----------------------------------------------------------------------------------------------
    "ckpt-missing": Case("checkpoint", "checkpoint path does not exist", ["sweep", "{tmp}/missing"]),
    "ckpt-not-a-run": Case("checkpoint", "a directory that is not a run", ["sweep", "{tmp}", "--no-progress"]),
    "ckpt-weights-flipped": Case("checkpoint", "a flipped byte in the weights", ["sweep", "{copy}", "--no-progress",
                                 "--out", "{tmp}/s.json"], prepare=_flip("checkpoint/model.safetensors")),
    "ckpt-weights-truncated": Case("checkpoint", "truncated weights", ["sweep", "{copy}", "--no-progress", "--out",
                                   "{tmp}/s.json"], prepare=_write("checkpoint/model.safetensors", b"\0" * 10)),
    "ckpt-config-not-json": Case("checkpoint", "config.json that is not JSON (no manifest entry checked first)",
                                 ["sweep", "{copy}", "--no-progress", "--out", "{tmp}/s.json"],
                                 prepare=_write("checkpoint/config.json", "{not json")),
    "ckpt-manifest-not-json": Case("checkpoint", "manifest.json that is not JSON", ["sweep", "{copy}",
                                   "--no-progress", "--out", "{tmp}/s.json"],
                                   prepare=_write("checkpoint/manifest.json", "[[[")),
    "ckpt-manifest-files-list": Case("checkpoint", "manifest whose files are not a mapping", ["sweep", "{copy}",
                                     "--no-progress", "--out", "{tmp}/s.json"],
                                     prepare=_write("checkpoint/manifest.json", '{"files": [1]}')),
    "ckpt-manifest-record": Case("checkpoint", "manifest with a file record that is not an object",
                                 ["sweep", "{copy}", "--no-progress", "--out", "{tmp}/s.json"],
                                 prepare=_write("checkpoint/manifest.json",
                                                '{"files": {"model.safetensors": "yes"}}')),
    "ckpt-manifest-bytes-text": Case("checkpoint", "manifest with a size that is a string", [
        "sweep", "{copy}", "--no-progress", "--out", "{tmp}/s.json"], prepare=_manifest(
        lambda m: m["files"]["model.safetensors"].update(bytes=str(m["files"]["model.safetensors"]["bytes"])),
        "the weights' size in manifest.json written as a string")),
    "ckpt-manifest-no-files": Case("checkpoint", "manifest that lists no files", [
        "sweep", "{copy}", "--no-progress", "--out", "{tmp}/s.json"],
        prepare=_manifest(lambda m: m.update(files={}), "manifest.json with files = {}")),
    "ckpt-manifest-lists-missing": Case("checkpoint", "manifest that lists a file that is not there", [
        "sweep", "{copy}", "--no-progress", "--out", "{tmp}/s.json"], prepare=_manifest(
        lambda m: m["files"].update({"extra.bin": {"bytes": 1, "sha256": "0" * 64}}),
        "manifest.json lists extra.bin, which does not exist")),
    "ckpt-sweep-export": Case("checkpoint", "sweep an export-hf directory", [
        "sweep", "{tmp}/exp", "--no-progress", "--out", "{tmp}/s.json"], prepare=_export, hf=True),
    "ckpt-tokenizer-edited": Case("checkpoint", "generate with a tokenizer.json edited after the save", [
        "generate", "{copy}", "1+1="], prepare=_write("checkpoint/tokenizer.json",
                                                      '{"kind": "char", "chars": "1023456789+="}')),
    "ckpt-tokenizer-edited-init-from": Case("checkpoint", "train.init_from a run whose tokenizer.json was edited", [
        *TRAIN, *TINY, "--set", "train.init_from={copy}"], prepare=_write("checkpoint/tokenizer.json",
                                                                          '{"kind": "char", "chars": "1023456789+="}')),
    "ckpt-generate-hf-dir": Case("checkpoint", "generate from an HF model directory", ["generate", "{base}",
                                 "1+1="], hf=True),
    "ckpt-state-flipped": Case("checkpoint", "a flipped byte in the trainer state, on --resume", RESUME,
                               prepare=lambda tmp, copy: (_lose_history(copy),
                                                          _flip("checkpoint/trainer_state.pt")(tmp, copy)),
                               before="checkpoints/ removed, one byte of checkpoint/trainer_state.pt flipped"),
    "ckpt-state-not-a-state": Case("checkpoint", "a trainer state of another shape (manifest rewritten to match)",
                                   RESUME, prepare=lambda tmp, copy: (_lose_history(copy),
                                                                      _rewrite_state({"step": 2, "x": 1})(tmp, copy)),
                                   before="checkpoints/ removed, trainer_state.pt = {step: 2, x: 1}, manifest "
                                          "to match"),
    "ckpt-state-optimizer": Case("checkpoint", "an optimizer state that is not a state dict", RESUME,
                                 prepare=lambda tmp, copy: (_lose_history(copy), _rewrite_state(
                                     {"step": 2, "optimizer": [1], "generators": {}})(tmp, copy)),
                                 before="checkpoints/ removed, trainer_state.pt with optimizer = [1], manifest "
                                        "to match"),
    # --- data files -----------------------------------------------------------------------------------------------
    "data-empty": Case("data", "empty file", [*S, "--data", "{tmp}/d.jsonl"], {"d.jsonl": ""}),
    "data-blank-lines": Case("data", "only blank lines", [*S, "--data", "{tmp}/d.jsonl"], {"d.jsonl": "\n\n"}),
    "data-missing-file": Case("data", "missing file", [*S, "--data", "{tmp}/nope.jsonl"]),
    "data-dev-null": Case("data", "a device, not a file", [*S, "--data", "/dev/null"]),
    "data-directory": Case("data", "a directory", [*S, "--data", "{tmp}"]),
    "data-binary": Case("data", "binary file", [*S, "--data", "{tmp}/d.jsonl"], {"d.jsonl": b"\xff\xfe\x00junk"}),
    "data-malformed": Case("data", "malformed JSON (line 2)", [*S, "--data", "{tmp}/d.jsonl"],
                           {"d.jsonl": ROW + '{"num1": 1, \n'}),
    "data-not-object": Case("data", "a row that is not an object", [*S, "--data", "{tmp}/d.jsonl"],
                            {"d.jsonl": "[1, 2, 3]\n"}),
    "data-missing-field": Case("data", "missing field", [*S, "--data", "{tmp}/d.jsonl"],
                               {"d.jsonl": '{"num1": 1, "answer": 3}\n'}),
    "data-string-number": Case("data", "number as a string", [*S, "--data", "{tmp}/d.jsonl"],
                               {"d.jsonl": '{"num1": "1", "num2": 2, "answer": 3}\n'}),
    "data-float": Case("data", "non-integer number", [*S, "--data", "{tmp}/d.jsonl"],
                       {"d.jsonl": '{"num1": 1.5, "num2": 2, "answer": 3}\n'}),
    "data-bool": Case("data", "bool for a number", [*S, "--data", "{tmp}/d.jsonl"],
                      {"d.jsonl": '{"num1": true, "num2": 2, "answer": 3}\n'}),
    "data-negative": Case("data", "negative number", [*S, "--data", "{tmp}/d.jsonl"],
                          {"d.jsonl": '{"num1": -1, "num2": 2, "answer": 1}\n'}),
    "data-wrong-answer": Case("data", "answer ≠ num1 + num2", [*S, "--data", "{tmp}/d.jsonl"],
                              {"d.jsonl": '{"num1": 1, "num2": 2, "answer": 4}\n'}),
    "data-nan": Case("data", "NaN in a row", [*S, "--data", "{tmp}/d.jsonl"],
                     {"d.jsonl": '{"num1": NaN, "num2": 1, "answer": 1}\n'}),
    "data-exponent": Case("data", "number in exponent notation", [*S, "--data", "{tmp}/d.jsonl"],
                          {"d.jsonl": '{"num1": 1e3, "num2": 1, "answer": 1001}\n'}),
    "data-duplicate-key": Case("data", "a key given twice in a row (json.loads keeps the last)", [
        *S, "--data", "{tmp}/d.jsonl"], {"d.jsonl": '{"num1": 1, "num1": 12, "num2": 34, "answer": 46}\n'}),
    "data-huge-number": Case("data", "a 5,001-digit number", [*S, "--data", "{tmp}/d.jsonl"], {
        "d.jsonl": '{"num1": 1' + "0" * 5000 + ', "num2": 1, "answer": 2}\n'}),
    "data-deep": Case("data", "a row nested 100,000 levels deep", [*S, "--data", "{tmp}/d.jsonl"],
                      {"d.jsonl": DEEP + "\n"}),
    "data-too-wide": Case("data", "operands too wide for the model's positions", [*S, "--data", "{tmp}/d.jsonl"],
                          {"d.jsonl": ROW + '{"num1": 123456789, "num2": 1, "answer": 123456790}\n'}),
    "chat-null-content": Case("data", "chat record with null content", FT, chat(
        '{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "#### 2"}]}'), hf=True),
    "chat-no-role": Case("data", "chat message without a role", FT, chat(
        GOOD_CHAT, '{"messages": [{"content": "hi"}, {"role": "assistant", "content": "#### 2"}]}'), hf=True),
    "chat-string-messages": Case("data", "chat messages that are strings", FT, chat(
        '{"messages": ["hello", "#### 2"]}'), hf=True),
    "chat-not-object": Case("data", "chat record that is not an object", FT, chat(GOOD_CHAT, '"just text"'), hf=True),
    "chat-malformed": Case("data", "malformed JSON in chat data", FT, chat(GOOD_CHAT, '{"messages": ['), hf=True),
    "chat-no-target": Case("data", "chat data with nothing to learn", FT, chat(
        '{"messages": [{"role": "user", "content": "hi"}]}'), hf=True),
    "chat-missing-file": Case("data", "missing chat data file", FT, {"ft.yaml": FT_YAML}, hf=True),
    "chat-dict-messages": Case("data", "chat messages that are an object, not a list", FT, chat(
        GOOD_CHAT, '{"messages": {"role": "user", "content": "hi"}}'), hf=True),
    "chat-number-response": Case("data", "a response that is a number", FT, chat(
        '{"problem": "1+1?", "solution": 2}'), hf=True),
    "chat-template-syntax": Case("data", "a chat template with a syntax error", FT, template(
        "{% for m in messages %}{{ m.content "), hf=True),
    "chat-template-raises": Case("data", "a chat template that raises", FT, template(
        "{{ raise_exception('this template takes no user turn') }}"), hf=True),
    "chat-template-undefined": Case("data", "a chat template that reads an undefined variable", FT, template(
        "{% for m in messages %}{{ foo.bar }}{% endfor %}"), hf=True),
    "chat-template-unsafe": Case("data", "a chat template the sandbox refuses", FT, template(
        "{{ messages.__class__.__mro__ }}"), hf=True),
    "chat-template-bogus": Case("data", "a chat template name that is none", FT, {
        "ft.yaml": FT_YAML.replace("  max_length: 256\n", "  max_length: 256\n  chat_template: bogus-name\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "task-jsonl-missing-field": Case("data", "a JSONL row without the configured answer field",
                                     ["train", "--config", "jsonl-stars", "--out", "{tmp}/out", "--set",
                                      "data.path={tmp}/d.jsonl"],
                                     {"d.jsonl": '{"prompt": "ab", "answer": "ba"}\n'
                                                 '{"prompt": "cd", "reply": "dc"}\n'}),
    "task-jsonl-other-fields": Case("data", "JSONL rows whose fields are named otherwise than configured",
                                    ["train", "--config", "jsonl-stars", "--out", "{tmp}/out", "--set",
                                     "data.path={tmp}/d.jsonl", "--set", "data.prompt_field=question"],
                                    {"d.jsonl": '{"prompt": "ab", "answer": "ba"}\n'}),
    "task-jsonl-empty": Case("data", "an empty JSONL file", ["train", "--config", "jsonl-stars", "--out", "{tmp}/out",
                             "--set", "data.path={tmp}/d.jsonl"], {"d.jsonl": ""}),
    "task-jsonl-no-held-out": Case("data", "too few rows for a held-out split", ["train", "--config", "jsonl-stars",
                                   "--out", "{tmp}/out", "--set", "data.path={tmp}/d.jsonl"],
                                   {"d.jsonl": '{"prompt": "ab", "answer": "ba"}\n'}),
    "task-jsonl-no-path": Case("data", "the jsonl task without a file", ["train", "--config", "jsonl-stars",
                               "--out", "{tmp}/out", "--set", "data.path="]),
    "task-jsonl-empty-prompt": Case("data", "a JSONL row with an empty prompt", ["train", "--config", "jsonl-stars",
                                    "--out", "{tmp}/out", "--set", "data.path={tmp}/d.jsonl"],
                                    {"d.jsonl": '{"prompt": "ab", "answer": "ba"}\n{"prompt": "", "answer": "x"}\n'}),
    "task-jsonl-test-is-train": Case("data", "data.test_path is data.path", ["train", "--config", "jsonl-stars",
                                     "--out", "{tmp}/out", "--set", "data.path={tmp}/d.jsonl", "--set",
                                     "data.test_path={tmp}/d.jsonl"],
                                     {"d.jsonl": '{"prompt": "ab", "answer": "ba"}\n'}),
    "task-text-device": Case("data", "a text corpus that is a device (read forever)", ["train", "--config",
                             "text-stars", "--out", "{tmp}/out", "--set", "data.path=/dev/zero"]),
    "arg-out-empty": Case("arguments", "an empty --out", ["train", "--config", "addition-prenorm-stars", "--out", "",
                          "--no-progress"]),
    "task-text-empty": Case("data", "an empty text file", ["train", "--config", "text-stars", "--out", "{tmp}/out",
                            "--set", "data.path={tmp}/t.txt"], {"t.txt": ""}),
    "task-text-short": Case("data", "a text shorter than a window", ["train", "--config", "text-stars", "--out",
                            "{tmp}/out", "--set", "data.path={tmp}/t.txt"], {"t.txt": "Too short a corpus."}),
    "task-text-missing": Case("data", "a text corpus that does not exist", ["train", "--config", "text-stars",
                              "--out", "{tmp}/out", "--set", "data.path={tmp}/nowhere"]),
    "task-text-window": Case("data", "a window longer than the positions", ["train", "--config", "text-stars",
                             "--out", "{tmp}/out", "--set", "data.path={tmp}/t.txt", "--set", "data.window=100"],
                             {"t.txt": "x" * 500}),
    "task-foreign-key": Case("data", "another task's key", [*TRAIN, "--set", "data.window=32"]),
    "task-chain-too-long": Case("data", "chains longer than the positions allow", ["train", "--config",
                                "chain-stars", "--out", "{tmp}/out", "--set", "data.max_size=20"]),
    "task-parity-too-short": Case("data", "parity strings too short for a held-out slice", ["train", "--config",
                                  "parity-stars", "--out", "{tmp}/out", "--set", "data.min_size=3"]),
    "task-sizes-not-graded": Case("arguments", "--sizes for a task without sizes", [*S, "--sizes", "1:4", "--out",
                                  "{tmp}/s.json"]),
    "task-unknown": Case("config", "unknown task", [*TRAIN, "--set", "data.task=sorting"]),
    # --- outputs never destroy inputs ---------------------------------------------------------------------------
    "out-sweep-exists": Case("outputs", "sweep over an earlier sweep.json", ["sweep", "{run}", "--no-progress"]),
    "out-analyze-exists": Case("outputs", "analyze over an earlier dynamics.json", ["analyze", "{run}",
                               "--no-progress"]),
    "out-sweep-to-dir": Case("outputs", "sweep --out a directory", [*S, "--out", "{tmp}"]),
    "out-sweep-over-data": Case("outputs", "sweep --out its own --data file, --force", [
        *S, "--data", "{tmp}/t.jsonl", "--out", "{tmp}/t.jsonl", "--force"], {"t.jsonl": ROW}),
    "out-sweep-over-data-link": Case("outputs", "sweep --out another path to its --data file, --force", [
        *S, "--data", "{tmp}/t.jsonl", "--out", "{tmp}/./t.jsonl", "--force"], {"t.jsonl": ROW}),
    "out-analyze-over-data": Case("outputs", "analyze --out the folder holding its --data file as dynamics.json", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "1", "--spectral-n", "0", "--pca-n", "0",
        "--no-plot", "--data", "{tmp}/dynamics.json", "--out", "{tmp}", "--force"], {"dynamics.json": ROW}),
    "out-plot-partial": Case("outputs", "plot whose second figure fails: the first is not left behind", [
        "plot", "{tmp}/d/dynamics.json", "--out", "{tmp}/fig.png"], prepare=_dynamics_without_state_norm),
    "out-sweep-over-metrics": Case("outputs", "sweep --out the run's metrics.jsonl, --force", [
        *S, "--out", "{run}/metrics.jsonl", "--force"]),
    "out-sweep-over-config": Case("outputs", "sweep --out the run's config.yaml, --force", [
        *S, "--out", "{run}/config.yaml", "--force"]),
    "out-analyze-into-tensorboard": Case("outputs", "analyze --out the run's tensorboard/ folder, --force", [
        *A, "--out", "{run}/tensorboard", "--force"]),
    "an-spectral-n-above-n": Case("arguments", "--spectral-n above --n", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "8", "--pca-n", "0",
        "--no-plot", "--out", "{tmp}/a"]),
    "an-pca-n-above-n": Case("arguments", "--pca-n above --n", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--pca-n", "5",
        "--no-plot", "--out", "{tmp}/a"]),
    "out-export-into-checkpoint": Case("outputs", "export-hf --out the run's checkpoint/", ["export-hf", "{run}",
                                       "--out", "{run}/checkpoint"], hf=True),
    "out-export-to-file": Case("outputs", "export-hf --out an existing file", ["export-hf", "{run}", "--out",
                               "{tmp}/f"], {"f": "keep me"}, hf=True),
    "out-sweep-into-checkpoint": Case("outputs", "sweep --out inside the run's checkpoint/", [
        *S, "--out", "{copy}/checkpoint/my-sweep.json"]),
    "out-sweep-into-history": Case("outputs", "sweep --out inside the run's checkpoints/", [
        *S, "--out", "{copy}/checkpoints/my-sweep.json"]),
    "out-analyze-into-checkpoint": Case("outputs", "analyze --out inside the run's checkpoint/", [
        *A, "--out", "{copy}/checkpoint/dyn"]),
    "out-plot-into-checkpoint": Case("outputs", "plot --out inside the run's checkpoint/", [
        "plot", "{run}", "--out", "{copy}/checkpoint/a.png"]),
    "out-analyze-to-file": Case("outputs", "analyze --out an existing file", [*A, "--out", "{tmp}/f"],
                                {"f": "keep me"}),
    "out-analyze-png-exists": Case("outputs", "analyze over an earlier dynamics.png (no dynamics.json)", [
        *[a for a in A if a != "--no-plot"], "--out", "{tmp}"], {"dynamics.png": "keep me"}),
    "out-analyze-trajectories-exists": Case("outputs", "analyze over an earlier trajectories.png", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--pca-n", "2",
        "--out", "{tmp}"], {"trajectories.png": "keep me"}),
    "out-plot-exists": Case("outputs", "plot over an earlier figure", ["plot", "{run}", "--out", "{tmp}/a.png"],
                            {"a.png": "keep me"}),
    "out-plot-dynamics-exists": Case("outputs", "plot over an earlier dynamics figure", [
        "plot", "{run}", "--out", "{tmp}/a.png"], {"a-dynamics.png": "keep me"}),
    "out-study-base-unfinished": Case("outputs", "study --only a fine-tune whose base run has not finished", [
        "study", "addition", "--out", "{tmp}/st", "--only", "recipe-stars-s0"]),
    "out-study-to-file": Case("outputs", "study --out an existing file", ["study", "addition", "--out", "{tmp}/f"],
                              {"f": "keep me"}),
    "out-study-foreign-dir": Case("outputs", "study --out a directory of other files", [
        "study", "addition", "--out", "{tmp}/docs", "--only", "stars"], prepare=_foreign_dir),
    "out-export-into-history": Case("outputs", "export-hf --out inside the run's checkpoints/", [
        "export-hf", "{run}", "--out", "{copy}/checkpoints/hf"], hf=True),
    "out-eval-to-file": Case("outputs", "eval-lm --out an existing file", ["eval-lm", "{base}", "--tasks", "x",
                             "--out", "{tmp}/f"], {"f": "keep me"}, hf=True),
    "out-eval-into-checkpoint": Case("outputs", "eval-lm --out inside a run's checkpoint/", [
        "eval-lm", "{base}", "--tasks", "x", "--out", "{hfrun}/checkpoint/e"], hf=True),
    # --- devices, memory, the operating system --------------------------------------------------------------------
    "dev-train-cuda": Case("system", "train.device=cuda without CUDA", [*TRAIN, "--set", "train.device=cuda"]),
    "dev-sweep-cuda": Case("system", "--device cuda without CUDA", [*S, "--device", "cuda"]),
    "dev-sweep-cuda-index": Case("system", "--device cuda:1 without CUDA", [*S, "--device", "cuda:1"]),
    "dev-sweep-foo": Case("system", "unknown device", [*S, "--device", "foo"]),
    "dev-sweep-meta": Case("system", "the meta device", [*S, "--device", "meta"]),
    "mem-huge-width": Case("system", "a model too wide for memory", [*TRAIN, "--set", "model.d_model=65536",
                           "--set", "model.d_ff=262144", "--set", "model.n_heads=8"]),
    "mem-huge-batch": Case("system", "a batch too large for memory", [*TRAIN, "--set", "train.batch_size=100000000"]),
    "os-out-unwritable": Case("system", "--out where nothing can be written", [*TRAIN[:4], "/proc/looplm-out", *TINY]),
    "os-sweep-out-unwritable": Case("system", "sweep --out where nothing can be written", [*S, "--out",
                                    "/proc/looplm-sweep.json"]),
    # --- generation -------------------------------------------------------------------------------------------------
    "gen-space": Case("generation", "a character outside the vocabulary (space)", [*G, "1 + 2="]),
    "gen-bad-char": Case("generation", "a letter", [*G, "12a4+1="]),
    "gen-too-long": Case("generation", "a prompt longer than the positions", [*G, "1234567+1234567="]),
    "gen-empty-prompt": Case("generation", "an empty prompt", [*G, ""]),
    "gen-dash-prompt": Case("generation", "a prompt that starts with '-' (read as an option)", [*G, "1+2=", "-x"]),
    # --- plot inputs ------------------------------------------------------------------------------------------------
    "plot-missing": Case("plots", "input that does not exist", ["plot", "{tmp}/none.json", "--out", "{tmp}/a.png"]),
    "plot-not-json": Case("plots", "input that is not JSON", ["plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
                          {"x.json": "{oops"}),
    "plot-neither": Case("plots", "JSON that is neither a sweep nor dynamics", ["plot", "{tmp}/x.json", "--out",
                         "{tmp}/a.png"], {"x.json": '{"hello": 1}'}),
    "plot-depths-text": Case("plots", "depths that are not integers", ["plot", "{tmp}/x.json", "--out",
                             "{tmp}/a.png"], {"x.json": '{"depths": ["a"], "accuracy": [1]}'}),
    "plot-accuracy-length": Case("plots", "one accuracy short", ["plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
                                 {"x.json": '{"depths": [1, 2], "accuracy": [1]}'}),
    "plot-dynamics-malformed": Case("plots", "a dynamics.json without its metrics", ["plot", "{tmp}/x.json",
                                    "--out", "{tmp}/a.png"],
                                    {"x.json": '{"kind": "looplm.dynamics", "depths": [1], "accuracy": [1]}'}),
    "plot-out-not-png": Case("plots", "--out that is not a .png", ["plot", "{run}", "--out", "{tmp}/a.jpg"]),
    "plot-ppl-below-one": Case("plots", "a perplexity below 1", ["plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
                               {"x.json": '{"depths": [1, 2], "accuracy": [0.5, 0.6], "ppl": [1, -5], '
                                          '"scored_by": "perplexity"}'}),
    "plot-deep-json": Case("plots", "JSON nested 100,000 levels deep", ["plot", "{tmp}/x.json", "--out",
                           "{tmp}/a.png"], {"x.json": DEEP}),
    "plot-accuracy-above-one": Case("plots", "an exact match above 1", ["plot", "{tmp}/x.json", "--out",
                                    "{tmp}/a.png"], {"x.json": '{"depths": [1, 2], "accuracy": [0.5, 1.5]}'}),
    "plot-accuracy-nan": Case("plots", "an exact match that is NaN", ["plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
                              {"x.json": '{"depths": [1, 2], "accuracy": [0.5, NaN]}'}),
    "plot-by-size-misshaped": Case("plots", "accuracy_by_size with a row short", [
        "plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
        {"x.json": '{"depths": [1, 2], "accuracy": [1, 1], "sizes": [1, 2], "accuracy_by_size": [[1, 1], [1]]}'}),
    "plot-label-empty": Case("plots", "an empty label", ["plot", "{run}", "--labels", "", "--out", "{tmp}/a.png"]),
    "plot-labels-count": Case("plots", "more labels than inputs", ["plot", "{run}", "--labels", "a", "b", "--out",
                              "{tmp}/a.png"]),
    "plot-empty-dir": Case("plots", "a directory with neither file", ["plot", "{tmp}", "--out", "{tmp}/a.png"]),
    "plot-train-loops-text": Case("plots", "train_loops that are not two integers", [
        "plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
        {"x.json": '{"depths": [1, 2], "accuracy": [0.5, 0.6], "train_loops": ["a", "b"]}'}),
    "plot-train-loops-reversed": Case("plots", "train_loops reversed", [
        "plot", "{tmp}/x.json", "--out", "{tmp}/a.png"],
        {"x.json": '{"depths": [1, 2], "accuracy": [0.5, 0.6], "train_loops": [8, 2]}'}),
}
