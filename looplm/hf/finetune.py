"""STARS fine-tuning of pretrained looped LMs (Ouro, or looplm models exported to HF).

Each optimizer step draws one loop count t (log-normal, μ=1.7, σ=0.4, clipped to [1, 16] by default: the paper's
Ouro setting) from a seeded generator that every rank holds identically, runs the model t loops, and minimizes

    (1 - λ) · CE(assistant tokens, logits after t loops) + λ · JSRR(Φ at h(t))

with JSRR the paper's estimator through the model's own one-loop map Φ (`looplm.regularizers`), taken at the
detached state and restricted to real (non-padding) tokens. Plain SFT is `reg.kind=none` with random or fixed
loops. Weights stay float32 (master weights); on CUDA the forward runs under bf16 autocast.

The config has its own schema (`FinetuneConfig`: model, data, loops, reg, train); `loops` and `reg` are looplm's
sections. Presets live in looplm/presets/hf/ (linked from the repository's `configs/ouro-math-stars.yaml`), out
of the addition presets' listing.

A run directory holds `finetune.yaml`, `data_stats.json`, `metrics.jsonl` and `checkpoint/` (an HF model
directory: config, safetensors weights, tokenizer) plus `trainer_state.pt` for `--resume`. Checkpoints are
swapped in atomically. Under `torchrun` the objective is wrapped in DistributedDataParallel (gloo on CPU, nccl
on CUDA); every rank reads its own slice of each global batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from .. import distributed as dist_utils
from ..config import (
    LoopsConfig,
    RegConfig,
    _check,
    _choice,
    apply_overrides,
    build_sections,
    read_yaml_config,
)
from ..loops import describe, sample_loops
from ..model import twice_differentiable
from ..regularizers import jvp, penalty, power_iteration_rho, unit_probes
from ..train import truncate_metrics
from .chat import CHATML_TEMPLATE, IGNORE, end_of_turn_token
from .data import build_examples, collate, epoch_order, load_records

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets" / "hf"
STATE = "trainer_state.pt"


# --- config ---------------------------------------------------------------------------------------------------
@dataclass
class FTModelConfig:
    name_or_path: str = "ByteDance/Ouro-1.4B"  # hub id or local HF directory
    tokenizer: str | None = None  # default: name_or_path
    revision: str | None = None
    gradient_checkpointing: bool = True  # recompute each decoder layer in backward (Ouro models)
    checkpoint_loops: bool = False  # recompute each whole loop in backward instead
    freeze_exit_gate: bool = True  # the early-exit gate gets no gradient from this objective

    def __post_init__(self) -> None:
        _check(bool(self.name_or_path), "model", "name_or_path", "must name a hub model or a local directory")


@dataclass
class FTDataConfig:
    source: str = "AI-MO/NuminaMath-1.5"  # datasets name, or a local .jsonl/.json/.parquet file or folder
    config_name: str | None = None
    split: str = "train"
    format: str = "auto"  # auto | messages | prompt_response
    messages_field: str = "messages"
    prompt_field: str = "problem"
    response_field: str = "solution"
    system_prompt: str | None = None
    chat_template: str | None = None  # Jinja string, .jinja file, or chatml; default: the tokenizer's own
    max_samples: int = 0  # 0 = all records
    subset: str = "first"  # which max_samples records: first (dataset order) or random (seeded by train.seed)
    max_length: int = 4096  # tokens per example
    overlong: str = "drop"  # drop | truncate

    def __post_init__(self) -> None:
        _choice("data", "format", self.format, ("auto", "messages", "prompt_response"))
        _choice("data", "overlong", self.overlong, ("drop", "truncate"))
        _choice("data", "subset", self.subset, ("first", "random"))
        _check(self.max_samples >= 0, "data", "max_samples", "must be >= 0 (0 = all)")
        _check(self.max_length >= 2, "data", "max_length", "must be >= 2")


@dataclass
class FTTrainConfig:
    epochs: int = 1
    steps: int = 0  # optimizer steps; 0 = epochs x (examples / global batch)
    micro_batch_size: int = 4  # examples per forward, per rank
    grad_accum: int = 8  # micro-batches per optimizer step
    lr: float = 1e-6
    min_lr: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500  # 0 = only at the end
    max_bad_steps: int = 5
    device: str = "auto"
    bf16: bool = True  # bf16 autocast on CUDA (weights stay float32); ignored on CPU
    threads: int = 0
    # Under torchrun: "ddp" keeps a full replica of weights, grads and AdamW state on every rank; "fsdp" (PyTorch
    # FSDP2, fully_shard per decoder layer + one root group) shards all three across ranks, for models that do
    # not fit one device. Same maths either way; checkpoints are full (unsharded) and resume under either.
    strategy: str = "ddp"

    def __post_init__(self) -> None:
        s = "train"
        _choice(s, "device", self.device, ("auto", "cpu", "cuda"))
        _choice(s, "strategy", self.strategy, STRATEGIES)
        for k in ("epochs", "micro_batch_size", "grad_accum", "log_every", "max_bad_steps"):
            _check(getattr(self, k) >= 1, s, k, f"must be >= 1, got {getattr(self, k)}")
        for k in ("steps", "warmup_steps", "checkpoint_every", "seed", "threads"):
            _check(getattr(self, k) >= 0, s, k, f"must be >= 0, got {getattr(self, k)}")
        _check(self.lr > 0, s, "lr", "must be > 0")
        _check(0 <= self.min_lr <= self.lr, s, "min_lr", "must be in [0, lr]")
        _check(self.grad_clip >= 0 and self.weight_decay >= 0, s, "grad_clip", "grad_clip and weight_decay >= 0")


def _ouro_loops() -> LoopsConfig:
    return LoopsConfig(sampler="lognormal", num_loops=4, min_loops=1, max_loops=16, mu=1.7, sigma=0.4)


def _stars_reg() -> RegConfig:
    return RegConfig(kind="jsrr", weight=0.1, start_step=0, rho_every=0)


_SECTIONS = {"model": FTModelConfig, "data": FTDataConfig, "loops": LoopsConfig, "reg": RegConfig,
             "train": FTTrainConfig}


@dataclass
class FinetuneConfig:
    model: FTModelConfig = field(default_factory=FTModelConfig)
    data: FTDataConfig = field(default_factory=FTDataConfig)
    loops: LoopsConfig = field(default_factory=_ouro_loops)
    reg: RegConfig = field(default_factory=_stars_reg)
    train: FTTrainConfig = field(default_factory=FTTrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        """Missing keys take this schema's defaults (the paper's Ouro setting), not the addition defaults."""
        return cls(**build_sections(d, _SECTIONS, base=cls().to_dict()))

    def with_overrides(self, overrides: list[str]) -> FinetuneConfig:
        return FinetuneConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_finetune_config(path_or_preset: str | Path | None, overrides: list[str] | None = None) -> FinetuneConfig:
    """A YAML file, or a preset name from looplm/presets/hf/ (e.g. `ouro-math-stars`), then overrides."""
    cfg = (FinetuneConfig() if path_or_preset is None else
           FinetuneConfig.from_dict(read_yaml_config(path_or_preset, PRESET_DIR, "a fine-tuning preset")))
    return cfg.with_overrides(overrides or [])


# --- the objective --------------------------------------------------------------------------------------------
def jsrr_masked(step_fn: Any, h: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """The paper's JSRR, (1/N) Σ_i ||J_i v_i||², for right-padded batches: v_i is a unit vector over sample i's
    real tokens only and J_i is Φ's Jacobian on them, so each sequence's penalty is what it would be unpadded
    (causal attention: real tokens never see the padding after them). `valid` is (B, T, 1), 1 on real tokens.
    With no padding this is `looplm.regularizers.jsrr` (same probes, same value)."""
    h = (h.detach() * valid)
    v = unit_probes(h.shape, generator, h.device, h.dtype) * valid
    v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    _, jv = jvp(lambda x: step_fn(x) * valid, h, v)
    return jv.to(torch.promote_types(jv.dtype, torch.float32)).flatten(1).pow(2).sum(1).mean()


class StarsObjective(torch.nn.Module):
    """(1-λ)·CE on assistant tokens after t loops + λ·penalty(Φ at h(t)), for any model with the looped
    interface (embed / loop / readout / step_fn: OuroForCausalLM, LooplmForCausalLM, LoopedTransformer).

    A module, so that DistributedDataParallel can wrap the whole step (CE and penalty) in one forward.
    """

    def __init__(self, model: torch.nn.Module, loops: LoopsConfig, reg: RegConfig, checkpoint_loops: bool = False):
        super().__init__()
        for name in ("embed", "loop", "readout", "step_fn"):
            if not hasattr(model, name):
                raise TypeError(f"{type(model).__name__} does not expose the looped interface ({name} missing); "
                                "use looplm.hf.OuroForCausalLM or LooplmForCausalLM")
        self.model = model
        self.loops_cfg = loops
        self.reg = reg
        self.checkpoint_loops = checkpoint_loops

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, n_loops: int,
                reg_on: bool, at: int, probes: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.model
        e = m.embed(input_ids)
        kept: dict[str, torch.Tensor] = {}

        def keep(t: int, h: torch.Tensor) -> None:
            if t == at:
                kept["h"] = h

        h = m.loop(e, e, n_loops, self.loops_cfg.backprop_loops, self.checkpoint_loops, keep)
        tgt = labels[:, 1:]
        sel = tgt != IGNORE
        if getattr(m, "readout_is_pointwise", False):
            logits = m.readout(h[:, :-1][sel]).float()  # only the target rows: (N, V), not (B, T, V)
        else:  # a readout with attention (coda blocks) needs whole sequences
            logits = m.readout(h)[:, :-1][sel].float()
        ce = F.cross_entropy(logits, tgt[sel])
        out = {"ce": ce, "n_targets": sel.sum()}
        if reg_on:
            k = getattr(self.reg, "samples", 0) or e.shape[0]  # penalty on the first k sequences only
            e_r, h_r, valid = e[:k].detach(), kept["h"][:k], mask[:k, :, None].to(h.dtype)
            step = m.step_fn(e_r)

            def masked_step(x: torch.Tensor) -> torch.Tensor:
                return step(x) * valid  # padding rows contribute nothing (J restricted to real tokens)

            with twice_differentiable():
                if self.reg.kind == "jsrr":
                    pen = jsrr_masked(step, h_r, valid, probes)
                else:  # other estimators see Φ restricted to the real tokens of each row
                    pen = penalty(self.reg.kind, masked_step, h_r * valid, probes, self.reg.power_iters)
            out["reg"] = pen
            out["loss"] = (1 - self.reg.weight) * ce + self.reg.weight * pen
        else:
            out["loss"] = ce
        return out


# --- the run --------------------------------------------------------------------------------------------------
STRATEGIES = ("ddp", "fsdp")
# Modules that become their own FSDP2 unit: each is all-gathered just before it runs and freed after, so peak
# memory holds one layer's full weights plus the shards. Everything else (embeddings, final norm, lm_head, exit
# gate) forms the root unit.
FSDP_UNITS = ("OuroDecoderLayer", "Block")


def _wrap(objective: torch.nn.Module, model: torch.nn.Module, strategy: str, world: dist_utils.World,
          device: torch.device) -> torch.nn.Module:
    if not world.active:
        return objective
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(objective, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    for m in model.modules():
        if type(m).__name__ in FSDP_UNITS:
            fully_shard(m, mesh=mesh)
    # The objective is the root: its forward is what the loop calls, so its hooks gather the root unit's weights
    # (embed / readout / step_fn are reached through it, not through model.forward).
    return fully_shard(objective, mesh=mesh)


def _full_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on CPU (a collective under FSDP: every rank calls it). The
    optimizer's is keyed by parameter names, so a checkpoint resumes under DDP, FSDP or a single process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    o = StateDictOptions(full_state_dict=True, cpu_offload=dist_on)
    return get_model_state_dict(model, options=o), get_optimizer_state_dict(model, opt, options=o)


def _load_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))


def _resolve_device(name: str, world: dist_utils.World) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available")
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def _lr(step: int, total: int, t: FTTrainConfig) -> float:
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def _chat_template(spec: str | None) -> str | None:
    if spec is None:
        return None
    if spec == "chatml":
        return CHATML_TEMPLATE
    p = Path(spec).expanduser()
    return p.read_text() if spec.endswith(".jinja") or (len(spec) < 300 and p.is_file()) else spec


def _atomic_save(ckpt_dir: Path, model: Any, tokenizer: Any, state: dict[str, Any], cfg: FinetuneConfig,
                 weights: dict[str, torch.Tensor]) -> None:
    tmp, old = ckpt_dir.with_name(ckpt_dir.name + ".tmp"), ckpt_dir.with_name(ckpt_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / STATE)
    cfg.save_yaml(tmp / "finetune.yaml")
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    if ckpt_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        ckpt_dir.rename(old)
    tmp.rename(ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def _recover(ckpt_dir: Path) -> None:
    old = ckpt_dir.with_name(ckpt_dir.name + ".old")
    if not ckpt_dir.exists() and old.exists():
        old.rename(ckpt_dir)
    shutil.rmtree(ckpt_dir.with_name(ckpt_dir.name + ".tmp"), ignore_errors=True)


def finetune(cfg: FinetuneConfig, out: str | Path, resume: bool = False, progress: bool = True,
             fault: dict[str, Any] | None = None) -> Path:
    """Fine-tune `cfg.model.name_or_path` into run directory `out`; returns `out`. Under torchrun every rank
    calls this; rank 0 writes files. `fault={"crash_at_step": k}` raises after step k (tests)."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .registry import register

    register()
    out = Path(out)
    t = cfg.train
    ckpt_dir = out / "checkpoint"
    device_type = "cuda" if (t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available())) else "cpu"
    world = dist_utils.init(device_type)
    device = _resolve_device(t.device, world)
    if world.is_main:
        _recover(ckpt_dir)
    dist_utils.barrier(world)
    if ckpt_dir.exists() and not resume:
        raise FileExistsError(f"{out} already holds a checkpoint; pass --resume to continue it, or choose another "
                              "--out")
    if t.threads:
        torch.set_num_threads(t.threads)
    resuming = resume and ckpt_dir.exists()
    src = str(ckpt_dir) if resuming else cfg.model.name_or_path
    tok_src = str(ckpt_dir) if resuming else (cfg.model.tokenizer or cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(tok_src, revision=None if resuming else cfg.model.revision)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {tok_src} is not a fast tokenizer; assistant masks need character offsets")
    template = _chat_template(cfg.data.chat_template)
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {tok_src} has no chat template; set data.chat_template")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")

    d = cfg.data
    records = load_records(d.source, d.split, d.config_name, d.max_samples, d.subset, t.seed)
    examples, stats = build_examples(records, tokenizer, d.max_length, d.overlong, template, fmt=d.format,
                                     messages_field=d.messages_field, prompt_field=d.prompt_field,
                                     response_field=d.response_field, system_prompt=d.system_prompt)

    eot = end_of_turn_token(tokenizer, template)
    torch.manual_seed(t.seed)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32,
                                                 revision=None if resuming else cfg.model.revision)
    model.to(device).train()
    if template is not None:
        tokenizer.chat_template = template  # saved with the checkpoints
    if eot is not None:  # stop generation at the template's end of turn, not only at the base eos token
        gc = model.generation_config
        eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
        gc.eos_token_id = sorted({e for e in eos if e is not None} | {eot})
    if cfg.model.gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    if cfg.model.freeze_exit_gate:
        for n, p in model.named_parameters():
            if "early_exit_gate" in n:
                p.requires_grad_(False)
    objective = _wrap(StarsObjective(model, cfg.loops, cfg.reg, cfg.model.checkpoint_loops), model, t.strategy,
                      world, device)
    fsdp = world.active and t.strategy == "fsdp"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=t.lr, betas=(t.beta1, t.beta2))
    global_batch = t.micro_batch_size * t.grad_accum * world.size
    total = t.steps or t.epochs * math.ceil(len(examples) / global_batch)
    # Loop counts (and the penalty depth) come from one stream shared by all ranks. Probes come from a stream
    # reseeded every step from (seed, step, rank): ranks draw different amounts (probe shapes follow each rank's
    # padded length), so a single saved state could not restore every rank's stream, and a resumed run would
    # draw other probes than the uninterrupted one.
    gens = {"loops": torch.Generator().manual_seed(t.seed * 1000 + 1)}
    probes = torch.Generator()
    step = 0
    if resuming:
        state = torch.load(ckpt_dir / STATE, map_location="cpu", weights_only=True)
        _load_optimizer(model, opt, state["optimizer"])
        for k, g in gens.items():
            g.set_state(state["generators"][k])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        if world.is_main:
            truncate_metrics(out / "metrics.jsonl", step)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "finetune.yaml")
        (out / "data_stats.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and t.bf16 else nullcontext())
    orders: dict[int, list[int]] = {}

    def example(k: int):
        ep = k // len(examples)
        if ep not in orders:
            orders.clear()
            orders[ep] = epoch_order(len(examples), t.seed, ep)
        return examples[orders[ep][k % len(examples)]]

    def save() -> None:
        weights, opt_state = _full_state(model, opt)  # every rank joins the gathers
        if world.is_main:
            _atomic_save(ckpt_dir, model, tokenizer, {
                "step": step, "optimizer": opt_state,
                "generators": {k: g.get_state() for k, g in gens.items()}, "torch_rng": torch.get_rng_state()}, cfg,
                weights)
        dist_utils.barrier(world)

    reg = cfg.reg
    log_f = (out / "metrics.jsonl").open("a") if world.is_main else None
    bar = tqdm(total=total, initial=step, disable=not (progress and world.is_main), dynamic_ncols=True,
               desc=f"finetune [{describe(cfg.loops)}, reg={reg.kind}]")
    bad = 0
    try:
        while step < total:
            t0 = time.perf_counter()
            n_loops = dist_utils.broadcast_int(sample_loops(cfg.loops, gens["loops"], step), world)
            r = int(torch.randint(1, n_loops + 1, (1,), generator=gens["loops"]).item())
            probes.manual_seed(dist_utils.stream_seed("probes", t.seed, step, world.rank))
            at = n_loops if reg.at == "final" else r
            reg_on = reg.kind != "none" and reg.weight > 0 and step >= reg.start_step
            lr = _lr(step, total, t)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "ce": 0.0, "reg": 0.0}
            n_tok = 0
            for micro in range(t.grad_accum):
                base = ((step * t.grad_accum + micro) * world.size + world.rank) * t.micro_batch_size
                ids, labels, mask = collate([example(base + i) for i in range(t.micro_batch_size)], pad_id)
                ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
                sync = world.active and micro < t.grad_accum - 1  # True: skip the gradient all-reduce
                if fsdp:
                    objective.set_requires_gradient_sync(not sync)
                with (objective.no_sync() if sync and not fsdp else nullcontext()), amp:
                    res = objective(ids, labels, mask, n_loops, reg_on, at, probes)
                loss = res["loss"] / t.grad_accum
                if (fault or {}).get("nan_at_step") == step:
                    loss = loss * float("nan")
                # Always backward (every DDP rank must join the gradient all-reduce); a non-finite loss shows up
                # as a non-finite gradient norm below and the update is skipped on all ranks.
                loss.backward()
                for k in sums:
                    if k in res:
                        sums[k] += float(res[k].detach()) / t.grad_accum
                n_tok += int(res["n_targets"])
            # Report means over ranks (each rank saw its own slice of the global batch).
            red = dist_utils.all_sum(torch.tensor([sums["loss"], sums["ce"], sums["reg"], float(n_tok)],
                                                  dtype=torch.float64), world)
            sums = {"loss": float(red[0]) / world.size, "ce": float(red[1]) / world.size,
                    "reg": float(red[2]) / world.size}
            n_tok = int(red[3])
            gn = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf"))
            gnorm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)  # FSDP: a DTensor
            ok = bool(dist_utils.all_sum(torch.tensor([0.0 if math.isfinite(gnorm) else 1.0]), world).item() == 0)
            rec: dict[str, Any] = {"step": step + 1, "loops": n_loops, "loss": sums["loss"], "ce": sums["ce"],
                                   "reg": sums["reg"] if reg_on else None, "reg_kind": reg.kind if reg_on else None,
                                   "lr": lr, "grad_norm": gnorm, "target_tokens": n_tok}
            if ok:
                opt.step()
                bad = 0
            else:
                opt.zero_grad(set_to_none=True)
                bad += 1
                rec["skipped"] = "non-finite loss or gradient"
                if bad >= t.max_bad_steps:
                    raise RuntimeError(f"{bad} consecutive non-finite steps (last: step {step + 1}); stopping. "
                                       f"The last good checkpoint is in {ckpt_dir}")
            step += 1
            if reg.rho_every and step % reg.rho_every == 0:
                if fsdp:  # outside the objective's forward: gather the root unit's weights by hand
                    objective.unshard()
                with torch.no_grad(), amp:
                    e = model.embed(ids[:2])
                    h = model.loop(e, e, n_loops)
                with twice_differentiable():
                    rec["rho"] = float(power_iteration_rho(model.step_fn(e), h, iters=20,
                                                           generator=probes).mean())
                if fsdp:
                    objective.reshard()
            rec["tok_s"] = n_tok / (time.perf_counter() - t0)  # target tokens per second, all ranks
            if log_f is not None and (step % t.log_every == 0 or step == total or "skipped" in rec or "rho" in rec):
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            bar.update(1)
            bar.set_postfix(loops=n_loops, ce=f"{rec['ce']:.3f}",
                            **({"reg": f"{rec['reg']:.3f}"} if rec["reg"] is not None else {}))
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < total:
                save()
            if (fault or {}).get("crash_at_step") == step:
                raise RuntimeError(f"injected crash after step {step}")
        save()
    except BaseException:
        if world.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # no barrier: the other ranks may be gone
        raise
    finally:
        bar.close()
        if log_f is not None:
            log_f.close()
    dist_utils.shutdown(world)
    return out
