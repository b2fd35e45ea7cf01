"""Checks on the model that `fit` trains against the run: a resumed checkpoint must describe it, a module of the
user's must be an instance of a looped model (and, resumed, of the class the run was trained with), and a
LoopedTransformer given to fit must be the one cfg.model describes."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open

from . import checkpoint as ckpt
from .config import Config, ConfigError
from .errors import in_demo
from .evaluate import nonfinite_weights
from .looped import check_given, check_looped
from .model import LoopedTransformer, structure_diff
from .resume_rules import MEMORY
from .rundir import demo_refusal, flag, resume_flag


def check_finite_start(model: nn.Module, src: str | Path, resumed: bool = False) -> None:
    """The weights a run starts from (train.init_from, or the checkpoint a resume continues) must be finite: else
    every step is non-finite, and the run stopped blaming the learning rate (a resume appended a null record per
    step to its log first). Training never writes such weights (a non-finite step applies no update): an edit or a
    damaged copy did."""
    bad = nonfinite_weights(model)  # (the one test sweep, analyze and generate apply)
    if not bad:
        return
    names = f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}"
    if resumed:
        raise ckpt.CheckpointError(f"{resume_flag()}: the checkpoint {src} holds weights that are not finite ({names})"
                                   f"; move it aside to continue from an earlier checkpoint of the run's history "
                                   "(checkpoints/, if it kept one), or start a new run")
    raise ckpt.CheckpointError(f"train.init_from {src}: its weights are not finite ({names}); start from another "
                               "checkpoint (one of its history in checkpoints/, say)")


def check_model(src: Path | None, cfg: Config) -> None:
    """A resumed run must describe the model its checkpoint holds: a memory setting (resume_rules.MEMORY) may
    change, and a model folder may be spelled otherwise (tasks.same_data); rundir.check_resume says those."""
    from .tasks import same_data

    if src is None:
        return
    saved = ckpt.load_config(src)
    diff = ([ckpt.describe_change(*c) for c in ckpt.config_changes(saved, cfg) if c[0] not in MEMORY
             and not same_data(src, *c)] if saved.kind == cfg.kind else ["the model kind (looplm's own vs pretrained)"])
    if diff and in_demo():  # the stage's folder, not its checkpoint, and the demo's one fix (another --out)
        raise demo_refusal(src.parent if src.name == "checkpoint" else src.parent.parent, diff)
    if diff:
        raise ckpt.CheckpointError(f"checkpoint {src} does not match the requested model:\n  " + "\n  ".join(diff))


def check_init_vocab(cfg: Config, task: Any, src: Path | None, model: nn.Module | None) -> None:
    """A fresh run from train.init_from with model.vocab_size 0 (a preset's: the task's vocabulary) takes the
    source's tokenizer, but the source's head may be wider than it (the addition presets pad theirs): say where
    the size the checkpoint is compared with comes from (it was refused as "requested 14", which nobody asked)."""
    from .tasks.lineage import check_start

    check_start(cfg, task, src)  # a fresh run's held-out split against the runs up its init_from chain
    init = cfg.train.init_from
    if src is not None or model is not None or not init or cfg.kind != "native" or cfg.model.vocab_size:
        return
    try:
        saved = ckpt.load_config(ckpt.resolve(init))
    except (ckpt.CheckpointError, OSError):
        return  # no looplm checkpoint: the loader says what it is
    n = task.tok.vocab_size
    head = saved.model.vocab_size if saved.kind == "native" else 0
    if head > n:
        fix = flag(f"--set model.vocab_size={head}", f"set model.vocab_size={head} in cfg")
        raise ckpt.CheckpointError(f"model.vocab_size=0 means the task's vocabulary, {n} ids (the tokenizer of "
                                   f"train.init_from {init}), but that checkpoint's head is {head} wide; to fine-tune "
                                   f"it, {fix}")


def check_cfg(cfg: Any, out: Any) -> None:
    """fit's cfg, checked before out is read: fit("out", cfg) was "expected str, bytes or os.PathLike object, not
    Config", and a dict (cfg.to_dict()) "'dict' object has no attribute 'to_dict'"."""
    if not isinstance(cfg, Config):
        swapped = "; the two are swapped: fit takes (cfg, out)" if isinstance(out, Config) else ""
        raise TypeError(f"cfg must be a looplm Config (looplm.load_config(...)), got {type(cfg).__name__}{swapped}")


def check_module(model: nn.Module | None, cfg: Config, src: Path | None) -> None:
    """A LoopedTransformer handed to `fit` must be the one `cfg.model` describes: its checkpoints record
    cfg.model, from which every command rebuilds the model (one with other heads or widths of the same shapes
    would load and silently score another model). A resume continues with the class, and in the precision, the run
    was trained with."""
    check_given(model, keyword=True)  # fit(cfg, out, model=MyLooped): torch's error came from model.to(device)
    if type(model).__module__.startswith("torch._dynamo") and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        # torch.compile(m) trained uncompiled, as its wrapper's class, under weights renamed `_orig_mod.`: a run that
        # could be neither resumed nor used by a command. Refused rather than unwrapped: unwrapping would train the
        # plain module while the caller believes it compiled.
        inner = type(model._orig_mod).__name__
        raise TypeError(f"model: got a torch.compile'd module ({type(model).__name__} of {inner}); fit drives its "
                        "embed, step and readout, never its forward, so the compile would do nothing, and the "
                        "wrapper would rename the weights (_orig_mod.) so the run could not be resumed or used by "
                        f"a command; pass the module itself (model={inner}(...)), and compile its parts inside it "
                        "if wanted")
    if model is not None and not isinstance(check_looped(model), nn.Module):
        raise TypeError(f"model: a {type(model).__name__} is not a torch.nn.Module; fit trains a module's parameters")
    check_half(model, cfg)
    if model is not None and src is not None and (src / ckpt.WEIGHTS).is_file():
        recorded, given = ckpt.module_name(src) or "looplm.model.LoopedTransformer", type(model)
        if not recorded.endswith(f".{given.__qualname__}"):  # by name: its module may have moved (script to package)
            raise ConfigError(f"{resume_flag()} would continue the run with another module ({given.__module__}."
                              f"{given.__qualname__}, but {src} was trained by {recorded}): its loop step would change "
                              "mid-run; resume with that class, or start a new run")
    if model is None and src is not None and (src / ckpt.MODULE).is_file():  # checkpoint's generic advice misfits here
        _no_module(src)
    check_precision(model, cfg, src)
    if type(model) is not LoopedTransformer or model.cfg == cfg.model:
        return
    diff = [f"model.{f.name}={getattr(model.cfg, f.name)!r} (the module's) vs {getattr(cfg.model, f.name)!r}"
            for f in dataclasses.fields(cfg.model) if getattr(model.cfg, f.name) != getattr(cfg.model, f.name)]
    how = f"build it with model.vocab_size={cfg.model.vocab_size}: a preset's 0 means the task's vocabulary, filled " \
        "in only once fit reads the task" if model.cfg.vocab_size == 0 else "build it with LoopedTransformer(cfg.model)"
    raise ConfigError("model: the LoopedTransformer given to fit was built from other settings than cfg.model ("
                      + "; ".join(diff) + f"); {how}, or set them in cfg")


def check_half(model: nn.Module | None, cfg: Config) -> None:
    """fit cannot train float16 weights: AdamW's eps (1e-8) rounds to 0 in float16, so a zero or tiny gradient (an
    embedding row of an id the batch lacks) divides by 0 in the first update, which writes NaN or inf into the
    weights; the run then stopped blaming a non-finite loss and the weights. bfloat16 keeps float32's exponent range
    (its eps does not underflow), and trains."""
    if model is None:  # fit builds cfg.model's LoopedTransformer in torch's default dtype
        half = ["(all: torch's default dtype is float16)"] if (cfg.kind == "native" and
                                                                torch.get_default_dtype() == torch.float16) else []
        fix = "torch.set_default_dtype(torch.float32) before fit"
    else:
        # only what AdamW updates: make_optimizer leaves frozen parameters out, so a frozen float16 table (a
        # memory saving) never meets the eps, and it was refused
        half = [name for name, p in model.named_parameters() if p.dtype == torch.float16 and p.requires_grad]
        fix = "model.float()"
    if not half:
        return
    names = f"{', '.join(half[:3])}{', ...' if len(half) > 3 else ''}"
    raise TypeError(f"model: float16 parameters {names}: fit cannot train in float16, as AdamW's eps (1e-8) "
                    "underflows to 0 there and its first update writes NaN into the weights; train in float32 "
                    f"({fix}; on CUDA, train.bf16 runs the forward under bfloat16 autocast over float32 weights), or "
                    "in bfloat16 (model.bfloat16())")


@contextlib.contextmanager
def grad_on() -> Iterator[None]:
    """fit trains: under a caller's torch.no_grad() (a notebook cell wrapped in it) its first backward failed with
    torch's "element 0 of tensors does not require grad", so the run computes with gradients whatever the caller's
    mode (restored after). torch.inference_mode() cannot be lifted that way: tensors made under it (a module built
    there) can never be saved for backward, so it is refused before anything starts."""
    if torch.is_inference_mode_enabled():
        raise ValueError("fit trains, which needs autograd: call it outside torch.inference_mode() (torch.no_grad() "
                         "is fine: fit enables gradients for its own run)")
    with torch.enable_grad():
        yield


_SAVED_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def check_precision(model: nn.Module | None, cfg: Config, src: Path | None) -> None:
    """A resume continues in the precision the run was trained in. A run fit trained with a float64 (or bfloat16)
    module was resumed by `looplm train --resume` in float32, its later checkpoints float32, with no word. As a
    resume with another class is refused (check_module: the run's loop would change mid-run), so is one in another
    precision; the run's own precision is kept by passing its module to fit, as for a module of one's own."""
    if cfg.kind != "native" or src is None or not (src / ckpt.WEIGHTS).is_file():
        return
    try:
        with safe_open(str(src / ckpt.WEIGHTS), "pt") as f:  # (the header only: no weights are read)
            saved = {_SAVED_DTYPES.get(f.get_slice(k).get_dtype()) for k in f.keys()} - {None}
    except (SafetensorError, OSError, ValueError):
        return  # a damaged file: the loader says so, naming the older checkpoints
    given = ({torch.get_default_dtype()} if model is None else
             {v.dtype for v in model.state_dict().values() if v.is_floating_point()})
    if not saved or not given or saved == given:
        return
    names = ", ".join(sorted(str(d).removeprefix("torch.") for d in saved))
    to = f".to(torch.{names})" if len(saved) == 1 else f" in {names}"
    if model is not None:
        fix = f"pass the module in that precision (module{to})"
    else:
        fix = flag("resume from Python with", "pass") + f" the module in that precision: fit(cfg, out, resume=True, " \
            f"model=LoopedTransformer(cfg.model){to})"
    whose = "the module's" if model is not None else flag("the one `looplm train` builds", "the one fit builds")
    had = ", ".join(sorted(str(d).removeprefix("torch.") for d in given))
    raise ConfigError(f"{resume_flag()} would continue the run in {had} ({whose}), but {src} holds {names} weights: "
                      f"its precision would change mid-run; {fix}, or start a new run")


def own_class(model: nn.Module, cfg: Config) -> type | None:
    """The class a run's checkpoints name in module.json: None for the LoopedTransformer cfg.model builds, else the
    module's class. A LoopedTransformer edited after it was built (a core block more, a Linear without bias, a
    ReLU MLP) is a module of one's own too: recorded as cfg.model, every command rebuilt the built-in model and
    scored it, or refused the run blaming config.json."""
    if type(model) is LoopedTransformer and not structure_diff(model, cfg.model):
        return None
    return type(model)


def _no_module(src: Path) -> None:
    """A resume of a run of the user's own module with no module given: fit cannot build it, so say how to pass it
    (checkpoint's own advice, to load the weights with load_weights, is not how a resume continues)."""
    from .errors import in_command

    name = ckpt.module_name(src) or "unreadable " + ckpt.MODULE
    how = "`looplm train` cannot build it; resume from Python, " if in_command() else ""
    raise ckpt.CheckpointError(f"{src} holds the weights of a module of your own ({name}), not of the "
                               f"LoopedTransformer its config describes; {how}pass the module to fit: fit(cfg, out, "
                               f"resume=True, model={name.rsplit('.', 1)[-1]}(...))")


@contextlib.contextmanager
def sizes_named(model: nn.Module, batch: Any, cfg: Config) -> Iterator[None]:
    """A user's module whose embedding or position table is smaller than the task's fails with torch's bare
    IndexError; say the task's sizes beside it (looplm's own model checks them before it looks anything up)."""
    try:
        yield
    except IndexError as e:
        if type(model) is LoopedTransformer:
            raise
        raise ValueError(f"model: the module failed on the task's batch (IndexError: {e}): the task's vocabulary "
                         f"has {cfg.model.vocab_size} tokens, this batch ids up to {int(batch.input_ids.max())} in "
                         f"{batch.input_ids.shape[1]} positions; a module whose embedding or position table is "
                         "smaller cannot read them: build it with at least those sizes") from e
