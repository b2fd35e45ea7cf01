"""Depth sweeps: exact match at every depth from one forward pass.

One pass gives every depth: greedy decoding reproduces the gold answer exactly iff every
teacher-forced next-token argmax along the gold answer (and its EOS) is right, because each greedy step
then sees exactly the teacher-forced prefix. So one forward pass to the largest depth, with the head
applied to the state after each loop, scores all depths at once: O(L_max) core applications instead of
O(L_max² · answer length) for decoding at each depth separately. `tests/test_evaluate.py` checks the
equivalence against real decoding.
"""

from __future__ import annotations

import math
from contextlib import closing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .arguments import MAX_DEPTH, check_count, check_depths, check_exit_rule
from .looped import check_given, eval_mode, run_loop
from .tasks.base import IGNORE, Batch

MAX_DEPTH_COUNT = 100_000  # depths in one spec (each one kept costs a readout per sample)


def parse_depths(spec: str, what: str = "depth") -> list[int]:
    """`1:100` (inclusive), `1:100:5`, `1,2,4,8`, or a mix like `1:8,16,32` -> sorted unique depths >= 1.
    A stepped range ends at its stated end too: `1:1000:10` is 1, 11, ..., 991 and 1000 (it stopped at 991, and a
    sweep "to 1000" reported no 1000-loop result). `what` names the numbers in errors (`--sizes` too)."""
    out: set[int] = set()
    if not isinstance(spec, str):  # 5 was an AttributeError ('int' object has no attribute 'strip')
        raise TypeError(f"a {what} specification is a string such as '1:100' or '1,2,4', got {type(spec).__name__} "
                        f"{spec!r:.80}")
    if not spec or not spec.strip():
        raise ValueError(f"empty {what} specification; use e.g. 1:100 or 1,2,4,8")
    for part in spec.split(","):
        part = part.strip()
        # ASCII digits only: int() would also read `1_0` and non-ASCII digits.
        if not all(x.strip().isascii() and x.strip().isdigit() for x in part.split(":")):
            raise ValueError(f"bad {what} spec {part!r}; use e.g. 1:100, 1:100:5 or 1,2,4")
        nums = [int(x) for x in part.split(":")]
        if len(nums) == 1:
            rng = nums
        elif len(nums) in (2, 3):
            lo, hi = nums[0], nums[1]
            st = nums[2] if len(nums) == 3 else 1
            if hi < lo:
                raise ValueError(f"{what} range {part!r} is reversed (end {hi} < start {lo})")
            if st < 1:
                raise ValueError(f"{what} range {part!r} needs a step >= 1")
            if hi > MAX_DEPTH or -(-(hi - lo) // st) + 1 > MAX_DEPTH_COUNT:  # (the end: one more)
                raise ValueError(f"{what} range {part!r} is too large: at most {MAX_DEPTH_COUNT:,} {what}s up to "
                                 f"{MAX_DEPTH:,} loops")
            rng = [*range(lo, hi, st), hi]
        else:
            raise ValueError(f"bad {what} spec {part!r}")
        if min(rng, default=1) < 1:
            raise ValueError(f"{what}s must be >= 1, got {part!r}")
        if max(rng, default=1) > MAX_DEPTH:
            raise ValueError(f"{what}s must be <= {MAX_DEPTH:,}, got {part!r}")
        out.update(rng)
        if len(out) > MAX_DEPTH_COUNT:
            raise ValueError(f"too many {what}s (more than {MAX_DEPTH_COUNT:,})")
    return sorted(out)


def check_scored(batch: Batch) -> None:
    """Refuse a batch with a row that has no scored position (every target IGNORE): its exact match would be
    vacuously true, and a batch of such rows reported accuracy 1.0 and perplexity 1.0."""
    empty = torch.nonzero((batch.targets == IGNORE).all(dim=1)).flatten().tolist()
    if len(empty) == len(batch):
        raise ValueError("nothing to score: no position in the batch has a target (every target is IGNORE)")
    if empty:
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ValueError(f"row(s) {', '.join(map(str, empty[:5]))}{more} of {len(batch)} have no scored position "
                         "(every target is IGNORE), so their exact match would be vacuously right; give each row "
                         "at least one target (an answer, or its end token), or leave those rows out")


def check_targets(targets: torch.Tensor, scored: torch.Tensor, vocab: int) -> None:
    """Refuse a scored target outside the readout's `vocab` ids: cross-entropy indexed past the logits (torch's
    IndexError, or on CUDA a device-side assert), and a negative id other than IGNORE was never a token."""
    tgt = targets[scored]  # (n,) the scored positions' ids
    if tgt.numel() and (int(tgt.min()) < 0 or int(tgt.max()) >= vocab):
        bad = int(tgt.min()) if int(tgt.min()) < 0 else int(tgt.max())
        raise ValueError(f"target id {bad} is no token of the model's readout (ids 0..{vocab - 1}; {IGNORE} marks a "
                         "position that is not scored)")


def nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """The names of the model's parameters that hold NaN or inf (the one test every reader and trainer applies)."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def check_weights_finite(model: torch.nn.Module) -> None:
    """Refuse a model whose weights hold NaN or inf: every score would be read off NaN logits (exact match came out
    0.000 as if measured, a text's CE as NaN, and the analysis failed deep in torch's eig or svd), and generate
    decoded the argmax of NaN logits as if the model had chosen it."""
    bad = nonfinite_weights(model)
    if bad:
        raise ValueError(f"the model's weights are not finite ({len(bad)} tensor(s): {', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}); looplm does not score, analyze or generate from such a "
                         "model")


def state_overflow(h: torch.Tensor) -> torch.Tensor:
    """(...,) per token of states (..., D): True where the state overflowed. That is NaN or inf, and also a finite
    state whose norm is past its precision's range (at least float32's: ~1.8e19): a LayerNorm or RMSNorm over it
    (the readout's) overflows there and returns its bias, so the logits come out finite but uniform, a readout of
    nothing (scored as a measured CE of ln V)."""
    return ~torch.isfinite(h.to(torch.promote_types(h.dtype, torch.float32)).norm(dim=-1))


def check_finite(x: torch.Tensor, t: int, what: str = "states", shallower_read: bool = True) -> None:
    """Refuse overflowing states (`state_overflow`) or non-finite readout logits at depth `t` of a model with finite
    weights: weights so large, or a core so expansive, that the loop overflows. Scored anyway, they read as 0.000
    exact match, a NaN CE, or the uniform readout of a normalization that overflowed. `shallower_read`: the caller
    read the depths below t and found them finite (analyze checks its depths in order), so the message may say so;
    generate checks only the depth it decodes at, where every depth may overflow."""
    finite = bool(torch.isfinite(x).all())
    huge = finite and what == "states" and bool(state_overflow(x).any())
    if not finite or huge:
        fewer = f" (depths below {t} may still be read)" if t > 1 and shallower_read else ""
        how = ("too large (a state's norm past float32's range, ~1.8e19, where a normalization over it overflows)"
               if huge else "not finite (NaN or inf)")
        raise ValueError(f"the model's {what} at depth {t} are {how}: its weights are so large, or its loop so "
                         f"expansive, that the forward overflows; looplm does not score or decode such a model{fewer}")


def _finite_rows(h: torch.Tensor, logits: torch.Tensor, tok_valid: torch.Tensor) -> torch.Tensor:
    """(b,) rows whose states (b, T, D) do not overflow and whose logits (b, T, V) are finite at every real
    position: an argmax of NaN logits is no answer, though it may equal the target, and neither is the uniform
    readout of an overflowed normalization."""
    return ((~state_overflow(h) & torch.isfinite(logits).all(-1)) | ~tok_valid.bool()).all(1)


def overflow_of(docs: list[dict]) -> dict:
    """The `overflow` depths of several sweeps' JSON (one per size), merged: {} when none overflowed."""
    over = sorted({d for r in docs for d in r.get("overflow", [])})
    return {"overflow": over} if over else {}


def perplexity(ce: float) -> float | None:
    """exp(ce), or None where it overflows a float (CE above ~709 nats): a stand-in such as e^700 read as measured."""
    return math.exp(ce) if ce < 709.0 else None


@dataclass
class SweepResult:
    depths: list[int]
    correct: torch.Tensor  # (L, N) bool: exact match of greedy decoding at each depth
    state_norm: torch.Tensor  # (L,) mean over samples of ||h(t)|| per token (the drift diagnostic)
    ce: torch.Tensor | None = None  # (L,) cross-entropy (nats) per scored token; exp of it is the perplexity
    # With an exit rule (sweep(exit_tol=..., exit_stable=...)): each sample's exit depth and its exact match there.
    exit_depth: torch.Tensor | None = None  # (N,) long
    exit_correct: torch.Tensor | None = None  # (N,) bool
    exit_rule: dict | None = None
    tokens: int | None = None  # positions scored (the CE's denominator): every token of a text, answers' tokens
    overflow: list[int] | None = None  # depths where some row's states or logits overflowed (`_finite_rows`)

    @property
    def accuracy(self) -> list[float]:
        return self.correct.double().mean(dim=1).tolist()

    def to_json(self) -> dict:
        finite = lambda xs: [x if math.isfinite(x) else None for x in xs]  # noqa: E731 (strict JSON: null)
        out = {"depths": self.depths, "accuracy": self.accuracy, "n": int(self.correct.shape[1]),
               "state_norm": finite(self.state_norm.tolist())}
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.overflow:
            out["overflow"] = self.overflow
        if self.ce is not None:
            out["ce"] = finite(self.ce.tolist())
            out["ppl"] = [None if c is None else perplexity(c) for c in out["ce"]]  # null: too large for a float
        if self.exit_depth is not None and self.exit_correct is not None:
            out["exit"] = {**(self.exit_rule or {}), "accuracy": self.exit_correct.double().mean().item(),
                           "mean_loops": self.exit_depth.double().mean().item()}
        return out


@torch.inference_mode()
def sweep(model: torch.nn.Module, batch: Batch, depths: list[int], batch_size: int = 500,
          progress: bool = False, exit_tol: float | None = None, exit_stable: int | None = None,
          vocab: int | None = None) -> SweepResult:
    """Exact-match accuracy at every depth in `depths`, from one forward pass to max(depths) per chunk.

    `vocab`: the ids the task's tokenizer can decode (a head may be wider: model.vocab_size). The argmax and the CE
    read only those, as `looplm generate` and an HF export choose: a padded id is never predicted.

    With `exit_tol` and/or `exit_stable` it also applies an adaptive exit rule per sample (see `ExitTracker`;
    capped at max(depths)) and reports each sample's exit depth and its exact match there.
    """
    check_given(model, batch)
    depths = check_depths(depths)
    batch_size = check_count("batch_size", batch_size, 1)  # (a numpy integer too, as diagnose takes it)
    vocab = None if vocab is None else check_count("vocab", vocab, 1)
    if len(batch) < 1:
        raise ValueError("nothing to sweep: 0 samples")
    check_scored(batch)
    exit_tol, exit_stable = check_exit_rule(exit_tol, exit_stable)
    check_weights_finite(model)
    use_exit = exit_tol is not None or exit_stable is not None
    exit_depth = torch.zeros(len(batch), dtype=torch.long)
    exit_correct = torch.zeros(len(batch), dtype=torch.bool)
    device = next(model.parameters()).device
    want = {d: i for i, d in enumerate(depths)}
    n = len(batch)
    correct = torch.zeros(len(depths), n, dtype=torch.bool)
    norm_sum = torch.zeros(len(depths), dtype=torch.float64)
    nll_sum = torch.zeros(len(depths), dtype=torch.float64)
    n_scored = int((batch.targets != IGNORE).sum())
    overflow: set[int] = set()
    chunks = range(0, n, batch_size)
    bar = tqdm(total=len(chunks) * max(depths), desc="sweep", unit="loop", disable=not progress)
    # closing: interrupted too, the bar's line ends before an error line is printed
    with eval_mode(model), closing(bar):
        for s in chunks:
            ids = batch.input_ids[s : s + batch_size].to(device)
            tgt = batch.targets[s : s + batch_size].to(device)
            mask = tgt != IGNORE  # (b, T) answer positions
            tok_valid = batch.mask[s : s + batch_size].to(device)

            tracker = ExitTracker(exit_tol, exit_stable, max(depths), tok_valid, mask, tgt) if use_exit else None
            h0, ctx = model.embed(ids, tok_valid)

            def keep(t: int, h: torch.Tensor, s=s, tgt=tgt, mask=mask, tok_valid=tok_valid, tracker=tracker,
                     ctx=ctx) -> None:
                bar.update(1)
                # read out once per depth: the exit rule and the scored depth share it (it was computed twice)
                logits = model.readout(h, ctx)[..., :vocab] if tracker is not None or t in want else None  # (b,T,V)
                if tracker is not None:
                    tracker.update(t, h, logits.argmax(dim=-1), _finite_rows(h, logits, tok_valid))
                    if t == max(depths):
                        exit_depth[s : s + len(tgt)] = tracker.depth.cpu()
                        exit_correct[s : s + len(tgt)] = tracker.correct.cpu()
                if t not in want:
                    return
                i = want[t]
                check_targets(tgt, mask, logits.shape[-1])
                # a loop that overflows (finite weights, an expansive Φ: the collapse a sweep is run to see) fails
                # there: its rows are wrong, whatever the argmax of NaN (or of a collapsed readout) says, and the
                # depth's CE is null. The state norm is null only where a state is NaN or inf (float64 holds the
                # norm of any finite float32 state: in float32 a finite state past ~1.8e19 read as null).
                fin = _finite_rows(h, logits, tok_valid)
                if not bool(fin.all()):
                    overflow.add(t)
                    nll_sum[i] = math.nan
                pred = logits.argmax(dim=-1)  # (b, T)
                nll_sum[i] += F.cross_entropy(logits[mask].double(), tgt[mask], reduction="sum").cpu()
                ok = ((pred == tgt) | ~mask).all(dim=1) & fin
                correct[i, s : s + len(ok)] = ok.cpu()
                per_tok = h.double().norm(dim=-1)  # (b, T)
                norm_sum[i] += ((per_tok * tok_valid).sum(1) / tok_valid.sum(1)).sum().double().cpu()

            if tracker is not None:
                tracker.prev_h = h0
            run_loop(model, h0, ctx, max(depths), keep=keep)
    ce = nll_sum / max(1, n_scored)
    rule = {"tol": exit_tol, "stable": exit_stable, "max_loops": max(depths)} if use_exit else None
    return SweepResult(list(depths), correct, norm_sum / n, ce, exit_depth if use_exit else None,
                       exit_correct if use_exit else None, rule, n_scored, sorted(overflow) or None)


def exit_cap_reason(tol: float | None, stable: int | None, cap: int) -> str | None:
    """Why an exit rule (sweep's per row, generate's per token) cannot stop anything before `cap` loops, as the
    start of a note ("... holds at loop k + 1 at the earliest; "), or None where it can (or there is no rule): a
    count of k stable loops first holds at loop k + 1, and a tolerance of 0 never (a step never changes a state by
    less than nothing). Everything then runs to the cap, and the result reads as the rule's own."""
    if (tol is None and stable is None) or (stable is not None and stable + 1 < cap) or (tol and cap > 1):
        return None
    return (f"--exit-stable {stable} holds at loop {stable + 1} at the earliest; " if stable else
            "--exit-tol 0 never holds; " if tol == 0 else "a cap of 1 loop leaves nothing to stop; ")


class ExitTracker:
    """The sequence-level exit rule of the sweep: sample i stops at the first loop t where
    - its relative step residual ||h(t) - h(t-1)|| / ||h(t)|| (over its non-pad positions) is below `tol`, or
    - the argmax at every answer position has not changed for `stable` consecutive loops (t-stable..t agree),
    or at `max_loops`. Its answer is then the one read out at t. Feed it h(t) and the argmax for t = 1, 2, ...
    (set `prev_h` to h(0) first).
    """

    def __init__(self, tol: float | None, stable: int | None, max_loops: int, tok_valid: torch.Tensor,
                 answer_mask: torch.Tensor, targets: torch.Tensor):
        if tol is None and stable is None:
            raise ValueError("an exit rule needs exit_tol and/or exit_stable")
        tol, stable = check_exit_rule(tol, stable)
        self.tol, self.stable, self.max_loops = tol, stable, max_loops
        self.valid = tok_valid.unsqueeze(-1)
        self.mask, self.tgt = answer_mask, targets
        b = targets.shape[0]
        self.prev_h: torch.Tensor | None = None
        self.prev_pred: torch.Tensor | None = None
        self.run = torch.zeros(b, dtype=torch.long, device=targets.device)
        self.done = torch.zeros(b, dtype=torch.bool, device=targets.device)
        self.depth = torch.full((b,), max_loops, dtype=torch.long, device=targets.device)
        self.correct = torch.zeros(b, dtype=torch.bool, device=targets.device)

    def update(self, t: int, h: torch.Tensor, pred: torch.Tensor, finite: torch.Tensor | None = None) -> None:
        """`finite`: (b,) rows whose states and logits are finite at t (an overflowing row's answer is wrong)."""
        hit = torch.zeros_like(self.done)
        if self.tol is not None and self.prev_h is not None:
            num = ((h - self.prev_h).float() * self.valid).flatten(1).norm(dim=1)
            den = (h.float() * self.valid).flatten(1).norm(dim=1)
            hit |= num < self.tol * den
        if self.stable is not None:
            if self.prev_pred is not None:
                same = ((pred == self.prev_pred) | ~self.mask).all(dim=1)
                self.run = torch.where(same, self.run + 1, torch.zeros_like(self.run))
            hit |= self.run >= self.stable
        if t >= self.max_loops:
            hit[:] = True
        new = hit & ~self.done
        self.depth[new] = t
        ok = ((pred == self.tgt) | ~self.mask).all(dim=1)
        self.correct[new] = (ok if finite is None else ok & finite)[new]
        self.done |= new
        self.prev_h, self.prev_pred = h, pred


