"""The training loop, written out: sample loops, forward, CE, penalty, guarded step, log, checkpoint.

Each step draws one loop count t for the whole batch, runs the model t loops, and minimizes
(1-λ)·CE + λ·penalty once `reg.start_step` is reached (plain CE before, with no penalty graph built).
The penalty's state is h(t) (`reg.at=final`) or h(r) for r uniform in 1..t (`reg.at=random`), detached.

Randomness comes from three seeded generators (data, loop counts, probes) plus torch's global RNG (dropout);
all four are saved in the trainer state, so a resumed run continues the exact stream.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import Config
from .evaluate import sweep
from .loops import describe, sample_loops
from .model import LoopedTransformer, twice_differentiable
from .regularizers import penalty, power_iteration_rho
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


def _truncate_metrics(path: Path, last_step: int) -> None:
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
    path.write_text("".join(k + "\n" for k in keep))


def train(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True,
          fault: dict[str, Any] | None = None) -> Path:
    """Train `cfg` into run directory `out`; returns it. `fault` injects failures for tests
    ({"nan_at_steps": [...]} poisons the loss at those steps; {"crash_at_step": k} raises after step k)."""
    out = Path(out)
    t = cfg.train
    ckpt_dir = out / "checkpoint"
    ckpt.recover(ckpt_dir)
    if ckpt_dir.exists() and not resume:
        raise FileExistsError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                              "or choose another --out")
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    task = make_task(cfg)
    torch.manual_seed(t.seed)
    model = LoopedTransformer(cfg.model).to(device)
    opt = make_optimizer(model, cfg)
    gens = Generators.seeded(t.seed)
    step = 0
    if resume and ckpt_dir.exists():
        model, _ = ckpt.load_model(ckpt_dir, device, expect=cfg)
        opt = make_optimizer(model, cfg)
        state = ckpt.load_state(ckpt_dir)
        opt.load_state_dict(state["optimizer"])
        gens.load(state["generators"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        _truncate_metrics(out / "metrics.jsonl", step)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_yaml(out / "config.yaml")

    eval_batch = task.test_batch(min(t.eval_size, cfg.data.test_size), cfg.data.test_seed, cfg.model.max_seq_len)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext())
    reg = cfg.reg
    bad_streak = 0
    nan_steps = set((fault or {}).get("nan_at_steps", []))

    def save() -> None:
        ckpt.save(ckpt_dir, model, cfg, {
            "step": step, "optimizer": opt.state_dict(), "generators": gens.state(),
            "torch_rng": torch.get_rng_state()})

    log_f = (out / "metrics.jsonl").open("a")
    bar = tqdm(total=t.steps, initial=step, desc=f"train [{describe(cfg.loops)}, reg={reg.kind}]",
               disable=not progress, dynamic_ncols=True)
    try:
        while step < t.steps:
            t0 = time.perf_counter()
            model.train()
            n_loops = sample_loops(cfg.loops, gens.loops, step)
            batch = task.train_batch(t.batch_size, gens.data, cfg.model.max_seq_len).to(device)
            reg_on = reg.kind != "none" and reg.weight > 0 and step >= reg.start_step
            # The depth whose state the penalty sees; drawn even when unused so streams stay aligned.
            r = int(torch.randint(1, n_loops + 1, (1,), generator=gens.probes).item())
            at = n_loops if reg.at == "final" else r
            kept: dict[str, torch.Tensor] = {}

            def keep(i: int, h: torch.Tensor, at=at, kept=kept) -> None:
                if i == at:
                    kept["h"] = h

            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            with amp:
                e = model.embed(batch.input_ids)
                h = model.loop(e, e, n_loops, cfg.loops.backprop_loops, cfg.loops.checkpoint_loops, keep)
                logits = model.readout(h)
                ce = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE)
                pen = None
                if reg_on:
                    with twice_differentiable():
                        pen = penalty(reg.kind, model.step_fn(e.detach()), kept["h"], gens.probes,
                                      reg.power_iters)
                    loss = (1 - reg.weight) * ce + reg.weight * pen
                else:
                    loss = ce
            if step in nan_steps:
                loss = loss * float("nan")
            rec: dict[str, Any] = {"step": step + 1, "loops": n_loops, "ce": ce.item(),
                                   "reg": pen.item() if pen is not None else None,
                                   "reg_kind": reg.kind if reg_on else None, "lr": lr}
            opt.zero_grad(set_to_none=True)
            ok = bool(torch.isfinite(loss))
            gnorm = float("nan")
            if ok:
                loss.backward()
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
                    raise TrainingDiverged(
                        f"{bad_streak} consecutive non-finite steps (last: step {step + 1}, {n_loops} loops); "
                        f"stopping. The last good checkpoint is in {ckpt_dir}")
            step += 1
            rec["grad_norm"] = gnorm
            if reg.rho_every and step % reg.rho_every == 0:
                with twice_differentiable():
                    sub = slice(0, min(16, len(batch)))
                    rho = power_iteration_rho(model.step_fn(e[sub].detach()), h[sub].detach(), iters=20,
                                              generator=gens.probes)
                rec["rho"] = rho.mean().item()
            if t.eval_every and (step % t.eval_every == 0 or step == t.steps):
                rec["acc"] = sweep(model, eval_batch, [cfg.loops.num_loops]).accuracy[0]
            dt = time.perf_counter() - t0
            rec["tok_s"] = batch.input_ids.numel() / dt
            if step % t.log_every == 0 or "acc" in rec or "rho" in rec or "skipped" in rec or step == t.steps:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            bar.update(1)
            bar.set_postfix(loops=n_loops, ce=f"{rec['ce']:.3f}",
                            **({"reg": f"{rec['reg']:.3f}"} if rec["reg"] is not None else {}),
                            **({"acc": f"{rec['acc']:.3f}"} if "acc" in rec else {}))
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.steps:
                save()
            if (fault or {}).get("crash_at_step") == step:
                raise RuntimeError(f"injected crash after step {step}")
        save()
    finally:
        bar.close()
        log_f.close()
    return out
