"""The Whisper encoder (any transformers Whisper checkpoint) as a teacher, without 30 s padding.

transformers' ``WhisperEncoder.forward`` (5.x) refuses any input other than exactly
``max_source_positions * 2`` mel frames (30 s). Whisper itself has no notion of shorter inputs, but the
encoder is a conv stack plus transformer layers with an absolute position table, so this teacher calls
those submodules directly and adds only the first ``T`` rows of the position table. Outputs for short
clips differ somewhat from the padded-30 s outputs (the model never saw unpadded input: cosine ~0.98 on
the last layer of tiny.en) and cost far less.

Per utterance: log-mel with transformers' ``WhisperFeatureExtractor`` (no padding), ``T_mel = S // hop``;
encoder frames ``T = (T_mel - 1) // 2 + 1`` (50 per second). In a padded batch, conv1 outputs past each
input's end are zeroed (what a lone utterance's zero padding gives) and padded keys are masked in
self-attention, so batched outputs equal per-utterance outputs. ``hidden_states[-1]`` is the final layer
norm's output, as in transformers' ``output_hidden_states``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.models.whisper_encoder import whisper_encode, whisper_log_mel
from speechkd.teachers.base import SAMPLE_RATE, Teacher, TeacherOutput

logger = logging.getLogger(__name__)

WHISPER_MODEL_TYPE = "whisper"


class WhisperEncoderTeacher(Teacher):
    """Whisper encoder with position-table slicing; ``num_layers + 1`` hidden states ``(N, T, D)`` at 50 Hz."""

    kind = "whisper"

    def __init__(self, encoder: nn.Module, name: str, feature_extractor: Any) -> None:
        super().__init__(encoder, name)
        if feature_extractor.feature_size != encoder.config.num_mel_bins:
            raise SpeechkdError(
                f"{name}: feature extractor has {feature_extractor.feature_size} mel bins, "
                f"the encoder expects {encoder.config.num_mel_bins}"
            )
        if feature_extractor.sampling_rate != SAMPLE_RATE:
            raise SpeechkdError(f"{name}: feature extractor expects {feature_extractor.sampling_rate} Hz")
        if getattr(feature_extractor, "dither", 0.0):
            logger.info(
                "%s: feature-extractor dither %s set to 0 (teacher outputs must be deterministic)",
                name,
                feature_extractor.dither,
            )
            feature_extractor.dither = 0.0
        self.feature_extractor = feature_extractor

    @classmethod
    def from_pretrained(
        cls, source: str, local_files_only: bool, config: Optional[Any] = None
    ) -> "WhisperEncoderTeacher":
        """Load the encoder half of a Whisper checkpoint (directory or hub id) and its feature extractor."""
        from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

        if config is None:
            config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        if getattr(config, "model_type", None) != WHISPER_MODEL_TYPE:
            raise SpeechkdError(f"{source}: model_type {getattr(config, 'model_type', None)!r} is not 'whisper'")
        model = WhisperModel.from_pretrained(
            source, config=config, local_files_only=local_files_only, attn_implementation="sdpa"
        )
        encoder = model.get_encoder()
        try:
            fe = WhisperFeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
        except OSError:
            fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
            logger.info("%s: no feature-extractor config; Whisper defaults (%d mel bins)", source, fe.feature_size)
        return cls(encoder, name=str(source), feature_extractor=fe)

    # --- geometry -------------------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.config.encoder_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.d_model)

    @property
    def conv_stride(self) -> int:
        return int(self.model.conv1.stride[0] * self.model.conv2.stride[0])

    @property
    def frame_shift(self) -> float:
        return self.feature_extractor.hop_length * self.conv_stride / self.sample_rate

    @property
    def max_samples(self) -> int:
        """Longest input the position table covers (30 s for released checkpoints)."""
        return int(self.config.max_source_positions * self.conv_stride * self.feature_extractor.hop_length)

    def model_config(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        return {k: v for k, v in cfg.items() if not k.startswith("decoder_")}

    def output_lengths(self, wav_lens: torch.Tensor) -> torch.Tensor:
        """``(N,)`` samples -> ``(N,)`` encoder frames (mel frames = samples // hop, then the conv stack)."""
        mel_lens = wav_lens // self.feature_extractor.hop_length
        return self.model._get_feat_extract_output_lengths(mel_lens).to(torch.long)

    # --- forward --------------------------------------------------------------------------------------
    def log_mel(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-utterance log-mel, zero padded: ``(N, S)`` -> ``((N, n_mels, T_mel), mel_lens (N,))``."""
        return whisper_log_mel(self.feature_extractor, wavs.to(self.device), wav_lens.to(self.device),
                               self.max_samples, f"teacher {self.name}")

    def encode(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder with the position table sliced to the input length
        (:func:`speechkd.models.whisper_encoder.whisper_encode`).

        Args:
            mel: ``(N, n_mels, T_mel)`` log-mel, zero padded.
            mel_lens: ``(N,)`` valid mel frames.

        Returns:
            ``(hidden_states, lens)``: ``num_layers + 1`` tensors ``(N, T, D)`` and ``(N,)`` frames.
        """
        return whisper_encode(self.model, mel.to(self.dtype), mel_lens, f"teacher {self.name}")

    def _forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> TeacherOutput:
        mel, mel_lens = self.log_mel(wavs, wav_lens)
        hidden, lens = self.encode(mel, mel_lens)
        return TeacherOutput(hidden_states=hidden, lens=lens, frame_shift=self.frame_shift)
