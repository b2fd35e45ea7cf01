"""Greedy decoding: for any looped model, and KV-cached with a per-token early exit for looplm's own model.

`generate` works through the looped-model protocol alone: every step reruns the loop on the whole prefix,
which is exact and cheap at the lengths looplm's tasks use. Rows are right-padded and each row reads its
logits at its own last position, so prompts of different lengths batch together (causal attention never
looks right).

`generate_cached` (LoopedTransformer) keeps K and V per (stage, loop, block): the prelude's blocks once, the
core's blocks once per loop (Φ is shared, but each loop sees a different state, so each loop has its own slot,
as in Ouro), and the coda's blocks once. A new token then costs one pass over itself per loop. It feeds the cache
through the built-in embed and step, so a subclass that replaces embed, step or readout is refused there as any
module of one's own is (`model.builtin_loop`): it decodes with `generate(..., use_cache=False)`, no exit rule.

Exit rule (per token): the position being decoded from stops looping at the first loop t where its relative
step residual ||h(t) - h(t-1)|| / ||h(t)|| (its own state vector) is below `exit_tol`, or its next-token argmax
has not changed for `exit_stable` consecutive loops, or at `num_loops`. An exited position does no more work:
at every later loop it keeps its state (run_loop's exit), and later positions that loop deeper read its most
recent K/V (those of its exit loop). With no exit rule every position runs `num_loops` loops, and the output
equals `generate` (tests/test_performance.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch

from .arguments import MAX_DEPTH, check_count, check_exit_rule, strict_int
from .evaluate import check_finite, check_weights_finite, exit_cap_reason, state_overflow
from .looped import check_given, eval_mode, run_loop
from .model import KVCache, LoopedTransformer, builtin_loop, structure_diff


class Generated(list):
    """The generated tokens of each prompt (its end token excluded), with `finished[i]`: whether row i stopped
    at the end token. False means it was cut off, by max_new_tokens or by the model's positions, and its
    answer may be incomplete."""

    def __init__(self, rows: list[list[int]], finished: list[bool]):
        super().__init__(rows)
        self.finished = finished


def _not_builtin(model: Any) -> str:
    """The model the cached decoder refuses, and what makes it so ("not LoopedTransformer (a subclass ...)" was said
    of a LoopedTransformer whose step was set on the instance)."""
    name = type(model).__name__
    if not isinstance(model, LoopedTransformer):
        return name
    methods = ("embed", "step", "readout")
    if any(getattr(type(model), m) is not getattr(LoopedTransformer, m) for m in methods):
        return f"{name} (a subclass with its own embed, step or readout)"
    if any(m in vars(model) for m in methods):
        return f"a {name} whose " + ", ".join(m for m in methods if m in vars(model)) + " is replaced on the instance"
    diff = structure_diff(model, model.cfg)
    if diff:
        return f"a {name} changed after it was built ({diff[0]}{', ...' if len(diff) > 1 else ''})"
    return f"a {name} with forward hooks"


def _check_counts(model: torch.nn.Module, num_loops: Any, max_new_tokens: Any, vocab: Any, eos_id: Any,
                  pad_id: Any = 0) -> None:
    """Integers, never bools (Python counts True as 1) nor floats: loops >= 1, new tokens >= 0, a vocabulary
    (None: the model's head) >= 1, and end and pad token ids >= 0 (None or a string never matched a generated id:
    the rows ran past their end, returning it as text). Otherwise torch's own error, far from the argument, or a
    silent 1. An end token the decoder can never choose (at or past `vocab` or the model's vocabulary) is refused
    too: every row would run to max_new_tokens."""
    for name, v, lo in (("num_loops", num_loops, 1), ("max_new_tokens", max_new_tokens, 0), ("vocab", vocab, 1),
                        ("eos_id", eos_id, 0), ("pad_id", pad_id, 0)):
        if not (v is None and name == "vocab"):
            check_count(name, v, lo)
    if strict_int(num_loops) > MAX_DEPTH:  # as the command line's --loops: 2**40 loops ran on without the cache
        raise ValueError(f"num_loops must be at most {MAX_DEPTH:,}, got {strict_int(num_loops):,}")
    table = getattr(getattr(model, "cfg", None), "vocab_size", None)  # looplm's model: its embedding's rows
    table = table if isinstance(table, int) and not isinstance(table, bool) else None
    widths = [w for w in (None if vocab is None else strict_int(vocab), table) if w is not None]
    if widths and eos_id >= min(widths):
        raise ValueError(f"eos_id={eos_id} is not an id the model can generate (ids below {min(widths)}); every row "
                         "would run to max_new_tokens")
    if table is not None and pad_id >= table:  # the padding is embedded too
        raise ValueError(f"pad_id={pad_id} is not a token id of the model (ids below {table})")


def _length_limit(model: torch.nn.Module, max_len: Any) -> tuple[int | None, str]:
    """The positions a row may fill, and how to say it: the caller's `max_len` (an integer >= 1), capped at the
    model's position table (`cfg.max_seq_len`, if it has one). The words blame whichever binds: a too-small
    max_len was reported as the model's "max_seq_len=3"."""
    if max_len is not None:  # (5.5 was torch's TypeError inside; -5 "leaves no room in max_seq_len=-5")
        max_len = check_count("max_len", max_len, 1)
    positions = getattr(getattr(model, "cfg", None), "max_seq_len", None)
    if positions is None or (max_len is not None and max_len < positions):
        return max_len, f"below max_len={max_len}; pass a larger max_len" + (
            f" (at most the model's max_seq_len={positions})" if positions is not None else "")
    capped = "" if max_len is None else f" (max_len={max_len} is capped there)"
    return positions, f"below the model's max_seq_len={positions}{capped}; shorten the prompt"


def _check_read(h: torch.Tensor, logits: torch.Tensor, live: torch.Tensor, depth: torch.Tensor | int) -> None:
    """Refuse a token read out of an overflowed state or non-finite logits (`evaluate.state_overflow`, as sweep and
    analyze judge them): rows `live` of the states h (B, D) and logits (B, V) they were read from, at `depth` loops
    (per row, or one count). The argmax of NaN logits (token 0) or of a collapsed readout is no choice the model
    made, yet it was decoded as one."""
    bad = live & (state_overflow(h) | ~torch.isfinite(logits).all(-1))
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        d = int(depth[i]) if isinstance(depth, torch.Tensor) else depth
        check_finite(h[i], d, shallower_read=False)  # (said "depths below d may still be read" when none could be)
        check_finite(logits[i], d, "readout logits", shallower_read=False)


def _is_int(v: Any) -> bool:
    if getattr(v, "ndim", 0):  # a one-element row of a tensor is an index to torch, but a prompt here
        return False
    try:
        strict_int(v)
    except TypeError:
        return False
    return True


def _check_prompts(prompts: list[list[int]], limit: tuple[int | None, str]) -> list[list[int]]:
    """The prompts as lists of int ids, each non-empty and leaving a position free below the limit
    (`_length_limit`)."""
    max_len, said = limit
    shape = "prompts is a list of prompts, each a list of token ids"
    if isinstance(prompts, str) or any(isinstance(p, str) for p in prompts):  # text where ids were wanted
        raise ValueError(f"{shape}: got text ({prompts!r:.60}); encode it first (task.tok.encode)")
    if any(_is_int(p) for p in prompts):  # one prompt's ids, unwrapped: its ids were refused as "not integers"
        raise ValueError(f"{shape}: got a flat list of ints ({prompts!r:.60}); wrap one prompt: [ids]")
    out = []
    for p in prompts:
        try:
            ids = [strict_int(t) for t in p]  # 3.9 was read as 3, and True as id 1 (an end token)
        except TypeError:
            raise ValueError(f"prompt token ids must be integers, got {p!r:.80}") from None
        if len(ids) < 1:
            raise ValueError("empty prompt")
        if max_len is not None and len(ids) >= max_len:
            raise ValueError(f"prompt of {len(ids)} tokens leaves no position free {said}")
        out.append(ids)
    return out


@torch.inference_mode()
def generate(model: torch.nn.Module, prompts: list[list[int]], num_loops: int, max_new_tokens: int,
             eos_id: int, pad_id: int = 0, max_len: int | None = None, use_cache: bool = False,
             exit_tol: float | None = None, exit_stable: int | None = None, vocab: int | None = None) -> Generated:
    """Batched greedy decoding at `num_loops` loops, stopping each row at `eos_id` (not returned) or when the
    sequence reaches `max_len` positions (default: the model's `cfg.max_seq_len`, if it has one; then
    `finished` says it was cut off). The prediction made at the last position is still read: an end token
    there finishes the row (training scores it there too). `use_cache=True`, or an exit rule, decodes with
    `generate_cached` (looplm's own LoopedTransformer only; any other module, a subclass with its own embed, step
    or readout included, is refused with TypeError there). `vocab`: choose only among ids below it (the
    tokenizer's), for a model whose head is wider than its tokenizer can decode."""
    check_given(model)
    if not isinstance(use_cache, bool):  # ("no" is truthy: it decoded with the cache, as run_loop's checkpoint=)
        raise TypeError(f"use_cache must be True or False, got {use_cache!r:.80}")
    _check_counts(model, num_loops, max_new_tokens, vocab, eos_id, pad_id)
    limit = _length_limit(model, max_len)
    exit_tol, exit_stable = check_exit_rule(exit_tol, exit_stable)
    if use_cache or exit_tol is not None or exit_stable is not None:
        return generate_cached(model, prompts, num_loops, max_new_tokens, eos_id, exit_tol, exit_stable, vocab,
                               max_len)[0]
    check_weights_finite(model)  # (sweep's check: the argmax of NaN logits was decoded as the model's choice)
    with eval_mode(model):
        device = next(model.parameters()).device
        if len(prompts) == 0:  # (an array's truth value is an error)
            return Generated([], [])
        # a position table's length: past it the model cannot run, so stop there, marked (as generate_cached does)
        max_len = limit[0]
        prompts = _check_prompts(prompts, limit)
        lens = torch.tensor([len(p) for p in prompts], device=device)
        total = int(lens.max()) + max_new_tokens
        if max_len is not None:
            total = min(total, max_len)
        buf = torch.full((len(prompts), total), pad_id, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            buf[i, : len(p)] = torch.tensor(p, device=device)
        cur = lens.clone()
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        full = torch.zeros_like(done)  # rows whose next token, not an end token, has no position left
        out: list[list[int]] = [[] for _ in prompts]
        rows = torch.arange(len(prompts), device=device)
        pos = torch.arange(total, device=device)
        for _ in range(max_new_tokens):
            active = ~done & ~full
            if not active.any():
                break
            width = int(cur[active].max())
            ids = buf[:, :width]
            try:
                h0, ctx = model.embed(ids, pos[:width][None, :] < cur[:, None])
            except IndexError as e:  # past a position table generate does not know of: torch's "index out of range"
                if max_len is not None:
                    raise
                raise ValueError(f"{type(model).__name__}.embed failed on {width} positions ({e}); if its position "
                                 "table is shorter, pass generate(..., max_len=<its length>)") from None
            h = run_loop(model, h0, ctx, num_loops)
            at = (cur - 1).clamp(max=width - 1)  # each row's last position
            logits = model.readout(h, ctx)[rows, at, :vocab]  # (B, V)
            _check_read(h[rows, at], logits, active, num_loops)
            nxt = logits.argmax(dim=-1)  # (B,)
            for i in torch.nonzero(active).flatten().tolist():
                tok = int(nxt[i])
                if tok == eos_id:
                    done[i] = True
                elif cur[i] >= total:
                    full[i] = True
                else:
                    out[i].append(tok)
                    buf[i, cur[i]] = tok
                    cur[i] += 1
        return Generated(out, done.tolist())


class TokenExit:
    """The per-token exit rule above, for run_loop: judged at the chunk's last position."""

    def __init__(self, model: LoopedTransformer, ctx: Any, tol: float | None, stable: int | None, batch: int,
                 device: torch.device, vocab: int | None = None):
        self.model, self.tol, self.stable, self.vocab = model, tol, stable, vocab
        self.peek = dataclasses.replace(ctx, store=False)  # a readout that leaves the cache as it is
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.depth = torch.zeros(batch, dtype=torch.long, device=device)
        self.run = torch.zeros(batch, dtype=torch.long, device=device)
        self.prev_arg: torch.Tensor | None = None
        self.t = 0

    def update(self, t: int, h_prev: torch.Tensor, h: torch.Tensor) -> None:
        self.t = t
        hit = torch.zeros_like(self.done)
        if self.tol is not None:
            last_new, last_old = h[:, -1].float(), h_prev[:, -1].float()
            hit |= (last_new - last_old).norm(dim=-1) < self.tol * last_new.norm(dim=-1)
        if self.stable is not None:
            # among the tokenizer's ids only, as the decoded token: a head row past them changed the loops run
            arg = self.model.readout(h[:, -1:], self.peek)[:, -1, : self.vocab].argmax(-1)
            if self.prev_arg is not None:
                self.run = torch.where(arg == self.prev_arg, self.run + 1, torch.zeros_like(self.run))
            self.prev_arg = arg
            hit |= self.run >= self.stable
        new = hit & ~self.done
        self.depth[new] = t
        self.done |= new


def _cached_step(model: LoopedTransformer, cache: KVCache, ids: torch.Tensor, start: int, num_loops: int,
                 exit_tol: float | None, exit_stable: int | None,
                 vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed positions start..start+n-1 (ids (B, n)); returns (next-token logits at the last one (B, V),
    loops used per row (B,), the state they were read from (B, D))."""
    B = ids.shape[0]
    h0, ctx = model.embed(ids, cache=cache, start=start)
    rule = None
    if exit_tol is not None or exit_stable is not None:
        rule = ctx.exit = TokenExit(model, ctx, exit_tol, exit_stable, B, ids.device, vocab)
    h = run_loop(model, h0, ctx, num_loops, exit=rule)
    depth = torch.full((B,), num_loops, dtype=torch.long, device=ids.device)
    if rule is not None:
        depth = torch.where(rule.done, rule.depth, depth)
        for tt in range(rule.t + 1, num_loops + 1):  # every row exited: later tokens still need K/V there
            for j in range(len(model.core)):
                cache.repeat_newest(("core", tt, j), ("core", j))
    return model.readout(h, ctx)[:, -1], depth, h[:, -1]


@torch.inference_mode()
def _require_cache_memory(model: LoopedTransformer, prompts: list[list[int]], num_loops: int) -> None:
    """Refuse, before decoding, a KV cache that cannot fit: one K and one V of (rows, T, D) per (loop, block)
    slot, for the largest group of prompts decoded together (groups run one after the other)."""
    from collections import Counter

    from .memory import require

    m = model.cfg
    rows = max(Counter(len(p) for p in prompts).values(), default=0)
    if rows == 0:  # no prompts: no cache (max() of nothing was Python's error; generate returns an empty result)
        return
    slots = m.n_prelude + m.n_coda + m.n_core * num_loops
    elem = next(model.parameters()).element_size()
    require(slots * rows * m.max_seq_len * 2 * m.d_model * elem,
            f"{rows} prompt(s) of up to {m.max_seq_len} positions with a KV cache for {num_loops:,} loops "
            f"({slots:,} block slots; --no-cache keeps none)", next(model.parameters()).device)


def generate_cached(model: LoopedTransformer, prompts: list[list[int]], num_loops: int, max_new_tokens: int,
                    eos_id: int, exit_tol: float | None = None, exit_stable: int | None = None,
                    vocab: int | None = None, max_len: int | None = None) -> tuple[Generated, list[list[int]]]:
    """Batched greedy decoding with a KV cache per (loop, block) and an optional per-token exit rule.

    Returns (tokens, loops): each row's generated tokens (EOS excluded) and the loops used to produce each
    of them (its EOS included, as the last entry when it stopped at EOS). `num_loops` is the depth without an
    exit rule, and the cap with one. Prompts are grouped by length, and each group decodes in lockstep.
    `vocab` and `max_len` (at most the model's positions) as in `generate`.
    """
    # the cache is fed through the built-in embed and step: a subclass with its own (a module of one's own, as
    # docs/protocol.md counts it) got Python's "unexpected keyword argument 'cache'" from inside
    if not builtin_loop(model):
        what = _not_builtin(model)
        if exit_tol is not None or exit_stable is not None:  # the rule is what asked for the cache, not use_cache
            raise TypeError(f"an exit rule (exit_tol, exit_stable) decodes with the KV cache, which only looplm's "
                            f"LoopedTransformer has, not {what}; drop the exit rule")
        raise TypeError(f"KV-cached generation is written for looplm's LoopedTransformer, not {what}; use "
                        "generate(..., use_cache=False)")
    _check_counts(model, num_loops, max_new_tokens, vocab, eos_id)
    exit_tol, exit_stable = check_exit_rule(exit_tol, exit_stable)
    check_weights_finite(model)
    with eval_mode(model):
        device = next(model.parameters()).device
        limit = _length_limit(model, max_len)  # (5.5 was Python's TypeError, -5 "no room in max_seq_len=-5")
        max_len = limit[0]
        prompts = _check_prompts(prompts, limit)
        _require_cache_memory(model, prompts, num_loops)
        outs: list[list[int]] = [[] for _ in prompts]
        loops: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(len(p), []).append(i)
        for plen, rows in groups.items():
            ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long, device=device)
            cache = KVCache()
            logits, depth, h = _cached_step(model, cache, ids, 0, num_loops, exit_tol, exit_stable, vocab)
            done = torch.zeros(len(rows), dtype=torch.bool, device=device)
            # one decision more than there are free positions: the last position's prediction is read, and only an
            # end token can be taken there
            steps = min(max_new_tokens, max_len - plen + 1)
            for k in range(steps):
                _check_read(h, logits[:, :vocab], ~done, depth)
                nxt = logits[:, :vocab].argmax(-1)
                for r, i in enumerate(rows):
                    if done[r]:
                        continue
                    if int(nxt[r]) == eos_id:
                        loops[i].append(int(depth[r]))
                        done[r] = finished[i] = True
                    elif plen + k >= max_len:  # no position left for it: cut off
                        done[r] = True
                    else:
                        loops[i].append(int(depth[r]))
                        outs[i].append(int(nxt[r]))
                if bool(done.all()) or k == steps - 1:
                    break
                logits, depth, h = _cached_step(model, cache, nxt.unsqueeze(1), plen + k, num_loops, exit_tol,
                                                exit_stable, vocab)
        return Generated(outs, finished), loops


def check_prompts(task: Any, prompts: list[str]) -> list[str]:
    """generate's check of its text prompts: one not valid UTF-8 is refused; the notes for those that are not one of
    the task's problems (a task with a `prompt_note`: addition, parity, chain), which the model answers anyway."""
    for p in prompts:  # Python reads a command line's non-UTF-8 bytes as lone surrogates: no tokenizer encodes them
        odd = re.search("[\udc80-\udcff]", p)
        if odd:
            raise ValueError(f"prompt {p!r} is not valid UTF-8 (byte 0x{ord(odd.group()) - 0xdc00:02x} at position "
                             f"{odd.start()}); give the prompt as UTF-8 text")
    shape = getattr(task, "prompt_note", None)
    return [] if shape is None else [n for n in map(shape, prompts) if n]


def exit_cap_note(tol: float | None, stable: int | None, loops: int) -> str | None:
    """generate's note where its exit rule cannot stop a token before the cap of `loops` (the sweep's note, for
    tokens): every token then runs the cap, as with no rule, and the rule was taken to have saved loops."""
    why = exit_cap_reason(tol, stable, loops)
    if why is None:
        return None
    return (f"note: the exit rule cannot stop a token before the cap ({why}the cap is {loops} loop(s)): every token "
            f"runs {loops} loop(s), as with no rule; raise --loops or loosen the rule")


def pads_said(out: list[int], pad_id: int) -> str:
    """A padding token the model chose is part of what it wrote (every later token read it) but has no text: say
    where it was, so the printed answer is not taken for the sequence that a sweep scores."""
    at = [k + 1 for k, t in enumerate(out) if t == pad_id]
    if not at:
        return ""
    where = ", ".join(map(str, at[:8])) + (", ..." if len(at) > 8 else "")
    return f"  [the model wrote <pad> as output token(s) {where} of {len(out)}; the text leaves them out]"
