"""What a resume may change (docs/reliability.md), and what each change does to the training.

How long the run goes on, the optimizer's settings, where and how it runs, logs and is evaluated, and how much
memory it keeps may change (`rules`); any other change (the data, the loops trained, the regularizer, the seed,
the model) would make it another run, and fewer train.keep_checkpoints would delete the history:
`rundir.check_resume` refuses those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Activation checkpointing: each layer (model.gradient_checkpointing) or loop (loops.checkpoint_loops) keeps only
# its input and recomputes the same operations in backward (torch keeps the random state, so dropout draws the same
# masks): the weights come out bitwise equal on a CPU (tests/test_round43_resume.py). The memory error advises
# them, so a resume that ran out of memory must be able to take that advice.
MEMORY = {"model.gradient_checkpointing", "loops.checkpoint_loops"}
RESUMABLE = {"train." + k for k in (
    "steps", "epochs", "stop_at_acc", "lr", "min_lr", "warmup_steps", "weight_decay", "beta1", "beta2", "grad_clip",
    "log_every", "eval_every", "eval_size", "checkpoint_every", "max_bad_steps", "device", "threads", "strategy",
    "micro_batch_size", "bf16", "logger")} | MEMORY | {"reg.impl"}

# Settings a run is run or recorded with that do not change its weights: a resume that changes only these continues
# the uninterrupted run, and saying it "will differ" taught users to ignore the note.
INERT = {"train.logger", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints"}
EVALS = {"train.eval_every", "train.eval_size"}  # inert too while no train.stop_at_acc ends the run on their score
# reg.rho_every: a monitor; its probes' stream is reseeded every step (train.py), so it draws nothing training does.
MONITORS = {"reg.rho_every"}
# The held-out split: which (data.test_seed) and how many (data.test_size) problems the evaluations and a sweep score.
# Training never draws from the split whatever they are: addition, parity and chain reject a fixed reserved slice,
# text trains before its data.test_fraction tail, and a jsonl hash split is seeded by data.test_seed, so there
# another seed holds out (and trains on) other rows: a change there (held_out_keys).
HELD_OUT = {"data.test_size", "data.test_seed"}
# Where the run computes: the same training, summed in another order (threads split a matmul otherwise), so the
# weights differ from the uninterrupted run's in float round-off (1e-7), not bitwise ("does not change" was untrue).
# reg.impl computes the same penalty and gradients by hand-written rules or by torch.func (config.py): runs differing
# only in it end within 4e-9 of each other, or bitwise (tests/test_round46_fit.py); it was refused as a change.
ROUNDING = {"train.threads", "train.device", "reg.impl"}
EFFECTS = {"differs": "", "rounding": " (changes float rounding only)", "inert": " (does not change the training)",
           "memory": " (changes memory use only: activations are recomputed, not stored)"}


def held_out_keys(cfg: Any) -> set[str]:
    """The HELD_OUT settings that choose only what run `cfg` (a native Config) scores, not what it trains on."""
    d = cfg.data
    return HELD_OUT - ({"data.test_seed"} if d.task == "jsonl" and not d.test_path else set())


def rules(saved: Any, cfg: Any, src: Path | None = None) -> tuple[set[str], set[str]]:
    """(resumable, inert) for a resume of the run trained with `saved` asking for `cfg` (Configs), from checkpoint
    `src`: the settings it may change, and those of them that do not change its weights. An evaluation setting
    (EVALS, the held-out split, loops.num_loops below) changes the scores that train.stop_at_acc ends a run on:
    inert only without it."""
    resumable, inert = RESUMABLE | MONITORS, INERT | MONITORS
    if src is not None and own_template(src, saved, cfg):
        resumable, inert = resumable | {"data.chat_template"}, inert | {"data.chat_template"}
    scored = set(EVALS)
    if cfg.kind == "native" and saved.kind == "native":
        scored |= held_out_keys(saved) & held_out_keys(cfg)
    # loops.num_loops is the depth a random sampler's run is evaluated at (and generate's default): no step trains
    # it unless a curriculum does first. Fixed, it is the depth trained. With stop_at_acc it decides when the run
    # ends: refused there (another depth's score would end another run).
    stops = bool(saved.train.stop_at_acc or cfg.train.stop_at_acc)
    if not stops and all(c.loops.sampler != "fixed" and not c.loops.curriculum_steps for c in (saved, cfg)):
        resumable, inert = resumable | {"loops.num_loops"}, inert | {"loops.num_loops"}
    return resumable | scored, inert | (scored if not stops else set())


def same_template(src: Path, key: str, old: Any, new: Any) -> bool:
    """A fine-tune's data.chat_template file named otherwise (`./gen.jinja`, its absolute path) or moved or copied
    with the same text is no change: the checkpoint holds the template it trained with (chat_template.jinja),
    compared here, and the data it rendered is digest-checked before training goes on. A name, a Jinja string,
    or a template of other text stays a change."""
    if key != "data.chat_template" or not isinstance(old, str) or not isinstance(new, str):
        return False
    was, now = Path(old).expanduser(), Path(new).expanduser()
    try:
        if not now.is_file():
            return False
        if was.is_file() and os.path.samefile(was, now):
            return True
        kept = src / "chat_template.jinja"
        trained = kept if kept.is_file() else was if was.is_file() else None
        # (read as finetune.chat_template reads it: a BOM is no part of the template)
        return trained is not None and _text(trained) == _text(now)
    except (OSError, ValueError):  # a Jinja string is no path (too long a name, a NUL); an unreadable file
        return False


def own_template(src: Path, saved: Any, cfg: Any) -> bool:
    """A fine-tune trained with the tokenizer's own template (data.chat_template unset) and resumed with a template
    of the same text (a copy of it written into the config, or `chatml` where that is what the tokenizer's own
    says) continues the same run: the checkpoint's chat_template.jinja is the template it trained with, and the
    data rendered is digest-checked before training goes on. Allowed, and said (a resume's note); the run then
    records the template given. A template of other text stays a change."""
    old, new = (getattr(getattr(c, "data", None), "chat_template", None) for c in (saved, cfg))
    kept = src / "chat_template.jinja"
    if old is not None or not isinstance(new, str) or not kept.is_file():
        return False
    from .errors import UserError
    from .hf.finetune import chat_template  # (a fine-tune's resume: transformers is loaded for it anyway)

    try:  # the text the setting stands for, read as the fine-tune reads it: chatml's, a file's, a Jinja string
        return chat_template(new) == _text(kept)
    except (UserError, OSError, ValueError):  # a bad setting: the fine-tune says what is wrong with it
        return False


def _text(p: Path) -> str:
    with p.open(encoding="utf-8-sig") as f:
        return f.read(2**20 + 1)  # (finetune.TEMPLATE_LIMIT: a longer file is refused when read)


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
