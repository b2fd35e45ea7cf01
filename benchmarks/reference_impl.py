"""A plain reference implementation of looped-transformer training with the authors' regularizer recipe.

Written for benchmarks/throughput.py from the description in docs/method.md (no code copied from the
authors' release): what a straightforward research implementation of the same model and step looks like.
- model: token + learned position embeddings; one shared pre-norm block (nn.LayerNorm, explicit softmax
  attention q kᵀ/√d with a causal mask, GELU MLP) looped t times; final LayerNorm; tied head. Same sizes and
  the same initialisation scheme as looplm's LoopedTransformer at the demo config.
- regularizer: the released recipe: a separate block forward at the detached final state, a vector-Jacobian
  product vᵀJ with ONE unit vector v over the whole (B, T, D) batch tensor, penalty ||vᵀJ||² (no per-sample
  mean), its gradient by double backward (create_graph=True).
- step: (1-λ)·CE + λ·penalty, backward, clip 1.0, AdamW.

It is a timing reference only. Two known issues make its gradients differ from looplm's, and neither changes
its cost: the estimator is the scaled Frobenius norm, not the paper's per-sample JVP (docs/method.md); and on
torch 2.13 CPU the fused LayerNorm's double backward gives wrong parameter gradients (looplm/model.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RefBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).split(D, dim=-1)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // H)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class RefLoopedLM(nn.Module):
    def __init__(self, vocab: int, max_len: int, d: int, n_heads: int, d_ff: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.block = RefBlock(d, n_heads, d_ff)
        self.ln_f = nn.LayerNorm(d)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for w in (self.block.proj.weight, self.block.down.weight):
            nn.init.normal_(w, std=0.02 / math.sqrt(2))

    def forward(self, ids: torch.Tensor, loops: int) -> tuple[torch.Tensor, torch.Tensor]:
        T = ids.shape[1]
        h = self.tok(ids) + self.pos(torch.arange(T, device=ids.device))
        for _ in range(loops):
            h = self.block(h)
        return F.linear(self.ln_f(h), self.tok.weight), h


def release_penalty(block: nn.Module, h: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """||vᵀJ||² at the detached state, v one unit vector over the whole batch tensor, by double backward."""
    h = h.detach().requires_grad_(True)
    y = block(h)  # a separate forward of the block
    v = torch.randn(y.shape, generator=gen)
    v = v / v.norm()
    (vj,) = torch.autograd.grad(y, h, v, create_graph=True)
    return vj.pow(2).sum()


class RefTrainer:
    def __init__(self, vocab: int, max_len: int, d: int = 128, n_heads: int = 4, d_ff: int = 256,
                 lr: float = 1e-3, reg_weight: float = 0.1, seed: int = 0):
        torch.manual_seed(seed)
        self.model = RefLoopedLM(vocab, max_len, d, n_heads, d_ff)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
        self.lam = reg_weight
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, input_ids: torch.Tensor, targets: torch.Tensor, loops: int, reg: bool = True) -> float:
        logits, h = self.model(input_ids, loops)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        loss = (1 - self.lam) * ce + self.lam * release_penalty(self.model.block, h, self.gen) if reg else ce
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return loss.item()
