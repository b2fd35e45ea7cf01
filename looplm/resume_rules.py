"""What a resume may change (docs/reliability.md), and what each change does to the training.

How long the run goes on, the optimizer's settings, where and how it runs and logs, and how much memory it keeps
may change; any other change (the data, the loops, the regularizer, the seed, the model) would make it another
run, and fewer train.keep_checkpoints would delete the history: `rundir.check_resume` refuses those.
"""

from __future__ import annotations

# Activation checkpointing: each layer (model.gradient_checkpointing) or loop (loops.checkpoint_loops) keeps only
# its input and recomputes the same operations in backward (torch keeps the random state, so dropout draws the same
# masks): the weights come out bitwise equal on a CPU (tests/test_round43_resume.py). The memory error advises
# them, so a resume that ran out of memory must be able to take that advice.
MEMORY = {"model.gradient_checkpointing", "loops.checkpoint_loops"}
RESUMABLE = {"train." + k for k in (
    "steps", "epochs", "stop_at_acc", "lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip",
    "log_every", "eval_every", "eval_size", "checkpoint_every", "max_bad_steps", "device", "threads", "strategy",
    "micro_batch_size", "bf16", "logger")} | MEMORY

# Settings a run is run or recorded with that do not change its weights: a resume that changes only these continues
# the uninterrupted run, and saying it "will differ" taught users to ignore the note.
INERT = {"train.logger", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints"}
EVALS = {"train.eval_every", "train.eval_size"}  # inert too while no train.stop_at_acc ends the run on their score
# Where the run computes: the same training, summed in another order (threads split a matmul otherwise), so the
# weights differ from the uninterrupted run's in float round-off (1e-7), not bitwise ("does not change" was untrue)
ROUNDING = {"train.threads", "train.device"}
EFFECTS = {"differs": "", "rounding": " (changes float rounding only)", "inert": " (does not change the training)",
           "memory": " (changes memory use only: activations are recomputed, not stored)"}


def effect(key: str, inert: set[str]) -> str:
    """The EFFECTS key of a resumable change of `key` (`inert`: INERT, with EVALS where no score ends the run)."""
    return "inert" if key in inert else "memory" if key in MEMORY else "rounding" if key in ROUNDING else "differs"


def resume_note(changed: list[tuple[str, str]]) -> str:
    """What a resume says of the settings it changes (check_resume's list): whether the run will differ from an
    uninterrupted one (or in float rounding only), and which settings do not change its training."""
    lines = [f"{d}{EFFECTS[kind]}" for d, kind in changed]
    effects = {kind for _, kind in changed}
    head = ("the run will differ from an uninterrupted one" if "differs" in effects else
            "the run will differ from an uninterrupted one in float rounding only" if "rounding" in effects else
            "they do not change the training")
    return f"resuming with changed settings; {head}:\n  " + "\n  ".join(lines)
