"""Small transformer attention decoders on encoder layers (training-only auxiliary heads of LM-to-CTC KD).

One :class:`AttentionDecoder` per chosen encoder layer reads that layer's output (``memory``) and predicts
the transcript in the *LM's* vocabulary with teacher forcing::

    memory (N, T', D_enc) -> Linear -> (N, T', d_model)
    inputs (N, U) = [sos] y_1 .. y_{U-1}  ->  embedding + learned positions  ->  pre-norm decoder layers
    (causal self-attention, cross-attention to memory)  ->  LayerNorm  ->  Linear  ->  logits (N, U, V_lm)

Position ``u`` of the output predicts ``y_{u+1}`` (1-based ``y_u`` for 0-based output ``u-1``); ``sos`` is an
extra id ``V_lm`` (so the LM's own ids are never reused as a start symbol).

``history: false`` makes a decoder non-autoregressive: its inputs are the learned positions alone (no token
embedding, self-attention over the U position queries without a causal mask), so every prediction has to come
from the encoder layer through cross-attention; it cannot become a language model of its own over the reference
history (``bench/lm2ctc_decoder_reliance.py`` measures how much a decoder reads the audio). The decoders exist
only in training: :func:`speechkd.models.asr.decoding_state_dict` drops them from averaged, decoded and exported models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from speechkd.errors import SpeechkdError


@dataclass
class AttentionDecodersConfig:
    """Sizes of the attention decoders and the encoder layers they sit on (empty ``layers``: none)."""

    layers: list[int] = field(default_factory=list)  # 1-based encoder layers (num_layers = final layer)
    vocab_size: int = 0  # LM vocabulary; 0: taken from the soft labels' metadata by the experiment
    d_model: int = 256
    num_layers: int = 1
    num_heads: int = 4
    ff_dim: int = 1024
    dropout: float = 0.1
    max_tokens: int = 256  # longest LM transcript (tokens) a decoder accepts; longer ones are left out, counted
    history: bool = True  # teacher-forced reference history as input; false: position queries only (module doc)

    def validate(self, num_encoder_layers: Optional[int] = None) -> None:
        if not self.layers:
            return
        top = num_encoder_layers or max(self.layers)
        if any(not 1 <= i <= top for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise SpeechkdError(f"attention_decoders.layers={self.layers}: need distinct encoder layers in 1..{top}")
        if self.vocab_size < 0:
            raise SpeechkdError(f"attention_decoders.vocab_size={self.vocab_size} must be >= 0 (0: from the soft labels)")
        if self.d_model % self.num_heads:
            raise SpeechkdError(f"attention_decoders d_model={self.d_model} not divisible by num_heads={self.num_heads}")
        if self.max_tokens < 1 or self.num_layers < 1:
            raise SpeechkdError(f"attention_decoders max_tokens={self.max_tokens}, num_layers={self.num_layers} must be >= 1")


class AttentionDecoder(nn.Module):
    """One decoder (module docstring); ``forward(memory, memory_lens, tokens, token_lens) -> logits``."""

    def __init__(self, encoder_dim: int, cfg: AttentionDecodersConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 1:
            raise SpeechkdError("attention_decoders.vocab_size is not set (it comes from the soft labels' LM vocabulary)")
        self.sos_id = cfg.vocab_size
        self.max_tokens = cfg.max_tokens
        self.memory_proj = nn.Linear(encoder_dim, cfg.d_model)
        self.embed = nn.Embedding(cfg.vocab_size + 1, cfg.d_model) if cfg.history else None
        self.pos = nn.Embedding(cfg.max_tokens, cfg.d_model)
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, cfg.num_layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, memory: torch.Tensor, memory_lens: torch.Tensor, tokens: torch.Tensor,
                token_lens: torch.Tensor) -> torch.Tensor:
        """memory (N, T', D_enc), memory_lens (N,), tokens (N, U) LM ids (any value past token_lens),
        token_lens (N,) with U <= max_tokens -> logits (N, U, V_lm)."""
        n, u = tokens.shape
        if u > self.max_tokens:
            raise SpeechkdError(f"attention decoder: {u} tokens > max_tokens={self.max_tokens}")
        dev = tokens.device
        x = self.pos(torch.arange(u, device=dev))[None].expand(n, u, -1)  # (N, U, d_model)
        causal = None
        if self.embed is not None:
            inputs = torch.cat([torch.full((n, 1), self.sos_id, dtype=torch.long, device=dev), tokens[:, :-1]], dim=1)
            inputs = inputs.clamp(min=0)  # padding (-100) -> any valid id; masked below
            x = self.embed(inputs) + x
            causal = torch.triu(torch.ones(u, u, dtype=torch.bool, device=dev), diagonal=1)
        tgt_pad = torch.arange(u, device=dev)[None] >= token_lens[:, None]
        mem_pad = torch.arange(memory.size(1), device=dev)[None] >= memory_lens[:, None]
        h = self.layers(x, self.memory_proj(memory), tgt_mask=causal, tgt_key_padding_mask=tgt_pad,
                        memory_key_padding_mask=mem_pad, tgt_is_causal=causal is not None)
        return self.out(self.norm(h))
