"""Chunk-by-chunk (streaming) transducer decoding with a causal encoder.

:class:`StreamingGreedyDecoder` keeps, for N streams, the encoder caches
(``ConformerEncoder.init_states``) and the greedy decoder state (contexts, hyps) and consumes one
chunk of raw feature frames at a time; its hyps after the last chunk equal
``greedy_search(model, *model.encode(x, lens, chunk_size, left_context))`` on the whole input.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from speechkd.decoding.transducer import greedy_search_frames, init_greedy_state
from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModel


class StreamingGreedyDecoder:
    """Greedy transducer decoding of N streams fed in chunks of ``chunk_size * 4`` raw frames."""

    def __init__(
        self,
        model: AsrModel,
        batch_size: int,
        chunk_size: int,
        left_context: int = -1,
        max_sym_per_frame: int = 1,
        device: Optional[torch.device] = None,
    ) -> None:
        if chunk_size < 1:
            raise SpeechkdError(f"streaming chunk_size={chunk_size} must be a positive number of frames")
        model.require_transducer()
        self.model = model
        self.chunk_size = chunk_size
        self.chunk_frames = chunk_size * model.encoder.subsampling_factor
        self.max_sym_per_frame = max_sym_per_frame
        self.encoder_states = model.encoder.init_states(batch_size, left_context, device=device)
        self.greedy_state = init_greedy_state(model, batch_size, device)

    @torch.no_grad()
    def accept_chunk(self, x_chunk: torch.Tensor, x_lens: torch.Tensor) -> None:
        """x_chunk (N, T_c, C) with T_c <= chunk_size * 4 (shorter chunks are zero-padded; only the
        last chunk of a stream may be short), x_lens (N,) valid frames in the chunk (0 = stream done)."""
        if x_chunk.size(1) > self.chunk_frames:
            raise SpeechkdError(f"chunk of {x_chunk.size(1)} frames exceeds chunk_size*4={self.chunk_frames}")
        x_chunk = F.pad(x_chunk, (0, 0, 0, self.chunk_frames - x_chunk.size(1)))
        out, out_lens, self.encoder_states = self.model.encoder.streaming_forward(
            x_chunk, x_lens, self.encoder_states
        )
        _, joiner = self.model.require_transducer()
        greedy_search_frames(self.model, joiner.encoder_proj(out), out_lens, self.greedy_state, self.max_sym_per_frame)

    @property
    def hyps(self) -> list[list[int]]:
        """Tokens emitted so far, per stream."""
        return self.greedy_state.hyps


@torch.no_grad()
def streaming_greedy_search(
    model: AsrModel,
    features: torch.Tensor,
    feature_lens: torch.Tensor,
    chunk_size: int,
    left_context: int = -1,
    max_sym_per_frame: int = 1,
) -> list[list[int]]:
    """Simulated streaming: features (N, T, C), feature_lens (N,) fed chunk by chunk.

    chunk_size and left_context are in encoder frames (after 4x subsampling). Returns N token lists.
    """
    decoder = StreamingGreedyDecoder(
        model, features.size(0), chunk_size, left_context, max_sym_per_frame, device=features.device
    )
    step = decoder.chunk_frames
    num_chunks = math.ceil(int(feature_lens.max()) / step) if features.size(0) else 0
    lens = feature_lens.to(features.device)
    for i in range(num_chunks):
        start = i * step
        decoder.accept_chunk(features[:, start : start + step], (lens - start).clamp(min=0, max=step))
    return decoder.hyps
