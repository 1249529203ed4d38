"""Conformer encoder that runs full-context, chunk-masked, or chunk-by-chunk (streaming).

Blocks are pre-norm Conformer blocks (Gulati et al., 2020)::

    x = x + 1/2 FFN(LN(x));  x = x + MHSA(LN(x));  x = x + Conv(LN(x));  x = x + 1/2 FFN(LN(x));  x = LN(x)

Positions enter only through rotary embeddings (RoPE) on queries and keys, so attention scores
depend on relative offsets only: a chunk processed with a key/value cache whose positions are
counted from the cache start gives the same scores as the full utterance under the chunk mask.

Modes, all from one set of weights:

* ``forward(x, lens)``: full context (the convolution module is causal when ``causal=True``).
* ``forward(x, lens, chunk_size=c, left_context=l)``: frame ``i`` (after subsampling) sees frame
  ``j`` iff ``j`` is in the same or an earlier chunk of ``c`` frames and ``j >= start(chunk(i)) - l``
  (``l = -1``: all earlier frames). With ``causal=True`` no output depends on a later chunk.
* ``init_states`` + ``streaming_forward``: the same computation chunk by chunk with caches of
  keys/values (the last ``l`` frames), depthwise-conv inputs and subsampling inputs; equal to the
  chunk-masked ``forward`` up to float rounding.

Training with ``EncoderConfig.train_chunk_sizes`` (sampled per batch by ``sample_training_chunk``)
makes one causal model usable both full-context and streaming.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.models.cmvn import GlobalCMVN
from speechkd.models.subsampling import SUBSAMPLING_FACTOR, Conv2dSubsampling

FULL_CONTEXT = -1  # value of chunk_size / left_context meaning "no limit"
MACARON_SCALE = 0.5  # weight of each of the two half-step feed-forward modules


@dataclass
class EncoderConfig:
    """Size and streaming knobs of :class:`ConformerEncoder` (defaults: the ~5M "mini" encoder)."""

    input_dim: int = 80
    subsampling_channels: int = 64
    d_model: int = 144
    num_layers: int = 9
    num_heads: int = 4
    ff_dim: int = 576
    conv_kernel: int = 15
    dropout: float = 0.1
    attention_dropout: float = 0.0
    # Feed-forward hidden dropout with one mask per utterance and channel, shared by every frame (as Zipformer's
    # feed-forward modules do): draws T times fewer random numbers than per-element dropout, which costs the
    # ``mini`` transducer about a fifth of its CPU step (bench/README.md). The other dropouts stay per element.
    # Measured at stop 17: 1.16x the CPU training steps per second, but test-clean 2.6 points worse on 1 h of
    # MiniLibri (egs/minilibri/RESULTS.md, 2 seeds), so it is off by default.
    ff_dropout_shared_time: bool = False
    rope_base: float = 10000.0
    # Causal subsampling and depthwise convolution; required for streaming.
    causal: bool = False
    # Chunk sizes (frames after 4x subsampling) sampled per training batch; -1 = full context.
    train_chunk_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, FULL_CONTEXT])
    # Left contexts (frames after subsampling) sampled per training batch; -1 = unlimited.
    train_left_contexts: list[int] = field(default_factory=lambda: [FULL_CONTEXT])
    # Probability of a full-context batch before sampling from train_chunk_sizes (causal only).
    full_context_prob: float = 0.25
    # Normalise each input bin with the training set's global mean/std (stored in the model).
    global_cmvn: bool = False

    def validate(self) -> None:
        if self.d_model % self.num_heads != 0:
            raise SpeechkdError(f"encoder d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 2 != 0:
            raise SpeechkdError(
                f"encoder head dim d_model/num_heads={self.d_model // self.num_heads} must be even (rotary positions)"
            )
        if self.conv_kernel < 1 or (not self.causal and self.conv_kernel % 2 == 0):
            raise SpeechkdError(f"encoder conv_kernel={self.conv_kernel} must be odd (or >= 1 when causal)")
        if not self.train_chunk_sizes or any(c == 0 or c < FULL_CONTEXT for c in self.train_chunk_sizes):
            raise SpeechkdError(f"encoder train_chunk_sizes={self.train_chunk_sizes}: use positive sizes or -1")
        if not self.train_left_contexts or any(c < FULL_CONTEXT for c in self.train_left_contexts):
            raise SpeechkdError(f"encoder train_left_contexts={self.train_left_contexts}: use sizes >= 0 or -1")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SpeechkdError(f"encoder {name}={getattr(self, name)} must be in [0, 1)")
        if not 0.0 <= self.full_context_prob <= 1.0:
            raise SpeechkdError(f"encoder full_context_prob={self.full_context_prob} must be in [0, 1]")
        for name in ("num_layers", "num_heads", "ff_dim", "d_model", "subsampling_channels", "input_dim"):
            if getattr(self, name) < 1:
                raise SpeechkdError(f"encoder {name}={getattr(self, name)} must be positive")


@dataclass
class EncoderOutput:
    """out (N, T', D); out_lens (N,) int64; layer_outputs: every block's output, each (N, T', D).

    Frames at or past ``out_lens`` hold unspecified values.
    """

    out: torch.Tensor
    out_lens: torch.Tensor
    layer_outputs: list[torch.Tensor]


@dataclass
class EncoderStreamingState:
    """Caches carried between chunks for ``N`` streams.

    sub_cache1 (N, 1, 2, F), sub_cache2 (N, C, 2, F1): subsampling inputs;
    keys/values: per layer (N, H, L, D/H), un-rotated, most recent last (L = left_context, or all
    frames so far when left_context = -1); conv: per layer (N, D, K-1) depthwise-conv inputs;
    processed_lens (N,): valid frames (after subsampling) seen so far.
    """

    sub_cache1: torch.Tensor
    sub_cache2: torch.Tensor
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    conv: list[torch.Tensor]
    processed_lens: torch.Tensor
    left_context: int


class RotaryEmbedding(nn.Module):
    """Rotates (…, T, d) vectors by position-dependent angles (``d`` even), half-split layout."""

    def __init__(self, dim: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (N, H, T, d), positions (T,) -> (N, H, T, d)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]  # (T, d/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions and a boolean "allowed" mask."""

    def __init__(self, d_model: int, num_heads: int, dropout: float, rope_base: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rope = RotaryEmbedding(self.head_dim, rope_base)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, T, D) -> q, k, v each (N, H, T, D/H)."""
        n, t, _ = x.shape
        qkv = self.qkv(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """q (N, H, Tq, d), k/v (N, H, Tk, d), allowed (N, 1, Tq|1, Tk) bool -> (N, Tq, D).

        Disallowed scores get the dtype's minimum (not -inf): rows with nothing allowed (padding only)
        stay finite instead of NaN. On CUDA: ``scaled_dot_product_attention`` with that additive mask (fused
        kernels); elsewhere the explicit softmax formula, which was faster on CPU (bench/README.md).
        """
        if q.is_cuda:
            bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(~allowed, torch.finfo(q.dtype).min)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        else:
            ctx = self.attend_explicit(q, k, v, allowed)
        n, h, t, d = ctx.shape
        return self.out(ctx.transpose(1, 2).reshape(n, t, h * d))

    def attend_explicit(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The softmax formula: ``(N, H, Tq, d)`` context."""
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim**-0.5
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        return torch.matmul(weights, v)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (N, T, D), allowed (N, 1, T, T) -> (N, T, D)."""
        q, k, v = self._split(x)
        pos = torch.arange(x.size(1), device=x.device)
        return self._attend(self.rope(q, pos), self.rope(k, pos), v, allowed)

    def streaming_forward(
        self, x: torch.Tensor, allowed: torch.Tensor, cache_k: torch.Tensor, cache_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C, D); caches (N, H, L, d); allowed (N, 1, 1, L + C).

        Returns (out (N, C, D), keys (N, H, L + C, d), values (N, H, L + C, d)), keys un-rotated.
        """
        q, k, v = self._split(x)
        keys, values = torch.cat([cache_k, k], dim=2), torch.cat([cache_v, v], dim=2)
        cache_len = cache_k.size(2)
        key_pos = torch.arange(keys.size(2), device=x.device)
        return self._attend(self.rope(q, key_pos[cache_len:]), self.rope(keys, key_pos), values, allowed), keys, values


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv (causal or centred), LayerNorm, SiLU, pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int, causal: bool, dropout: float) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.causal = causal
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _after_depthwise(self, h: torch.Tensor) -> torch.Tensor:
        """(N, D, T) -> (N, T, D)."""
        return self.dropout(self.pointwise_out(F.silu(self.norm(h.transpose(1, 2)))))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x (N, T, D), pad_mask (N, T) True at padding -> (N, T, D)."""
        h = F.glu(self.pointwise_in(x), dim=-1).masked_fill(pad_mask[..., None], 0.0)
        left = self.kernel_size - 1 if self.causal else (self.kernel_size - 1) // 2
        right = self.kernel_size - 1 - left
        h = self.depthwise(F.pad(h.transpose(1, 2), (left, right)))
        return self._after_depthwise(h)

    def streaming_forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, D), cache (N, D, K-1) -> (out (N, C, D), new cache (N, D, K-1))."""
        h = torch.cat([cache, F.glu(self.pointwise_in(x), dim=-1).transpose(1, 2)], dim=2)
        new_cache = h[:, :, h.size(2) - (self.kernel_size - 1) :]
        return self._after_depthwise(self.depthwise(h)), new_cache


class TimeSharedDropout(nn.Module):
    """Dropout of (N, T, D) activations with one keep/drop mask (N, 1, D) shared by all T frames.

    In training each (utterance, channel) is zeroed with probability ``p`` for the whole utterance and kept
    ones are scaled by ``1 / (1 - p)``; in eval mode (and at ``p = 0``) the input is returned unchanged.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise SpeechkdError(f"dropout p={p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.size(0), 1, x.size(-1), dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep.div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeedForward(nn.Module):
    """Linear, SiLU, dropout, linear, dropout: (N, T, D) -> (N, T, D).

    ``shared_time``: the hidden (N, T, ff_dim) dropout draws one mask per utterance and channel
    (:class:`TimeSharedDropout`); the output dropout stays per element.
    """

    def __init__(self, d_model: int, ff_dim: int, dropout: float, shared_time: bool = False) -> None:
        super().__init__()
        hidden_dropout = TimeSharedDropout(dropout) if shared_time else nn.Dropout(dropout)
        self.net = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.SiLU(), hidden_dropout, nn.Linear(ff_dim, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerLayer(nn.Module):
    """One pre-norm macaron Conformer block."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.ff1 = FeedForward(d, cfg.ff_dim, cfg.dropout, cfg.ff_dropout_shared_time)
        self.attn = SelfAttention(d, cfg.num_heads, cfg.attention_dropout, cfg.rope_base)
        self.conv = ConvModule(d, cfg.conv_kernel, cfg.causal, cfg.dropout)
        self.ff2 = FeedForward(d, cfg.ff_dim, cfg.dropout, cfg.ff_dropout_shared_time)
        self.norm_ff1, self.norm_attn, self.norm_conv, self.norm_ff2, self.norm_out = (
            nn.LayerNorm(d) for _ in range(5)
        )
        self.attn_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x (N, T, D), allowed (N, 1, T, T), pad_mask (N, T) -> (N, T, D)."""
        x = x + MACARON_SCALE * self.ff1(self.norm_ff1(x))
        x = x + self.attn_dropout(self.attn(self.norm_attn(x), allowed))
        x = x + self.conv(self.norm_conv(x), pad_mask)
        x = x + MACARON_SCALE * self.ff2(self.norm_ff2(x))
        return self.norm_out(x)

    def streaming_forward(
        self,
        x: torch.Tensor,
        allowed: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        cache_conv: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C, D) -> (out (N, C, D), keys, values (N, H, L + C, d), conv cache (N, D, K-1))."""
        x = x + MACARON_SCALE * self.ff1(self.norm_ff1(x))
        a, keys, values = self.attn.streaming_forward(self.norm_attn(x), allowed, cache_k, cache_v)
        x = x + self.attn_dropout(a)
        c, new_conv = self.conv.streaming_forward(self.norm_conv(x), cache_conv)
        x = x + c
        x = x + MACARON_SCALE * self.ff2(self.norm_ff2(x))
        return self.norm_out(x), keys, values, new_conv


def chunk_attention_mask(
    lens: torch.Tensor, num_frames: int, chunk_size: int = FULL_CONTEXT, left_context: int = FULL_CONTEXT
) -> torch.Tensor:
    """Boolean "query i may attend key j" mask (N, 1, T, T) for lengths ``lens`` (N,).

    Keys past the length are never allowed. With ``chunk_size > 0`` key ``j`` must be in the same
    or an earlier chunk than query ``i`` and, with ``left_context >= 0``, at most ``left_context``
    frames before the start of query ``i``'s chunk. ``left_context`` is ignored at full context.
    """
    j = torch.arange(num_frames, device=lens.device)
    allowed = (j[None, :] < lens[:, None])[:, None, None, :]  # (N, 1, 1, T)
    if chunk_size > 0:
        chunk = j // chunk_size
        m = chunk[None, :] <= chunk[:, None]  # (T, T): [query, key]
        if left_context >= 0:
            m = m & (j[None, :] >= chunk[:, None] * chunk_size - left_context)
        allowed = allowed & m[None, None]
    return allowed


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size == 0 or chunk_size < FULL_CONTEXT:
        raise SpeechkdError(f"chunk_size={chunk_size}: use a positive number of frames or -1 (full context)")


def _check_left_context(left_context: int) -> None:
    if left_context < FULL_CONTEXT:
        raise SpeechkdError(f"left_context={left_context}: use a number of frames >= 0 or -1 (unlimited)")


def _check_inputs(x: torch.Tensor, x_lens: torch.Tensor) -> None:
    if x.dim() != 3 or x_lens.dim() != 1 or x_lens.size(0) != x.size(0):
        raise SpeechkdError(
            f"encoder expects x (N, T, C) and x_lens (N,), got {tuple(x.shape)} and {tuple(x_lens.shape)}"
        )
    if x_lens.numel() and int(x_lens.max()) > x.size(1):
        raise SpeechkdError(f"encoder: a length {int(x_lens.max())} exceeds the {x.size(1)} input frames")


class ConformerEncoder(nn.Module):
    """(N, T, input_dim) fbank -> (N, (T + 3) // 4, d_model); see the module docstring for modes."""

    subsampling_factor = SUBSAMPLING_FACTOR

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.output_dim = cfg.d_model
        self.input_norm: Optional[GlobalCMVN] = GlobalCMVN(cfg.input_dim) if cfg.global_cmvn else None
        self.subsampling = Conv2dSubsampling(
            cfg.input_dim, cfg.subsampling_channels, cfg.d_model, cfg.causal, cfg.dropout
        )
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.num_layers))

    def sample_training_chunk(self, rng: Optional[random.Random] = None) -> tuple[int, int]:
        """(chunk_size, left_context) for one training batch: (-1, -1) for non-causal encoders,
        with probability ``full_context_prob``, or when -1 is drawn from ``train_chunk_sizes``."""
        rng = rng or random
        if not self.cfg.causal or rng.random() < self.cfg.full_context_prob:
            return FULL_CONTEXT, FULL_CONTEXT
        chunk = rng.choice(self.cfg.train_chunk_sizes)
        if chunk == FULL_CONTEXT:
            return FULL_CONTEXT, FULL_CONTEXT
        return chunk, rng.choice(self.cfg.train_left_contexts)

    def forward(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        chunk_size: int = FULL_CONTEXT,
        left_context: int = FULL_CONTEXT,
    ) -> EncoderOutput:
        """x (N, T, C), x_lens (N,) -> EncoderOutput with out (N, T', D), T' = (T + 3) // 4."""
        _check_chunk_size(chunk_size)
        _check_left_context(left_context)
        _check_inputs(x, x_lens)
        if self.input_norm is not None:
            x = self.input_norm(x)
        h, lens = self.subsampling(x, x_lens)
        t = h.size(1)
        allowed = chunk_attention_mask(lens, t, chunk_size, left_context)
        pad_mask = torch.arange(t, device=h.device)[None, :] >= lens[:, None]
        layer_outputs = []
        for layer in self.layers:
            h = layer(h, allowed, pad_mask)
            layer_outputs.append(h)
        return EncoderOutput(h, lens, layer_outputs)

    def init_states(
        self,
        batch_size: int,
        left_context: int = FULL_CONTEXT,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> EncoderStreamingState:
        """Zero states for ``batch_size`` new streams keeping ``left_context`` frames of keys/values."""
        if not self.cfg.causal:
            raise SpeechkdError("streaming needs a causal encoder (encoder.causal=true)")
        _check_left_context(left_context)
        ref = next(self.parameters())
        device, dtype = device or ref.device, dtype or ref.dtype
        c1, c2 = self.subsampling.init_caches(batch_size, device, dtype)
        cache_len = max(left_context, 0)
        head_dim = self.cfg.d_model // self.cfg.num_heads
        kv_shape = (batch_size, self.cfg.num_heads, cache_len, head_dim)
        n_layers = self.cfg.num_layers
        return EncoderStreamingState(
            sub_cache1=c1,
            sub_cache2=c2,
            keys=[torch.zeros(kv_shape, device=device, dtype=dtype) for _ in range(n_layers)],
            values=[torch.zeros(kv_shape, device=device, dtype=dtype) for _ in range(n_layers)],
            conv=[
                torch.zeros(batch_size, self.cfg.d_model, self.cfg.conv_kernel - 1, device=device, dtype=dtype)
                for _ in range(n_layers)
            ],
            processed_lens=torch.zeros(batch_size, dtype=torch.int64, device=device),
            left_context=left_context,
        )

    def streaming_forward(
        self, x_chunk: torch.Tensor, x_lens: torch.Tensor, states: EncoderStreamingState
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderStreamingState]:
        """One chunk for every stream.

        x_chunk (N, 4c, C) raw frames (pad the last chunk to 4c frames), x_lens (N,) valid frames
        in this chunk (0 for finished streams). Returns (out (N, c, D), out_lens (N,), new states).
        Equals ``forward(x, lens, chunk_size=c, left_context=states.left_context)`` on the same frames.
        """
        _check_inputs(x_chunk, x_lens)
        if len(states.keys) != len(self.layers) or states.sub_cache1.size(0) != x_chunk.size(0):
            raise SpeechkdError(
                f"streaming states for {states.sub_cache1.size(0)} streams / {len(states.keys)} layers do not fit "
                f"a batch of {x_chunk.size(0)} and {len(self.layers)} layers"
            )
        if self.input_norm is not None:
            x_chunk = self.input_norm(x_chunk)
        h, out_lens, c1, c2 = self.subsampling.streaming_forward(x_chunk, x_lens, states.sub_cache1, states.sub_cache2)
        cache_len = states.keys[0].size(2)
        slot = torch.arange(cache_len, device=h.device)
        cache_ok = slot[None, :] >= cache_len - states.processed_lens[:, None]  # (N, L)
        new_ok = torch.arange(h.size(1), device=h.device)[None, :] < out_lens[:, None]  # (N, C)
        allowed = torch.cat([cache_ok, new_ok], dim=1)[:, None, None, :]  # (N, 1, 1, L + C)
        keys, values, convs = [], [], []
        for i, layer in enumerate(self.layers):
            h, k, v, conv = layer.streaming_forward(h, allowed, states.keys[i], states.values[i], states.conv[i])
            if states.left_context >= 0:
                k, v = k[:, :, k.size(2) - states.left_context :], v[:, :, v.size(2) - states.left_context :]
            keys.append(k)
            values.append(v)
            convs.append(conv)
        new_states = EncoderStreamingState(
            c1, c2, keys, values, convs, states.processed_lens + out_lens, states.left_context
        )
        return h, out_lens, new_states
