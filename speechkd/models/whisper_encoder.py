"""Whisper encoder layers as the encoder of an ASR student (a teacher-initialised student).

distil-whisper builds its student from the teacher's own layers instead of from scratch. Here an
:class:`~speechkd.models.asr.AsrModel` encoder (``model.encoder_type: whisper``) has a Whisper encoder's
architecture: the two-conv front-end (10 ms log-mel frames -> 20 ms), the absolute position table, the layers
named in ``WhisperEncoderConfig.layers`` and the final layer norm, under the same parameter names as transformers'
``WhisperEncoder`` (``conv1``, ``conv2``, ``embed_positions``, ``layers.<i>``, ``layer_norm``). Training fills it
with the teacher's weights (``speechkd.training.teacher_init``); decoding rebuilds it from the config alone.

Input is raw 16 kHz audio (``data.input: audio``): each utterance gets Whisper's own log-mel (transformers'
``WhisperFeatureExtractor``, no 30 s padding) and the position table is sliced to the input length, as the
Whisper teacher of :mod:`speechkd.teachers.whisper_encoder` does; both use :func:`whisper_log_mel` and
:func:`whisper_encode` below. An utterance longer than the table (30 s) is read in consecutive 30 s windows whose
frames are concatenated. Full context only: no chunked attention, no streaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.models.conformer import FULL_CONTEXT, EncoderOutput

SAMPLE_RATE = 16000
CONV_STRIDE = 2  # conv1 stride 1, conv2 stride 2: 10 ms mel frames -> 20 ms encoder frames


@dataclass
class WhisperEncoderConfig:
    """Architecture of the Whisper-layer encoder (defaults: Whisper tiny/tiny.en) and where its weights come from.

    ``layers``: 0-based teacher encoder layers kept, in order (tiny has 4: ``[0, 1, 2, 3]`` keeps all; distil-whisper
    keeps maximally spaced ones, e.g. ``[0, 3]``). ``init_from``: the teacher whose weights training starts from (a
    transformers Whisper directory or hub id, a CTranslate2 Whisper directory, ``packaged:tiny.en``); empty: random
    weights (tests). The sizes must be the teacher's: training checks them against it.
    """

    init_from: str = ""
    layers: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    d_model: int = 384
    num_heads: int = 6
    ff_dim: int = 1536
    num_mel_bins: int = 80
    max_source_positions: int = 1500  # 30 s of 20 ms frames
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0

    def validate(self) -> None:
        if not self.layers or any(i < 0 for i in self.layers) or len(set(self.layers)) != len(self.layers):
            raise SpeechkdError(f"model.whisper.layers={self.layers}: give distinct 0-based teacher layers")
        if self.d_model % self.num_heads:
            raise SpeechkdError(f"model.whisper.d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise SpeechkdError(f"model.whisper.{name}={getattr(self, name)} must be in [0, 1)")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def transformers_config(self) -> Any:
        """A transformers ``WhisperConfig`` with these encoder sizes (the decoder fields are unused)."""
        from transformers import WhisperConfig

        cfg = WhisperConfig(
            d_model=self.d_model, encoder_layers=self.num_layers, encoder_attention_heads=self.num_heads,
            encoder_ffn_dim=self.ff_dim, num_mel_bins=self.num_mel_bins,
            max_source_positions=self.max_source_positions, dropout=self.dropout,
            attention_dropout=self.attention_dropout, activation_dropout=self.activation_dropout,
        )
        cfg._attn_implementation = "sdpa"
        return cfg


def lengths_to_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(N,)`` lengths -> ``(N, max_len)`` bool, True at valid positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def additive_key_mask(lens: torch.Tensor, max_len: int, dtype: torch.dtype) -> torch.Tensor:
    """``(N,)`` lengths -> ``(N, 1, max_len, max_len)`` additive mask: 0 for valid keys, dtype-min for padding."""
    valid = lengths_to_mask(lens, max_len)
    mask = torch.zeros(valid.shape, dtype=dtype, device=lens.device).masked_fill(~valid, torch.finfo(dtype).min)
    return mask[:, None, None, :].expand(-1, 1, max_len, max_len)


def mel_to_encoder_lengths(mel_lens: torch.Tensor) -> torch.Tensor:
    """``(N,)`` log-mel frames -> ``(N,)`` encoder frames (conv2: kernel 3, stride 2, padding 1)."""
    return ((mel_lens - 1) // CONV_STRIDE + 1).to(torch.long)


def whisper_log_mel(
    feature_extractor: Any, wavs: torch.Tensor, wav_lens: torch.Tensor, max_samples: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper's log-mel of each utterance, unpadded, then zero padded into a batch.

    Args:
        feature_extractor: transformers ``WhisperFeatureExtractor``.
        wavs: ``(N, S)`` float samples at 16 kHz; ``wav_lens``: ``(N,)`` valid samples.
        max_samples: longest input the position table covers; ``name`` names the model in errors.

    Returns:
        ``(mel (N, n_mels, T_mel), mel_lens (N,))`` on ``wavs.device``.
    """
    too_long = [i for i, n in enumerate(wav_lens.tolist()) if n > max_samples]
    if too_long:
        raise SpeechkdError(
            f"{name}: utterances {too_long} are longer than {max_samples} samples "
            f"({max_samples / SAMPLE_RATE:.0f} s), the Whisper encoder's position table"
        )
    device = "cpu" if wavs.device.type == "cpu" else str(wavs.device)
    mels = []
    for i, n in enumerate(wav_lens.tolist()):
        wav = wavs[i, :n].detach().cpu().numpy().astype(np.float32)
        feats = feature_extractor(
            wav, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="pt", device=device
        ).input_features  # (1, n_mels, T_mel)
        mels.append(feats[0].T)
    mel_lens = torch.tensor([m.shape[0] for m in mels], dtype=torch.long, device=wavs.device)
    mel = nn.utils.rnn.pad_sequence(mels, batch_first=True).transpose(1, 2)  # (N, n_mels, T_mel)
    return mel.to(wavs.device), mel_lens


def whisper_encode(
    enc: nn.Module, mel: torch.Tensor, mel_lens: torch.Tensor, name: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A Whisper encoder (``conv1``, ``conv2``, ``embed_positions``, ``layers``, ``layer_norm``) over unpadded input.

    Conv1 outputs past each input's end are zeroed (what a lone utterance's zero padding gives) and padded keys are
    masked in self-attention, so batched outputs equal per-utterance outputs; only the first ``T`` rows of the
    position table are added.

    Args:
        mel: ``(N, n_mels, T_mel)`` log-mel, zero padded; ``mel_lens``: ``(N,)`` valid mel frames.

    Returns:
        ``(hidden_states, lens)``: ``len(enc.layers) + 1`` tensors ``(N, T, D)`` (the embeddings, then each layer;
        the last one after the final layer norm) and ``(N,)`` frames.
    """
    act = nn.functional.gelu
    mel = mel.to(enc.conv1.weight.dtype)
    x = act(enc.conv1(mel)) * lengths_to_mask(mel_lens, mel.shape[-1]).to(mel.dtype)[:, None, :]
    x = act(enc.conv2(x)).transpose(1, 2)  # (N, T, D)
    lens = mel_to_encoder_lengths(mel_lens)
    frames = x.shape[1]
    if frames > enc.embed_positions.num_embeddings:
        raise SpeechkdError(f"{name}: {frames} frames exceed the position table ({enc.embed_positions.num_embeddings})")
    x = x + enc.embed_positions.weight[:frames]
    mask = None if bool((lens == frames).all()) else additive_key_mask(lens, frames, x.dtype)
    hidden = [x]
    for layer in enc.layers:
        x = layer(x, mask)
        x = x[0] if isinstance(x, tuple) else x
        hidden.append(x)
    hidden[-1] = enc.layer_norm(x)
    return hidden, lens


class WhisperStudentEncoder(nn.Module):
    """``forward(wavs (N, S), wav_lens (N,)) -> EncoderOutput(out (N, T, D), out_lens (N,), layer_outputs)``, 50 frames/s.

    The encoder interface of :class:`~speechkd.models.asr.AsrModel` (``output_dim``, ``subsampling_factor``
    relative to 10 ms frames, ``input_norm``, ``sample_training_chunk``), full context only.
    """

    input_norm = None  # Whisper's log-mel is normalised per utterance; no global CMVN

    def __init__(self, cfg: WhisperEncoderConfig) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoderLayer

        cfg.validate()
        self.cfg = cfg
        hf = cfg.transformers_config()
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=CONV_STRIDE, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, cfg.d_model)
        self.layers = nn.ModuleList([WhisperEncoderLayer(hf) for _ in cfg.layers])
        self.layer_norm = nn.LayerNorm(cfg.d_model)
        self.feature_extractor = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
        self.feature_extractor.dither = 0.0

    @property
    def output_dim(self) -> int:
        return self.cfg.d_model

    @property
    def subsampling_factor(self) -> int:
        return CONV_STRIDE

    @property
    def max_samples(self) -> int:
        return self.cfg.max_source_positions * CONV_STRIDE * self.feature_extractor.hop_length

    def sample_training_chunk(self) -> tuple[int, int]:
        """Full context always (the conformer samples chunk sizes here)."""
        return FULL_CONTEXT, FULL_CONTEXT

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, chunk_size: int = FULL_CONTEXT, left_context: int = FULL_CONTEXT
    ) -> EncoderOutput:
        """``x (N, S)`` audio samples, ``x_lens (N,)`` -> ``EncoderOutput``; ``layer_outputs``: each kept layer's
        output (the last one after the final layer norm)."""
        if chunk_size != FULL_CONTEXT or left_context != FULL_CONTEXT:
            raise SpeechkdError(
                f"the Whisper-layer encoder is full-context only (asked for chunk_size={chunk_size}, "
                f"left_context={left_context}): decode it without --chunk-sizes, export it as full-context"
            )
        if x.dim() != 2:
            raise SpeechkdError(
                f"the Whisper-layer encoder reads raw audio (N, S) (data.input: audio), got a {x.dim()}-d input "
                f"{tuple(x.shape)}: fbank features?"
            )
        if bool((x_lens > self.max_samples).any()):
            return self._forward_windows(x, x_lens)
        mel, mel_lens = whisper_log_mel(self.feature_extractor, x, x_lens, self.max_samples, "whisper-layer encoder")
        hidden, lens = whisper_encode(self, mel, mel_lens, "whisper-layer encoder")
        return EncoderOutput(out=hidden[-1], out_lens=lens, layer_outputs=hidden[1:])

    def _forward_windows(self, x: torch.Tensor, x_lens: torch.Tensor) -> EncoderOutput:
        """Utterances longer than the position table (30 s) as Whisper reads long audio: consecutive windows of at
        most ``max_samples``, each encoded on its own (positions from 0), their frames concatenated."""
        spans = [(i, start, min(start + self.max_samples, n))
                 for i, n in enumerate(x_lens.tolist()) for start in range(0, n, self.max_samples)]
        width = max(end - start for _, start, end in spans)
        windows = x.new_zeros(len(spans), width)
        for k, (i, start, end) in enumerate(spans):
            windows[k, : end - start] = x[i, start:end]
        w_lens = torch.tensor([end - start for _, start, end in spans], device=x.device)
        enc = self.forward(windows, w_lens)
        outputs = []
        for layer in enc.layer_outputs:
            per_utt: list[list[torch.Tensor]] = [[] for _ in range(x.shape[0])]
            for k, (i, _, _) in enumerate(spans):
                per_utt[i].append(layer[k, : int(enc.out_lens[k])])
            outputs.append(nn.utils.rnn.pad_sequence([torch.cat(p) for p in per_utt], batch_first=True))
        lens = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for k, (i, _, _) in enumerate(spans):
            lens[i] += enc.out_lens[k]
        return EncoderOutput(out=outputs[-1], out_lens=lens, layer_outputs=outputs)


def teacher_layer_map(layers: Sequence[int]) -> dict[str, str]:
    """Student state-dict prefix -> teacher encoder prefix for the kept layers (``layers.<i>.`` <- ``layers.<j>.``)."""
    return {f"layers.{i}.": f"layers.{j}." for i, j in enumerate(layers)}
