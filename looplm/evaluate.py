"""Depth sweeps and greedy decoding.

One pass gives every depth (DESIGN.md §4): greedy decoding reproduces the gold answer exactly iff every
teacher-forced next-token argmax along the gold answer (and its EOS) is right, because each greedy step
then sees exactly the teacher-forced prefix. So one forward pass to the largest depth, with the head
applied to the state after each loop, scores all depths at once: O(L_max) core applications instead of
O(L_max² · answer length) for decoding at each depth separately. `tests/test_evaluate.py` checks the
equivalence against real decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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

    @property
    def accuracy(self) -> list[float]:
        return self.correct.float().mean(dim=1).tolist()

    def to_json(self) -> dict:
        return {"depths": self.depths, "accuracy": self.accuracy, "n": int(self.correct.shape[1]),
                "state_norm": self.state_norm.tolist()}


@torch.inference_mode()
def sweep(model: LoopedTransformer, batch: Batch, depths: list[int], batch_size: int = 500,
          progress: bool = False) -> SweepResult:
    """Exact-match accuracy at every depth in `depths`, from one forward pass to max(depths) per chunk."""
    if not depths:
        raise ValueError("no depths to sweep")
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

        def keep(t: int, h: torch.Tensor, s=s, tgt=tgt, mask=mask, tok_valid=tok_valid) -> None:
            bar.update(1)
            if t not in want:
                return
            i = want[t]
            pred = model.readout(h).argmax(dim=-1)  # (b, T)
            ok = ((pred == tgt) | ~mask).all(dim=1)
            correct[i, s : s + len(ok)] = ok.cpu()
            per_tok = h.float().norm(dim=-1)  # (b, T)
            norm_sum[i] += ((per_tok * tok_valid).sum(1) / tok_valid.sum(1)).sum().double().cpu()

        e = model.embed(ids)
        model.loop(e, e, max(depths), keep=keep)
    bar.close()
    return SweepResult(list(depths), correct, (norm_sum / n).float())


@torch.inference_mode()
def generate(model: LoopedTransformer, prompts: list[list[int]], num_loops: int, max_new_tokens: int
             ) -> list[list[int]]:
    """Batched greedy decoding, stopping each row at EOS (EOS is not returned). No KV cache: every step
    reruns the loop on the whole prefix, which is exact and cheap at these lengths.

    Rows are right-padded and each row reads its logits at its own last position, so prompts of different
    lengths batch together without an attention mask (causal attention never looks right).
    """
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
