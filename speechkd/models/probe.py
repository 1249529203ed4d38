"""SUPERB-style ASR probe: learnable softmax-weighted sum of a frozen upstream's layers, BiLSTM, CTC.

``probe(layers (L, N, T, D), lens (N,)) -> (log_probs (N, T, V), lens (N,))``

The upstream (fbank, teacher or student) is frozen and run outside the probe; only the layer weights,
the BiLSTM and the output projection are trained (the optional per-layer layer norm has no parameters).

The BiLSTM is built from unidirectional ``nn.LSTM`` s: the backward direction runs on each sequence
reversed within its own length (:func:`reverse_padded`), so padding never reaches valid frames, without
``pack_padded_sequence`` (several times slower on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechkd.errors import SpeechkdError


@dataclass
class ProbeModelConfig:
    """Size of the probe head (SUPERB ASR uses 2 BiLSTM layers of 1024; the defaults are small)."""

    lstm_hidden: int = 256  # per direction
    lstm_layers: int = 2
    dropout: float = 0.2
    layer_norm: bool = True  # normalise every upstream layer over D before the weighted sum

    def validate(self) -> None:
        if self.lstm_hidden < 1 or self.lstm_layers < 1:
            raise SpeechkdError(f"probe: lstm_hidden and lstm_layers must be >= 1, got {self.lstm_hidden}, {self.lstm_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise SpeechkdError(f"probe.dropout must be in [0, 1), got {self.dropout}")


class WeightedSumCtcProbe(nn.Module):
    """Weighted layer sum -> BiLSTM -> Linear -> log-softmax over ``vocab_size`` CTC tokens."""

    def __init__(self, num_layers: int, input_dim: int, vocab_size: int, cfg: ProbeModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if num_layers < 1 or input_dim < 1 or vocab_size < 2:
            raise SpeechkdError(
                f"probe: need >= 1 layer, input_dim >= 1 and vocab >= 2, got {num_layers}, {input_dim}, {vocab_size}"
            )
        self.cfg = cfg
        self.num_layers = num_layers
        self.input_dim = input_dim
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        dims = [input_dim] + [2 * cfg.lstm_hidden] * (cfg.lstm_layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(d, cfg.lstm_hidden, batch_first=True) for d in dims)
        self.backward_lstms = nn.ModuleList(nn.LSTM(d, cfg.lstm_hidden, batch_first=True) for d in dims)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(2 * cfg.lstm_hidden, vocab_size)

    def layer_weights(self) -> Tensor:
        """``(L,)`` softmax weights of the upstream layers."""
        return self.layer_logits.softmax(dim=0)

    def weighted_sum(self, layers: Tensor) -> Tensor:
        """``(L, N, T, D)`` -> ``(N, T, D)``."""
        if layers.dim() != 4 or layers.shape[0] != self.num_layers or layers.shape[-1] != self.input_dim:
            raise SpeechkdError(
                f"probe expects upstream layers (L={self.num_layers}, N, T, D={self.input_dim}), "
                f"got {tuple(layers.shape)}"
            )
        if self.cfg.layer_norm:
            layers = F.layer_norm(layers, (layers.shape[-1],))
        return torch.einsum("l,lntd->ntd", self.layer_weights(), layers)

    def forward(self, layers: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        """``layers (L, N, T, D)``, ``lens (N,)`` -> ``(log_probs (N, T, V), lens (N,))``."""
        x = self.dropout(self.weighted_sum(layers))
        for i, (fwd, bwd) in enumerate(zip(self.forward_lstms, self.backward_lstms)):
            if i > 0:
                x = self.dropout(x)
            right, _ = fwd(x)
            left, _ = bwd(reverse_padded(x, lens))
            x = torch.cat([right, reverse_padded(left, lens)], dim=-1)  # (N, T, 2H)
        return self.output(self.dropout(x)).log_softmax(dim=-1), lens


def reverse_padded(x: Tensor, lens: Tensor) -> Tensor:
    """Reverse each row's first ``lens[n]`` frames of ``x (N, T, C)``; frames past ``lens[n]`` stay in place."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    n = lens.to(x.device)[:, None]
    idx = torch.where(t < n, n - 1 - t, t)  # (N, T)
    return torch.gather(x, 1, idx[:, :, None].expand_as(x))
