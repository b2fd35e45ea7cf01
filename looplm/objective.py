"""The STARS objective for any looped model: CE on the scored tokens plus a Jacobian penalty at one state.

    loss = (1 - λ) · CE(logits after t loops) + λ · penalty(Φ at the detached state h(at))

`at` is t (`reg.at=final`), t - 1 (`penultimate`, the input of the last loop) or a depth drawn in 1..t
(`random`). The penalty sees Φ restricted to real tokens (the batch's mask), so padding changes nothing. With
`at=None` the loss is plain CE and no penalty graph is built.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LoopsConfig, RegConfig
from .looped import CtxRows, detach_ctx, phi, run_loop, slice_ctx
from .model import twice_differentiable
from .regularizers import fused_loop, jsrr_fast, penalty, supports_fast_jvp
from .tasks.base import IGNORE


def regularized_loop(model: Any, h0: torch.Tensor, ctx: Any, num_loops: int, at: int | None, reg: RegConfig,
                     generator: torch.Generator | None = None, mask: torch.Tensor | None = None,
                     backprop_loops: int = 0, checkpoint: bool = False, ctx_rows: CtxRows | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `num_loops` loops from h0 and the penalty `reg` at the detached state h(at); (h(num_loops), penalty).

    at=None: no penalty (None). 0 <= at <= num_loops; h(0) = h0. The value and the gradients do not depend on
    how the penalty is computed:
    - `reg.impl=autograd`, or a model other than the built-in one: `regularizers.penalty` by torch.func under
      `twice_differentiable()`, through `phi(model, ctx)`;
    - `reg.impl=auto` with kind=jsrr on the built-in LoopedTransformer: the hand-written `core_jvp`; and when
      at < num_loops (the state is the input of a loop the forward runs anyway) that loop is run as
      `fused_loop`, sharing its primal work with the penalty.
    `reg.samples=k > 0` takes the penalty over the first k samples of the batch only: of ctx, the tensors that
    `ctx_rows` (`check_protocol`'s answer, which fit passes for a module of one's own) marks per-sample are cut.
    """
    if at is None:
        return run_loop(model, h0, ctx, num_loops, backprop_loops=backprop_loops, checkpoint=checkpoint), None
    if not 0 <= at <= num_loops:
        raise ValueError(f"penalty state h({at}) is outside 0..{num_loops}")
    B = h0.shape[0]
    k = reg.samples if 0 < reg.samples < B else B
    n_free = num_loops - backprop_loops if 0 < backprop_loops < num_loops else 0
    fast = reg.impl == "auto" and reg.kind == "jsrr" and supports_fast_jvp(model)
    if fast and at < num_loops and at >= n_free and torch.is_grad_enabled():
        h = h0
        if at and at == n_free:  # every loop before the penalty's state is a free one (truncated backprop)
            with torch.no_grad():
                h = run_loop(model, h0, ctx, at)
        elif at:
            h = run_loop(model, h0, ctx, at, backprop_loops=at - n_free if n_free else 0, checkpoint=checkpoint)
        h, pen = fused_loop(model, h, ctx.e, generator, reg.samples, mask)
        if num_loops - at - 1 > 0:
            h = run_loop(model, h, ctx, num_loops - at - 1, checkpoint=checkpoint, first=at + 2)
        return h, pen
    kept = {"h": h0}

    def keep(t: int, s: torch.Tensor) -> None:
        if t == at:
            kept["h"] = s

    h = run_loop(model, h0, ctx, num_loops, backprop_loops=backprop_loops, checkpoint=checkpoint, keep=keep)
    hs = kept["h"].detach()[:k]
    ms = mask[:k] if mask is not None else None
    if fast:
        return h, jsrr_fast(model, hs, ctx.e[:k] if ctx.e is not None else None, generator, 0, ms)
    return h, taken_penalty(model, hs, slice_ctx(detach_ctx(ctx), k, B, ctx_rows), reg, generator, ms)


def taken_penalty(model: Any, h: torch.Tensor, ctx: Any, reg: RegConfig, generator: torch.Generator | None = None,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """`reg`'s penalty of Φ = model.step at the detached state h, by torch.func. A step that updates a tensor in
    place (a BatchNorm's running statistics in train mode) cannot run under torch.func's transforms: that was
    torch's raw "attempted to call in-place operation ... that would mutate a captured Tensor", first seen at
    reg.start_step (hours into a run); it is a ValueError naming the module's step and the fix."""
    try:
        with twice_differentiable():
            return penalty(reg.kind, phi(model, ctx), h, generator, reg.power_iters, mask)
    except RuntimeError as e:
        if "mutate a captured tensor" not in str(e).lower():
            raise
        found = re.search(r"\(aten::([\w.]+)\)", str(e))
        op = found.group(1) if found else "an in-place op"
        raise ValueError(f"{type(model).__name__}.step updates a tensor in place ({op}; a BatchNorm's running "
                         f"statistics in train mode, say), which the {reg.kind} penalty's "
                         "Jacobian (torch.func) cannot run through: build the norm with track_running_stats=False, or "
                         "use a norm without running statistics (LayerNorm, RMSNorm), or set reg.kind=none") from None


def check_penalty(model: Any, h: torch.Tensor, ctx: Any, reg: RegConfig, mask: torch.Tensor | None = None) -> None:
    """Take `reg`'s penalty once at h (when the run takes one), in train mode as training does, and leave the
    module as it was: its buffers, its train/eval modes and torch's random state. `check_protocol` runs it up
    front, so a step the penalty cannot run through is refused before the first step, not at reg.start_step."""
    if reg.kind == "none" or not reg.weight > 0:
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    was = [(m, m.training) for m in model.modules()]
    devices = sorted({t.device for t in (h, *model.parameters()) if t.device.type == "cuda"}, key=str)
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            model.train()
            taken_penalty(model, h.detach(), detach_ctx(ctx), reg, None, mask)
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)
        for m, training in was:
            m.training = training


class Objective(nn.Module):
    """One micro-batch's loss terms as a forward(), so DistributedDataParallel and FSDP can wrap it (they sync
    the gradients of what runs inside the wrapped module's forward)."""

    def __init__(self, model: nn.Module, loops: LoopsConfig, reg: RegConfig, ctx_rows: CtxRows | None = None):
        super().__init__()
        self.model = model
        self.ctx_rows = ctx_rows  # which ctx tensors reg.samples cuts (looped.slice_ctx)
        self.loops = loops
        self.reg = reg

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, n_loops: int,
                at: int | None, probes: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (sum of CE over the scored tokens, penalty (a mean over this micro-batch's samples) or None)."""
        m, lc = self.model, self.loops
        h0, ctx = m.embed(input_ids, mask)
        h, pen = regularized_loop(m, h0, ctx, n_loops, at, self.reg, probes, mask, lc.backprop_loops,
                                  lc.checkpoint_loops, self.ctx_rows)
        sel = targets != IGNORE  # (B, T)
        if getattr(m, "pointwise_readout", False):
            logits = m.readout(h[sel], ctx)  # (N, V): only the scored rows, not (B, T, V)
        else:
            logits = m.readout(h, ctx)[sel]
        ce_sum = F.cross_entropy(logits.float(), targets[sel], reduction="sum")
        return ce_sum, pen
