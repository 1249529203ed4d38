"""HuBERT, wav2vec2, WavLM and data2vec-audio encoders (transformers ``AutoModel``) as teachers.

Padded batches (``batching``):
* ``feat_extract_norm == "layer"`` HuBERT/wav2vec2(-conformer)/WavLM checkpoints (the *large* ones, WavLM)
  take an attention mask, and a padded batch gives the same valid frames as running each utterance
  alone (checked in the tests): they are "padding safe" and run as one padded batch.
* ``feat_extract_norm == "group"`` checkpoints (HuBERT/wav2vec2 *base*) normalise the first conv layer
  over the whole time axis, so zero padding changes every frame; transformers' docs say to feed them
  zero-padded input *without* a mask. data2vec-audio's stacked positional convolutions also leak padding
  into valid frames even with a mask. For these, ``batching="auto"`` (default) runs each utterance
  unpadded, so targets never depend on batch composition; ``batching="pad"`` forces one padded batch
  (mask when the model is a layer-norm one, none for group norm, as transformers recommends: faster but
  batch-dependent); ``"per_utterance"`` forces the exact path for every model.

Waveforms are normalised (zero mean, unit variance over each utterance's valid samples) when the
checkpoint's feature extractor says ``do_normalize``; without a ``preprocessor_config.json`` the fairseq
convention is used (normalise for "layer" models only) and logged.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Optional

import torch
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.teachers.base import SAMPLE_RATE, Teacher, TeacherOutput, lengths_to_mask

logger = logging.getLogger(__name__)

SSL_MODEL_TYPES = ("hubert", "wav2vec2", "wav2vec2-conformer", "wavlm", "data2vec-audio")
BATCHING_MODES = ("auto", "per_utterance", "pad")
# Layer-norm models whose outputs still depend on padding (stacked positional convs see padded frames).
PADDING_UNSAFE_MODEL_TYPES = ("data2vec-audio",)
# Same epsilon as transformers' Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm.
NORM_EPS = 1e-7


def normalize_waveforms(wavs: torch.Tensor, wav_lens: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Zero-mean unit-variance per utterance over its valid samples; padding stays 0.0.

    Args:
        wavs: ``(N, S)`` float.
        wav_lens: ``(N,)`` valid samples.

    Returns:
        ``(N, S)`` normalised waveforms (population variance, as the transformers feature extractor).
    """
    mask = lengths_to_mask(wav_lens, wavs.shape[1]).to(wavs.dtype)
    n = wav_lens.to(wavs.dtype)[:, None]
    mean = (wavs * mask).sum(1, keepdim=True) / n
    var = (((wavs - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (wavs - mean) / torch.sqrt(var + eps) * mask


def check_ssl_config(config: Any, source: str) -> None:
    """SpeechkdError unless ``config`` is one of the supported self-supervised speech encoders."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SSL_MODEL_TYPES:
        raise SpeechkdError(
            f"{source}: model_type {model_type!r} is not a supported speech encoder (expected one of {SSL_MODEL_TYPES})"
        )


def feature_encoder_norm(config: Any) -> str:
    """``"group"`` or ``"layer"``: the conv feature encoder's normalisation (data2vec-audio is always layer)."""
    return str(getattr(config, "feat_extract_norm", "layer"))


class HFSSLTeacher(Teacher):
    """A transformers SSL speech encoder, frozen, returning all ``num_hidden_layers + 1`` hidden states.

    Note: transformers' ``hidden_states[-1]`` is the last layer's output as the library records it; for
    "stable layer norm" checkpoints the final encoder layer norm is in ``last_hidden_state`` only.
    """

    kind = "ssl"

    def __init__(
        self, model: nn.Module, name: str, do_normalize: bool, batching: str = "auto"
    ) -> None:
        if batching not in BATCHING_MODES:
            raise SpeechkdError(f"batching={batching!r}: use one of {BATCHING_MODES}")
        super().__init__(model, name)
        self.do_normalize = do_normalize
        self.batching = batching

    @classmethod
    def from_pretrained(
        cls,
        source: str,
        local_files_only: bool,
        config: Optional[Any] = None,
        batching: str = "auto",
    ) -> "HFSSLTeacher":
        """Load from a checkpoint directory or hub id (the caller decides ``local_files_only``)."""
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        if config is None:
            config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        check_ssl_config(config, source)
        model = AutoModel.from_pretrained(source, config=config, local_files_only=local_files_only)
        layer_norm_model = feature_encoder_norm(config) == "layer"
        try:
            fe = AutoFeatureExtractor.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError):
            fe = None
        if fe is None:
            do_normalize = layer_norm_model
            logger.info("%s: no feature-extractor config; do_normalize=%s (fairseq convention)", source, do_normalize)
        else:
            do_normalize = bool(getattr(fe, "do_normalize", False))
            rate = getattr(fe, "sampling_rate", SAMPLE_RATE)
            if rate != SAMPLE_RATE:
                raise SpeechkdError(f"{source}: feature extractor expects {rate} Hz, teachers take {SAMPLE_RATE} Hz")
        return cls(model, name=str(source), do_normalize=do_normalize, batching=batching)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def frame_shift(self) -> float:
        return math.prod(self.config.conv_stride) / self.sample_rate

    @property
    def uses_attention_mask(self) -> bool:
        return feature_encoder_norm(self.config) == "layer"

    @property
    def padding_safe(self) -> bool:
        """True when a masked padded batch gives the same valid frames as per-utterance runs."""
        return self.uses_attention_mask and self.config.model_type not in PADDING_UNSAFE_MODEL_TYPES

    def model_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def output_lengths(self, wav_lens: torch.Tensor) -> torch.Tensor:
        """``(N,)`` samples -> ``(N,)`` frames, by the model's own conv-stack formula."""
        fn = self.model._get_feat_extract_output_lengths
        # the optional adapter (wav2vec2) only shortens last_hidden_state, not the per-layer hidden states
        kwargs = {"add_adapter": False} if "add_adapter" in inspect.signature(fn).parameters else {}
        return fn(wav_lens, **kwargs).to(torch.long)

    def _run(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> list[torch.Tensor]:
        """``x (N, S)`` -> all hidden states ``(N, T, D)``."""
        out = self.model(
            x.to(self.dtype), attention_mask=None if mask is None else mask.long(), output_hidden_states=True
        )
        return list(out.hidden_states)

    def _forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> TeacherOutput:
        if self.do_normalize:
            wavs = normalize_waveforms(wavs, wav_lens)
        lens = self.output_lengths(wav_lens)
        one_batch = self.batching == "pad" or (self.batching == "auto" and self.padding_safe)
        if not one_batch:
            hidden = self._run_per_utterance(wavs, wav_lens, int(lens.max()))
        elif self.uses_attention_mask:
            hidden = self._run(wavs, lengths_to_mask(wav_lens, wavs.shape[1]))
        else:
            hidden = self._run(wavs, None)
        return TeacherOutput(hidden_states=hidden, lens=lens, frame_shift=self.frame_shift)

    def _run_per_utterance(self, wavs: torch.Tensor, wav_lens: torch.Tensor, max_frames: int) -> list[torch.Tensor]:
        """Run each ``wavs[i, :wav_lens[i]]`` alone and zero-pad the results to ``(N, max_frames, D)``."""
        per_utt = [self._run(wavs[i : i + 1, : int(n)], None) for i, n in enumerate(wav_lens.tolist())]
        out = []
        for layer in range(len(per_utt[0])):
            rows = [h[layer][0] for h in per_utt]
            out.append(nn.utils.rnn.pad_sequence(rows, batch_first=True)[:, :max_frames])
        return out
