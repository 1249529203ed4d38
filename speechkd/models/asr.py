"""ASR student backbone: Conformer encoder + optional CTC head + optional stateless transducer.

Loss functions live in ``speechkd.losses``; this module only holds parameters and small helpers.
For the pruned RNN-T loss the training task uses::

    enc = model.encode(x, x_lens)                                  # EncoderOutput
    dec = model.decoder(sos_y_padded)                              # (N, U+1, decoder_dim)
    am, lm = model.simple_am_proj(enc.out), model.simple_lm_proj(dec)  # (N, T, V), (N, U+1, V)
    am_p, lm_p = model.joiner.encoder_proj(enc.out), model.joiner.decoder_proj(dec)
    logits = model.joiner(am_pruned, lm_pruned, project_input=False)  # (N, T, s_range, V)

Training-only heads (``attention_decoders``: LM-to-CTC distillation's attention decoders on encoder layers,
:mod:`speechkd.models.attention_decoder`) live under the state-dict prefixes of
:data:`TRAINING_ONLY_PREFIXES`; :func:`decoding_config` and :func:`decoding_state_dict` drop them, so averaged,
decoded and exported models are plain CTC/transducer models.

Size presets are YAML files in ``speechkd/models/presets/`` (see :func:`load_preset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, TypeVar

import torch
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.models.attention_decoder import AttentionDecoder, AttentionDecodersConfig
from speechkd.models.conformer import FULL_CONTEXT, ConformerEncoder, EncoderConfig, EncoderOutput
from speechkd.models.transducer import Joiner, StatelessDecoder
from speechkd.models.whisper_encoder import WhisperEncoderConfig, WhisperStudentEncoder

PRESET_DIR = Path(__file__).resolve().parent / "presets"
#: ``model.encoder_type``: conformer (``model.encoder``, fbank input) | whisper (``model.whisper``: Whisper encoder
#: layers, raw audio input, a teacher-initialised student; :mod:`speechkd.models.whisper_encoder`)
ENCODER_TYPES = ("conformer", "whisper")
T = TypeVar("T")
#: state-dict prefix of MVQ-KD-style training-only heads (``AsrModel.training_heads``)
TRAINING_HEADS_PREFIX = "training_heads."
#: state-dict prefixes of every head used only in training (dropped for averaging, decoding and export)
TRAINING_ONLY_PREFIXES = (TRAINING_HEADS_PREFIX, "attention_decoders.")


def decoding_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the training-only heads (:data:`TRAINING_ONLY_PREFIXES`): what averaging and decoding keep."""
    return {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


@dataclass
class AsrModelConfig:
    """Whole-model config; ``encoder`` holds the conformer's size/streaming knobs, ``whisper`` the Whisper-layer
    encoder's (``encoder_type`` picks one)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    encoder_type: str = "conformer"
    whisper: WhisperEncoderConfig = field(default_factory=WhisperEncoderConfig)
    vocab_size: int = 500
    blank_id: int = 0
    use_ctc: bool = True
    use_transducer: bool = True
    decoder_dim: int = 256
    decoder_context_size: int = 2
    # Channels per group of the decoder's context convolution (icefall: 4).
    decoder_conv_group_size: int = 4
    joiner_dim: int = 256
    # Training-only attention decoders on encoder layers (LM-to-CTC KD); empty layers: none.
    attention_decoders: AttentionDecodersConfig = field(default_factory=AttentionDecodersConfig)

    @property
    def num_encoder_layers(self) -> int:
        return self.whisper.num_layers if self.encoder_type == "whisper" else self.encoder.num_layers

    def validate(self) -> None:
        if self.encoder_type not in ENCODER_TYPES:
            raise SpeechkdError(f"model.encoder_type={self.encoder_type!r}: use one of {ENCODER_TYPES}")
        if self.encoder_type == "whisper":
            self.whisper.validate()
        else:
            self.encoder.validate()
        self.attention_decoders.validate(self.num_encoder_layers)
        if not (self.use_ctc or self.use_transducer):
            raise SpeechkdError("model config: enable at least one of use_ctc / use_transducer")
        if not 0 <= self.blank_id < self.vocab_size:
            raise SpeechkdError(f"model config: blank_id={self.blank_id} outside vocab_size={self.vocab_size}")
        if self.use_transducer and self.decoder_dim % self.decoder_conv_group_size != 0:
            raise SpeechkdError(
                f"model config: decoder_dim={self.decoder_dim} not divisible by "
                f"decoder_conv_group_size={self.decoder_conv_group_size}"
            )


class AsrModel(nn.Module):
    """Encoder + heads. Attributes ``ctc_output``, ``decoder``, ``joiner``, ``simple_am_proj``,
    ``simple_lm_proj`` are ``None`` when the corresponding head is disabled. ``training_heads`` holds
    heads that only training uses (added by the experiment, e.g. MVQ-KD's ``codebook``); they are not
    part of the config and are dropped by :func:`decoding_state_dict`."""

    def __init__(self, cfg: AsrModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = WhisperStudentEncoder(cfg.whisper) if cfg.encoder_type == "whisper" else ConformerEncoder(cfg.encoder)
        d = self.encoder.output_dim
        self.ctc_output: Optional[nn.Linear] = nn.Linear(d, cfg.vocab_size) if cfg.use_ctc else None
        self.decoder: Optional[StatelessDecoder] = None
        self.joiner: Optional[Joiner] = None
        self.simple_am_proj: Optional[nn.Linear] = None
        self.simple_lm_proj: Optional[nn.Linear] = None
        if cfg.use_transducer:
            self.decoder = StatelessDecoder(
                cfg.vocab_size,
                cfg.decoder_dim,
                cfg.blank_id,
                cfg.decoder_context_size,
                cfg.decoder_dim // cfg.decoder_conv_group_size,
            )
            self.joiner = Joiner(d, cfg.decoder_dim, cfg.joiner_dim, cfg.vocab_size)
            self.simple_am_proj = nn.Linear(d, cfg.vocab_size)
            self.simple_lm_proj = nn.Linear(cfg.decoder_dim, cfg.vocab_size)
        self.training_heads = nn.ModuleDict()
        # keys: 1-based encoder layer numbers as strings
        self.attention_decoders: Optional[nn.ModuleDict] = None
        if cfg.attention_decoders.layers:
            self.attention_decoders = nn.ModuleDict(
                {str(i): AttentionDecoder(d, cfg.attention_decoders) for i in cfg.attention_decoders.layers}
            )

    @property
    def blank_id(self) -> int:
        return self.cfg.blank_id

    @property
    def context_size(self) -> int:
        return self.cfg.decoder_context_size

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def forward(self, fn: Callable[["AsrModel"], T]) -> T:
        """Run ``fn(self)``: a training step calls every submodule inside ``forward`` this way, so
        DistributedDataParallel (which wraps ``forward``) sees the whole step."""
        return fn(self)

    def encode(
        self,
        x: torch.Tensor,
        x_lens: torch.Tensor,
        chunk_size: Optional[int] = None,
        left_context: Optional[int] = None,
    ) -> EncoderOutput:
        """x (N, T, C), x_lens (N,) -> EncoderOutput (out (N, T', D)).

        ``chunk_size=None``: in training mode a (chunk_size, left_context) pair is sampled from
        the encoder config (full context for non-causal encoders); in eval mode full context.
        ``left_context=None`` means unlimited unless sampled.
        """
        if chunk_size is None:
            if self.training:
                chunk_size, sampled_left = self.encoder.sample_training_chunk()
                left_context = sampled_left if left_context is None else left_context
            else:
                chunk_size = FULL_CONTEXT
        left_context = FULL_CONTEXT if left_context is None else left_context
        return self.encoder(x, x_lens, chunk_size=chunk_size, left_context=left_context)

    def ctc_log_probs(self, enc_out: torch.Tensor) -> torch.Tensor:
        """enc_out (N, T, D) -> log-probabilities (N, T, V)."""
        if self.ctc_output is None:
            raise SpeechkdError("this model has no CTC head (model.use_ctc=false)")
        return self.ctc_output(enc_out).log_softmax(dim=-1)

    def require_transducer(self) -> tuple[StatelessDecoder, Joiner]:
        """(decoder, joiner), or a clear error when the model has no transducer."""
        if self.decoder is None or self.joiner is None:
            raise SpeechkdError("this model has no transducer (model.use_transducer=false)")
        return self.decoder, self.joiner

    def num_params(self, module: Optional[nn.Module] = None) -> int:
        """Number of parameters of ``module`` (default: the whole model)."""
        return sum(p.numel() for p in (module or self).parameters())

    @classmethod
    def from_preset(cls, name: str, overrides: Iterable[str] = ()) -> "AsrModel":
        return cls(load_preset(name, overrides))


def decoding_config(cfg: AsrModelConfig) -> AsrModelConfig:
    """A copy of ``cfg`` without training-only heads (the model that is decoded and exported)."""
    import copy

    out = copy.deepcopy(cfg)
    out.attention_decoders.layers = []
    return out



def list_presets() -> list[str]:
    """Names of the YAML presets in ``speechkd/models/presets/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, overrides: Iterable[str] = ()) -> AsrModelConfig:
    """AsrModelConfig from preset ``name`` (e.g. ``"mini"``) with dotted ``key=value`` overrides."""
    from speechkd.config import load_config

    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpeechkdError(f"unknown model preset '{name}' (no {path}); available: {', '.join(list_presets())}")
    return load_config(AsrModelConfig, path, list(overrides))
