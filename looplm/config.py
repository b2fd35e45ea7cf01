"""Typed run configuration: model, loops, regularizer, data and training sections.

One spine for every run: `loops`, `reg` and `train` are the same sections whatever the model; `model` and
`data` depend on the model kind. A `model` section that names `name_or_path` is a pretrained Hugging Face
looped LM (`HFModelConfig`, with chat data: `ChatDataConfig`); any other is looplm's own LoopedTransformer
(`ModelConfig`, with a task: `DataConfig`).

Each default lives once, in the dataclass field; the shared sections' defaults that differ for a pretrained
model (the paper's Ouro fine-tuning setting) are stated once, in `HF_DEFAULTS`. Construction validates every
value, so a bad config fails before any work starts, with a message naming the key and, for choices, the
valid values. YAML files and dotted `--set section.key=value` overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .arguments import MAX_DEPTH, config_given, is_cpu_device
from .config_files import PRESET_DIR, dump_yaml, parse_set_value, parse_yaml, preset_names, read_yaml_config  # noqa: F401
from .errors import ConfigError, UserError  # noqa: F401 (ConfigError: looplm.config's since the start)

NORM_PLACEMENTS = ("pre", "post", "pre_sandwich", "post_sandwich")
NORM_TYPES = ("layernorm", "rmsnorm", "simplenorm", "deepnorm")
INJECTIONS = ("none", "add")
SAMPLERS = ("fixed", "uniform", "poisson", "lognormal")
# Named for what they compute (docs/method.md), so logs cannot pass one estimator off as another.
REG_KINDS = ("none", "jsrr", "jsrr_release", "power", "hutchinson", "residual")
# final: h(t); random: h(r), r uniform in 1..t; penultimate: h(t-1), the input of the last loop (so the penalty
# can ride along that loop; objective.regularized_loop).
REG_AT = ("final", "random", "penultimate")
REG_IMPLS = ("auto", "autograd")
TASKS = ("addition", "jsonl", "text", "parity", "chain")
TOKENIZERS = ("char", "byte", "bpe")
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("ddp", "fsdp")
CHAT_FORMATS = ("auto", "messages", "prompt_response")
MAX_SEED = 2**32 - 1
MAX_BLOCKS = 1024  # per stack (prelude, core, coda)


def _choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{key}={value!r} is not valid; choose one of {', '.join(choices)}")


def _check(cond: bool, section: str, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{section}.{key}: {msg}")


@dataclass(slots=True)
class ModelConfig:
    vocab_size: int = 16  # the addition tokenizer uses 14; 0 = the task's vocabulary (a file's characters, say)
    max_seq_len: int = 32  # learned positions; 4-digit addition needs 16, 8-digit needs 28
    d_model: int = 128
    n_heads: int = 4
    d_ff: int = 256
    n_prelude: int = 0  # non-looped blocks before the loop
    n_core: int = 1  # blocks in the shared, looped core Φ
    n_coda: int = 0  # non-looped blocks after the loop
    norm_placement: str = "pre"
    norm_type: str = "layernorm"
    # DeepNorm's residual scale. (2N)^(1/4) from DeepNet with N = 1 block x 4 loops gives about 1.68.
    deepnorm_alpha: float = 1.68
    injection: str = "none"  # "add": every loop sees h + e, e the prelude output (x <- Φ(x + e))
    dropout: float = 0.0
    bias: bool = True
    # Train each sequence at a random start in the position table (inference starts at 0): size-graded tasks
    # test on instances longer than training's, whose positions would otherwise never have been trained.
    random_positions: bool = False

    def __post_init__(self) -> None:
        s = "model"
        _choice(s, "norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _choice(s, "norm_type", self.norm_type, NORM_TYPES)
        _choice(s, "injection", self.injection, INJECTIONS)
        for k in ("max_seq_len", "d_model", "n_heads", "d_ff", "n_core"):
            _check(getattr(self, k) >= 1, s, k, f"must be >= 1, got {getattr(self, k)}")
        _check(self.vocab_size >= 0, s, "vocab_size", f"must be >= 0 (0 = the task's), got {self.vocab_size}")
        for k in ("n_prelude", "n_coda"):
            _check(getattr(self, k) >= 0, s, k, f"must be >= 0, got {getattr(self, k)}")
        # Each block is a Python module: even the memory check's weightless (meta) build of a million of them
        # would take minutes and gigabytes before it could refuse.
        for k in ("n_prelude", "n_core", "n_coda"):
            _check(getattr(self, k) <= MAX_BLOCKS, s, k, f"must be <= {MAX_BLOCKS}, got {getattr(self, k):,}")
        _check(self.d_model % self.n_heads == 0, s, "n_heads",
               f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        _check(0.0 <= self.dropout < 1.0, s, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.deepnorm_alpha > 0, s, "deepnorm_alpha", f"must be > 0, got {self.deepnorm_alpha}")
        if self.norm_type == "deepnorm":
            _check(self.norm_placement in ("post", "post_sandwich"), s, "norm_type",
                   "deepnorm is a post-norm residual scaling; use norm_placement post or post_sandwich")


@dataclass(slots=True)
class HFModelConfig:
    """A pretrained looped LM in the Hugging Face format (Ouro, or a looplm export); its code is looplm's own
    (looplm.hf), never the model directory's."""

    name_or_path: str = "ByteDance/Ouro-1.4B"  # hub id or local HF directory
    tokenizer: str | None = None  # default: name_or_path
    revision: str | None = None
    gradient_checkpointing: bool = True  # recompute each decoder layer in backward
    freeze_exit_gate: bool = True  # the early-exit gate gets no gradient from this objective

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model", "name_or_path", "must name a hub model or a local directory")


@dataclass(slots=True)
class LoopsConfig:
    sampler: str = "lognormal"
    num_loops: int = 4  # the fixed sampler's count, and the default depth at inference
    min_loops: int = 1
    max_loops: int = 100
    mu: float = 2.0  # lognormal: round(exp(N(mu, sigma^2))), the paper's addition setting
    sigma: float = 0.7
    rate: float = 5.0  # poisson mean
    # Steps trained at the fixed num_loops before the sampler takes over (external norms learn at CPU scale
    # only after a fixed-depth phase; docs/results/addition/report.md).
    curriculum_steps: int = 0
    # 0: backprop through every loop. k > 0: run all but the last k loops without grad, so training memory
    # stops growing with depth (truncated BPTT, as in Huginn's sampler).
    backprop_loops: int = 0
    # Recompute each loop's activations in backward instead of storing them (memory ~ one state per loop).
    checkpoint_loops: bool = False

    def __post_init__(self) -> None:
        s = "loops"
        _choice(s, "sampler", self.sampler, SAMPLERS)
        _check(self.num_loops >= 1, s, "num_loops", f"must be >= 1, got {self.num_loops}")
        _check(self.min_loops >= 1, s, "min_loops", f"must be >= 1, got {self.min_loops}")
        for key in ("num_loops", "max_loops"):  # 10**12 loops passed, and the first step never ended
            _check(getattr(self, key) <= MAX_DEPTH, s, key, f"must be <= {MAX_DEPTH:,} (the command line's depth "
                   f"cap), got {getattr(self, key):,}")
        _check(self.min_loops <= self.max_loops, s, "min_loops",
               f"min_loops={self.min_loops} exceeds max_loops={self.max_loops}")
        _check(self.sigma > 0, s, "sigma", f"must be > 0, got {self.sigma}")
        _check(self.rate > 0, s, "rate", f"must be > 0, got {self.rate}")
        # torch's Poisson sampler wraps around past 2**63 (a huge rate would draw the fewest loops, not the most)
        _check(self.rate <= 1e15, s, "rate", f"must be <= 1e15, got {self.rate}")
        _check(self.curriculum_steps >= 0, s, "curriculum_steps", "must be >= 0")
        _check(self.backprop_loops >= 0, s, "backprop_loops", "must be >= 0 (0 = full backprop)")


@dataclass(slots=True)
class RegConfig:
    kind: str = "none"
    weight: float = 0.1  # λ in (1-λ)·CE + λ·penalty
    start_step: int = 0  # before this step the loss is plain CE and no penalty graph is built
    at: str = "final"  # where the penalty's state is taken: after the sampled depth, or a uniform depth on the way
    power_iters: int = 1  # for kind=power: JVP steps; the last one carries the gradient
    rho_every: int = 50  # log a power-iteration estimate of ρ every this many steps (0 = never)
    # Penalty over the first k samples of each batch only (0 = all): the same mean over a smaller i.i.d.
    # sample, unbiased but noisier, at about k/batch of the cost.
    samples: int = 0
    # auto: hand-written JVP of the built-in block (fused into a loop when the state is a loop's input);
    # autograd: torch.func through the module under twice_differentiable(). Same value and gradients.
    impl: str = "auto"

    def __post_init__(self) -> None:
        s = "reg"
        _choice(s, "kind", self.kind, REG_KINDS)
        _choice(s, "at", self.at, REG_AT)
        _choice(s, "impl", self.impl, REG_IMPLS)
        _check(self.samples >= 0, s, "samples", "must be >= 0 (0 = the whole batch)")
        _check(0.0 <= self.weight <= 1.0, s, "weight", f"λ must be in [0, 1], got {self.weight}")
        _check(self.start_step >= 0, s, "start_step", "must be >= 0")
        _check(1 <= self.power_iters <= MAX_DEPTH, s, "power_iters",  # each one a JVP: 10**12 never ended a step
               f"must be between 1 and {MAX_DEPTH:,}, got {self.power_iters:,}")
        _check(self.rho_every >= 0, s, "rho_every", "must be >= 0")


TASK_KEYS = {"addition": {"digits"}, "jsonl": {"path", "test_path", "test_fraction", "prompt_field", "answer_field"},
             "text": {"path", "test_fraction", "tokenizer", "bpe_vocab", "window"},
             "parity": {"min_size", "max_size"}, "chain": {"min_size", "max_size"}}


@dataclass(slots=True)
class DataConfig:
    """The task looplm's own model trains on (looplm.tasks). Each task reads only its own keys; setting another
    task's key is refused."""

    task: str = "addition"
    test_size: int = 1000  # held-out problems (or windows), from a split training never draws
    test_seed: int = 1234
    digits: int = 4  # addition: operand width, 4 -> operands 1000..9999
    path: str = ""  # jsonl, text: the training file (text: or a folder of files)
    test_path: str = ""  # jsonl: a separate held-out file (default: a seeded hash split of `path`)
    test_fraction: float = 0.05  # jsonl: held-out share of the rows; text: the held-out tail of the stream
    prompt_field: str = "prompt"  # jsonl
    answer_field: str = "answer"  # jsonl
    tokenizer: str = "char"  # text: char | byte | bpe (bpe needs the `tokenizers` package)
    bpe_vocab: int = 512  # text with tokenizer=bpe: merges learned up to this vocabulary
    window: int = 64  # text: tokens per training window
    min_size: int = 1  # parity, chain: the instance sizes training draws from (bits; hops)
    max_size: int = 4

    def __post_init__(self) -> None:
        s = "data"
        _choice(s, "task", self.task, TASKS)
        _choice(s, "tokenizer", self.tokenizer, TOKENIZERS)
        # 1-digit operands (1..9) leave no pair to hold out: the split would be empty whatever test_size says
        _check(2 <= self.digits <= 9, s, "digits", f"must be in 2..9, got {self.digits}")
        _check(self.test_size >= 1, s, "test_size", "must be >= 1")
        _check(0 <= self.test_seed <= MAX_SEED, s, "test_seed", f"must be in 0..{MAX_SEED}, got {self.test_seed}")
        _check(0.0 < self.test_fraction < 1.0, s, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _check(self.window >= 1, s, "window", "must be >= 1")
        _check(self.bpe_vocab >= 260, s, "bpe_vocab", "a byte-level BPE needs at least 260 tokens")
        _check(self.bpe_vocab <= 1_000_000, s, "bpe_vocab", "at most 1,000,000 tokens (the merge tables of a larger "
               "vocabulary outgrow any machine's memory)")
        _check(1 <= self.min_size <= self.max_size, s, "min_size", "need 1 <= min_size <= max_size")
        if self.task == "parity":
            _check(self.min_size >= 6, s, "min_size", "parity needs at least 6 bits, so that a held-out slice of "
                                                      "every size exists")
        if self.task in ("jsonl", "text"):
            _check(bool(self.path), s, "path", f"the {self.task} task needs a file (data.path)")
        for key in ("path", "test_path"):  # (a Path makes file:///x file:/x, which "does not exist", the URL unsaid)
            _check(not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", str(getattr(self, key))), s, key,
                   f"{getattr(self, key)} is a URL; looplm reads local files: give the file's path (download it "
                   "first if it is remote)")
        _check(self.prompt_field != self.answer_field, s, "answer_field",  # the model would learn to copy
               f"must differ from data.prompt_field (both {self.prompt_field!r})")
        defaults = DataConfig.__dataclass_fields__
        for key in sorted(set(defaults) - TASK_KEYS[self.task] - {"task", "test_size", "test_seed"}):
            _check(getattr(self, key) == defaults[key].default, s, key,
                   f"is not read by the {self.task} task (it reads {', '.join(sorted(TASK_KEYS[self.task]))})")
        if self.task == "jsonl" and self.test_path:  # the file is the held-out split: no fraction of `path` is
            _check(self.test_fraction == defaults["test_fraction"].default, s, "test_fraction",  # held out
                   "is not read when data.test_path gives the held-out rows; leave it out, or drop test_path")


@dataclass(slots=True)
class ChatDataConfig:
    """Chat or prompt/response records for fine-tuning a pretrained model (assistant tokens are the targets)."""

    source: str = "AI-MO/NuminaMath-1.5"  # datasets name, or a local .jsonl/.json/.parquet file or folder
    config_name: str | None = None
    split: str = "train"
    format: str = "auto"  # auto | messages | prompt_response
    messages_field: str = "messages"
    prompt_field: str = "problem"
    response_field: str = "solution"
    system_prompt: str | None = None  # a system turn for records without one; a record's own is kept
    chat_template: str | None = None  # Jinja string, .jinja file, or chatml; default: the tokenizer's own
    max_samples: int = 0  # 0 = all records
    subset: str = "first"  # which max_samples records: first (dataset order) or random (seeded by train.seed)
    max_length: int = 4096  # tokens per example
    overlong: str = "drop"  # drop | truncate

    def __post_init__(self) -> None:
        s = "data"
        _choice(s, "format", self.format, CHAT_FORMATS)
        _choice(s, "overlong", self.overlong, ("drop", "truncate"))
        _choice(s, "subset", self.subset, ("first", "random"))
        _check(self.max_samples >= 0, s, "max_samples", "must be >= 0 (0 = all)")
        _check(self.max_length >= 2, s, "max_length", "must be >= 2")
        _check(bool(self.source.strip()), s, "source", "is empty (it read every data file of the working "
               "directory); name a datasets id or a local file or folder")
        _check(self.config_name != "", s, "config_name", "is empty (read as unset, the default config); leave it "
               "out, or name a config")
        _check(self.prompt_field != self.response_field, s, "response_field",  # the model would learn to copy
               f"must differ from data.prompt_field (both {self.prompt_field!r})")


@dataclass(slots=True)
class TrainConfig:
    # Optimizer steps. 0: `epochs` passes over a finite data set (fine-tuning data); a task that generates its
    # data (addition) needs steps > 0.
    steps: int = 3000
    epochs: int = 0
    # The global batch per optimizer step, whatever the number of processes and micro-batches: torchrun ranks
    # each take batch/world of it, so its meaning (and the learning rate that suits it) never changes.
    batch_size: int = 128
    # Samples per forward pass on one rank (at most its share), for gradient accumulation; 0 = the whole share.
    micro_batch_size: int = 0
    lr: float = 1e-3
    min_lr: float = 0.0  # cosine decays to this
    warmup_steps: int = 200
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0  # 0 disables
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500  # exact match at loops.num_loops on a slice of the held-out split; 0 = never
    eval_size: int = 256
    # Stop once an evaluation reaches this exact match (0 = run all train.steps): a schedule that runs until the
    # task is learned, however long the loss takes to step down its staircase, rather than for a fixed count.
    stop_at_acc: float = 0.0
    checkpoint_every: int = 1000  # 0 = only at the end
    max_bad_steps: int = 5  # consecutive non-finite steps before the run stops
    keep_checkpoints: int = 1  # checkpoint/ (latest) + the K-1 before it in checkpoints/step-N/
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # A looplm run (or checkpoint folder) whose weights start this run: fine-tuning, as the paper applies STARS
    # to a trained model. The model section must match; optimizer, step count and schedule start fresh. (A
    # pretrained HF model starts from model.name_or_path instead.)
    init_from: str = ""
    # Under torchrun: ddp keeps a full replica of weights, grads and AdamW state on every rank; fsdp (PyTorch
    # FSDP2, one unit per block plus a root) shards all three. Same maths; checkpoints are full and resume
    # under either.
    strategy: str = "ddp"
    bf16: bool = True  # bf16 autocast on CUDA (weights stay float32); ignored on CPU
    # Where step records go besides metrics.jsonl (always written): TensorBoard event files in <run>/tensorboard,
    # or a Weights & Biases run in <run>/wandb (offline unless WANDB_MODE or WANDB_API_KEY say otherwise).
    logger: str = "jsonl"

    def __post_init__(self) -> None:
        s = "train"
        if not is_cpu_device(self.device):  # cpu:N too, as torch takes it
            _choice(s, "device", self.device, DEVICES)
        _choice(s, "strategy", self.strategy, STRATEGIES)
        _choice(s, "logger", self.logger, ("jsonl", "tensorboard", "wandb"))
        for k in ("batch_size", "log_every", "eval_size", "max_bad_steps", "keep_checkpoints"):
            _check(getattr(self, k) >= 1, s, k, f"must be >= 1, got {getattr(self, k)}")
        for k in ("steps", "epochs", "warmup_steps", "eval_every", "checkpoint_every", "threads", "seed",
                  "micro_batch_size"):
            _check(getattr(self, k) >= 0, s, k, f"must be >= 0, got {getattr(self, k)}")
        # The generators are seeded with seed·1000 + k (and seed·100003 + epoch), which must fit in 64 bits.
        _check(self.seed <= MAX_SEED, s, "seed", f"must be in 0..{MAX_SEED}, got {self.seed}")
        _check(self.steps > 0 or self.epochs > 0, s, "steps", "set steps > 0, or epochs > 0 with steps = 0")
        _check(self.lr > 0, s, "lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, s, "min_lr", "must be in [0, lr]")
        _check(self.weight_decay >= 0, s, "weight_decay", "must be >= 0")
        # AdamW's decoupled decay multiplies every weight by (1 - lr·wd) per step: at 1 or above it zeroes or flips them
        _check(self.lr * self.weight_decay < 1, s, "weight_decay", f"lr·weight_decay must be below 1 (AdamW scales "
               f"every weight by 1 - lr·weight_decay per step), got {self.lr * self.weight_decay:g}")
        for k in ("beta1", "beta2"):
            _check(0 <= getattr(self, k) < 1, s, k, f"must be in [0, 1), got {getattr(self, k)}")
        _check(self.grad_clip >= 0, s, "grad_clip", "must be >= 0")
        _check(0.0 <= self.stop_at_acc <= 1.0, s, "stop_at_acc", f"must be in [0, 1], got {self.stop_at_acc}")
        _check(not self.stop_at_acc or self.eval_every > 0, s, "stop_at_acc", "needs train.eval_every > 0")


# The shared sections' defaults for a pretrained HF model: the paper's Ouro math fine-tuning (lognormal(1.7, 0.4)
# loops in [1, 16], JSRR λ = 0.1 from the first step, lr 1e-6, one epoch). Settings the paper does not give
# (batch, warm-up) are ours.
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "loops": {"sampler": "lognormal", "num_loops": 4, "min_loops": 1, "max_loops": 16, "mu": 1.7, "sigma": 0.4},
    "reg": {"kind": "jsrr", "weight": 0.1, "start_step": 0, "rho_every": 0},
    "train": {"steps": 0, "epochs": 1, "batch_size": 32, "micro_batch_size": 4, "lr": 1e-6, "warmup_steps": 0,
              "weight_decay": 0.0, "beta2": 0.95, "eval_every": 0, "checkpoint_every": 500},
}


@dataclass(slots=True)
class Config:
    model: ModelConfig | HFModelConfig = field(default_factory=ModelConfig)
    loops: LoopsConfig = field(default_factory=LoopsConfig)
    reg: RegConfig = field(default_factory=RegConfig)
    data: DataConfig | ChatDataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        hf = isinstance(self.model, HFModelConfig)
        if hf != isinstance(self.data, ChatDataConfig):
            raise ConfigError("data: a pretrained HF model (model.name_or_path) trains on chat data (data.source), "
                              "looplm's own model on a task (data.task)")
        # Keys a pretrained model's run cannot honour are refused, not ignored.
        if hf and self.train.init_from:
            raise ConfigError("train.init_from: a pretrained HF model starts from model.name_or_path; "
                              "init_from is for looplm's own model")
        if hf and self.train.eval_every:
            raise ConfigError("train.eval_every: chat data has no held-out split to score during training; set it "
                              "to 0 and score the run with `looplm eval-lm`")
        if not hf and (self.train.steps == 0 or self.train.epochs):  # an ignored epochs would look honoured
            raise ConfigError(f"train.{'steps' if self.train.steps == 0 else 'epochs'}: looplm's own model trains for "
                              "train.steps (> 0) optimizer steps; train.epochs is for fine-tuning a pretrained model "
                              "on chat data (leave it 0)")

    def unreached(self, total: int) -> list[str]:
        """Notes on settings a run of `total` optimizer steps never reaches (a preset shortened for a quick try): a
        penalty that starts after the last step, a warm-up that never ends, a curriculum that is the whole run; and
        a loss of the penalty alone, reg.weight=1 (it trained with no word, and learned nothing of the task)."""
        t, r, lp = self.train, self.reg, self.loops
        out = []
        if r.kind != "none" and r.weight > 0 and r.start_step >= total:
            out.append(f"note: reg.start_step={r.start_step} is not below the run's {total} steps: the {r.kind} "
                       "penalty never applies (lower reg.start_step for it)")
        elif r.kind != "none" and r.weight == 1:
            out.append(f"note: reg.weight=1 leaves the cross-entropy out of the loss, (1 - λ)·CE + λ·penalty, from "
                       f"step {r.start_step + 1} on: the model learns only the {r.kind} penalty, not the task")
        if t.warmup_steps > total:  # the warm-up's last step is at train.lr
            out.append(f"note: train.warmup_steps={t.warmup_steps} is more than the run's {total} steps: the learning "
                       f"rate never reaches train.lr={t.lr:g}")
        if lp.sampler != "fixed" and lp.curriculum_steps >= total:
            out.append(f"note: loops.curriculum_steps={lp.curriculum_steps} covers the run's {total} steps: every step "
                       f"runs loops.num_loops={lp.num_loops}, never the {lp.sampler} sampler")
        return out

    def unread(self) -> list[str]:
        """Notes on loops/reg keys set away from their default that the chosen sampler or penalty never reads (a
        `--set loops.max_loops=8` beside the fixed sampler, a `reg.weight` with no penalty): kept, not refused, since
        a preset switched to another sampler or kind keeps its section's other keys."""
        base = Config.from_dict({"model": {"name_or_path": "x"}, "data": {}} if self.kind == "hf" else {})
        lp, r = self.loops, self.reg
        sampler_reads = {"fixed": set(), "uniform": {"min_loops", "max_loops", "curriculum_steps"},
                         "poisson": {"min_loops", "max_loops", "curriculum_steps", "rate"},
                         "lognormal": {"min_loops", "max_loops", "curriculum_steps", "mu", "sigma"}}[lp.sampler]
        loops_unread = {"min_loops", "max_loops", "curriculum_steps", "rate", "mu", "sigma"} - sampler_reads
        reg_unread = {"weight", "start_step", "at", "power_iters", "samples", "impl"} if r.kind == "none" else (
            {"power_iters"} if r.kind != "power" else set()) | ({"impl"} if r.kind != "jsrr" else set())
        # chat data: the field names of the other record shape (format=auto reads both; check_format sees the data)
        data_unread = {"messages": {"prompt_field", "response_field"}, "prompt_response": {"messages_field"}}.get(
            getattr(self.data, "format", None), set())
        triples = [("loops", loops_unread, f"the {lp.sampler} sampler (loops.sampler)"),
                   ("reg", reg_unread, f"reg.kind={r.kind}"),
                   ("data", data_unread, f"data.format={getattr(self.data, 'format', None)}"),
                   ("train", {"eval_size"} if not self.train.eval_every else set(), "a run with train.eval_every=0")]
        if self.kind == "native":  # keys read only in some setups of a task or model (recorded as if they applied)
            d, m = self.data, self.model
            triples += [("data", {"bpe_vocab"} if d.task == "text" and d.tokenizer != "bpe" else set(),
                         f"data.tokenizer={d.tokenizer}"),
                        ("data", {"test_seed"} if d.task == "text" or (d.task == "jsonl" and d.test_path) else set(),
                         "the text task (its held-out part is the text's last data.test_fraction)" if d.task == "text"
                         else "a jsonl run with data.test_path (its held-out rows are that file's)"),
                        ("model", {"deepnorm_alpha"} if m.norm_type != "deepnorm" else set(),
                         f"model.norm_type={m.norm_type}")]
        out = []
        for section, keys, by in triples:
            for key in sorted(keys):
                value = getattr(getattr(self, section), key)
                if value != getattr(getattr(base, section), key):
                    out.append(f"note: {section}.{key}={value!r} is not read by {by}; it has no effect on this run")
        return out

    @property
    def kind(self) -> str:
        """"hf" for a pretrained Hugging Face model, "native" for looplm's LoopedTransformer."""
        return "hf" if isinstance(self.model, HFModelConfig) else "native"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Missing keys take the defaults of the model's kind (HF_DEFAULTS for a pretrained model)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
        model = d.get("model")
        hf = isinstance(model, dict) and "name_or_path" in model
        types_ = {**_SECTION_TYPES, **(_HF_TYPES if hf else {})}
        t = d.get("train")
        if hf and isinstance(t, dict) and t.get("steps"):  # steps set the run's length: the record says so, with
            if t.get("epochs"):                              # no default epochs that did not apply; both given
                raise ConfigError(f"train.steps={t['steps']!r} and train.epochs={t['epochs']!r} both set the "
                                  "run's length; give one (steps > 0, or epochs > 0 with steps = 0)")  # is a guess
            d = {**d, "train": {**t, "epochs": 0}}
        return cls(**build_sections(d, types_, base=HF_DEFAULTS if hf else None))

    def with_overrides(self, overrides: list[str]) -> Config:
        """Apply `section.key=value` strings; values are parsed as YAML scalars, then type-checked. An override of
        train.steps replaces the epochs of the config below it (a preset's one epoch); one of train.epochs beside
        that config's steps is refused, as both in one file are."""
        d = apply_overrides(self.to_dict(), overrides)
        named = {o.split("=", 1)[0].strip() for o in overrides}
        if "train.steps" in named and "train.epochs" not in named:
            d["train"]["epochs"] = 0
        return Config.from_dict(d)

    def to_yaml(self) -> str:
        """The resolved config as a run's config.yaml holds it (every key of every section)."""
        return dump_yaml(self.to_dict())

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def apply_overrides(d: dict[str, dict[str, Any]], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Set `section.key=value` items in a nested config dict (values parsed as YAML scalars); unknown
    sections and keys raise ConfigError listing the valid ones. Type checks happen when the dict is built."""
    if isinstance(overrides, str):  # one string would be read letter by letter ("override 't' must look like...")
        raise ConfigError(f"overrides must be a list of section.key=value strings, got one string {overrides!r:.80}; "
                          "pass [that string]")
    # a dict ({"train.steps": 3}) was read by its keys: "override 'train.steps' must look like section.key=value"
    wrong = [overrides] if not isinstance(overrides, list | tuple) else [x for x in overrides if not isinstance(x, str)]
    if wrong:
        raise TypeError(f"overrides must be a list of section.key=value strings (e.g. ['train.steps=3']), got "
                        f"{type(wrong[0]).__name__} {_SHORT.repr(wrong[0])}")
    seen: dict[str, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        path, raw = item.split("=", 1)
        if path.strip() in seen:  # which one was meant is a guess, as for a duplicate YAML key
            raise ConfigError(f"override {path.strip()} given twice ({seen[path.strip()]}, then {raw}); give each key "
                              "once")
        seen[path.strip()] = raw
        parts = path.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"override key {path!r} must be section.key, e.g. train.steps")
        section, key = parts
        if section not in d:
            raise ConfigError(f"unknown config section {section!r}; valid sections: {', '.join(d)}")
        if key not in d[section]:
            raise ConfigError(f"unknown key {section}.{key}; valid keys: {', '.join(d[section])}")
        d[section][key] = parse_set_value(item, path.strip(), raw)
    return d


_SECTION_TYPES = {"model": ModelConfig, "loops": LoopsConfig, "reg": RegConfig, "data": DataConfig,
                  "train": TrainConfig}
_HF_TYPES = {"model": HFModelConfig, "data": ChatDataConfig}


_SHORT = reprlib.Repr()  # a value echoed in an error: two levels, a few items
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 4, 4, 80


# A number written in ASCII decimal (float() would also take `1_0` and other scripts' digits): configs and the CLI.
REAL_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)


def _coerce(where: str, value: Any, typ: Any) -> Any:
    """Check `value` against a field annotation. ints are accepted for floats; bools never pass as numbers."""
    if isinstance(typ, str):
        typ = {"int": int, "float": float, "str": str, "bool": bool}.get(typ, typ)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        typ = next(a for a in args if a is not type(None))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str) and REAL_NUMBER.fullmatch(value.strip()):
        value = float(value)  # a string `3e-4` (no dot) still reads as a number; `1_0` and other scripts do not
    if typ is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if typ in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where} must be {typ.__name__}, got bool {value!r}")
    if typ is str and isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date
        raise ConfigError(f"{where} must be str, got the date {value}; quote it in YAML ('{value}')")
    if typ is str and isinstance(value, Path):  # a pathlib.Path set from Python (no YAML there to quote): its text
        value = str(value)
    if typ in (int, float, str, bool) and not isinstance(value, typ):
        # YAML typed what was meant as text (a file named 2024, a path with ": " read as a mapping): say how
        hint = f"; for text, put it in YAML quotes (--set \"{where}='...'\", or {where.split('.')[-1]}: '...' in " \
               "a file)" if typ is str else ""
        # reprlib: a YAML alias bomb is a small object whose full repr runs to hundreds of megabytes
        raise ConfigError(f"{where} must be {typ.__name__}, got {type(value).__name__} {_SHORT.repr(value)}{hint}")
    return value


def build_sections(d: Any, types: dict[str, type], base: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build each section of a config schema from a nested dict. Missing sections and keys take `base`'s values
    (default: the section dataclasses' own defaults); unknown sections and keys raise ConfigError naming the
    valid ones."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
    unknown = set(d) - set(types)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; valid sections: {', '.join(types)}")
    built = {}
    for name, sub_cls in types.items():
        values = d.get(name)
        if values is None:  # absent, or `model:` with nothing under it: the defaults
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {name!r} must be a mapping, got {type(values).__name__}")
        built[name] = _build_section(name, sub_cls, {**(base or {}).get(name, {}), **values})
    return built


def _build_section(name: str, sub_cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(sub_cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in sorted(unknown))}; "
                          f"valid keys in {name}: {', '.join(fields)}")
    hints = typing.get_type_hints(sub_cls)
    for k, v in values.items():
        if v is None and type(None) not in typing.get_args(hints[k]):
            # a user's `init_from: null` means "none": the type error's hint to quote text asked for a path 'null'
            default = fields[k].default
            said = "" if default is dataclasses.MISSING else f", {default!r}" + (" (none)" if default == "" else "")
            raise ConfigError(f"null is not a value for {name}.{k}; leave the key out for its default{said}")
    return sub_cls(**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})


def load_config(path_or_preset: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file, or a shipped preset by name (e.g. `addition-prenorm-stars`), then apply overrides."""
    cfg = Config() if path_or_preset is None else Config.from_dict(read_yaml_config(config_given(path_or_preset)))
    return cfg.with_overrides(overrides or [])
