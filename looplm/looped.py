"""The looped-model protocol, and `run_loop`: the one place that iterates Φ over depth.

A looped LM is three maps (docs/protocol.md):

    embed(input_ids, attention_mask=None) -> (h0, ctx)   # (B, T) ids -> the (B, T, D) state h(0), and ctx
    step(h, ctx, loop=0)                  -> h           # one application of Φ: h(t) = Φ(h(t-1))
    readout(h, ctx)                       -> logits      # (B, T, D) -> (B, T, V)

plus `loop_units()`, the modules FSDP shards one at a time (the shared blocks, and any prelude or coda).
`ctx` belongs to the model: positions, attention masks, the prelude output that input injection adds, a KV
cache. Outside the model it is only ever detached or cut to its first k samples (`detach_ctx`,
`slice_ctx`), so it must be tensors (and leaves that hold none: None, numbers, strings) nested in tuples, lists,
dicts or dataclasses, with per-sample tensors batch-first; `check_protocol` finds out which tensors are
per-sample. `loop` is the 0-based index of the loop being run, for models whose KV cache has one slot per loop;
Φ itself must not depend on it.

A model whose readout acts on each position alone may set `pointwise_readout = True`; the trainer then
reads out only the scored positions (a (N, D) state in, (N, V) logits out), which saves the (B, T, V)
logits of a large vocabulary.

Everything else (the trainer, the sweep, generation, `looplm.dynamics`, the penalties) drives a model
through these methods only, so a user's own `nn.Module` that implements them trains, sweeps and analyzes
with no other change (tests/test_protocol.py).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from .arguments import MAX_DEPTH, strict_int

METHODS = ("embed", "step", "readout", "loop_units")
CtxRows = dict[tuple[str, ...], bool]  # {path of a ctx tensor (".e", "['mem']"): whether it is per-sample}


@runtime_checkable
class LoopedModel(Protocol):
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, Any]: ...

    def step(self, h: torch.Tensor, ctx: Any, loop: int = 0) -> torch.Tensor: ...

    def readout(self, h: torch.Tensor, ctx: Any) -> torch.Tensor: ...

    def loop_units(self) -> list[torch.nn.Module]: ...


_NONE = object()  # check_given's "no batch to check"


def check_given(model: Any, batch: Any = _NONE, keyword: bool = False) -> None:
    """What an entry point was handed, checked before it is used (TypeError, one line). A class where an
    instance was meant failed deep inside torch ("named_parameters() missing 1 required positional argument:
    'self'"), or was accepted by check_looped (a class has the methods); a task, or an (ids, targets, mask) tuple,
    where a Batch was meant was "object of type 'JsonlTask' has no len()" or "'tuple' object has no attribute
    'targets'". `keyword`: the model was passed as model=... (fit)."""
    if isinstance(model, type):
        name = model.__qualname__
        raise TypeError(f"model: got the class {name}, not a module; pass an instance "
                        f"({'model=' if keyword else ''}{name}(...))")
    if batch is _NONE:
        return
    from .tasks.base import Batch  # (here: run_loop checks only the model, and the protocol needs no tasks)

    if not isinstance(batch, Batch):
        hint = "; Batch(input_ids, targets, mask) builds one from tensors" if isinstance(batch, tuple | list) else ""
        raise TypeError(f"batch must be a looplm Batch (task.held_out(n) gives one), got "
                        f"{_a(type(batch).__name__)}{hint}")


def check_looped(model: Any) -> Any:
    """`model` itself, after checking that it implements the protocol (TypeError naming what is missing)."""
    check_given(model)
    missing = [m for m in METHODS if not callable(getattr(model, m, None))]
    if missing:
        raise TypeError(f"{type(model).__name__} is not a looped model: it lacks {', '.join(missing)} "
                        f"(a looped model implements {', '.join(METHODS)}; see docs/protocol.md)")
    return model


def check_protocol(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, vocab: int, reg: Any = None) -> CtxRows:
    """Run a module of one's own through the protocol once on (B, T) ids (no graph, eval mode, torch's random
    state left as it was) and refuse, naming the method, what it returned that the protocol does not allow: an
    embed that is no (h0, ctx), a step that changes h's shape or dtype (Φ maps a state to a state), logits that
    are no (B, T, V >= vocab). `fit` trained on, and these were torch's errors from deep in the loop or the loss
    ("mat1 and mat2 shapes cannot be multiplied", "too many values to unpack"). A module with nothing to train
    is refused too (torch's "element 0 of tensors does not require grad"), and a ctx holding what looplm cannot
    walk. With `reg` (the run's RegConfig) the penalty is taken once too, as training takes it (objective.
    check_penalty): a step it cannot run through (a BatchNorm updating its running statistics) was refused only at
    reg.start_step. Returns `slice_ctx`'s `rows`: {path of each ctx tensor: whether it is per-sample}."""
    name = type(model).__name__
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"model: {name} has no parameter that requires grad; fit trains a module's parameters")
    _check_units(name, model.loop_units())
    B, T = input_ids.shape
    cuda = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
    with torch.no_grad(), eval_mode(model), torch.random.fork_rng(devices=cuda):
        out = model.embed(input_ids, mask)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise ValueError(f"{name}.embed returned {_shown(out)}; it must return (h0, ctx), h0 a (B, T, D) state")
        h, ctx = out
        if not (isinstance(h, torch.Tensor) and h.is_floating_point() and h.dim() == 3 and h.shape[:2] == (B, T)):
            raise ValueError(f"{name}.embed returned as h0 {_shown(h)} for input_ids of shape {[B, T]}; h0 must be a "
                             f"floating-point state of shape [{B}, {T}, D]")
        new = model.step(h, ctx, 0)
        if not (isinstance(new, torch.Tensor) and new.shape == h.shape and new.dtype == h.dtype):
            raise ValueError(f"{name}.step returned {_shown(new)} for an h {_shown(h, '')}; Φ must return a state "
                             "of h's shape and dtype")
        logits = model.readout(new, ctx)
        if not (isinstance(logits, torch.Tensor) and logits.is_floating_point() and logits.dim() == 3
                and logits.shape[:2] == (B, T) and logits.shape[2] >= vocab):
            raise ValueError(f"{name}.readout returned {_shown(logits)} for an h {_shown(new, '')}; it must return "
                             f"floating-point logits of shape [{B}, {T}, V] with V >= {vocab} (the task's vocabulary)")
        _check_ctx_leaves(name, ctx)
        # which ctx tensors follow the batch: those whose first dimension is 2 on 2 rows and 3 on 3 (rows repeated
        # if the probe has fewer). A shared tensor (a memory bank, a position table) of the batch's length was cut
        # by reg.samples as if it were per-sample, and the penalty taken on another Φ.
        small, large = (dict(_leaves(model.embed(input_ids[rows], None if mask is None else mask[rows])[1]))
                        for rows in (torch.arange(2) % B, torch.arange(3) % B))
    if reg is not None:
        from .objective import check_penalty  # (objective imports this module)

        check_penalty(model, h, ctx, reg, mask)
    return {path: _lead(t) == 3 and _lead(small.get(path)) == 2 for path, t in large.items()}


def _check_units(name: str, units: Any) -> None:
    """loop_units() must give modules (a list, or a ModuleList): tensors passed here and under DDP, then FSDP's
    fully_shard failed on every rank with torch's "'Tensor' object has no attribute 'modules'". A mapping of
    modules (an nn.ModuleDict, a dict) iterates over its names: it was refused as "got a str among them"."""
    if isinstance(units, Mapping | torch.nn.ModuleDict):
        found = f"a {type(units).__name__}, which iterates over its keys; return list(d.values())"
    else:
        whole = isinstance(units, torch.Tensor) or not isinstance(units, Iterable)  # (a tensor iterates over rows)
        bad = [units] if whole else [u for u in units if not isinstance(u, torch.nn.Module)]
        if not bad:
            return
        found = _shown(bad[0]) + ("" if whole else " among them")
    raise TypeError(f"{name}.loop_units() must return a list of nn.Module (the blocks FSDP shards one at a time), "
                    f"got {found}")


# leaves that hold no tensor: nothing in them to detach or cut (np.generic: numpy's scalars, np.bool_ and
# np.datetime64 too, which are no numbers.Number)
_ATOMS = (type(None), numbers.Number, np.generic, str, bytes, range, type(Ellipsis), enum.Enum, torch.dtype,
          torch.device, torch.Size)


def _atom(x: Any) -> bool:
    """Whether a ctx leaf holds no tensor (a slice or frozenset of such leaves too: slice(t, None) could)."""
    if isinstance(x, slice):
        return all(_atom(v) for v in (x.start, x.stop, x.step))
    if isinstance(x, frozenset):
        return all(_atom(v) for v in x)
    return isinstance(x, _ATOMS)


def _check_ctx_leaves(name: str, ctx: Any) -> None:
    """Refuse a ctx leaf looplm cannot walk (a plain object, a module, a function): what it holds is neither
    detached for the penalty, whose gradient then reached the embedding without a word, nor cut by reg.samples
    (torch's shape error inside the module's step). Walking ctx rebuilds its containers, so a dict subclass that
    cannot be copied is refused here too (`_map`)."""
    for path, leaf in _leaves(ctx):
        if not (isinstance(leaf, torch.Tensor) or _atom(leaf)):
            raise ValueError(f"{name}.embed returned a ctx holding {_a(_type_name(leaf))} at ctx{''.join(path)}; "
                             "looplm detaches ctx and cuts its per-sample tensors by walking tensors nested in tuples, "
                             "lists, dicts and dataclasses, and cannot see into it: make it a dataclass, or keep it on "
                             "the module (docs/protocol.md)")


def _type_name(x: Any) -> str:
    """x's type as a message names it, with its module unless a builtin or the script's own: "a bool" was said of
    numpy.bool, which reads as the bool that is accepted."""
    t = type(x)
    return t.__name__ if t.__module__ in ("builtins", "__main__") else f"{t.__module__}.{t.__name__}"


def _a(noun: str) -> str:
    """noun with its article ("an int64", "a float")."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _lead(t: Any) -> int | None:
    """A ctx leaf's first dimension (None for anything but a tensor of at least one dimension)."""
    return t.shape[0] if isinstance(t, torch.Tensor) and t.dim() else None


def _shown(x: Any, what: str = "a tensor ") -> str:
    """A value as the protocol's messages name it: a tensor by its shape and dtype, anything else by its type."""
    if isinstance(x, torch.Tensor):
        return f"{what}of shape {list(x.shape)} ({str(x.dtype).removeprefix('torch.')})"
    return _a(type(x).__name__)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`model` in eval mode for the block, then every submodule back in the train/eval mode it had: a sweep,
    generation or analysis run in the middle of a caller's training loop must not leave dropout off (and a
    submodule the caller froze in eval mode stays so)."""
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in was:
            m.training = training


def loop_arg(name: str, n: Any, lo: int, what: str = "") -> int:
    """A loop count or index given to `run_loop` or a forward (`num_loops=`, `backprop_loops=`, `first=`): an
    integer in lo..MAX_DEPTH (numpy and torch integers too), else ValueError naming it and its range (`what` says
    what the low end means). `int()` would run 2.5 as 2 and True as 1 without a word, and a negative
    backprop_loops as full backprop."""
    try:
        n = strict_int(n)  # not floats, bools or strings
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {lo}{what}, got {n!r:.80}") from None
    if n < lo:
        raise ValueError(f"{name} must be >= {lo}{what}, got {n}")
    if n > MAX_DEPTH:  # as the command line's: 2**40 loops run on, silent, until killed
        raise ValueError(f"{name} must be at most {MAX_DEPTH:,}, got {n:,}")
    return n


def loop_count(n: Any, default: int | None) -> int:
    """A loop count passed to a forward (`num_loops=`; None: `default`): an integer >= 1, else ValueError."""
    return loop_arg("num_loops", default if n is None else n, 1)


def check_loop_kwargs(kwargs: dict[str, Any]) -> None:
    """Refuse a keyword a forward does not know that names loops (`num_loop=8`, `loops=8`, and the reference Ouro
    code's `exit_at_step=` and `total_ut_steps=`, a `depth=`, and exit rules under another name:
    `early_exit_threshold=`, `weighted_exit=`): an HF forward takes `**kwargs` for transformers' own arguments, so
    the typo would run the default without a word."""
    odd = sorted(k for k in kwargs if re.search(r"loop|step|depth|exit|thresh", k.lower()))
    if odd:
        raise TypeError(f"unknown argument(s) {', '.join(odd)}; the loop count is num_loops=")


def run_loop(model: Any, h: torch.Tensor, ctx: Any, num_loops: int, *, backprop_loops: int = 0,
             checkpoint: bool = False, keep: Callable[[int, torch.Tensor], None] | None = None,
             exit: Any = None, first: int = 1) -> torch.Tensor:
    """Apply Φ (`model.step`) `num_loops` times from h and return the last state.

    - keep(t, h_t) sees the state after every loop t = first .. first + num_loops - 1 (per-loop states);
    - backprop_loops=k > 0 runs all but the last k loops without a graph (truncated backprop through depth);
    - checkpoint=True recomputes each loop's activations in backward instead of storing them (memory of one
      state per loop, not one set of activations per loop);
    - exit: per-sample early exit, an object with `done` ((B,) bool) and `update(t, h(t-1), h(t))`, called
      after each loop: rows it has marked done keep their state, and the loop stops once every row is done;
    - first: the index t of the first loop run here, when a loop is run in pieces (the penalty's state
      splits it); the KV-cache slot of loop t is t - 1.
    """
    check_given(model)
    # checked as every forward's count: True ran 1 loop, 2.5 was Python's TypeError, 2,000,000 ran on
    num_loops = loop_count(num_loops, None)  # (no default: None is refused, not run as 1 loop)
    # as the count: 2.5 ran as 2, True as 1, -1 as full backprop, and a first=0 read KV-cache slot -1
    backprop_loops = loop_arg("backprop_loops", backprop_loops, 0, " (0: backprop through every loop)")
    first = loop_arg("first", first, 1, " (the index t of the first loop run here; loops count from 1)")
    if not isinstance(checkpoint, bool):  # ('no' is truthy: it turned activation checkpointing on)
        raise TypeError(f"checkpoint must be True or False, got {checkpoint!r:.80}")
    if keep is not None and not callable(keep):  # (was "'int' object is not callable" after the first loop)
        raise TypeError(f"keep must be a function keep(t, h) or None, got {type(keep).__name__}")
    if exit is not None and not (hasattr(exit, "done") and callable(getattr(exit, "update", None))):
        # (a function given as the rule was an AttributeError on `.done` after the first loop)
        raise TypeError(f"exit must be an object with `done` and `update(t, h_prev, h)` (as generate's exit "
                        f"rules are), got {type(exit).__name__}")
    n_free = num_loops - backprop_loops if 0 < backprop_loops < num_loops else 0
    use_ckpt = checkpoint and torch.is_grad_enabled()
    for i in range(num_loops):
        t = first + i
        with torch.no_grad() if i < n_free else nullcontext():
            if use_ckpt and i >= n_free:
                new = _checkpoint(model.step, h, ctx, t - 1, use_reentrant=False)
            else:
                new = model.step(h, ctx, t - 1)
        if exit is not None:
            new = torch.where(_exit_done(exit, h).view(-1, *([1] * (new.dim() - 1))), h, new)
            exit.update(t, h, new)
        if keep is not None:
            keep(t, new)
        h = new
        if exit is not None and bool(_exit_done(exit, h).all()):
            break
    return h


def _exit_done(exit: Any, h: torch.Tensor) -> torch.Tensor:
    """`exit.done`, checked to be a (B,) bool tensor each time it is read (update may replace it): a list was an
    AttributeError on `.view`, a wrong length torch's size mismatch, a long tensor `where`'s dtype error, and a
    (B, 1) tensor was taken as is."""
    done = exit.done
    if not isinstance(done, torch.Tensor) or done.dtype != torch.bool or tuple(done.shape) != (h.shape[0],):
        found = f"{tuple(done.shape)} {done.dtype}" if isinstance(done, torch.Tensor) else type(done).__name__
        raise TypeError(f"exit.done must be a ({h.shape[0]},) bool tensor, one flag per row of the state, got "
                        f"{found}")
    return done


def phi(model: Any, ctx: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Φ as a function of the state alone, for Jacobians: h -> model.step(h, ctx)."""
    return lambda h: model.step(h, ctx, 0)


def _map(x: Any, fn: Callable[[Any, tuple], Any], path: tuple = ()) -> Any:
    """x with fn(leaf, its path) in place of every leaf (a tensor, or anything it does not walk into); a path is the
    field names, indices and keys that lead to a leaf, as written after `ctx` (".e", "[0]", "['mem']"). Containers
    are rebuilt with their own type: a dict subclass (an attribute dict, an OrderedDict, a defaultdict) stays one,
    as the model's step reads it, and the attributes set on a dataclass or dict subclass after it was built (not
    init fields: `replace` and `copy` alone dropped them, or kept them uncut) are walked too."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        new = dataclasses.replace(x, **{f.name: _map(getattr(x, f.name), fn, (*path, f".{f.name}"))
                                        for f in dataclasses.fields(x) if f.init})
        return _attrs(x, new, fn, path, set(getattr(new, "__dict__", ())))  # (what __init__ set, it set anew)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple
        return type(x)(*(_map(v, fn, (*path, f".{f}")) for f, v in zip(x._fields, x, strict=True)))
    if isinstance(x, list | tuple):
        items = [_map(v, fn, (*path, f"[{i}]")) for i, v in enumerate(x)]
        return items if type(x) is list else tuple(items) if type(x) is tuple else _rebuilt(x, items, path)
    if isinstance(x, dict):
        items = {k: _map(v, fn, (*path, f"[{k!r}]")) for k, v in x.items()}
        if type(x) is dict:
            return items
        try:  # copy keeps what the type's constructor needs (a defaultdict's default_factory) without calling it
            new = copy.copy(x)
            for k, v in items.items():
                new[k] = v
        except Exception as e:
            raise ValueError(f"ctx{''.join(path)} is {_a(type(x).__name__)}, a dict looplm cannot copy "
                             f"({type(e).__name__}: {e}), and looplm rebuilds ctx to detach and cut its tensors: make "
                             "it a plain dict or a dataclass (docs/protocol.md)") from None
        return _attrs(x, new, fn, path, set())
    return fn(x, path)


def _rebuilt(x: Any, items: list, path: tuple) -> Any:
    """A list or tuple subclass x rebuilt with `items`: its constructor takes them as one iterable (as list and tuple
    do) or one per argument (a `__new__(cls, a, b)`, which the one-iterable call failed in with Python's TypeError);
    whichever call gives back x's type holding exactly `items`, else a ValueError that says so."""
    for args in ((items,), items):
        try:
            new = type(x)(*args)
        except TypeError:
            continue
        if type(new) is type(x) and len(new) == len(items) and all(a is b for a, b in zip(new, items, strict=True)):
            return new
    kind = "list" if isinstance(x, list) else "tuple"
    raise ValueError(f"ctx{''.join(path)} is {_a(_type_name(x))}, a {kind} subclass that looplm cannot rebuild "
                     f"from its items (neither {type(x).__name__}(items) nor "
                     f"{type(x).__name__}(*items) gives them back), and looplm rebuilds ctx to detach and cut its "
                     "tensors: make it a plain tuple or list, a NamedTuple or a dataclass (docs/protocol.md)")


def _attrs(x: Any, new: Any, fn: Callable[[Any, tuple], Any], path: tuple, keep: set[str]) -> Any:
    """new with x's instance attributes, other than those named in `keep`, walked into it (as fields are)."""
    for name, v in getattr(x, "__dict__", {}).items():
        if name not in keep:
            new.__dict__[name] = _map(v, fn, (*path, f".{name}"))
    return new


def _tensors(fn: Callable[[torch.Tensor, tuple], torch.Tensor]) -> Callable[[Any, tuple], Any]:
    """fn for a tensor leaf; any other leaf kept as it is."""
    return lambda x, path: fn(x, path) if isinstance(x, torch.Tensor) else x


def _leaves(x: Any) -> list[tuple[tuple, Any]]:
    """(path, leaf) for every leaf of ctx that `_map` does not walk into, tensors and anything else."""
    found: list[tuple[tuple, Any]] = []
    _map(x, lambda v, path: found.append((path, v)) or v)  # (the leaf kept: a dataclass is rebuilt as it was)
    return found


def detach_ctx(ctx: Any) -> Any:
    """ctx with every tensor detached: a penalty at a detached state must not reach the embedding through
    what Φ closes over (the injected prelude output, say)."""
    return _map(ctx, _tensors(lambda t, _: t.detach()))


def slice_ctx(ctx: Any, k: int, batch: int, rows: CtxRows | None = None) -> Any:
    """ctx for the first k samples: the per-sample tensors cut to k rows. `rows` ({path: per-sample}, from
    `check_protocol`) says which tensors are per-sample; a tensor it does not name (rows=None: looplm's own
    contexts, the built-in Context and Ouro's LoopContext, whose only batch-length tensors are per-sample) is cut
    when its first dimension is the batch size. A shared tensor of the batch's length (a memory bank of 8 slots
    at batch 8) is not."""
    rows = rows or {}
    return _map(ctx, _tensors(lambda t, path: t[:k] if rows.get(path, True) and _lead(t) == batch else t))
