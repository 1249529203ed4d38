"""The teacher contract: a frozen speech encoder that returns every layer's hidden states.

``teacher(wavs (N, S), wav_lens (N,)) -> TeacherOutput(hidden_states, lens, frame_shift)``

* ``wavs`` are float waveforms at :attr:`Teacher.sample_rate` (16 kHz), zero padded after ``wav_lens``.
* ``hidden_states`` has ``num_layers + 1`` entries of shape ``(N, T, D)``; index 0 is the input-embedding
  output, as with transformers' ``output_hidden_states=True``. Frames at or after ``lens[i]`` are 0.0.
* ``frame_shift`` is in seconds (0.02 for HuBERT-family and Whisper encoders).

Teachers are always in eval mode with ``requires_grad=False``; ``.train()`` does not change that.
``config_fingerprint(layers)`` identifies the checkpoint (its config and a digest of its weights taken
at load time) plus the layers used, for the ``metadata.yaml`` checks of stored targets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from speechkd.errors import SpeechkdError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Config keys that describe where/how a checkpoint was saved, not what it computes.
_VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures", "_commit_hash", "use_cache"}
)
FINGERPRINT_HEX_CHARS = 16


@dataclass
class TeacherOutput:
    """What a teacher returns for one batch.

    Attributes:
        hidden_states: ``num_layers + 1`` tensors ``(N, T, D)``; index 0 = input embedding output.
        lens: ``(N,)`` int64 valid frames per utterance.
        frame_shift: seconds between frames.
    """

    hidden_states: list[torch.Tensor]
    lens: torch.Tensor
    frame_shift: float


def weights_digest(module: nn.Module) -> str:
    """Hex sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def stable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict without save-location/version keys, so the same model hashes the same everywhere."""
    return {k: v for k, v in sorted(config.items()) if k not in _VOLATILE_CONFIG_KEYS}


def lengths_to_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(N,)`` lengths -> ``(N, max_len)`` bool mask, True on valid positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def zero_padded_frames(hidden_states: Sequence[torch.Tensor], lens: torch.Tensor) -> list[torch.Tensor]:
    """Set frames at or after ``lens[i]`` to 0.0 in every ``(N, T, D)`` tensor."""
    if not hidden_states:
        return []
    mask = lengths_to_mask(lens.to(hidden_states[0].device), hidden_states[0].shape[1])
    return [h.masked_fill(~mask[:, :, None], 0.0) for h in hidden_states]


class Teacher(nn.Module, ABC):
    """Base class of every teacher: frozen, eval-only, all layers out.

    Subclasses set :attr:`kind` and implement :meth:`_forward`, :attr:`num_layers`, :attr:`hidden_size`,
    :attr:`frame_shift` and :meth:`model_config`.
    """

    kind: str = "base"
    sample_rate: int = SAMPLE_RATE

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.model.eval()
        self.model.requires_grad_(False)
        self._weights_digest = weights_digest(self.model)

    # --- contract -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def num_layers(self) -> int:
        """Number of transformer layers; ``hidden_states`` has ``num_layers + 1`` entries."""

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """D of every hidden state."""

    @property
    @abstractmethod
    def frame_shift(self) -> float:
        """Seconds between output frames."""

    @abstractmethod
    def model_config(self) -> dict[str, Any]:
        """The checkpoint's config as a plain dict (used by :meth:`config_fingerprint`)."""

    @abstractmethod
    def _forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor) -> TeacherOutput:
        """``wavs (N, S)`` float on the model's device, ``wav_lens (N,)`` int64 -> TeacherOutput."""

    # --- shared behaviour -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def train(self, mode: bool = True) -> "Teacher":
        """Teachers stay in eval mode (no dropout); asking for training mode is ignored with a debug log."""
        if mode:
            logger.debug("teacher %s stays in eval mode", self.name)
        return super().train(False)

    @torch.no_grad()
    def forward(self, wavs: torch.Tensor, wav_lens: Optional[torch.Tensor] = None) -> TeacherOutput:
        """Run the teacher.

        Args:
            wavs: ``(N, S)`` float waveforms at 16 kHz, zero padded.
            wav_lens: ``(N,)`` valid samples per row; all ``S`` when omitted.

        Returns:
            TeacherOutput with ``num_layers + 1`` hidden states ``(N, T, D)`` and ``lens (N,)``.
        """
        if wavs.dim() != 2:
            raise SpeechkdError(f"teacher {self.name}: wavs must be (N, S), got shape {tuple(wavs.shape)}")
        if wav_lens is None:
            wav_lens = torch.full((wavs.shape[0],), wavs.shape[1], dtype=torch.long)
        wav_lens = wav_lens.to(device=self.device, dtype=torch.long)
        if wav_lens.shape != (wavs.shape[0],) or int(wav_lens.max()) > wavs.shape[1] or int(wav_lens.min()) <= 0:
            raise SpeechkdError(
                f"teacher {self.name}: wav_lens {wav_lens.tolist()} do not fit wavs of shape {tuple(wavs.shape)}"
            )
        out = self._forward(wavs.to(device=self.device, dtype=torch.float32), wav_lens)
        out.hidden_states = zero_padded_frames(out.hidden_states, out.lens)
        return out

    def config_fingerprint(self, layers: Optional[Sequence[int]] = None) -> str:
        """``"<kind>-<16 hex>"``: a stable id of (checkpoint config, weights at load time, layers).

        The same checkpoint gives the same string on any machine, device or dtype; another layer
        selection, config or weight set gives another one.
        """
        if layers is not None:
            bad = [i for i in layers if not 0 <= int(i) <= self.num_layers]
            if bad:
                raise SpeechkdError(f"teacher {self.name}: layers {bad} out of range 0..{self.num_layers}")
        payload = {
            "kind": self.kind,
            "config": stable_config(self.model_config()),
            "weights_sha256": self._weights_digest,
            "layers": None if layers is None else [int(i) for i in layers],
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.kind}-{digest[:FINGERPRINT_HEX_CHARS]}"

    def describe(self, layers: Optional[Sequence[int]] = None) -> dict[str, Any]:
        """A plain dict for target ``metadata.yaml`` files and ``speechkd teachers info``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "model_type": self.model_config().get("model_type"),
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "frame_shift": self.frame_shift,
            "num_parameters": self.num_parameters(),
            "weights_sha256": self._weights_digest,
            "fingerprint": self.config_fingerprint(layers),
        }


TEACHER_KINDS = ("auto", "ssl", "whisper")


def resolve_checkpoint(path_or_id: str) -> tuple[str, bool]:
    """``(source, local_files_only)`` for a checkpoint directory or a hub id.

    An existing path must be a directory with ``config.json`` and is loaded with ``local_files_only``; a
    CTranslate2 directory is refused with a pointer to ``speechkd teachers convert-ct2-whisper``. A
    string that is not an existing path but looks like one (absolute, ``./``, ``~``, or more than one
    ``/``) is an error rather than a hub lookup.
    """
    from pathlib import Path

    path = Path(path_or_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SpeechkdError(f"teacher checkpoint {path} is a file; give the checkpoint directory")
        config = path / "config.json"
        if not config.is_file():
            raise SpeechkdError(f"teacher checkpoint {path} has no config.json")
        if (path / "model.bin").is_file() and "model_type" not in json.loads(config.read_text(encoding="utf-8")):
            raise SpeechkdError(
                f"{path} is a CTranslate2 model; convert it first: speechkd teachers convert-ct2-whisper {path} OUT_DIR"
            )
        return str(path), True
    text = str(path_or_id)
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise SpeechkdError(f"teacher checkpoint directory not found: {text}")
    return text, False


def _load_config(source: str, local_files_only: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, local_files_only=local_files_only)
    except OSError as e:
        if local_files_only:
            raise SpeechkdError(f"{source}: cannot read the checkpoint config ({e})") from None
        raise SpeechkdError(
            f"teacher {source!r} is not a local directory and could not be fetched from the model hub "
            f"(offline, e.g. HF_HUB_OFFLINE=1, or unknown id?): {e}"
        ) from None
    except ValueError as e:  # unknown model_type
        raise SpeechkdError(f"{source}: not a transformers checkpoint this version can read ({e})") from None


def load_teacher(
    path_or_hub_id: str,
    kind: str = "auto",
    device: Optional[Any] = None,
    dtype: Optional[torch.dtype] = None,
    **options: Any,
) -> Teacher:
    """Load a teacher explicitly: a local checkpoint directory (never touches the network) or a hub id.

    Args:
        path_or_hub_id: checkpoint directory (``save_pretrained`` layout) or model-hub id.
        kind: ``"auto"`` (from ``config.model_type``), ``"ssl"`` (HuBERT/wav2vec2/WavLM/data2vec-audio) or
            ``"whisper"`` (Whisper encoder).
        device, dtype: where to put the frozen model (e.g. ``"cuda"``, ``torch.float16``).
        options: passed to the teacher class (``batching`` for SSL teachers).

    Raises SpeechkdError for a missing path, an unreachable hub id, a non-speech checkpoint
    (naming its ``model_type``) or a kind that does not match the checkpoint.
    """
    from speechkd.teachers.hf_ssl import SSL_MODEL_TYPES, HFSSLTeacher
    from speechkd.teachers.whisper_encoder import WHISPER_MODEL_TYPE, WhisperEncoderTeacher

    if kind not in TEACHER_KINDS:
        raise SpeechkdError(f"unknown teacher kind {kind!r}: use one of {TEACHER_KINDS}")
    source, local = resolve_checkpoint(path_or_hub_id)
    config = _load_config(source, local)
    model_type = getattr(config, "model_type", None)
    detected = "ssl" if model_type in SSL_MODEL_TYPES else "whisper" if model_type == WHISPER_MODEL_TYPE else None
    if detected is None:
        raise SpeechkdError(
            f"{source}: model_type {model_type!r} is not a speech encoder teacher "
            f"(supported: {', '.join(SSL_MODEL_TYPES + (WHISPER_MODEL_TYPE,))})"
        )
    if kind != "auto" and kind != detected:
        raise SpeechkdError(f"{source}: --kind {kind} does not match the checkpoint (model_type {model_type!r})")
    cls = HFSSLTeacher if detected == "ssl" else WhisperEncoderTeacher
    teacher = cls.from_pretrained(source, local_files_only=local, config=config, **options)
    if device is not None or dtype is not None:
        teacher.to(device=device, dtype=dtype)
    return teacher
