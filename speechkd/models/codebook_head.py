"""MVQ-KD codebook-prediction head: a linear map from a middle encoder layer to codebook logits.

A *training head*: :class:`~speechkd.models.asr.AsrModel` keeps it under ``training_heads`` and drops it
from averaged and decoding models (:func:`~speechkd.models.asr.decoding_state_dict`).
"""

from __future__ import annotations

import torch
from torch import nn


class CodebookHead(nn.Module):
    """``(N, T, D) -> (N, T, num_targets, codebook_size)`` logits.

    ``num_targets`` = teacher frames per student frame x codebooks.
    """

    def __init__(self, in_dim: int, num_targets: int, codebook_size: int) -> None:
        super().__init__()
        self.num_targets = num_targets
        self.codebook_size = codebook_size
        self.proj = nn.Linear(in_dim, num_targets * codebook_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        return self.proj(x).reshape(n, t, self.num_targets, self.codebook_size)
