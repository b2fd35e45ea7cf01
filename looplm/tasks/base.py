"""What every task hands the trainer, the sweep and the diagnostics: a `Batch` of token ids, next-token
targets and a real-token mask.

Nothing outside a task knows its padding id or its prompt format: the mask says which positions are real
tokens, and `targets` says which positions are scored (the next token there, `IGNORE` elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100  # cross_entropy's ignore_index: a position that is not scored


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long; padding on the right
    targets: torch.Tensor  # (B, T) long: the next token where the position is scored, IGNORE elsewhere
    mask: torch.Tensor  # (B, T) bool: real tokens (True) vs padding

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.targets.to(device), self.mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, sl: slice) -> Batch:
        """A slice of the samples, trimmed to the longest real sequence among them (right padding only)."""
        m = self.mask[sl]
        width = max(1, int(m.sum(1).max())) if m.numel() else 1
        return Batch(self.input_ids[sl, :width], self.targets[sl, :width], m[:, :width])
