"""The bad-input table's rows for `looplm demo`, the command that trains two stages and scores the second:
every check of either stage runs before the first trains. tests/test_bad_inputs.py runs them with the rows of
tests/bad_input_cases.py."""

from __future__ import annotations

from .bad_input_cases import Case

DEMO = ["demo", "--out", "{tmp}/demo", "--no-progress"]

DEMO_CASES: dict[str, Case] = {
    "run-demo-into-a-run": Case("rundir", "demo --out a trained run's directory (its sweep.json would be replaced)", [
        "demo", "--out", "{copy}"]),
    "run-demo-n-above-split": Case("rundir", "demo --n above the held-out split (refused before training)", [
        "demo", "--out", "{tmp}/demo", "--no-progress", "--n", "100000000", "--set", "data.test_size=16"]),
    "run-demo-results-exist": Case("rundir", "demo again into a finished demo's folder (its results would be "
                                   "replaced)", ["demo", "--out", "{tmp}/demo", "--no-progress"],
                                   {"demo/sweep.json": "{\"n\": 1000}\n", "demo/accuracy.png": "png"}),
    "run-demo-init-from": Case("rundir", "demo --set train.init_from (the demo sets it: stage 2 starts from "
                               "stage 1)", [*DEMO, "--set", "train.init_from={run}"]),
    "run-demo-stage2-invalid": Case("rundir", "demo --set a value valid for stage 1 only (min_lr between the stages' "
                                    "learning rates; refused before stage 1 trains)", [
        *DEMO, "--set", "train.min_lr=5e-4", "--set", "train.steps=2"]),
    "run-demo-stage2-memory": Case("rundir", "demo --set that stage 1 fits but stage 2 does not (100,000 loops with a "
                                   "graph; refused before stage 1 trains)", [
        *DEMO, "--set", "loops.max_loops=100000", "--set", "train.steps=2"]),
    "run-demo-stage2-foreign": Case("rundir", "demo into a folder whose stage2/ holds a file of the user's (refused "
                                    "before stage 1 trains)", [*DEMO, "--set", "train.steps=2"],
                                    {"demo/stage2/notes.txt": "mine\n"}),
}
