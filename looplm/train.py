"""The training loop, written out: sample loops, forward, CE, penalty, guarded step, log, checkpoint.

Each step draws one loop count t for the whole batch, runs the model t loops, and minimizes
(1-λ)·CE + λ·penalty once `reg.start_step` is reached (plain CE before, with no penalty graph built).
The penalty's state is h(t) (`reg.at=final`) or h(r) for r uniform in 1..t (`reg.at=random`), detached.

Randomness comes from three seeded generators (data, loop counts, probes) plus torch's global RNG (dropout);
all four are saved in the trainer state, so a resumed run continues the exact stream.

Under torchrun every rank draws the same loop count (a shared generator, checked by a broadcast) and the
same global batch, and trains on its own slice of it; probes and dropout come from per-rank streams.
Losses are normalized by global counts (answer tokens, samples), so the summed gradient of W ranks x k
micro-batches is the gradient of the global batch: the result does not depend on W or k.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as dist
from .config import Config
from .evaluate import sweep
from .loops import describe, sample_loops
from .model import LoopedTransformer, twice_differentiable
from .regularizers import regularized_loop
from .tasks.addition import IGNORE, AdditionTask


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but CUDA is not available")
    return torch.device(name)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up to train.lr, then cosine decay to train.min_lr at train.steps. A pure function of the
    step, so resuming needs no scheduler state."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.AdamW:
    # Decay matrices and embeddings; not norms or biases (nanoGPT's split).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    t = cfg.train
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2))


def make_task(cfg: Config) -> AdditionTask:
    task = AdditionTask(cfg.data.digits)
    if task.tok.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the task's vocabulary "
                         f"({task.tok.vocab_size})")
    if task.seq_len > cfg.model.max_seq_len:
        raise ValueError(f"model.max_seq_len={cfg.model.max_seq_len} is too short for {cfg.data.digits}-digit "
                         f"addition, which needs {task.seq_len}")
    return task


@dataclass
class Generators:
    data: torch.Generator
    loops: torch.Generator
    probes: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Generators:
        # Distinct streams so that, e.g., turning the regularizer on does not change the data order.
        return cls(*(torch.Generator().manual_seed(seed * 1000 + k) for k in (1, 2, 3)))

    def state(self) -> dict[str, torch.Tensor]:
        return {"data": self.data.get_state(), "loops": self.loops.get_state(), "probes": self.probes.get_state()}

    def load(self, s: dict[str, torch.Tensor]) -> None:
        self.data.set_state(s["data"])
        self.loops.set_state(s["loops"])
        self.probes.set_state(s["probes"])


class Objective(nn.Module):
    """One micro-batch's loss terms as a forward(), so DistributedDataParallel can wrap it (DDP syncs the
    gradients of what runs inside its forward)."""

    def __init__(self, model: LoopedTransformer, cfg: Config):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, n_loops: int, at: int | None,
                probes: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """-> (sum of answer-token CE, penalty (mean over this micro-batch) or None, e, h(n_loops))."""
        m, lc = self.model, self.cfg.loops
        e = m.embed(input_ids)
        # The loop and the penalty at the detached state h(at); see regularized_loop for how (fused into a
        # loop when it can be, same value and gradients either way).
        h, pen = regularized_loop(m, e, n_loops, at, self.cfg.reg, probes, lc.backprop_loops, lc.checkpoint_loops)
        logits = m.readout(h)
        ce_sum = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE,
                                 reduction="sum")
        return ce_sum, pen, e, h


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint: they will be redone."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a torn last line from a crash
    tmp = path.with_name(path.name + ".tmp")  # rewrite by rename, so a kill here cannot lose the log
    tmp.write_text("".join(k + "\n" for k in keep))
    tmp.replace(path)


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True,
          fault: dict[str, Any] | None = None) -> Path:
    """Train `cfg` into run directory `out`; returns it. `fault` injects failures for tests
    ({"nan_at_steps": [...]} poisons the loss at those steps; {"crash_at_step": k} raises after step k)."""
    out = Path(out)
    t = cfg.train
    ckpt_dir = out / "checkpoint"
    device = resolve_device(t.device)
    world = dist.init(device.type)
    if device.type == "cuda" and world.active:
        device = torch.device("cuda", world.local_rank)
    if t.batch_size % world.size:
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by the world size {world.size}")
    shard = t.batch_size // world.size
    micro = t.micro_batch_size or shard
    if shard % micro:
        raise ValueError(f"train.micro_batch_size={micro} does not divide the per-rank batch {shard} "
                         f"(train.batch_size={t.batch_size} over {world.size} process(es))")
    if world.is_main:
        ckpt.recover(ckpt_dir, keep=t.keep_checkpoints)
    dist.barrier(world)
    if ckpt_dir.exists() and not resume:
        raise FileExistsError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                              "or choose another --out")
    if t.threads:
        torch.set_num_threads(t.threads)
    task = make_task(cfg)
    torch.manual_seed(t.seed)
    model = LoopedTransformer(cfg.model).to(device)
    resuming = resume and ckpt_dir.exists()
    # A resumed run's own checkpoint holds its weights; the run it started from need not exist any more.
    if t.init_from and not resuming:
        model = ckpt.load_model(t.init_from, device, expect=cfg)[0]
    opt = make_optimizer(model, cfg)
    gens = Generators.seeded(t.seed)
    step = 0
    if resuming:
        model, saved = ckpt.load_model(ckpt_dir, device, expect=cfg)
        changed = ckpt.config_diff(saved, cfg, ("loops", "reg", "data", "train"))
        if changed:
            tqdm.write("resuming with changed settings; the run will differ from an uninterrupted one:\n  "
                       + "\n  ".join(changed))
        opt = make_optimizer(model, cfg)
        state = ckpt.load_state(ckpt_dir)
        opt.load_state_dict(state["optimizer"])
        gens.load(state["generators"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        step = int(state["step"])
    if world.active:
        # Per-rank streams for probes and dropout, derived from (seed, rank, step) so that a resume with a
        # different world size still gives every rank its own stream. Ranks share data and loop counts.
        gens.probes.manual_seed(dist.stream_seed("probes", t.seed, step, world.rank))
        torch.manual_seed(dist.stream_seed("dropout", t.seed, step, world.rank))
    objective: nn.Module = Objective(model, cfg)
    if world.active:
        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    if world.is_main:
        # Drop log lines from steps after the checkpoint (all on a fresh start): they are (re)done now.
        truncate_metrics(out / "metrics.jsonl", step)
        out.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(out / "config.yaml")

    eval_batch = task.test_batch(min(t.eval_size, cfg.data.test_size), cfg.data.test_seed, cfg.model.max_seq_len)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext())
    reg = cfg.reg
    bad_streak = 0
    nan_steps = set((fault or {}).get("nan_at_steps", []))

    def save() -> None:
        if not world.is_main:
            return
        ckpt.save(ckpt_dir, model, cfg, {
            "step": step, "optimizer": opt.state_dict(), "generators": gens.state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
            keep=t.keep_checkpoints)

    log_f = (out / "metrics.jsonl").open("a") if world.is_main else open(os.devnull, "w")  # noqa: SIM115
    bar = tqdm(total=t.steps, initial=step, desc=f"train [{describe(cfg.loops)}, reg={reg.kind}]",
               disable=not (progress and world.is_main), dynamic_ncols=True)
    try:
        while step < t.steps:
            t0 = time.perf_counter()
            model.train()
            n_loops = dist.broadcast_int(sample_loops(cfg.loops, gens.loops, step), world, device)
            # Every rank draws the same global batch and keeps its own slice of it.
            full = task.train_batch(t.batch_size, gens.data, cfg.model.max_seq_len)
            n_tok = int((full.targets != IGNORE).sum())  # global count: the CE normalizer on every rank
            mine = slice(world.rank * shard, (world.rank + 1) * shard)
            batch = type(full)(full.input_ids[mine], full.targets[mine], full.prompt_lens[mine]).to(device)
            reg_on = reg.kind != "none" and reg.weight > 0 and step >= reg.start_step
            # The depth whose state the penalty sees; drawn even when unused so streams stay aligned.
            # Rank 0's draw is broadcast so that every rank regularizes the same depth (probes stay per rank).
            r = dist.broadcast_int(int(torch.randint(1, n_loops + 1, (1,), generator=gens.probes).item()), world,
                                   device)
            at = {"final": n_loops, "random": r, "penultimate": n_loops - 1}[reg.at]

            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; scaling each micro-batch's loss by W makes the synced
            # gradient the sum, i.e. the gradient of the global-batch objective.
            sums = torch.zeros(3, dtype=torch.float64)  # CE sum, penalty x samples, non-finite flag
            n_micro = shard // micro
            for k in range(n_micro):
                sl = slice(k * micro, (k + 1) * micro)
                sync = nullcontext() if (k == n_micro - 1 or not world.active) else objective.no_sync()
                with sync:
                    with amp:
                        ce_sum, pen, e, h = objective(batch.input_ids[sl], batch.targets[sl], n_loops,
                                                      at if reg_on else None, gens.probes)
                        loss = (ce_sum / n_tok) * (1 - reg.weight if pen is not None else 1.0)
                        if pen is not None:
                            loss = loss + reg.weight * pen * (micro / t.batch_size) * world.size
                        loss = loss * world.size
                    if step in nan_steps:
                        loss = loss * float("nan")
                    finite = bool(torch.isfinite(loss))
                    if finite:
                        loss.backward()
                sums += torch.tensor([ce_sum.item(), pen.item() * micro if pen is not None else 0.0,
                                      0.0 if finite else 1.0], dtype=torch.float64)
            sums = dist.all_sum(sums.to(device), world).cpu()
            ce_val, pen_val = sums[0].item() / n_tok, (sums[1].item() / t.batch_size if reg_on else None)
            rec: dict[str, Any] = {"step": step + 1, "loops": n_loops, "ce": ce_val, "reg": pen_val,
                                   "reg_kind": reg.kind if reg_on else None, "lr": lr}
            ok = sums[2].item() == 0  # every rank must agree to step, or none does
            loss = torch.tensor(ce_val if ok else float("nan"))
            gnorm = float("nan")
            if ok:
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                             t.grad_clip if t.grad_clip > 0 else float("inf")))
                ok = math.isfinite(gnorm)
            if ok:
                opt.step()
                bad_streak = 0
            else:
                # No update: a single NaN must not poison the weights or the optimizer moments.
                bad_streak += 1
                opt.zero_grad(set_to_none=True)
                rec["skipped"] = "non-finite loss" if not math.isfinite(loss.item()) else "non-finite gradient"
                tqdm.write(f"step {step + 1}: {rec['skipped']} at {n_loops} loops; update skipped "
                           f"({bad_streak}/{t.max_bad_steps})")
                if bad_streak >= t.max_bad_steps:
                    log_f.write(json.dumps(rec) + "\n")
                    log_f.flush()
                    raise TrainingDiverged(
                        f"{bad_streak} consecutive non-finite steps (last: step {step + 1}, {n_loops} loops); "
                        "stopping. " + (f"The last good checkpoint is in {ckpt_dir}." if ckpt_dir.exists() else
                                        "No checkpoint had been written yet.")
                        + " Lower train.lr or raise train.max_bad_steps to go on.")
            step += 1
            rec["grad_norm"] = gnorm
            if reg.rho_every and step % reg.rho_every == 0 and world.is_main:
                # ρ(∂Φ/∂h) at this step's final state, on up to 16 samples' real tokens: 30 Arnoldi steps
                # (looplm.dynamics.spectral_radius). `rho` is the mean largest-modulus Ritz value, a running
                # estimate; `rho_converged` the fraction of samples whose estimate passed the residual test.
                from .dynamics import spectral_radius
                from .tasks.addition import PAD

                sub = slice(0, min(16, micro))  # of the last micro-batch, whose e and h are at hand
                with twice_differentiable():
                    est = spectral_radius(model.step_fn(e[sub].detach()), h[sub].detach().to(e.dtype), iters=30,
                                          tol=1e-3, generator=gens.probes, method="arnoldi",
                                          mask=batch.input_ids[sl][sub] != PAD)
                rec["rho"] = est.raw.mean().item()
                rec["rho_converged"] = est.converged_fraction
            if world.active:  # the streams of the next step, exactly as a resume at `step` sets them
                gens.probes.manual_seed(dist.stream_seed("probes", t.seed, step, world.rank))
                torch.manual_seed(dist.stream_seed("dropout", t.seed, step, world.rank))
            if t.eval_every and world.is_main and (step % t.eval_every == 0 or step == t.steps):
                rec["acc"] = sweep(model, eval_batch, [cfg.loops.num_loops]).accuracy[0]
            dt = time.perf_counter() - t0
            rec["tok_s"] = full.input_ids.numel() / dt  # global tokens per second
            if step % t.log_every == 0 or "acc" in rec or "rho" in rec or "skipped" in rec or step == t.steps:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            bar.update(1)
            bar.set_postfix(loops=n_loops, ce=f"{rec['ce']:.3f}",
                            **({"reg": f"{rec['reg']:.3f}"} if rec["reg"] is not None else {}),
                            **({"acc": f"{rec['acc']:.3f}"} if "acc" in rec else {}))
            # Not during a run of skipped steps: the weights have not moved, and rotating the history would
            # push out an older checkpoint that may be needed to back off from a divergence.
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps and not bad_streak:
                save()
            if (fault or {}).get("crash_at_step") == step:
                raise RuntimeError(f"injected crash after step {step}")
        save()
    finally:
        bar.close()
        log_f.close()
        dist.shutdown(world)
    return out
