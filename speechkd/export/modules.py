"""Export-time views of an :class:`~speechkd.models.asr.AsrModel` in sherpa-onnx's model contracts.

Each module wraps the trained submodules (no weights are copied or changed) and exposes the exact
positional inputs/outputs sherpa-onnx passes (see ``docs`` in :mod:`speechkd.export.onnx`):

* :class:`OfflineEncoder`: ``(x (N, T, C) f32, x_lens (N,) i64) -> (encoder_out (N, T', J), lens (N,))``,
  global CMVN inside, the joiner's encoder projection applied.
* :class:`Decoder`: ``y (N, context_size) i64 -> (N, J)``, the joiner's decoder projection applied.
* :class:`JoinerHead`: ``(enc (N, J), dec (N, J)) -> logits (N, V)``.
* :class:`CtcModel`: ``(x, x_lens) -> (log_probs (N, T', V), lens)``.
* :class:`StreamingConformerEncoder`: sherpa-onnx's online "conformer" contract; see its docstring
  for how our caches map onto the two state tensors the contract allows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModel
from speechkd.models.conformer import FULL_CONTEXT
from speechkd.models.subsampling import CACHE_FRAMES, NUM_CONV_LAYERS, SUBSAMPLING_FACTOR

# Raw (normalised) feature frames a causal subsampling output depends on before its chunk:
# each of the NUM_CONV_LAYERS stride-2 layers looks CACHE_FRAMES of its input back.
RAW_HISTORY_FRAMES = sum(CACHE_FRAMES * 2**i for i in range(NUM_CONV_LAYERS))  # 2 + 4 = 6
# First-layer outputs of a chunk that lie before the chunk start (zero padding at stream start).
LAYER1_HISTORY = CACHE_FRAMES


class OfflineEncoder(nn.Module):
    """Full-context encoder + joiner encoder projection (transducer) — no CTC head."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        _, joiner = model.require_transducer()
        self.encoder = model.encoder
        self.proj = joiner.encoder_proj

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, C), x_lens (N,) -> encoder_out (N, T', J), encoder_out_lens (N,)."""
        enc = self.encoder(x, x_lens)
        return self.proj(enc.out), enc.out_lens


class Decoder(nn.Module):
    """Stateless decoder on exactly ``context_size`` tokens + the joiner's decoder projection."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        decoder, joiner = model.require_transducer()
        self.decoder = decoder
        self.proj = joiner.decoder_proj

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y (N, context_size) int64 (negative = padding, like blank) -> (N, J)."""
        return self.proj(self.decoder(y, need_pad=False))[:, 0]


class JoinerHead(nn.Module):
    """``output_linear(tanh(enc + dec))`` on already-projected inputs."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        _, joiner = model.require_transducer()
        self.joiner = joiner

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """encoder_out (N, J), decoder_out (N, J) -> logits (N, V)."""
        return self.joiner(encoder_out, decoder_out, project_input=False)


class CtcModel(nn.Module):
    """Full-context encoder + CTC head with log-softmax."""

    def __init__(self, model: AsrModel) -> None:
        super().__init__()
        if model.ctc_output is None:
            raise SpeechkdError("CTC export needs a model with a CTC head (model.use_ctc=true)")
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, C), x_lens (N,) -> log_probs (N, T', V), log_probs_len (N,)."""
        enc = self.model.encoder(x, x_lens)
        return self.model.ctc_log_probs(enc.out), enc.out_lens


def raw_history_rows(num_layers: int, d_model: int, input_dim: int) -> int:
    """Rows of the attention-cache tensor (each ``num_layers * d_model`` floats per stream) that hold
    the last :data:`RAW_HISTORY_FRAMES` normalised input frames (``input_dim`` each)."""
    return math.ceil(RAW_HISTORY_FRAMES * input_dim / (num_layers * d_model))


class StreamingConformerEncoder(nn.Module):
    """One chunk of ``4 * chunk_size`` feature frames in sherpa-onnx's online "conformer" contract.

    Inputs (positional): ``x (N, 4c, C)``, ``attn_cache (L, R, N, D)``, ``conv_cache (L, K-1, N, D)``,
    ``processed_frames (N,)`` int64 feature frames consumed before this chunk. Outputs:
    ``encoder_out (N, c, J)`` (joiner encoder projection applied), next ``attn_cache``, next ``conv_cache``.

    The contract has two state tensors; ours has more state, laid out in the attention cache's rows
    (``R = 2 * left_context + raw_rows``): rows ``[0, lc)`` the un-rotated keys of the last ``lc``
    frames (heads flattened to D), rows ``[lc, 2 lc)`` their values, and the remaining rows hold the
    last :data:`RAW_HISTORY_FRAMES` normalised input frames the causal subsampling needs (flattened
    over ``(L, rows, D)``, zero-padded). The conv cache is the depthwise-convolution input of every
    layer. With these, each chunk equals ``encoder(x, lens, chunk_size=c, left_context=lc)``.
    """

    def __init__(self, model: AsrModel, chunk_size: int, left_context: int) -> None:
        super().__init__()
        _, joiner = model.require_transducer()
        cfg = model.cfg.encoder
        if not cfg.causal:
            raise SpeechkdError("streaming export needs a causal encoder (model.encoder.causal=true)")
        if chunk_size < 1:
            raise SpeechkdError(f"streaming export: chunk_size={chunk_size} must be >= 1 encoder frame")
        if left_context < 0 or left_context == FULL_CONTEXT:
            raise SpeechkdError(
                f"streaming export: left_context={left_context} must be a fixed number of frames >= 0 "
                "(the runtime's caches have a fixed size)"
            )
        self.encoder = model.encoder
        self.proj = joiner.encoder_proj
        self.chunk_size = chunk_size
        self.left_context = left_context
        self.num_layers = cfg.num_layers
        self.d_model = cfg.d_model
        self.num_heads = cfg.num_heads
        self.input_dim = cfg.input_dim
        self.raw_rows = raw_history_rows(cfg.num_layers, cfg.d_model, cfg.input_dim)
        self.cache_rows = 2 * left_context + self.raw_rows
        self.conv_kernel = cfg.conv_kernel

    @property
    def chunk_frames(self) -> int:
        """Feature frames per call (sherpa-onnx's ``T`` and ``decode_chunk_len``)."""
        return self.chunk_size * SUBSAMPLING_FACTOR

    def init_caches(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero (attn_cache (L, R, N, D), conv_cache (L, K-1, N, D)), as sherpa-onnx creates them."""
        attn = torch.zeros(self.num_layers, self.cache_rows, batch_size, self.d_model)
        conv = torch.zeros(self.num_layers, self.conv_kernel - 1, batch_size, self.d_model)
        return attn, conv

    def _unpack_raw(self, attn_cache: torch.Tensor) -> torch.Tensor:
        """(L, R, N, D) -> the raw history (N, RAW_HISTORY_FRAMES, C)."""
        raw = attn_cache[:, 2 * self.left_context :].permute(2, 0, 1, 3)  # (N, L, rows, D)
        raw = raw.reshape(raw.size(0), -1)[:, : RAW_HISTORY_FRAMES * self.input_dim]
        return raw.reshape(raw.size(0), RAW_HISTORY_FRAMES, self.input_dim)

    def _pack_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """(N, RAW_HISTORY_FRAMES, C) -> (L, rows, N, D)."""
        n = raw.size(0)
        flat = F.pad(raw.reshape(n, -1), (0, self.num_layers * self.raw_rows * self.d_model - raw[0].numel()))
        return flat.reshape(n, self.num_layers, self.raw_rows, self.d_model).permute(1, 2, 0, 3)

    def _subsample(self, x: torch.Tensor, raw: torch.Tensor, processed_frames: torch.Tensor) -> torch.Tensor:
        """x (N, 4c, C) normalised, raw (N, 6, C) -> (N, c, D); first-layer outputs before the
        stream start are zeroed (the causal zero padding of the full-utterance computation)."""
        sub = self.encoder.subsampling
        h = torch.cat([raw, x], dim=1).unsqueeze(1)  # (N, 1, 4c + 6, C)
        h = torch.relu(sub.conv1(h))  # (N, ch, 2c + 2, F1)
        t = torch.arange(h.size(2), device=h.device)
        keep = (processed_frames[:, None] > 0) | (t[None, :] >= LAYER1_HISTORY)  # (N, 2c + 2)
        h = h * keep[:, None, :, None].to(h.dtype)
        h = torch.relu(sub.conv2(h))  # (N, ch, c, F2)
        return sub._project(h)

    def forward(
        self,
        x: torch.Tensor,
        attn_cache: torch.Tensor,
        conv_cache: torch.Tensor,
        processed_frames: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See the class docstring for shapes."""
        n, lc, heads, head_dim = x.size(0), self.left_context, self.num_heads, self.d_model // self.num_heads
        if self.encoder.input_norm is not None:
            x = self.encoder.input_norm(x)
        raw = self._unpack_raw(attn_cache)
        h = self._subsample(x, raw, processed_frames)
        processed = processed_frames // SUBSAMPLING_FACTOR  # encoder frames before this chunk
        slot = torch.arange(lc, device=x.device)
        cache_ok = slot[None, :] >= lc - processed[:, None]  # (N, lc)
        new_ok = torch.ones(n, h.size(1), dtype=torch.bool, device=x.device)
        allowed = torch.cat([cache_ok, new_ok], dim=1)[:, None, None, :]  # (N, 1, 1, lc + c)
        attn_rows, conv_rows = [], []
        for i, layer in enumerate(self.encoder.layers):
            keys = attn_cache[i, :lc].permute(1, 2, 0).reshape(n, heads, head_dim, lc).transpose(2, 3)  # (N, H, lc, d)
            values = attn_cache[i, lc : 2 * lc].permute(1, 2, 0).reshape(n, heads, head_dim, lc).transpose(2, 3)
            conv = conv_cache[i].permute(1, 2, 0)  # (N, D, K-1)
            h, k, v, conv = layer.streaming_forward(h, allowed, keys, values, conv)
            k, v = k[:, :, k.size(2) - lc :], v[:, :, v.size(2) - lc :]  # (N, H, lc, d)
            k = k.transpose(1, 2).reshape(n, lc, self.d_model).transpose(0, 1)  # (lc, N, D)
            v = v.transpose(1, 2).reshape(n, lc, self.d_model).transpose(0, 1)
            attn_rows.append(torch.cat([k, v], dim=0))
            conv_rows.append(conv.permute(2, 0, 1))  # (K-1, N, D)
        new_raw = torch.cat([raw, x], dim=1)[:, -RAW_HISTORY_FRAMES:]
        new_attn = torch.cat([torch.stack(attn_rows), self._pack_raw(new_raw)], dim=1)
        return self.proj(h), new_attn, torch.stack(conv_rows)
