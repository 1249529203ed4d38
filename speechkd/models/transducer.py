"""Transducer prediction network (stateless decoder) and joiner.

The stateless decoder (Ghodsi et al., 2020; icefall's ``decoder.py`` idea) sees only the last
``context_size`` tokens: an embedding (blank = the zero padding row, also used as start symbol)
followed by a 1-D convolution over those tokens and ReLU. Training feeds ``[blank] + tokens`` with
``need_pad=True`` (left zero padding == blank context); decoding feeds exactly the last
``context_size`` tokens with ``need_pad=False``.

The joiner splits into projections and a join step so a pruned RNN-T loss can project once and
join pruned (N, T, s_range, J) tensors: ``joiner(am_pruned, lm_pruned, project_input=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechkd.errors import SpeechkdError


class StatelessDecoder(nn.Module):
    """Tokens (N, U) -> (N, U, decoder_dim); output ``u`` depends on tokens ``u-context+1 .. u``."""

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int, context_size: int, conv_groups: int) -> None:
        super().__init__()
        if context_size < 1:
            raise SpeechkdError(f"decoder context_size={context_size} must be >= 1")
        if decoder_dim % conv_groups != 0:
            raise SpeechkdError(f"decoder_dim={decoder_dim} is not divisible by decoder_conv_groups={conv_groups}")
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.context_size = context_size
        self.output_dim = decoder_dim
        self.embedding = nn.Embedding(vocab_size, decoder_dim, padding_idx=blank_id)
        self.conv = (
            nn.Conv1d(decoder_dim, decoder_dim, context_size, groups=conv_groups, bias=False)
            if context_size > 1
            else None
        )

    def forward(self, y: torch.Tensor, need_pad: bool = True) -> torch.Tensor:
        """y (N, U) int64 (negative ids = padding, embedded as zeros) -> (N, U, decoder_dim).

        With ``need_pad=False``, ``U`` must equal ``context_size`` and the output has one frame.
        """
        emb = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1).to(self.embedding.weight.dtype)
        if self.conv is not None:
            h = emb.transpose(1, 2)  # (N, E, U)
            if need_pad:
                h = F.pad(h, (self.context_size - 1, 0))
            elif y.size(1) != self.context_size:
                raise SpeechkdError(f"decoder got {y.size(1)} context tokens, expected {self.context_size}")
            emb = self.conv(h).transpose(1, 2)
        return F.relu(emb)


class Joiner(nn.Module):
    """``output_linear(tanh(encoder_proj(enc) + decoder_proj(dec)))`` over broadcastable shapes."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(
        self, encoder_out: torch.Tensor, decoder_out: torch.Tensor, project_input: bool = True
    ) -> torch.Tensor:
        """encoder_out (…, encoder_dim|J), decoder_out (…, decoder_dim|J), broadcastable, e.g.
        (N, T, 1, ·) with (N, 1, U, ·) or both (N, T, s_range, J) -> logits (…, V).

        ``project_input=False`` means both inputs already went through the projections.
        """
        if project_input:
            encoder_out, decoder_out = self.encoder_proj(encoder_out), self.decoder_proj(decoder_out)
        return self.output_linear(torch.tanh(encoder_out + decoder_out))
