"""The training loop, written out once for every looped model: sample loops, objective, guarded step, log,
checkpoint, resume. `looplm train` and `looplm finetune` both run `fit`.

Each step draws one loop count t for the whole batch, runs the model t loops, and minimizes
(1-λ)·CE + λ·penalty once `reg.start_step` is reached (plain CE before, with no penalty graph built).
What differs by model kind is only where the model, the data and the checkpoint's model files come from
(`native_run` here, `looplm.hf.finetune.hf_run` for a pretrained HF model).

Randomness: the data stream and the loop counts come from seeded generators that every rank holds
identically (both saved in the trainer state); the penalty's probes and dropout come from per-rank streams
reseeded every step from (seed, step, rank). A resumed run therefore continues the exact stream, whatever the
world size it resumes under.

The batch rule: `train.batch_size` is the global batch. Under torchrun every rank draws the same global batch
and trains on its own slice of it, in micro-batches of `train.micro_batch_size`. Losses are normalized by
global counts (scored tokens, samples), so the summed gradient of W ranks x k micro-batches is the gradient of
the global batch: the result does not depend on W or k.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed as dist
from . import fitcheck, rundir, spectra, tasks
from .config import Config, ConfigError
from .errors import UserError
from .evaluate import sweep
from .hardware import resolve_device, set_threads  # noqa: F401 (looplm.train's names since the start)
from .logger import MetricsLog, check_available, truncate_metrics
from .looped import CtxRows, check_looped, check_protocol
from .loops import backprop_notes, bound_notes, describe, sample_loops, training_range
from .model import LoopedTransformer
from .objective import Objective
from .tasks import (
    check_fingerprint,
    make_task,
    save_fingerprint,
    saved_tokenizer,
    starting_tokenizer,
    tokenizers,
    with_task_vocab,
)
from .tasks.base import IGNORE


class TrainingDiverged(UserError, RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class Interrupted(UserError):
    """Ctrl-C or SIGTERM: the run saved a checkpoint at the last finished step and stopped. `code` is the exit
    status the CLI gives: 130 for Ctrl-C (SIGINT), 143 for SIGTERM (128 + the signal, as a shell reports it)."""

    def __init__(self, message: str, code: int = 130, hint: str | None = None):
        super().__init__(message)  # the default hint as the caller passes it (fit's resume=True from Python)
        self.message, self.code = message, code
        self.hint = f"continue with {rundir.resume_flag()}" if hint is None else hint

    def __str__(self) -> str:  # the hint says how to continue: a study reruns its own command, not --resume
        return f"{self.message}; {self.hint}" if self.hint else self.message


class Terminated(KeyboardInterrupt):
    """SIGTERM where no training loop handles it: stop at once, as Ctrl-C does (the CLI exits 143)."""


def lr_at(step: int, cfg: Config, total: int | None = None) -> float:
    """Linear warm-up to train.lr, then cosine decay to train.min_lr at `total` steps (default train.steps). A
    pure function of the step, so resuming needs no scheduler state."""
    t = cfg.train
    total = t.steps if total is None else total
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, total - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, frac)))


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    # Decay matrices and embeddings; not norms or biases (nanoGPT's split). Frozen parameters are left out.
    params = [p for p in model.parameters() if p.requires_grad]
    t = cfg.train
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2))


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
        return {"data": self.data.get_state(), "loops": self.loops.get_state()}

    def load(self, s: dict[str, torch.Tensor]) -> None:
        self.data.set_state(s["data"])
        self.loops.set_state(s["loops"])


@dataclass
class Run:
    """What `fit` needs from a model kind: the model, its task and how its checkpoint files are written."""

    model: nn.Module
    task: Any  # train_batch(n, gen, step), held_out(n), size (looplm.tasks)
    write_model: Callable[[Path, dict[str, torch.Tensor]], None]
    ctx_rows: CtxRows | None = None  # a module of one's own: its per-sample ctx tensors


def native_run(cfg: Config, device: torch.device, resume_from: Path | None, model: nn.Module | None = None,
               task: Any = None) -> Run:
    """looplm's own LoopedTransformer (or a user's looped module, `model`) on a task: fresh, from
    train.init_from, or from the run's checkpoint. The task's tokenizer is saved with every checkpoint."""
    task = task if task is not None else make_task(cfg)
    torch.manual_seed(cfg.train.seed)
    # A resumed run's own checkpoint holds its weights; the run it started from need not exist any more.
    src = resume_from or cfg.train.init_from
    if model is not None:  # the user's module: its weights are its own business, the files are the usual ones
        if src:
            ckpt.load_weights(src, model)
    elif src:
        model = ckpt.load_model(src, device, expect=cfg)[0]
    else:
        model = LoopedTransformer(cfg.model)
    if src:  # non-finite weights would fail every step, blamed on the learning rate
        fitcheck.check_finite_start(model, src, resumed=resume_from is not None)
    own = fitcheck.own_class(model, cfg)  # a subclass, or an edited LoopedTransformer: config.json does not describe it

    def write_model(folder: Path, weights: dict[str, torch.Tensor]) -> None:
        ckpt.write_native(folder, weights, cfg, own)
        tokenizers.save(task.tok, folder)
        save_fingerprint(task, folder)

    return Run(model.to(device), task, write_model)


def _wrap(objective: nn.Module, model: nn.Module, strategy: str, world: dist.World, device: torch.device
          ) -> nn.Module:
    """DDP or FSDP2 around the objective under torchrun; the objective itself in a world of one."""
    if not world.active:
        return objective
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    # Each loop unit is all-gathered just before it runs and freed after, so peak memory holds one block's full
    # weights plus the shards; the rest (embeddings, final norm, head) forms the root unit, the objective, whose
    # forward is what the loop calls.
    mesh = init_device_mesh(device.type, (world.size,))
    for unit in model.loop_units():
        fully_shard(unit, mesh=mesh)
    return fully_shard(objective, mesh=mesh)


def _full_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts on CPU (a collective under FSDP: every rank calls it). The
    optimizer's is keyed by parameter names, so a checkpoint resumes under DDP, FSDP or a single process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    o = StateDictOptions(full_state_dict=True, cpu_offload=dist_on)
    return ckpt.cpu_weights(get_model_state_dict(model, options=o)), get_optimizer_state_dict(model, opt, options=o)


def _load_optimizer(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """AdamW keeps no state for a parameter that never had a gradient (truncated backprop without injection never
    reaches pos_emb; an unused branch): its checkpoint lists it in a param group with no state, which torch's
    strict load refused. Load non-strictly only when every parameter is listed, so a real mismatch still fails."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    listed = {name for group in state["param_groups"] for name in group["params"]}
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    set_optimizer_state_dict(model, opt, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True, strict=not params.keys() <= listed))
    for name in listed - set(state["state"]):  # torch gave it a zero-gradient step's state: it never stepped
        opt.state.pop(params.get(name), None)


def fit(cfg: Config, out: str | Path, resume: bool = False, progress: bool = True,
        fault: dict[str, Any] | None = None, model: nn.Module | None = None) -> Path:
    """Train `cfg` into run directory `out`; returns it. Under torchrun every rank calls this; rank 0 writes.

    `model`: a looped module of your own (looplm.looped protocol) to train on `cfg`'s task instead of the
    LoopedTransformer that `cfg.model` describes; its checkpoints hold its state dict, and a resume loads them
    into the module you pass again.

    `fault` injects failures for tests: {"nan_at_steps": [...]} poisons the loss at those (0-based) steps;
    {"crash_at_step": k} raises after step k; {"interrupt_at_step": k} acts as Ctrl-C after step k.
    """
    threads = torch.get_num_threads()
    # The run reseeds torch's global RNG (dropout): a notebook's draws after fit (the next model's initial
    # weights) repeated from fit to fit. The caller's state comes back: the CPU's, and its CUDA device's if it had one
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda), fitcheck.grad_on():  # (no_grad is lifted, inference_mode refused)
            return _start(cfg, out, resume, progress, fault, model)
    finally:  # train.threads is the run's: a notebook's torch went on with it after fit returned
        torch.set_num_threads(threads)


def _start(cfg: Config, out: str | Path, resume: bool, progress: bool, fault: dict[str, Any] | None,
           model: nn.Module | None) -> Path:
    fitcheck.check_cfg(cfg, out)  # first: out is read next
    if isinstance(out, str) and not out.strip():  # Path("") is the current directory: the CLI refuses --out ""
        raise UserError("out is empty; give a folder for the run")
    if isinstance(out, Path) and str(out) == ".":  # Path("") reads as "." too: it trained into the current directory
        raise UserError("out is Path('.'), as Path('') is; give a folder for the run (the string '.' trains here)")
    out = Path(out)
    for name, value in (("resume", resume), ("progress", progress)):  # resume="no" is truthy: it resumed the run
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r:.80}")
    # Validated again: a Config's fields can be set after it was built (cfg.loops.min_loops = 3), past its checks
    cfg = Config.from_dict(cfg.to_dict())
    t = cfg.train
    world = dist.init("cuda" if resolve_device(t.device).type == "cuda" else "cpu")
    device = resolve_device(t.device, world.local_rank)
    if t.batch_size % world.size:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by the world size {world.size}")
    shard = t.batch_size // world.size
    micro = min(t.micro_batch_size or shard, shard)  # a memory cap: never more than this rank's share
    if shard % micro:
        raise ConfigError(f"train.micro_batch_size={micro} does not divide the per-rank batch {shard} "
                          f"(train.batch_size={t.batch_size} over {world.size} process(es))")
    # reg.samples counts over the global batch, whatever its split: each micro-batch probes its share of them
    if cfg.reg.samples > t.batch_size:
        raise ConfigError(f"reg.samples={cfg.reg.samples} is more than the batch holds (train.batch_size="
                          f"{t.batch_size}); lower it (0 = all)")
    if cfg.reg.samples and cfg.reg.samples * micro % t.batch_size:
        share = cfg.reg.samples * micro / t.batch_size
        raise ConfigError(f"reg.samples={cfg.reg.samples} cannot be shared evenly by micro-batches of {micro} out of "
                          f"train.batch_size={t.batch_size} (each would probe {share:g}); choose a multiple of the "
                          "number of micro-batches")
    # Everything up to the lock reads only, on every rank: a refused command changes nothing on disk.
    check_available(t.logger)
    rundir.check_out_of_data(out, cfg)
    src = rundir.resume_point(out, resume)
    # said once it goes on
    cfg, notes = rundir.on_resume(src, cfg, out) if src is not None else (cfg, rundir.fresh_start(out, resume))
    t = cfg.train
    task = None
    if cfg.kind == "native":  # a resumed run encodes its data with the tokenizer its checkpoint holds
        task = make_task(cfg, saved_tokenizer(src) if src is not None else starting_tokenizer(t.init_from, cfg.data))
        fitcheck.check_init_vocab(cfg, task, src, model)
        cfg = with_task_vocab(cfg, task)
    fitcheck.check_model(src, cfg)
    fitcheck.check_module(model, cfg, src)
    changed = rundir.check_resume(src, cfg, out) if src is not None else []
    set_threads(t.threads, "train.threads")
    if cfg.kind == "hf":
        from .hf.finetune import hf_run

        run = hf_run(cfg, device, src)
    else:
        if model is None:  # a user's module is not the model section's LoopedTransformer: its size is its own
            check_memory(cfg, micro, getattr(task, "seq_len", None), device)  # (a task of one's own may not say)
        run = native_run(cfg, device, src, model, task)
        if model is not None:  # a module of one's own: a broken protocol was torch's error from deep in a step
            probe = run.task.held_out(2).to(device)
            with fitcheck.sizes_named(run.model, probe, cfg):
                run.ctx_rows = check_protocol(run.model, probe.input_ids, probe.mask, cfg.model.vocab_size,
                                              reg=cfg.reg)
    if src is not None:
        check_fingerprint(run.task, src, "a resume continues a run on the data it was trained on; restore the data, "
                                         "or start a new run from this one")
        tasks.keep_spelling(src, cfg)  # (read by the name given, recorded by the one it was trained with)
    total = t.steps or _epoch_steps(t, run.task.size, world.is_main)
    state = ckpt.load_state(src) if src is not None else None
    if state is not None:
        done = rundir.already_done(out, src, int(state["step"]), cfg, total, changed, notes)
        if done is not None:  # a finished run resumed (a restart script, a study): it stays as it is
            if world.is_main:
                print(done)
            dist.shutdown(world)
            return out
        if changed and world.is_main:
            tqdm.write(rundir.resume_note(changed))
    notes += [*cfg.unread(), *cfg.unreached(total), *bound_notes(cfg.loops), *tasks.window_notes(cfg)]
    notes += backprop_notes(cfg.loops, total, cfg.model) if cfg.kind == "native" else []
    for note in notes if world.is_main else []:
        print(note)
    if t.stop_at_acc and getattr(run.task, "scored_by", "exact_match") == "perplexity":
        raise ConfigError("train.stop_at_acc: a text task is scored by perplexity, not exact match; its evaluations "
                          "log eval_ce and eval_ppl (set stop_at_acc to 0)")
    eval_batch = run.task.held_out(t.eval_size) if t.eval_every else None
    if eval_batch is not None and len(eval_batch) < t.eval_size and world.is_main:  # say it, not a silent clip
        print(f"note: train.eval_size={t.eval_size}, but the held-out split holds {len(eval_batch)}; the evaluations "
              f"score those {len(eval_batch)} (metrics.jsonl: "
              f"{'eval_tokens' if getattr(run.task, 'scored_by', '') == 'perplexity' else 'acc_n'})")
    dist.barrier(world)  # every rank has checked before rank 0 takes the lock (the ranks are one writer)
    with contextlib.ExitStack() as held:
        if world.is_main:
            held.enter_context(rundir.claimed(out, resume, src, t.keep_checkpoints))
        dist.barrier(world)
        return _fit(cfg, out, world, device, shard, micro, run, state, eval_batch, progress, fault, total)


def _epoch_steps(t: Any, size: int, say: bool) -> int:
    """train.epochs passes over `size` examples in whole batches: the concatenated epochs cut into batches, the
    tail that fills no batch left out, so no example is drawn more often than the epochs say (said, if any)."""
    steps = t.epochs * size // t.batch_size
    if steps == 0:
        raise ConfigError(f"train.batch_size={t.batch_size} is more than train.epochs={t.epochs} pass(es) over the "
                          f"{size} examples hold; lower the batch or raise the epochs")
    left = t.epochs * size - steps * t.batch_size
    if left and say:
        print(f"note: train.epochs={t.epochs} over {size} examples in batches of {t.batch_size}: {steps} steps; the "
              f"last {left} example(s) of the last pass are not drawn")
    return steps


def check_memory(cfg: Config, micro: int | None = None, seq_len: int | None = None, device: Any = None) -> None:
    """Refuse, before anything starts, a native run whose weights, AdamW state and activations (micro-batches of
    `micro`, None: one process's; sequences of the task's `seq_len`, not max_seq_len: batches are padded to their
    longest row, and sized by the position table, runs that fit were refused as needing 100x the memory) cannot
    fit here. The activations are a lower bound (10·D + 2·d_ff + 2·H·T floats per token, block and graph loop)."""
    from . import memory
    m, lp, t = cfg.model, cfg.loops, cfg.train
    micro = micro or min(t.micro_batch_size or t.batch_size, t.batch_size)
    n_pos = min(seq_len or m.max_seq_len, m.max_seq_len)
    with torch.device("meta"):
        params = sum(p.numel() for p in LoopedTransformer(m).parameters())
    # the deepest loop count a training step samples (loops.num_loops alone only sets the no-graph evaluations)
    deepest = training_range(lp)[1]
    span = min(lp.backprop_loops or deepest, deepest)  # the loops a step backpropagates through
    # loops.checkpoint_loops keeps each loop's input and recomputes one loop at a time; every layer run with a graph
    # also costs autograd's records (memory.require_training), which a million checkpointed loops mostly were
    graph_loops = 1 if lp.checkpoint_loops else span
    per_token = 10 * m.d_model + 2 * m.d_ff + 2 * m.n_heads * n_pos
    floats = (m.n_prelude + m.n_coda + m.n_core * graph_loops) * per_token + lp.checkpoint_loops * span * m.d_model
    memory.require_training(16 * params + 4 * micro * n_pos * floats, m.n_prelude + m.n_coda + m.n_core * span,
                            f"{params:,} parameters (model.d_model={m.d_model}) with micro-batches of {micro} "
                            f"sequences of up to {n_pos} tokens and up to {span} loops with a graph", device)


def _fit(cfg: Config, out: Path, world: dist.World, device: torch.device, shard: int, micro: int, run: Run,
         state: dict[str, Any] | None, eval_batch: Any, progress: bool, fault: dict[str, Any] | None,
         total: int) -> Path:
    t = cfg.train
    ckpt_dir = out / "checkpoint"
    model, task = check_looped(run.model), run.task
    # each micro-batch probes its share of reg.samples (its first rows): the count is the same whatever the split
    reg_micro = dataclasses.replace(cfg.reg, samples=cfg.reg.samples * micro // t.batch_size)
    objective = _wrap(Objective(model, cfg.loops, reg_micro, run.ctx_rows), model, t.strategy, world, device)
    fsdp = world.active and t.strategy == "fsdp"
    opt = make_optimizer(model, cfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    gens = Generators.seeded(t.seed)
    step = 0
    if state is not None:
        # A module reused from an earlier fit (a notebook) holds gradients; torch's optimizer-state loader would
        # then skip building the state it fills
        model.zero_grad(set_to_none=True)
        try:
            _load_optimizer(model, opt, state["optimizer"])
            gens.load(state["generators"])
            step = int(state["step"])
        except (KeyError, TypeError, ValueError, RuntimeError, AssertionError) as e:
            raise ckpt.CheckpointError(f"{ckpt_dir / ckpt.STATE} does not hold this run's trainer state "
                                       f"({type(e).__name__}: {e})") from None
    try:
        log = MetricsLog(out, t.logger, cfg.to_dict(), world.is_main, step)
    except UserError:
        if state is None and world.is_main:  # a fresh run leaves nothing behind (its --out was new or empty)
            for name in ("wandb", "tensorboard"):
                shutil.rmtree(out / name, ignore_errors=True)
        raise
    if world.is_main:
        # Drop log lines from steps after the checkpoint (all on a fresh start): they are (re)done now.
        dropped = truncate_metrics(out / "metrics.jsonl", step)
        if dropped:  # say so: a log that shrinks without a word looks like lost data
            tqdm.write(f"{out / 'metrics.jsonl'}: {dropped} record(s) of steps after {step} dropped; those steps "
                       "are run again")
        ckpt.write_result(out / "config.yaml", cfg.save_yaml, replace=True)  # whole or absent (a full disk)

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and t.bf16 else nullcontext()
    reg = cfg.reg
    bad_streak = updates = 0
    start = step
    fault = fault or {}
    nan_steps = set(fault.get("nan_at_steps", []))

    @contextlib.contextmanager
    def gathered() -> Iterator[None]:
        """Full weights on this rank for work outside the objective's forward (FSDP shards them)."""
        if fsdp:
            objective.unshard()
        try:
            yield
        finally:
            if fsdp:
                objective.reshard()

    # what the run started from (train.init_from), kept by its resumes: a resume refuses once that has changed
    if state is not None:
        began = {"init_from": state["init_from"]} if "init_from" in state else {}
    else:
        began = {"init_from": rundir.origin(t.init_from)} if t.init_from and cfg.kind == "native" else {}
    saved_at = [step]  # the step of the newest checkpoint on disk (the resumed one, or none at 0)

    def save() -> None:
        saved_at[0] = step
        weights, opt_state = _full_state(model, opt)  # every rank joins the gathers
        if world.is_main:
            ckpt.write_checkpoint(ckpt_dir, weights, run.write_model,
                                  {"step": step, "optimizer": opt_state, "generators": gens.state(), **began},
                                  keep=t.keep_checkpoints)
        dist.barrier(world)

    # Ctrl-C or SIGTERM (in a single process) finishes the step it lands in, saves, and stops: a step is never
    # half applied. A second signal stops at once.
    stop: list[int] = []
    catch = not world.active and threading.current_thread() is threading.main_thread()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop:  # the message says what is on disk: the steps since the last save are lost
            last = ckpt.saved_step(ckpt_dir)
            kept = f"the checkpoint at step {last} in {ckpt_dir} is kept" if last is not None else \
                f"there is no checkpoint yet, so {rundir.resume_flag()} starts the run again"
            raise (Terminated if signum == signal.SIGTERM else KeyboardInterrupt)(
                f"{'terminated' if signum == signal.SIGTERM else 'interrupted'} twice: stopped at step {step} "
                f"without saving; {kept}")
        stop.append(signum)
        # said at once: a long step (many loops) otherwise looked like an unheard Ctrl-C. A raw write: a signal
        # may land inside another write to stderr (a progress bar's), which a buffered stream refuses to re-enter
        with contextlib.suppress(OSError):
            os.write(2, "\nnote: stopping at the end of this step, with a checkpoint; "
                        f"{'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'} again stops now, without "
                        "saving\n".encode())

    prev = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)} if catch else {}
    bar = tqdm(total=total, initial=step, desc=f"train [{describe(cfg.loops)}, reg={reg.kind}]",
               disable=not (progress and world.is_main), dynamic_ncols=True)
    try:
        while step < total:
            t0 = time.perf_counter()
            model.train()
            n_loops = dist.broadcast_int(sample_loops(cfg.loops, gens.loops, step), world, device)
            # The depth whose state the penalty sees; drawn even when unused so the streams stay aligned.
            r = int(torch.randint(1, n_loops + 1, (1,), generator=gens.loops).item())
            reg_on = reg.kind != "none" and reg.weight > 0 and step >= reg.start_step
            at = {"final": n_loops, "random": r, "penultimate": n_loops - 1}[reg.at] if reg_on else None
            gens.probes.manual_seed(dist.stream_seed("probes", t.seed, step, world.rank))
            torch.manual_seed(dist.stream_seed("dropout", t.seed, step, world.rank))
            # Every rank draws the same global batch and keeps its own slice of it.
            full = task.train_batch(t.batch_size, gens.data, step)
            n_tok = int((full.targets != IGNORE).sum())  # global count: the CE normalizer on every rank
            mine = full.rows(slice(world.rank * shard, (world.rank + 1) * shard))
            # variable-length data (chat): micro-batches of similar lengths pad far less. Not with reg.samples: each
            # micro-batch probes its first rows, which after sorting would be its shortest, a biased subset
            if shard > micro and not reg.samples:
                mine = mine.by_length()
            lr = lr_at(step, cfg, total)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            sums = torch.zeros(3, dtype=torch.float64)  # CE sum, penalty x samples, non-finite flag
            n_micro = shard // micro
            for k in range(n_micro):
                mb = mine.rows(slice(k * micro, (k + 1) * micro)).to(device)
                last = k == n_micro - 1 or not world.active
                if fsdp:
                    objective.set_requires_gradient_sync(last)
                sync = nullcontext() if last or fsdp else objective.no_sync()
                with sync:
                    with amp, fitcheck.sizes_named(model, mb, cfg):
                        ce_sum, pen = objective(mb.input_ids, mb.targets, mb.mask, n_loops, at, gens.probes)
                        # DDP averages gradients over ranks; scaling by W makes the synced gradient the sum, i.e.
                        # the gradient of the global-batch objective.
                        loss = (ce_sum / n_tok) * (1 - reg.weight if pen is not None else 1.0)
                        if pen is not None:
                            loss = loss + reg.weight * pen * (micro / t.batch_size) * world.size
                        loss = loss * world.size
                    if step in nan_steps:
                        loss = loss * float("nan")
                    # Always backward, so every rank joins the gradient all-reduce; a non-finite loss is caught
                    # below and the update skipped on all ranks.
                    loss.backward()
                sums += torch.tensor([ce_sum.item(), pen.item() * micro if pen is not None else 0.0,
                                      0.0 if bool(torch.isfinite(loss)) else 1.0], dtype=torch.float64)
            sums = dist.all_sum(sums.to(device), world).cpu()
            ce_val, pen_val = sums[0].item() / n_tok, (sums[1].item() / t.batch_size if reg_on else None)
            rec: dict[str, Any] = {
                "step": step + 1, "loops": n_loops, "ce": ce_val, "reg": pen_val,
                "reg_kind": reg.kind if reg_on else None,
                "loss": ce_val if pen_val is None else (1 - reg.weight) * ce_val + reg.weight * pen_val,
                "lr": lr, "tokens": n_tok}
            gn = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf"))
            gnorm = float(gn.full_tensor() if hasattr(gn, "full_tensor") else gn)  # FSDP: a DTensor
            ok = sums[2].item() == 0 and math.isfinite(gnorm)  # every rank sees the same sums and norm
            if ok:
                opt.step()
                bad_streak = 0
                updates += 1
            else:
                # No update: a single NaN must not poison the weights or the optimizer moments.
                bad_streak += 1
                opt.zero_grad(set_to_none=True)
                rec["skipped"] = "non-finite loss" if sums[2].item() else "non-finite gradient"
                if world.is_main:
                    tqdm.write(f"step {step + 1}: {rec['skipped']} at {n_loops} loops; update skipped "
                               f"({bad_streak}/{t.max_bad_steps})")
            rec["grad_norm"] = gnorm
            rec["step_s"] = time.perf_counter() - t0  # the step itself: not ρ, evaluation, logging or a save
            rec["tok_s"] = int(full.mask.sum()) / rec["step_s"]  # real input tokens per second, all ranks
            if bad_streak >= t.max_bad_steps:
                log.write(rec)
                raise TrainingDiverged(rundir.never_updated(out, state, cfg, step + 1 - start) if not updates else
                    f"{bad_streak} consecutive non-finite steps (last: step {step + 1}, {n_loops} loops); "
                    "stopping. " + (f"The last good checkpoint is in {ckpt_dir}." if ckpt_dir.exists() else
                                    "No checkpoint had been written yet.")
                    + " Lower train.lr or raise train.max_bad_steps to go on.")
            step += 1
            if reg.rho_every and step % reg.rho_every == 0 and (fsdp or world.is_main):
                rec.update(spectra.monitor_rho(model, mb, n_loops, gens.probes, amp, gathered))
            if eval_batch is not None and (step % t.eval_every == 0 or step == total):
                if fsdp or world.is_main:
                    with gathered():
                        res = sweep(model, eval_batch, [cfg.loops.num_loops], vocab=task.tok.vocab_size)
                    if getattr(task, "scored_by", "exact_match") == "perplexity":  # a window is never exactly right
                        rec["eval_ce"], rec["eval_ppl"] = res.to_json()["ce"][0], res.to_json()["ppl"][0]
                        rec["eval_tokens"] = res.tokens
                    else:
                        rec["acc"] = res.accuracy[0]
                        rec["acc_n"] = len(eval_batch)
                if t.stop_at_acc:  # every rank must agree to stop
                    acc = dist.all_sum(torch.tensor([rec.get("acc", 0.0)], dtype=torch.float64, device=device), world)
                    if acc.item() / (world.size if fsdp else 1) >= t.stop_at_acc:  # rank 0's figure, on all ranks
                        rec["stopped"] = f"held-out exact match reached train.stop_at_acc={t.stop_at_acc}"
                        total = step
            if (step % t.log_every == 0 or "acc" in rec or "eval_ce" in rec or "rho" in rec or "skipped" in rec
                    or step == total):
                log.write(rec)
            bar.update(1)
            bar.set_postfix(loops=n_loops, ce=f"{rec['ce']:.3f}",
                            **({"reg": f"{rec['reg']:.3f}"} if rec["reg"] is not None else {}),
                            **({"acc": f"{rec['acc']:.3f}"} if "acc" in rec else {}))
            # Not during a run of skipped steps: the weights have not moved, and rotating the history would
            # push out an older checkpoint that may be needed to back off from a divergence.
            if t.checkpoint_every and step % t.checkpoint_every == 0 and step < total and not bad_streak:
                save()
            if fault.get("crash_at_step") == step:
                raise RuntimeError(f"injected crash after step {step}")
            if fault.get("interrupt_at_step") == step:
                stop.append(signal.SIGINT)
            if stop and step < total:
                what, code = ("terminated (SIGTERM)", 143) if stop[0] == signal.SIGTERM else ("interrupted", 130)
                if bad_streak:  # the weights have not moved since the last good checkpoint: keep that one
                    raise Interrupted(f"{what} at step {step} during non-finite steps; the last good checkpoint in "
                                      f"{ckpt_dir} is kept", code)
                if saved_at[0] != step:  # saved at this very step already: a second save would rotate the
                    save()               # history and push out an older checkpoint for a copy of the newest
                raise Interrupted(f"{what}: saved a checkpoint at step {step} in {ckpt_dir}", code)
        if updates == 0 and step > start:
            raise TrainingDiverged(rundir.never_updated(out, state, cfg, step - start))
        save()
    except BaseException:
        if world.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # no barrier: the other ranks may be gone
        raise
    finally:
        for sig, handler in prev.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        bar.close()
        log.close()
    dist.shutdown(world)
    return out


train = fit  # the name the library has exported since the first release
