"""4x convolutional subsampling of filter-bank features, optionally causal in time (streamable).

Two ``Conv2d(kernel=3, stride=2)`` layers over (time, frequency), each followed by ReLU, then a
linear projection to the model dimension. Time padding is 2 frames on the left in causal mode
(output frame ``k`` sees input frames ``4k-6 .. 4k`` only) and 1 frame on each side otherwise.
In both modes ``T' = ceil(T / 2)`` per layer, so ``T' = ceil(ceil(T / 2) / 2) = (T + 3) // 4``.

Frames past each utterance's length are zeroed before every convolution, so a padded utterance
gives the same outputs as the same utterance alone (also in non-causal mode, where the last valid
frame sees one padded frame: it sees the zero it would see at the true end).

Streaming (causal only): the input cache holds the last 2 raw frames and the middle cache the last
2 frames of the first layer's output; chunks must hold a multiple of 4 raw frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechkd.errors import SpeechkdError

KERNEL_SIZE = 3
STRIDE = 2
NUM_CONV_LAYERS = 2
SUBSAMPLING_FACTOR = STRIDE**NUM_CONV_LAYERS
# Frames a causal layer must remember between chunks (its left padding).
CACHE_FRAMES = KERNEL_SIZE - 1


def conv_out_len(lens: torch.Tensor) -> torch.Tensor:
    """Frames out of one padded stride-2 layer: ``ceil(T / 2)``. ``lens`` (N,) int -> (N,)."""
    return (lens + STRIDE - 1) // STRIDE


def subsampled_lens(lens: torch.Tensor) -> torch.Tensor:
    """Frames out of the whole subsampling: ``ceil(ceil(T / 2) / 2) == (T + 3) // 4``; (N,) -> (N,)."""
    for _ in range(NUM_CONV_LAYERS):
        lens = conv_out_len(lens)
    return lens


def _mask_time(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Zero frames ``t >= lens[n]`` of ``x`` (N, C, T, F)."""
    t = torch.arange(x.size(2), device=x.device)
    keep = t[None, :] < lens[:, None]  # (N, T)
    return x.masked_fill(~keep[:, None, :, None], 0.0)


class Conv2dSubsampling(nn.Module):
    """(N, T, input_dim) -> (N, (T + 3) // 4, d_model)."""

    def __init__(self, input_dim: int, channels: int, d_model: int, causal: bool, dropout: float = 0.0) -> None:
        super().__init__()
        freq = input_dim
        for _ in range(NUM_CONV_LAYERS):
            freq = (freq - KERNEL_SIZE) // STRIDE + 1
        if freq < 1:
            raise SpeechkdError(f"input_dim={input_dim} is too small for 4x conv subsampling")
        self.input_dim = input_dim
        self.channels = channels
        self.causal = causal
        self.conv1 = nn.Conv2d(1, channels, KERNEL_SIZE, stride=STRIDE)
        self.conv2 = nn.Conv2d(channels, channels, KERNEL_SIZE, stride=STRIDE)
        self.out = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    def _time_pad(self) -> tuple[int, int]:
        return (CACHE_FRAMES, 0) if self.causal else (CACHE_FRAMES // 2, CACHE_FRAMES - CACHE_FRAMES // 2)

    def _project(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C, T', F') -> (N, T', d_model)."""
        n, c, t, f = z.shape
        return self.dropout(self.out(z.permute(0, 2, 1, 3).reshape(n, t, c * f)))

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, T, input_dim), x_lens (N,) -> (out (N, T', d_model), out_lens (N,))."""
        if x.size(-1) != self.input_dim:
            raise SpeechkdError(f"encoder expects {self.input_dim}-dim features, got {x.size(-1)}")
        left, right = self._time_pad()
        h = _mask_time(x.unsqueeze(1), x_lens)
        h = torch.relu(self.conv1(F.pad(h, (0, 0, left, right))))
        lens1 = conv_out_len(x_lens)
        h = _mask_time(h, lens1)
        h = torch.relu(self.conv2(F.pad(h, (0, 0, left, right))))
        return self._project(h), conv_out_len(lens1)

    def init_caches(
        self, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero caches = the causal left padding: (N, 1, 2, F) raw frames and (N, C, 2, F1)."""
        freq1 = (self.input_dim - KERNEL_SIZE) // STRIDE + 1
        c1 = torch.zeros(batch_size, 1, CACHE_FRAMES, self.input_dim, device=device, dtype=dtype)
        c2 = torch.zeros(batch_size, self.channels, CACHE_FRAMES, freq1, device=device, dtype=dtype)
        return c1, c2

    def streaming_forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, cache1: torch.Tensor, cache2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk: x (N, 4c, input_dim), x_lens (N,) valid frames in the chunk.

        Returns (out (N, c, d_model), out_lens (N,), new cache1, new cache2). Frames past
        ``x_lens`` only affect outputs past ``out_lens`` (causality).
        """
        if not self.causal:
            raise SpeechkdError("streaming needs a causal encoder (encoder.causal=true)")
        if x.size(1) % SUBSAMPLING_FACTOR != 0:
            raise SpeechkdError(
                f"streaming chunk has {x.size(1)} frames; it must be a multiple of {SUBSAMPLING_FACTOR} "
                "(pad the last chunk and pass its true length in x_lens)"
            )
        h = torch.cat([cache1, x.unsqueeze(1)], dim=2)
        new_cache1 = h[:, :, -CACHE_FRAMES:]
        h = torch.relu(self.conv1(h))
        h = torch.cat([cache2, h], dim=2)
        new_cache2 = h[:, :, -CACHE_FRAMES:]
        h = torch.relu(self.conv2(h))
        return self._project(h), subsampled_lens(x_lens), new_cache1, new_cache2
