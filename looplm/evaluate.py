"""Depth sweeps and greedy decoding.

One pass gives every depth (DESIGN.md §4): greedy decoding reproduces the gold answer exactly iff every
teacher-forced next-token argmax along the gold answer (and its EOS) is right, because each greedy step
then sees exactly the teacher-forced prefix. So one forward pass to the largest depth, with the head
applied to the state after each loop, scores all depths at once: O(L_max) core applications instead of
O(L_max² · answer length) for decoding at each depth separately. `tests/test_evaluate.py` checks the
equivalence against real decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .model import LoopedTransformer
from .tasks.addition import EOS, IGNORE, PAD, Batch


def parse_depths(spec: str) -> list[int]:
    """`1:100` (inclusive), `1:100:5`, `1,2,4,8`, or a mix like `1:8,16,32` -> sorted unique depths >= 1."""
    out: set[int] = set()
    if not spec or not spec.strip():
        raise ValueError("empty depth specification; use e.g. 1:100 or 1,2,4,8")
    for part in spec.split(","):
        part = part.strip()
        try:
            nums = [int(x) for x in part.split(":")]
        except ValueError:
            raise ValueError(f"bad depth spec {part!r}; use e.g. 1:100, 1:100:5 or 1,2,4") from None
        if len(nums) == 1:
            rng = nums
        elif len(nums) in (2, 3):
            lo, hi = nums[0], nums[1]
            st = nums[2] if len(nums) == 3 else 1
            if hi < lo:
                raise ValueError(f"depth range {part!r} is reversed (end {hi} < start {lo})")
            if st < 1:
                raise ValueError(f"depth range {part!r} needs a step >= 1")
            rng = list(range(lo, hi + 1, st))
        else:
            raise ValueError(f"bad depth spec {part!r}")
        if any(n < 1 for n in rng):
            raise ValueError(f"depths must be >= 1, got {part!r}")
        out.update(rng)
    return sorted(out)


@dataclass
class SweepResult:
    depths: list[int]
    correct: torch.Tensor  # (L, N) bool: exact match of greedy decoding at each depth
    state_norm: torch.Tensor  # (L,) mean over samples of ||h(t)|| per token (the drift diagnostic)
    # With an exit rule (sweep(exit_tol=..., exit_stable=...)): each sample's exit depth and its exact match there.
    exit_depth: torch.Tensor | None = None  # (N,) long
    exit_correct: torch.Tensor | None = None  # (N,) bool
    exit_rule: dict | None = None

    @property
    def accuracy(self) -> list[float]:
        return self.correct.float().mean(dim=1).tolist()

    def to_json(self) -> dict:
        out = {"depths": self.depths, "accuracy": self.accuracy, "n": int(self.correct.shape[1]),
               "state_norm": self.state_norm.tolist()}
        if self.exit_depth is not None and self.exit_correct is not None:
            out["exit"] = {**(self.exit_rule or {}), "accuracy": self.exit_correct.float().mean().item(),
                           "mean_loops": self.exit_depth.float().mean().item()}
        return out


@torch.inference_mode()
def sweep(model: LoopedTransformer, batch: Batch, depths: list[int], batch_size: int = 500,
          progress: bool = False, exit_tol: float | None = None, exit_stable: int | None = None) -> SweepResult:
    """Exact-match accuracy at every depth in `depths`, from one forward pass to max(depths) per chunk.

    With `exit_tol` and/or `exit_stable` it also applies an adaptive exit rule per sample (see `ExitTracker`;
    capped at max(depths)) and reports each sample's exit depth and its exact match there.
    """
    if not depths:
        raise ValueError("no depths to sweep")
    use_exit = exit_tol is not None or exit_stable is not None
    exit_depth = torch.zeros(len(batch), dtype=torch.long)
    exit_correct = torch.zeros(len(batch), dtype=torch.bool)
    model.eval()
    device = next(model.parameters()).device
    want = {d: i for i, d in enumerate(depths)}
    n = len(batch)
    correct = torch.zeros(len(depths), n, dtype=torch.bool)
    norm_sum = torch.zeros(len(depths), dtype=torch.float64)
    chunks = range(0, n, batch_size)
    bar = tqdm(total=len(chunks) * max(depths), desc="sweep", unit="loop", disable=not progress)
    for s in chunks:
        ids = batch.input_ids[s : s + batch_size].to(device)
        tgt = batch.targets[s : s + batch_size].to(device)
        mask = tgt != IGNORE  # (b, T) answer positions
        tok_valid = ids != PAD

        tracker = ExitTracker(exit_tol, exit_stable, max(depths), tok_valid, mask, tgt) if use_exit else None

        def keep(t: int, h: torch.Tensor, s=s, tgt=tgt, mask=mask, tok_valid=tok_valid, tracker=tracker) -> None:
            bar.update(1)
            if tracker is not None:
                tracker.update(t, h, model.readout(h).argmax(dim=-1))
                if t == max(depths):
                    exit_depth[s : s + len(tgt)] = tracker.depth.cpu()
                    exit_correct[s : s + len(tgt)] = tracker.correct.cpu()
            if t not in want:
                return
            i = want[t]
            pred = model.readout(h).argmax(dim=-1)  # (b, T)
            ok = ((pred == tgt) | ~mask).all(dim=1)
            correct[i, s : s + len(ok)] = ok.cpu()
            per_tok = h.float().norm(dim=-1)  # (b, T)
            norm_sum[i] += ((per_tok * tok_valid).sum(1) / tok_valid.sum(1)).sum().double().cpu()

        e = model.embed(ids)
        if tracker is not None:
            tracker.prev_h = e
        model.loop(e, e, max(depths), keep=keep)
    bar.close()
    if use_exit:
        return SweepResult(list(depths), correct, (norm_sum / n).float(), exit_depth, exit_correct,
                           {"tol": exit_tol, "stable": exit_stable, "max_loops": max(depths)})
    return SweepResult(list(depths), correct, (norm_sum / n).float())


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
        if stable is not None and stable < 1:
            raise ValueError(f"exit_stable must be >= 1, got {stable}")
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

    def update(self, t: int, h: torch.Tensor, pred: torch.Tensor) -> None:
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
        self.correct[new] = ((pred == self.tgt) | ~self.mask).all(dim=1)[new]
        self.done |= new
        self.prev_h, self.prev_pred = h, pred


@torch.inference_mode()
def generate(model: LoopedTransformer, prompts: list[list[int]], num_loops: int, max_new_tokens: int,
             use_cache: bool = False, exit_tol: float | None = None, exit_stable: int | None = None
             ) -> list[list[int]]:
    """Batched greedy decoding, stopping each row at EOS (EOS is not returned). By default no KV cache: every
    step reruns the loop on the whole prefix, which is exact and cheap at these lengths. `use_cache=True`, or
    an exit rule (`exit_tol`, `exit_stable`), decodes with `generate_cached` instead.

    Rows are right-padded and each row reads its logits at its own last position, so prompts of different
    lengths batch together without an attention mask (causal attention never looks right).
    """
    if use_cache or exit_tol is not None or exit_stable is not None:
        return generate_cached(model, prompts, num_loops, max_new_tokens, exit_tol, exit_stable)[0]
    model.eval()
    device = next(model.parameters()).device
    if not prompts:
        return []
    lens = torch.tensor([len(p) for p in prompts], device=device)
    if (lens < 1).any():
        raise ValueError("empty prompt")
    total = int(lens.max()) + max_new_tokens
    if total > model.cfg.max_seq_len:
        total = model.cfg.max_seq_len
        if int(lens.max()) >= total:
            raise ValueError(f"prompt of {int(lens.max())} tokens leaves no room in max_seq_len="
                             f"{model.cfg.max_seq_len}")
    buf = torch.full((len(prompts), total), PAD, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        buf[i, : len(p)] = torch.tensor(p, device=device)
    cur = lens.clone()
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in prompts]
    rows = torch.arange(len(prompts), device=device)
    for _ in range(max_new_tokens):
        active = ~done & (cur < total)
        if not active.any():
            break
        width = int(cur[active].max())
        logits = model(buf[:, :width], num_loops)  # (B, width, V)
        nxt = logits[rows, (cur - 1).clamp(max=width - 1)].argmax(dim=-1)  # (B,)
        for i in torch.nonzero(active).flatten().tolist():
            tok = int(nxt[i])
            if tok == EOS:
                done[i] = True
            else:
                out[i].append(tok)
                buf[i, cur[i]] = tok
                cur[i] += 1
    return out


# --- KV-cached greedy decoding, with an adaptive per-token exit ---------------------------------------------
#
# The cache holds K and V per (stage, loop, block): the prelude's blocks once, the core's blocks once per loop
# (Φ is shared, but each loop sees a different state, so each loop has its own slot, as in Ouro), and the coda's
# blocks once. A new token then costs one pass over itself per loop instead of a rerun of the whole prefix.
#
# Exit rule (per token): the position being decoded from stops looping at the first loop t where its
# relative step residual ||h(t) - h(t-1)|| / ||h(t)|| (its own state vector) is below `exit_tol`, or its
# next-token argmax has not changed for `exit_stable` consecutive loops, or at `num_loops`. An exited position
# does no more work: at every later loop it keeps its state, and later positions that loop deeper read its
# most recent K/V (those of its exit loop). With no exit rule every position runs `num_loops` loops, and the
# output equals `generate` without the cache (tests/test_performance.py).


class KVCache:
    """K/V tensors (B, H, S, dh) per key (stage, loop, block), grown one position chunk at a time."""

    def __init__(self) -> None:
        self.kv: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.newest: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # block key -> this chunk's newest K/V

    def attend(self, attn: torch.nn.Module, x: torch.Tensor, key: tuple, store: bool = True,
               frozen: torch.Tensor | None = None, slot: tuple | None = None) -> torch.Tensor:
        """CausalSelfAttention.forward on the new positions x (B, n, D), over the cached ones plus themselves.

        frozen: (B,) rows whose new K/V are not computed afresh but repeated from `slot`'s newest ones.
        """
        B, n, D = x.shape
        H = attn.n_heads
        q, k, v = attn.qkv(x).split(D, dim=-1)
        q, k, v = (t.view(B, n, H, D // H).transpose(1, 2) for t in (q, k, v))
        if frozen is not None and slot in self.newest:
            fk, fv = self.newest[slot]
            f = frozen.view(B, 1, 1, 1)
            k, v = torch.where(f, fk, k), torch.where(f, fv, v)
        if slot is not None:
            self.newest[slot] = (k, v)
        past = self.kv.get(key)
        if past is not None:
            if n != 1:
                raise ValueError("after the prompt, the cache takes one position at a time")
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        if store:
            self.kv[key] = (k, v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None)
        return attn.proj(y.transpose(1, 2).reshape(B, n, D))

    def repeat_newest(self, key: tuple, slot: tuple) -> None:
        """Append `slot`'s newest K/V under `key` without computing anything (an exited position)."""
        k, v = self.newest[slot]
        past = self.kv.get(key)
        self.kv[key] = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))


def _residual(res: torch.nn.Module, x: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """model.Residual.forward with its sublayer replaced by `f` (same placements, eval mode)."""
    p = res.placement
    if p == "pre":
        return x + res.drop(f(res.n_in(x)))
    if p == "post":
        return res.n_out(res.alpha * x + res.drop(f(x)))
    if p == "pre_sandwich":
        return x + res.drop(res.n_out(f(res.n_in(x))))
    return res.n_out(res.alpha * x + res.drop(f(res.n_in(x))))


def _block(blk: torch.nn.Module, x: torch.Tensor, cache: KVCache, key: tuple, **kw) -> torch.Tensor:
    x = _residual(blk.attn, x, lambda z: cache.attend(blk.attn.f, z, key, **kw))
    return _residual(blk.mlp, x, blk.mlp.f)


def _readout_cached(model: LoopedTransformer, h: torch.Tensor, cache: KVCache, store: bool) -> torch.Tensor:
    for j, blk in enumerate(model.coda):
        h = _block(blk, h, cache, ("coda", 0, j), store=store)
    return F.linear(model.norm_f(h), model.tok_emb.weight)


def _cached_step(model: LoopedTransformer, cache: KVCache, ids: torch.Tensor, start: int, num_loops: int,
                 exit_tol: float | None, exit_stable: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed positions start..start+n-1 (ids (B, n)); returns (next-token logits at the last one (B, V),
    loops used per row (B,))."""
    B, n = ids.shape
    pos = torch.arange(start, start + n, device=ids.device)
    x = model.drop(model.tok_emb(ids) + model.pos_emb(pos))
    for j, blk in enumerate(model.prelude):
        x = _block(blk, x, cache, ("pre", 0, j))
    e = h = x
    use_exit = exit_tol is not None or exit_stable is not None
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    depth = torch.full((B,), num_loops, dtype=torch.long, device=ids.device)
    run = torch.zeros(B, dtype=torch.long, device=ids.device)
    prev_arg: torch.Tensor | None = None
    for t in range(1, num_loops + 1):
        if use_exit and bool(done.all()):
            for tt in range(t, num_loops + 1):  # nothing left to compute; later tokens still need K/V here
                for j in range(len(model.core)):
                    cache.repeat_newest(("core", tt, j), ("core", j))
            break
        frozen = done.clone() if use_exit and bool(done.any()) else None
        z = h + e if model.cfg.injection == "add" else h
        for j, blk in enumerate(model.core):
            z = _block(blk, z, cache, ("core", t, j), frozen=frozen, slot=("core", j))
        h_new = torch.where(frozen.view(B, 1, 1), h, z) if frozen is not None else z
        if use_exit:
            hit = torch.zeros_like(done)
            if exit_tol is not None:
                last_new, last_old = h_new[:, -1].float(), h[:, -1].float()
                hit |= (last_new - last_old).norm(dim=-1) < exit_tol * last_new.norm(dim=-1)
            if exit_stable is not None:
                arg = _readout_cached(model, h_new[:, -1:], cache, store=False)[:, -1].argmax(-1)
                if prev_arg is not None:
                    run = torch.where(arg == prev_arg, run + 1, torch.zeros_like(run))
                prev_arg = arg
                hit |= run >= exit_stable
            new = hit & ~done
            depth[new] = t
            done |= new
        h = h_new
    logits = _readout_cached(model, h, cache, store=True)[:, -1]
    return logits, depth


@torch.inference_mode()
def generate_cached(model: LoopedTransformer, prompts: list[list[int]], num_loops: int, max_new_tokens: int,
                    exit_tol: float | None = None, exit_stable: int | None = None
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """Batched greedy decoding with a KV cache per (loop, block) and an optional per-token exit rule.

    Returns (tokens, loops): each row's generated tokens (EOS excluded) and the loops used to produce each
    of them (its EOS included, as the last entry when it stopped at EOS). `num_loops` is the depth without an
    exit rule, and the cap with one. Prompts are grouped by length, and each group decodes in lockstep.
    """
    if num_loops < 1:
        raise ValueError(f"num_loops must be >= 1, got {num_loops}")
    if exit_stable is not None and exit_stable < 1:
        raise ValueError(f"exit_stable must be >= 1, got {exit_stable}")
    model.eval()
    device = next(model.parameters()).device
    outs: list[list[int]] = [[] for _ in prompts]
    loops: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        if len(p) < 1:
            raise ValueError("empty prompt")
        if len(p) >= model.cfg.max_seq_len:
            raise ValueError(f"prompt of {len(p)} tokens leaves no room in max_seq_len={model.cfg.max_seq_len}")
        groups.setdefault(len(p), []).append(i)
    for plen, rows in groups.items():
        ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
        cache = KVCache()
        logits, depth = _cached_step(model, cache, ids, 0, num_loops, exit_tol, exit_stable)
        done = torch.zeros(len(rows), dtype=torch.bool, device=device)
        steps = min(max_new_tokens, model.cfg.max_seq_len - plen)
        for k in range(steps):
            nxt = logits.argmax(-1)
            for r, i in enumerate(rows):
                if done[r]:
                    continue
                loops[i].append(int(depth[r]))
                if int(nxt[r]) == EOS:
                    done[r] = True
                else:
                    outs[i].append(int(nxt[r]))
            if bool(done.all()) or k == steps - 1:
                break
            logits, depth = _cached_step(model, cache, nxt.unsqueeze(1), plen + k, num_loops, exit_tol, exit_stable)
    return outs, loops
