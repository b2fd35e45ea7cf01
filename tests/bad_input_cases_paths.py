"""The bad-input table's rows for paths that cannot be reached (symbolic links that point at each other) and for
command lines with options a command does not take. tests/test_bad_inputs.py runs them with the rows of
tests/bad_input_cases.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from .bad_input_cases import FT, FT_YAML, GOOD_CHAT, TINY, TRAIN, Case, chat, setting, template
from .bad_input_damage import _dangling_link, _link_loop, _runs_linked_into_corpus, _tar_corpus

S = ["sweep", "{run}", "--no-progress", "--depths", "1:2", "--n", "4"]
DYN = ('{"kind": "looplm.dynamics", "depths": [1], "accuracy": [0.5], "n": 2, "metrics": {}, "spectral": {}, '
       '"pca": {"samples": []}}')  # the least a dynamics.json holds for plot
STUDY_RUN = Path(__file__).resolve().parents[1] / "docs/results/addition/runs/recipe-fixed8-s0"  # no weights kept
LONG = "r" * 300  # a name past the file system's limit of 255 bytes
A = ["analyze", "{copy}", "--no-progress", "--depths", "1:2", "--n", "2", "--out", "{tmp}/an"]

MUL = ["".join(json.dumps({"prompt": f"{a}*{k}=", "answer": str(a * k)}) + "\n" for a in range(60)) for k in (3, 4)]


def _demo_folder(tmp: Path, copy: Path) -> None:
    """<tmp>/dm: a `looplm demo` --out: stage1/ and stage2/, each a copy of the run"""
    import shutil

    for stage in ("stage1", "stage2"):
        shutil.copytree(copy, tmp / "dm" / stage)
def _run_in_corpus(tmp: Path, copy: Path) -> None:
    """<tmp>/c/sub/r1: a copy of the run, inside the corpus folder"""
    import shutil

    shutil.copytree(copy, tmp / "c" / "sub" / "r1")


def _text_run(tmp: Path, copy: Path) -> None:
    """<tmp>/tr: a tiny text run trained on the corpus folder <tmp>/corpus"""
    from looplm import fit, load_config

    fit(load_config("text-stars", [*TINY[1::2], f"data.path={tmp}/corpus", "data.window=15"]), tmp / "tr",
        progress=False)


def _fine_tune_of_text_run(tmp: Path, copy: Path) -> None:
    """<tmp>/ft: a text run started from <tmp>/tr (train.init_from), trained on the folder <tmp>/corpus"""
    from looplm import fit, load_config

    _text_run(tmp, copy)
    (tmp / "small.txt").write_text("the lazy dog sleeps under the quick brown fox\n" * 20)
    fit(load_config("text-stars", [*TINY[1::2], f"data.path={tmp}/small.txt", "data.window=15",
                                   f"train.init_from={tmp}/tr"]), tmp / "ft", progress=False)


def _fine_tune_of_fine_tune(tmp: Path, copy: Path) -> None:
    """<tmp>/ft2: a text run started from <tmp>/ft, itself started from <tmp>/tr (trained on the folder <tmp>/corpus)"""
    from looplm import fit, load_config

    _fine_tune_of_text_run(tmp, copy)
    fit(load_config("text-stars", [*TINY[1::2], f"data.path={tmp}/small.txt", "data.window=15",
                                   f"train.init_from={tmp}/ft"]), tmp / "ft2", progress=False)


def _embedding(how: str) -> Callable[[Path, Path], None]:
    """The run's token embedding edited (NaN, or scaled past what a forward can hold) and its manifest updated to
    match, as a tool that rewrote both would."""
    def prep(tmp: Path, copy: Path) -> None:
        from safetensors.torch import load_file, save_file

        d = copy / "checkpoint"
        w = load_file(d / "model.safetensors")
        if how == "nan":
            w["tok_emb.weight"][3] = float("nan")
        else:
            w["tok_emb.weight"] *= 1e36
        save_file(w, d / "model.safetensors")
        m = json.loads((d / "manifest.json").read_text())
        raw = (d / "model.safetensors").read_bytes()
        m["files"]["model.safetensors"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
        (d / "manifest.json").write_text(json.dumps(m))
    prep.__doc__ = ("a row of its token embedding set to NaN" if how == "nan" else
                    "its token embedding scaled by 1e36 (finite)") + ", manifest updated to match"
    return prep


def _hard_link(tmp: Path, copy: Path) -> None:
    """<tmp>/hl.json: a hard link to the run's sweep.json"""
    (tmp / "hl.json").hardlink_to(copy / "sweep.json")


def _jsonl_run(tmp: Path, copy: Path) -> None:
    """<tmp>/j1: a tiny jsonl run trained on <tmp>/mul.jsonl (a hash split of 20%)"""
    from looplm import fit, load_config

    fit(load_config("jsonl-stars", [*TINY[1::2], f"data.path={tmp}/mul.jsonl", "data.test_fraction=0.2"]), tmp / "j1",
        progress=False)


PATH_CASES: dict[str, Case] = {
    "arg-sweep-out-in-link-loop": Case("arguments", "sweep --out inside links that point at each other", [
        *S, "--out", "{tmp}/loopa/s.json"], prepare=_link_loop),
    "arg-plot-out-in-link-loop": Case("arguments", "plot --out inside links that point at each other", [
        "plot", "{run}", "--out", "{tmp}/loopa/a.png"], prepare=_link_loop),
    "arg-analyze-out-link-loop": Case("arguments", "analyze --out a link in a loop of links", [
        "analyze", "{run}", "--no-progress", "--depths", "1:2", "--n", "4", "--spectral-n", "0", "--pca-n", "0",
        "--no-plot", "--out", "{tmp}/loopa"], prepare=_link_loop),
    "arg-train-out-link-loop": Case("arguments", "train --out a link in a loop of links", [
        *TRAIN[:-3], "--out", "{tmp}/loopa", "--no-progress", *TINY], prepare=_link_loop),
    "arg-sweep-checkpoint-link-loop": Case("arguments", "sweep a checkpoint path that is a link in a loop of links", [
        "sweep", "{tmp}/loopa", "--no-progress"], prepare=_link_loop),
    "arg-sweep-data-in-link-loop": Case("arguments", "sweep --data through links that point at each other", [
        *S, "--data", "{tmp}/loopa/d.jsonl", "--out", "{tmp}/s.json"], prepare=_link_loop),
    "arg-train-config-in-link-loop": Case("arguments", "train --config through links that point at each other", [
        "train", "--config", "{tmp}/loopa/c.yaml", "--out", "{tmp}/out"], prepare=_link_loop),
    "arg-analyze-checkpoint-in-link-loop": Case("arguments", "analyze a run path through links that point at each "
                                                "other", ["analyze", "{tmp}/loopa/run", "--no-progress"],
                                                prepare=_link_loop),
    "arg-train-out-dangling-link": Case("arguments", "train --out a link to nothing", [
        *TRAIN[:-3], "--out", "{tmp}/dang", "--no-progress", *TINY], prepare=_dangling_link),
    "arg-study-out-link-loop": Case("arguments", "study --out a link in a loop of links", [
        "study", "addition", "--out", "{tmp}/loopa", "--quick"], prepare=_link_loop),
    "arg-study-out-in-dangling-link": Case("arguments", "study --out inside a link to nothing", [
        "study", "addition", "--out", "{tmp}/dang/st", "--quick"], prepare=_dangling_link),
    "run-out-inside-corpus-through-link": Case("rundir", "train a text run with --out in a folder linked into its "
                                               "corpus (the reader follows the link)", [
        *TRAIN[:2], "text-stars", "--out", "{tmp}/runs/r", "--no-progress", *TINY, "--set", "data.path={tmp}/corpus"],
        {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20}, prepare=_runs_linked_into_corpus),
    "arg-analyze-spectral-depths-without-samples": Case("arguments", "analyze --spectral-depths with --spectral-n 0 "
                                                        "(the named depths got no spectra)", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-depths", "2,3",
        "--spectral-n", "0", "--out", "{tmp}/an"]),
    "arg-analyze-spectral-n-without-depths": Case("arguments", "analyze --spectral-n with --spectral-depths none", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-depths", "none",
        "--spectral-n", "4", "--out", "{tmp}/an"]),
    "arg-analyze-hutchinson-without-samples": Case("arguments", "analyze --hutchinson with --spectral-n 0 (no "
                                                   "estimate taken, the count recorded)", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--hutchinson", "4",
        "--out", "{tmp}/an"]),
    "arg-analyze-seed-without-samples": Case("arguments", "analyze --seed with --spectral-n 0 (no probe drawn, the "
                                             "seed recorded)", [
        "analyze", "{run}", "--no-progress", "--depths", "1:3", "--n", "4", "--spectral-n", "0", "--seed", "7",
        "--out", "{tmp}/an"]),
    "data-text-folder-compressed": Case("data", "train on a text folder that also holds a .txt.gz file (it was left "
                                        "out)", [*TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress", *TINY,
                                                 "--set", "data.path={tmp}/corpus", "--set", "data.window=16"], {
        "corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20, "corpus/b.txt.gz": b"\x1f\x8b\x08"}),
    "cfg-set-value-with-comment": Case("config", "a --set value with ' #' in it (YAML read the rest as a comment: "
                                       "the run trained on another path)", [
        *TRAIN[:-3], "--out", "{tmp}/r", "--set", "data.path=books #2.txt"]),
    "cfg-set-quoted-value-then-comment": Case("config", "a quoted --set value followed by ' #' (the tail was dropped)",
                                              [*TRAIN[:-3], "--out", "{tmp}/r", "--set", "data.path='books' #2.txt"]),
    "cfg-yaml-merge-key": Case("config", "a config file with a YAML merge key (<<: *anchor)", [
        "train", "--config", "{tmp}/c.yaml", "--out", "{tmp}/r"],
        {"c.yaml": "base: &b\n  steps: 2\ntrain:\n  <<: *b\n"}),
    "cfg-loops-too-many": Case("config", "loops.num_loops of 10**12 (with backprop_loops the memory check passed, "
                               "and the first step never ended)", [*TRAIN[:-3], "--out", "{tmp}/r", "--set",
                                                                    "loops.num_loops=1000000000000", "--set",
                                                                    "loops.backprop_loops=1"]),
    "arg-sweep-out-dev-stdout": Case("arguments", "sweep --out /dev/stdout --force (read first as an earlier result: "
                                     "a hang on a pipe; --force replaced the link)", [
        *S, "--out", "/dev/stdout", "--force"]),
    "cfg-dev-zero": Case("config", "--config /dev/zero (a device: it was read until memory ran out)", [
        "train", "--config", "/dev/zero", "--out", "{tmp}/r", "--no-progress"]),
    "plot-dev-zero": Case("arguments", "plot /dev/zero (a device: it was read until memory ran out)", [
        "plot", "/dev/zero", "--out", "{tmp}/a.png"]),
    "cfg-tilde-config": Case("config", "--config=~/my.yaml (no shell expands ~ after =; it was \"neither a file nor "
                             "a preset\")", ["train", "--config=~/my.yaml", "--out", "{tmp}/r", "--no-progress"]),
    "data-tilde-path": Case("data", "--set data.path=~/corpus.txt (no shell expands ~ there; it was \"does not "
                            "exist\")", [*TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress", "--set",
                                          "data.path=~/corpus.txt"]),
    "arg-study-quick-full-run": Case("arguments", "study --quick --only a run of the full grid only (it was called "
                                     "an unknown name)", ["study", "addition", "--out", "{tmp}/s", "--quick", "--only",
                                                           "random-poisson"]),
    "arg-study-quick-full-and-unknown": Case("arguments", "study --quick --only a full-grid run and an unknown name "
                                             "(both were called unknown)", [
        "study", "addition", "--out", "{tmp}/s", "--quick", "--only", "random-poisson", "no-such-run"]),
    "ckpt-weights-file": Case("checkpoint", "sweep given the weights file instead of its folder (it was \"no "
                              "model.safetensors in .../model.safetensors\")", [
        "sweep", "{run}/checkpoint/model.safetensors", "--no-progress"]),
    "ckpt-dev-null": Case("checkpoint", "sweep /dev/null as the checkpoint (it was \"a file\", with a hint to give "
                          "/dev)", ["sweep", "/dev/null", "--no-progress"]),
    "run-out-dev-null": Case("rundir", "train --out /dev/null (it was \"a file\")", [
        *TRAIN[:-3], "--out", "/dev/null", "--no-progress", *TINY]),
    "arg-export-out-dev-stdout": Case("arguments", "export-hf --out /dev/stdout (it was called a file)", [
        "export-hf", "{run}", "--out", "/dev/stdout"], hf=True),
    "data-text-tar-as-txt": Case("data", "train on an uncompressed tar given as the text (its headers and padding were "
                                 "read as text)", [*TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress",
                                                   *TINY, "--set", "data.path={tmp}/corpus/shard-00001", "--set",
                                                   "data.window=16"],
                                 prepare=_tar_corpus),
    "run-out-in-tensorboard": Case("rundir", "train --out another run's tensorboard/ folder (that run's logger "
                                   "writes into it)", [*TRAIN[:4], "{run}/tensorboard", *TINY]),
    "arg-plot-same-result-twice": Case("arguments", "plot a run and its own sweep.json (one curve drawn twice, "
                                       "under one label)", ["plot", "{run}", "{run}/sweep.json", "--out",
                                                            "{tmp}/p.png"]),
    "arg-plot-hard-link-twice": Case("arguments", "plot a sweep.json and a hard link to it (one curve drawn twice)",
                                     ["plot", "{copy}/sweep.json", "{tmp}/hl.json", "--out", "{tmp}/p.png"],
                                     prepare=_hard_link),
    "run-export-into-checkpoint-tmp": Case("rundir", "export-hf --out RUN/checkpoint.tmp (the run's next resume "
                                           "deleted it as a torn save)", ["export-hf", "{run}", "--out",
                                                                          "{run}/checkpoint.tmp"], hf=True),
    "run-out-checkpoint-old": Case("rundir", "train --out another run's checkpoint.old (its resume retired and "
                                   "pruned it)", [*TRAIN[:4], "{run}/checkpoint.old", *TINY]),
    "cfg-power-iters-too-many": Case("config", "reg.power_iters of 10**12 (each a JVP: the first step never ended)", [
        *TRAIN[:-3], "--out", "{tmp}/r", "--set", "reg.kind=power", "--set", "reg.power_iters=1000000000000"]),
    "arg-generate-prompt-not-utf8": Case("arguments", "generate a prompt that is not UTF-8 (a Latin-1 terminal: a "
                                         "traceback on a BPE run)", ["generate", "{run}", "caf\udce9"],
                                         shown="looplm generate <run> $'caf\\xe9'"),
    "arg-sweep-out-unexpanded-tilde": Case("arguments", "sweep --out=~/s.json (no shell expands it: a folder named ~ "
                                           "was made here)", [*S, "--out=~/s.json"]),
    "arg-analyze-iters-too-many": Case("arguments", "analyze --iters above the depth cap (ran until stopped)", [
        "analyze", "{run}", "--iters", "2000000", "--out", "{tmp}/an"]),
    "arg-analyze-hutchinson-too-many": Case("arguments", "analyze --hutchinson above the depth cap (ran until "
                                            "stopped)", ["analyze", "{run}", "--hutchinson", "2000000", "--out",
                                                         "{tmp}/an"]),
    "arg-sweep-out-unexpanded-user": Case("arguments", "sweep --out=~root/s.json (no shell expands it: a folder named "
                                          "~root was made here)", [*S, "--out=~root/s.json"]),
    "run-own-config-by-hand": Case("rundir", "train --resume into a folder holding the user's own short config.yaml "
                                   "(called a run, then replaced)", [*TRAIN[:4], "{tmp}/exp", "--resume", *TINY],
                                   {"exp/config.yaml": "# experiment 2: my settings\ntrain:\n  lr: 0.003\n"}),
    "arg-sweep-out-dot": Case("arguments", "sweep --out a new folder/. (a file)", [*S, "--out", "{tmp}/newfolder/."]),
    "arg-train-unknown-option": Case("arguments", "train with an option it does not take (--steps for "
                                     "--set train.steps)", [*TRAIN, "--steps", "3"]),
    "arg-sweep-unknown-option": Case("arguments", "sweep with --set (only train and demo take settings)", [
        *S, "--set", "train.steps=2"]),
    "task-text-whitespace": Case("data", "a text file of blank lines only (it was called empty)", [
        "train", "--config", "text-stars", "--out", "{tmp}/out", "--set", "data.path={tmp}/t.txt"],
        {"t.txt": "\n\n   \n\t\n" * 500}),
    "task-text-latin1-byte": Case("data", "a text file with one Latin-1 byte (the error gave no position)", [
        "train", "--config", "text-stars", "--out", "{tmp}/out", "--set", "data.path={tmp}/t.txt"],
        {"t.txt": b"first line\nsecond caf\xe9 line\n"}),
    "run-sweep-nan-weights": Case("rundir", "sweep a run whose weights hold NaN (scored as exact match 0.000)", [
        "sweep", "{copy}", "--no-progress", "--depths", "1:2", "--n", "2", "--out", "{tmp}/s.json"],
        prepare=_embedding("nan")),
    "run-analyze-nan-weights": Case("rundir", "analyze a run whose weights hold NaN (a traceback from torch's eig)",
                                    A, prepare=_embedding("nan")),
    "run-analyze-states-overflow": Case("rundir", "analyze a run whose finite weights overflow in the forward (a "
                                        "traceback from torch's svd)", [*A, "--spectral-n", "0"],
                                        prepare=_embedding("huge")),
    "arg-analyze-tol-one": Case("arguments", "analyze --tol 1 (any vector counted as converged)", [*A, "--tol", "1"]),
    "arg-no-command": Case("arguments", "looplm with no command (named an internal 'cmd')", []),
    "cfg-config-empty": Case("config", "train --config '' (read as the directory '.')", [
        "train", "--config", "", "--out", "{tmp}/out"]),
    # round 32 engine
    "run-generate-nan-weights": Case("rundir", "generate from a run whose weights hold NaN (the argmax of NaN logits "
                                     "decoded as padding)", ["generate", "{copy}", "12+34="],
                                     prepare=_embedding("nan")),
    "run-generate-states-overflow": Case("rundir", "generate from a run whose finite weights overflow in the forward "
                                         "(decoded without a word)", ["generate", "{copy}", "12+34="],
                                         prepare=_embedding("huge")),
    "run-resume-nan-weights": Case("rundir", "train --resume a checkpoint whose weights hold NaN (every step "
                                   "non-finite, null records appended, train.lr blamed)", [
                                       *TRAIN[:4], "{copy}", "--resume", "--no-progress",
                                       *setting(TINY, "train.steps=4")], prepare=_embedding("nan")),
    "arg-study-jobs-too-many": Case("arguments", "study addition --jobs above the CPU cores (48 runs started at "
                                    "once)", ["study", "addition", "--out", "{tmp}/st", "--jobs",
                                              "99999999999999999999"]),
    # round 32 api
    "plot-labels-twice": Case("plots", "one label for two inputs (the legend could not tell their curves apart)", [
        "plot", "{run}/sweep.json", "{copy}/sweep.json", "--labels", "a", "a", "--out", "{tmp}/a.png"]),
    "plot-ppl-null-everywhere": Case("plots", "a text sweep whose perplexity overflowed at every depth (empty axes "
                                     "were drawn, with no word)", ["plot", "{tmp}/s.json", "--out", "{tmp}/a.png"],
                                     {"s.json": '{"depths": [1, 2], "accuracy": [0, 0], "n": 3, "scored_by": '
                                                '"perplexity", "ppl": [null, null], "overflow": [1, 2]}'}),
    "plot-dynamics-text-and-exact": Case("plots", "two dynamics.json files, a text run's and an answer task's (they "
                                         "were called sweeps)", ["plot", "{tmp}/t.json", "{tmp}/e.json", "--out",
                                                                 "{tmp}/a.png"], {
        "t.json": DYN.replace("}}", '}, "scored_by": "perplexity", "ppl": [2.0]}'), "e.json": DYN}),
    "run-demo-task-text": Case("config", "demo --set data.task=text (it was told to set data.path: the demo is the "
                               "addition recipe)", ["demo", "--out", "{tmp}/demo", "--no-progress", "--set",
                                                     "data.task=text"]),
    # round 33 run
    "run-study-result-damaged": Case("rundir", "study over a runs/<name>/result.json that is not a result (a "
                                     "traceback: KeyError 'n')", ["study", "addition", "--out", "{tmp}/st", "--only",
                                                                  "stars", "--no-progress"],
                                     {"st/runs/stars/result.json": "{}"}),
    "run-demo-set-task-no-equals": Case("config", "demo --set data.task with no value (told the demo does only "
                                        "addition)", ["demo", "--out", "{tmp}/demo", "--no-progress", "--set",
                                                      "data.task"]),
    "run-demo-set-task-comment": Case("config", "demo --set data.task=addition with a YAML comment (told the demo "
                                      "does only addition)", ["demo", "--out", "{tmp}/demo", "--no-progress", "--set",
                                                              "data.task=addition # the default"]),
    "run-init-from-padded-head": Case("config", "a jsonl fine-tune from an addition run, whose head is padded to 16 "
                                      "(refused as 'requested 14', which nobody set)", [
                                          "train", "--config", "jsonl-stars", "--out", "{tmp}/out", "--no-progress",
                                          *TINY, "--set", "data.path={tmp}/rows.jsonl", "--set",
                                          "train.init_from={run}"],
                                      {"rows.jsonl": "".join(f'{{"prompt": "{i}+{i}=", "answer": "{2 * i}"}}\n'
                                                             for i in range(400))}),
    "run-analyze-out-run-log": Case("outputs", "analyze --out the run's metrics.jsonl (told to write outside its "
                                    "'metrics.jsonl/')", ["analyze", "{copy}", "--no-progress", "--depths", "1:2",
                                                          "--n", "2", "--out", "{copy}/metrics.jsonl"]),
    "mem-checkpointed-loops": Case("system", "a million loops with loops.checkpoint_loops (each loop's autograd "
                                   "records were not counted: it passed and allocated until the machine's memory "
                                   "was gone)", [*TRAIN, *TINY[:-10], "--set", "loops.sampler=fixed", "--set",
                                                 "loops.num_loops=1000000", "--set", "loops.max_loops=1000000",
                                                 "--set", "loops.checkpoint_loops=true"]),
    # round 35 io
    "arg-train-out-name-too-long": Case("arguments", "train --out a 300-byte name (errno's raw 'File name too long')",
                                        [*TRAIN[:-3], "--out", "{tmp}/" + LONG, "--no-progress", *TINY],
                                        shown="train --config addition-prenorm-stars --out <tmp>/r...r (300 bytes)"),
    "arg-analyze-out-name-too-long": Case("arguments", "analyze --out a 300-byte name", [
        *A[:-1], "{tmp}/" + LONG], shown="analyze <copy> ... --out <tmp>/r...r (300 bytes)"),
    "arg-export-out-name-too-long": Case("arguments", "export-hf --out a 300-byte name", [
        "export-hf", "{run}", "--out", "{tmp}/" + LONG], shown="export-hf <run> --out <tmp>/r...r (300 bytes)"),
    "arg-train-config-name-too-long": Case("arguments", "train --config a 305-byte file name", [
        "train", "--config", "{tmp}/" + LONG + ".yaml", "--out", "{tmp}/out", "--no-progress"],
        shown="train --config <tmp>/r...r.yaml (305 bytes) --out <tmp>/out"),
    # round 36 protocol
    "out-export-into-run-corpus": Case("outputs", "export-hf a text run with --out inside the run's own corpus "
                                       "folder (accepted; the run's sweep, analyze and --resume then refused the "
                                       "folder's new files)", ["export-hf", "{tmp}/tr", "--out", "{tmp}/corpus/model"],
                                       {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20},
                                       prepare=_text_run),
    # round 38 (config)
    "cfg-file-tab-indent": Case("config", "a config file indented with a tab (PyYAML's raw \"found character '\\t' "
                                "that cannot start any token\")", [
        "train", "--config", "{tmp}/tab.yaml", "--out", "{tmp}/out", "--no-progress"],
        {"tab.yaml": "train:\n\tsteps: 2\n"}),
    "cfg-file-tab-after-colon": Case("config", "a config file with a tab after a key's colon", [
        "train", "--config", "{tmp}/tab.yaml", "--out", "{tmp}/out", "--no-progress"],
        {"tab.yaml": "train:\n  steps:\t2\n"}),
    "cfg-demo-eval-every-0": Case("config", "demo --set train.eval_every=0 (blamed train.stop_at_acc, a setting of "
                                  "stage 1's preset it did not name)", [
        "demo", "--out", "{tmp}/demo", "--no-progress", "--set", "train.eval_every=0"]),
    # round 38 (resume)
    **{f"out-{cmd}-fine-tune-into-source-corpus": Case(
        "outputs", f"{cmd} of a fine-tune with --out inside the corpus folder of its train.init_from run (written; "
        "that run's sweep, analyze and --resume then refused the folder's new files; train refused the same --out)",
        [cmd, "{tmp}/ft", *more, "--out", "{tmp}/corpus/" + name],
        {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20}, prepare=_fine_tune_of_text_run)
       for cmd, more, name in (("export-hf", [], "model"), ("sweep", ["--no-progress", "--depths", "1:2"], "s.json"),
                               ("analyze", ["--no-progress", "--depths", "1:2", "--n", "2", "--no-plot"], "an"))},
    # round 39 (run dir)
    "out-sweep-fine-tune-of-fine-tune-into-first-corpus": Case(
        "outputs", "sweep of a fine-tune of a fine-tune with --out inside the corpus folder of the first run (written, "
        "and with --force over its training file: only the direct train.init_from run's data was checked)",
        ["sweep", "{tmp}/ft2", "--no-progress", "--depths", "1:2", "--out", "{tmp}/corpus/s.json"],
        {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20}, prepare=_fine_tune_of_fine_tune),
    # round 42
    "cfg-set-int-tag-sexagesimal": Case("config", "--set 'train.steps=!!int 1:30' (Python's \"invalid literal for "
                                        "int()\", no key)", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "train.steps=!!int 1:30"]),
    "cfg-set-float-tag-sexagesimal": Case("config", "--set 'train.lr=!!float 1:30' (read as YAML 1.1's 90.0: the "
                                          "run trained at lr 90)", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "train.lr=!!float 1:30"]),
    "cfg-file-int-tag-binary": Case("config", "a config file with `steps: !!int 0b11` (no file, line or key)", [
        "train", "--config", "{tmp}/bad.yaml", "--out", "{tmp}/out", "--no-progress"],
        {"bad.yaml": "train:\n  steps: !!int 0b11\n"}),
    "cfg-data-path-file-url": Case("config", "--set data.path=file:///... (\"data file file:/... does not exist\")", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "data.task=jsonl", "--set", "data.path=file://{tmp}/d.jsonl"], {"d.jsonl": '{"prompt": "1+1=", '
                                                                                   '"answer": "2"}\n'}),
    # round 42 (lead)
    "out-sweep-dash": Case("outputs", "sweep --out - (wrote a file named - in the working folder: - is no stdout "
                           "here)", ["sweep", "{run}", "--no-progress", "--depths", "1:2", "--out", "-"]),
    "out-analyze-blank": Case("outputs", "analyze --out ' ' (a folder named by a space)", [
        "analyze", "{run}", "--no-progress", "--depths", "1:2", "--out", " "]),
    "ckpt-generate-empty-path": Case("checkpoint", "generate \"\" (pathlib's working folder: a run there was read)",
                                     ["generate", "", "1+1="]),
    "cfg-set-at-sign": Case("config", "--set data.path=@x.jsonl (YAML's \"cannot start any token\", no way out)", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "data.task=jsonl", "--set", "data.path=@x.jsonl"]),
    "cfg-set-anchor": Case("config", "--set data.path=&x (a YAML anchor: read as null, \"null is not a value\")", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "data.task=jsonl", "--set", "data.path=&x"]),
    "cfg-set-anchor-then-text": Case("config", "--set data.path='&a x.jsonl' (the anchor dropped: read as x.jsonl)", [
        "train", "--config", "addition-prenorm-stars", "--out", "{tmp}/out", "--no-progress",
        "--set", "data.task=jsonl", "--set", "data.path=&a x.jsonl"]),
    # round 43 (lead)
    "out-plot-empty-input": Case("outputs", "plot '' (the working folder: a sweep.json there was plotted, exit 0)",
                                 ["plot", "", "--out", "{tmp}/x.png"]),
    "data-sweep-empty": Case("data", "sweep --data '' (\"data file . is a directory\")", [
        "sweep", "{run}", "--no-progress", "--depths", "1:2", "--data", "", "--out", "{tmp}/s.json"]),
    "cfg-config-run-dir": Case("config", "--config RUN, a run's folder (\"is a directory\", without its config.yaml)",
                               ["train", "--config", "{run}", "--out", "{tmp}/out", "--no-progress"]),
    "cfg-config-hf-json": Case("config", "--config an export's config.json (25 unknown config sections)", [
        "train", "--config", "{tmp}/hf/config.json", "--out", "{tmp}/out", "--no-progress"],
        {"hf/config.json": '{"model_type": "looplm", "architectures": ["LooplmForCausalLM"], "d_model": 32}'}),
    # round 45 (api helper)
    "ckpt-sweep-history-folder": Case("checkpoint", "sweep RUN/checkpoints, the run's history (generic \"no "
                                      "model.safetensors ... not a looplm checkpoint or run directory\")", [
        "sweep", "{run}/checkpoints", "--no-progress", "--depths", "1:2", "--out", "{tmp}/s.json"]),
    "ckpt-generate-demo-folder": Case("checkpoint", "generate DEMO, a `looplm demo` --out (its models are its stages; "
                                      "the same generic line)", ["generate", "{tmp}/dm", "1+1="],
                                      prepare=_demo_folder),
    # round 45 (resume helper)
    "cfg-init-from-tilde": Case("config", "train.init_from=~/run (\"does not exist\": no shell expanded the ~)", [
        *TRAIN, "--set", "train.init_from=~/run"]),
    # round 45 (chat helper)
    "hf-finetune-template-default-one": Case("hf", "data.chat_template=default on a tokenizer whose template is one "
                                         "string (\"neither chatml, a template file, nor a Jinja template\")", FT, {
        "ft.yaml": FT_YAML.replace("max_length: 256\n", "max_length: 256\n  chat_template: default\n"),
        "chat.jsonl": GOOD_CHAT + "\n"}, hf=True),
    "hf-finetune-content-image-part": Case("hf", "a turn's content as OpenAI parts with an image part (the error was "
                                       "cut mid-record)", FT, chat(
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 1+1?"}, {"type": "image_url", '
        '"image_url": {"url": "x.png"}}]}, {"role": "assistant", "content": "#### 2"}]}'), hf=True),
    # round 45 (text folders)
    "data-text-folder-only-unread": Case("data", "train on a text folder of .log files and a hidden folder (\"holds no "
                                         "files\")", [*TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress",
                                                       *TINY, "--set", "data.path={tmp}/c", "--set", "data.window=16"],
                                         {"c/notes.log": "the quick brown fox\n" * 20, "c/.x/a.txt": "the fox\n"}),
    "data-text-folder-zip-named-txt": Case("data", "a text folder holding a zip named .txt (told: convert it to .txt)",
                                           [*TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress", *TINY,
                                            "--set", "data.path={tmp}/c", "--set", "data.window=16"],
                                           {"c/a.txt": "the quick brown fox\n" * 20, "c/a/b/arch.txt": b"PK\x03\x04r"}),
    "data-text-folder-holds-run": Case("data", "a text folder holding a looplm run (its trainer_state.pt named thrice, "
                                       "bare, with \"convert them to .txt\")", [
        *TRAIN[:2], "text-stars", "--out", "{tmp}/r", "--no-progress", *TINY, "--set", "data.path={tmp}/c", "--set",
        "data.window=16"], {"c/a.txt": "the quick brown fox\n" * 20}, prepare=_run_in_corpus),
    # round 45 (probe round 43, eval-lm)
    "hf-evallm-include-path-list": Case("arguments", "eval-lm --include-path A,B (\"is not a folder of task YAMLs\": "
                                        "the option takes one folder)", [
        "eval-lm", "{base}", "--tasks", "x", "--include-path", "{tmp}/a,{tmp}/b", "--out", "{tmp}/e"],
        {"a/x.yaml": "task: x\n", "b/y.yaml": "task: y\n"}, hf=True),
    "hf-evallm-task-file-missing": Case("arguments", "eval-lm --tasks a task YAML that is not there (it was an "
                                        "unknown task, \"a local task needs --include-path\")", [
        "eval-lm", "{base}", "--tasks", "{tmp}/none.yaml", "--out", "{tmp}/e"], hf=True),
    "hf-evallm-weighted-and-threshold": Case("arguments", "eval-lm --use-weighted-exit --exit-threshold 0.5 (two exit "
                                             "rules: the model took the average)", [
        "eval-lm", "{base}", "--tasks", "x", "--use-weighted-exit", "--exit-threshold", "0.5", "--out", "{tmp}/e"],
        hf=True),
    # round 46 (held-out splits of fine-tunes)
    "data-jsonl-fine-tune-holds-out-base-training-rows": Case(
        "data", "a jsonl fine-tune whose data.test_path is the training file of its train.init_from run (its "
        "held-out score was on rows the weights trained on, unsaid)", [
            *TRAIN[:2], "jsonl-stars", "--out", "{tmp}/ft", "--no-progress", *TINY, "--set", "data.path={tmp}/b.jsonl",
            "--set", "data.test_path={tmp}/mul.jsonl", "--set", "train.init_from={tmp}/j1"],
        {"mul.jsonl": MUL[0], "b.jsonl": MUL[1]}, prepare=_jsonl_run),
    "data-text-fine-tune-tail-trained-by-base": Case(
        "data", "a text fine-tune on its train.init_from run's corpus with a longer held-out tail (data.test_fraction="
        "0.3 over its 0.05: the tail was text it trained on, unsaid)", [
            *TRAIN[:2], "text-stars", "--out", "{tmp}/ft", "--no-progress", *TINY, "--set", "data.path={tmp}/corpus",
            "--set", "data.window=15", "--set", "data.test_fraction=0.3", "--set", "train.init_from={tmp}/tr"],
        {"corpus/a.txt": "the quick brown fox jumps over the lazy dog\n" * 20}, prepare=_text_run),
    # round 46 (probe round 44, chat data)
    "hf-finetune-template-header-no-generation-prompt": Case("hf", "a chat template with no add_generation_prompt "
                                                             "branch and an 'ASSISTANT: ' header (trained as part "
                                                             "of every reply, without a note)", FT, template(
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }}\n{% elif m['role'] == "
        "'assistant' %}ASSISTANT: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"), hf=True),
    "hf-finetune-history-string": Case("hf", "a LLaMA-Factory record whose history is one string (dropped without a "
                                       "note)", [*FT, "--set", "data.prompt_field=instruction", "--set",
                                                 "data.response_field=output"], chat(
        '{"instruction": "1+1?", "input": "", "output": "#### 2", "history": "User: hi. Assistant: hello."}'),
        hf=True),
    "hf-finetune-text-records": Case("hf", "plain {\"text\": ...} records (told to check field names, or to rename "
                                     "a prompt and a reply they do not have)", FT, chat(
        '{"text": "Sam has 2 apples and buys 3 more. #### 5"}', '{"text": "Mia has 1 egg. #### 1"}'), hf=True),
    # round 46 (probe round 44, eval-lm)
    "hf-evallm-two-files-one-task": Case("arguments", "eval-lm --tasks a/x.yaml,b/x.yaml, two files that name one task "
                                         "(lm-eval scored one of them, with a log line only)", [
        "eval-lm", "{base}", "--tasks", "{tmp}/a/x.yaml,{tmp}/b/x.yaml", "--out", "{tmp}/e"],
        {"a/x.yaml": "task: x\n", "b/x.yaml": "task: x\n"}, hf=True),
    "plot-eval-lm-json": Case("plots", "plot of eval-lm's eval_lm.json (\"neither a sweep.json nor a dynamics.json\", "
                              "though it has depths)", ["plot", "{tmp}/e/eval_lm.json", "--out", "{tmp}/p.png"], {
        "e/eval_lm.json": '{"model": "m", "tasks": ["x"], "depths": [1, 2], "rows": [], "table": ""}'}),
    # round 46 (probe round 44: a study's --out)
    "outputs-study-users-report": Case("outputs", "study addition into a folder holding only the user's report.md "
                                       "(trained into it, then wrote its report over the draft)", [
        "study", "addition", "--out", "{tmp}/st", "--only", "recipe-fixed8-s0", "--no-progress"],
        {"st/report.md": "my paper draft\n"}),
    "outputs-study-users-figure": Case("outputs", "study addition with the user's file at figures/accuracy.png "
                                       "(replaced, no --force)", [
        "study", "addition", "--out", "{tmp}/st", "--only", "recipe-fixed8-s0", "--no-progress"],
        {"st/figures/accuracy.png": "user figure bytes\n"}),
    "checkpoint-study-run-no-weights": Case("checkpoint", "sweep a study run kept without weights (\"not a looplm "
                                            "checkpoint or run directory\")", [
        "sweep", "{tmp}/st/runs/recipe-fixed8-s0", "--depths", "8", "--n", "4"],
        {f"st/runs/recipe-fixed8-s0/{f}": (STUDY_RUN / f).read_text() for f in ("config.yaml", "result.json")}),
    # round 47 (probe round 45, HF data): a messages record's top-level system beside a different system turn
    "hf-finetune-messages-two-systems": Case("data", "a messages record with a top-level system and a different "
                                             "system turn (the top-level one was dropped without a note)", FT, chat(
        '{"system": "Answer in French.", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", '
        '"content": "1+1?"}, {"role": "assistant", "content": "#### 2"}]}'), hf=True),
}
