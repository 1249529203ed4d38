"""Whisper as an ASR teacher: batched transcription with per-utterance confidence measures.

One protocol, :class:`WhisperTeacherASR`, two backends:

* :class:`TransformersWhisper`: any transformers Whisper checkpoint (a directory, e.g. one written by
  ``speechkd teachers convert-ct2-whisper``, or a hub id), batched ``generate`` with greedy search
  (``beam_size=1``) or beam search, fp16/bf16 on GPU, ``language``/``task`` for multilingual models.
* :class:`FasterWhisper`: a CTranslate2 Whisper directory (or a faster-whisper model name / hub id)
  through faster-whisper's ``BatchedInferencePipeline`` (optional extra ``pip install faster-whisper``).

Both take a list of 16 kHz mono float waveforms of at most 30 s each (Whisper's window; longer clips
raise SpeechkdError -- the labeller skips and counts them before they get here) and return one
:class:`Transcript` per waveform, with the measures Whisper itself uses to detect failures:

* ``avg_logprob``: sum of the log-probabilities of the decoded text tokens and the end-of-text token,
  divided by (number of text tokens + 1) -- OpenAI Whisper's definition. In the transformers backend the
  chosen sequence is re-scored in one teacher-forced decoder pass; the log-softmax is taken after the
  generation config's token suppression (``suppress_tokens`` at every step, ``begin_suppress_tokens`` at
  the first), as Whisper applies its logit filters before the log-softmax. faster-whisper reports
  CTranslate2's own score (``cum_logprob / (len + 1)``).
* ``no_speech_prob``: probability of the no-speech token (``<|nospeech|>``, ``<|nocaptions|>`` in older
  vocabularies) at the start-of-transcript position, from unfiltered logits; ``None`` when the vocabulary
  has no such token.
* ``compression_ratio``: UTF-8 bytes of the decoded text over their zlib-compressed size.

No temperature fallback is run (``generate`` is called once per batch in both backends). No network is
used unless a hub id (not an existing path) is given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from speechkd.errors import SpeechkdError
from speechkd.targets.label_filters import compression_ratio  # Whisper's definition, shared with the filters

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MAX_CLIP_SECONDS = 30.0  # Whisper's input window
BACKENDS = ("transformers", "faster-whisper")
NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")
TORCH_DTYPES = ("auto", "float32", "float16", "bfloat16")
CT2_WEIGHTS_FILE = "model.bin"
WHISPER_MODEL_TYPE = "whisper"
# A clip boundary given to faster-whisper in seconds is turned back into samples with int(); the half
# sample keeps float rounding from moving the boundary by one sample.
_HALF_SAMPLE = 0.5


@dataclass(frozen=True)
class Transcript:
    """The teacher's output for one waveform (see the module docstring for the measures)."""

    text_raw: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: Optional[float]


@runtime_checkable
class WhisperTeacherASR(Protocol):
    """What the pseudo-labeller needs from a Whisper teacher."""

    name: str
    backend: str

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """One :class:`Transcript` per 16 kHz mono float waveform ``(S,)`` (at most 30 s each)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Settings and identity (path, backend, beam, weights digest) for ``metadata.yaml``."""
        ...


def check_audios(audios: Sequence[np.ndarray], max_seconds: float = MAX_CLIP_SECONDS) -> list[np.ndarray]:
    """Validate waveforms ``(S,)`` (16 kHz, 0 < S <= max_seconds * 16000) and return them as float32."""
    out = []
    max_samples = int(round(max_seconds * SAMPLE_RATE))
    for i, audio in enumerate(audios):
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim != 1:
            raise SpeechkdError(f"waveform {i}: expected a mono 1-D array, got shape {list(arr.shape)}")
        if arr.size == 0:
            raise SpeechkdError(f"waveform {i} is empty")
        if arr.size > max_samples:
            raise SpeechkdError(
                f"waveform {i} is {arr.size / SAMPLE_RATE:.2f} s long; Whisper teachers take at most {max_seconds:g} s"
            )
        out.append(arr)
    return out


def _sha256_or_none(path: Path) -> Optional[str]:
    from speechkd.teachers.ct2_convert import sha256_file

    return sha256_file(path) if path.is_file() else None


# --------------------------------------------------------------------------------------- transformers
class TransformersWhisper:
    """Whisper through ``transformers.WhisperForConditionalGeneration`` (batched ``generate``).

    Args:
        path_or_id: checkpoint directory (``config.json`` with ``model_type: whisper``) or a hub id.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype: ``"auto"`` (float16 on CUDA, float32 elsewhere), ``"float32"``, ``"float16"``, ``"bfloat16"``.
        beam_size: 1 = greedy search, more = beam search with that many beams.
        language: e.g. ``"en"``; ``None`` lets a multilingual model detect it per utterance. Ignored
            (with a log line) for English-only models, which have no language token.
        task: ``"transcribe"`` or ``"translate"`` (multilingual models only).
        max_new_tokens: cap on generated tokens per utterance (``None``: the model's maximum).
        name: label stored with every pseudo-label (default: ``path_or_id``).
    """

    backend = "transformers"

    def __init__(
        self,
        path_or_id: str,
        device: str = "cpu",
        dtype: str = "auto",
        beam_size: int = 1,
        language: Optional[str] = None,
        task: str = "transcribe",
        max_new_tokens: Optional[int] = None,
        name: Optional[str] = None,
    ) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from speechkd.teachers.base import _load_config, resolve_checkpoint

        if beam_size < 1:
            raise SpeechkdError(f"beam_size must be >= 1, got {beam_size}")
        if dtype not in TORCH_DTYPES:
            raise SpeechkdError(f"unknown dtype {dtype!r}; use one of {TORCH_DTYPES}")
        source, local = resolve_checkpoint(str(path_or_id))
        config = _load_config(source, local)
        if getattr(config, "model_type", None) != WHISPER_MODEL_TYPE:
            raise SpeechkdError(
                f"{source}: not a Whisper checkpoint (model_type {getattr(config, 'model_type', None)!r})"
            )
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.dtype_name = dtype
        self.torch_dtype = getattr(torch, dtype)
        self.model = WhisperForConditionalGeneration.from_pretrained(
            source, config=config, local_files_only=local, dtype=self.torch_dtype
        ).to(self.device).eval()
        try:
            self.processor = WhisperProcessor.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError) as e:
            raise SpeechkdError(f"{source}: cannot load the Whisper tokenizer/feature extractor ({e})") from None
        self.processor.feature_extractor.dither = 0.0  # labels must be reproducible
        self.source, self.local = source, local
        self.name = name or str(path_or_id)
        self.beam_size = beam_size
        self.task = task
        self.max_new_tokens = max_new_tokens
        gen = self.model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        if language is not None and not self.multilingual:
            logger.info("%s is English-only: language %r ignored", self.name, language)
            language = None
        self.language = language
        self.no_timestamps_id = getattr(gen, "no_timestamps_token_id", None)
        if self.no_timestamps_id is None:
            raise SpeechkdError(f"{source}: generation_config.json has no no_timestamps_token_id (not a Whisper model?)")
        self.eos_id = int(gen.eos_token_id)
        self.no_speech_id = self._find_no_speech_id()
        self.suppress_ids = list(getattr(gen, "suppress_tokens", None) or [])
        self.begin_suppress_ids = list(getattr(gen, "begin_suppress_tokens", None) or [])

    def _find_no_speech_id(self) -> Optional[int]:
        tok = self.processor.tokenizer
        for token in NO_SPEECH_TOKENS:
            idx = tok.convert_tokens_to_ids(token)
            if idx is not None and idx != tok.unk_token_id:
                return int(idx)
        logger.warning("%s: no no-speech token in the vocabulary; no_speech_prob will be None", self.name)
        return None

    def describe(self) -> dict[str, Any]:
        weights = Path(self.source) / "model.safetensors" if self.local else None
        return {
            "name": self.name,
            "backend": self.backend,
            "path_or_id": self.source,
            "beam_size": self.beam_size,
            "dtype": self.dtype_name,
            "language": self.language,
            "task": self.task if self.multilingual else None,
            "max_new_tokens": self.max_new_tokens,
            "weights_file": str(weights) if weights else None,
            "weights_sha256": _sha256_or_none(weights) if weights else None,
        }

    def _generate_kwargs(self) -> dict[str, Any]:
        # return_dict_in_generate keeps the decoder prompt (and EOT) in ``sequences``: the re-scoring needs them.
        kwargs: dict[str, Any] = {"num_beams": self.beam_size, "return_timestamps": False, "return_dict_in_generate": True}
        if self.multilingual:
            kwargs["task"] = self.task
            if self.language is not None:
                kwargs["language"] = self.language
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        return kwargs

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcribe waveforms ``(S_i,)``; see the class and module docstrings."""
        import torch

        wavs = check_audios(audios)
        if not wavs:
            return []
        fe = self.processor.feature_extractor
        feats = fe(wavs, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features  # (N, n_mels, 3000)
        feats = feats.to(self.device, self.torch_dtype)
        with torch.inference_mode():
            encoder_out = self.model.get_encoder()(feats)
            sequences = self.model.generate(encoder_outputs=encoder_out, **self._generate_kwargs()).sequences  # (N, L)
            logits = self.model(
                encoder_outputs=encoder_out, decoder_input_ids=sequences.to(self.device)
            ).logits.float()  # (N, L, V)
        return [self._score_one(seq, lg) for seq, lg in zip(sequences.cpu(), logits.cpu())]

    def _prompt_length(self, seq: "torch.Tensor") -> int:  # noqa: F821 - torch imported lazily
        hits = (seq == self.no_timestamps_id).nonzero()
        if hits.numel() == 0:
            raise SpeechkdError(f"{self.name}: generated sequence has no <|notimestamps|> prompt token: {seq.tolist()}")
        return int(hits[0, 0]) + 1

    def _score_one(self, seq: "torch.Tensor", logits: "torch.Tensor") -> Transcript:  # noqa: F821
        """``seq (L,)`` = prompt + text tokens + EOT (+ padding); ``logits (L, V)`` from teacher forcing."""
        import torch

        start = self._prompt_length(seq)
        ends = (seq[start:] == self.eos_id).nonzero()
        n_text = int(ends[0, 0]) if ends.numel() else seq.numel() - start
        n_scored = min(n_text + 1, seq.numel() - start)  # text tokens + EOT (when present)
        step_logits = logits[start - 1 : start - 1 + n_scored].clone()  # row t predicts token start + t
        if self.suppress_ids:
            step_logits[:, self.suppress_ids] = -torch.inf
        if self.begin_suppress_ids and n_scored:
            step_logits[0, self.begin_suppress_ids] = -torch.inf
        logprobs = torch.log_softmax(step_logits, dim=-1)
        targets = seq[start : start + n_scored]
        total = float(logprobs.gather(1, targets[:, None]).sum()) if n_scored else 0.0
        no_speech = None
        if self.no_speech_id is not None:
            no_speech = float(torch.softmax(logits[0], dim=-1)[self.no_speech_id])  # at <|startoftranscript|>
        text = self.processor.tokenizer.decode(seq[start : start + n_text].tolist(), skip_special_tokens=True).strip()
        return Transcript(
            text_raw=text,
            avg_logprob=total / (n_text + 1),
            compression_ratio=compression_ratio(text),
            no_speech_prob=no_speech,
        )


# --------------------------------------------------------------------------------------- faster-whisper
def _check_ct2_whisper_dir(path: Path) -> None:
    """A local faster-whisper model must be a CTranslate2 directory; say what to do otherwise."""
    if not path.is_dir():
        raise SpeechkdError(f"faster-whisper teacher {path} is not a directory")
    if not (path / CT2_WEIGHTS_FILE).is_file():
        config = path / "config.json"
        model_type = None
        if config.is_file():
            try:
                model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
            except (json.JSONDecodeError, UnicodeDecodeError):
                pass
        if model_type == WHISPER_MODEL_TYPE:
            raise SpeechkdError(
                f"{path} is a transformers Whisper checkpoint: use --backend transformers, or convert it with "
                "ct2-transformers-converter for faster-whisper"
            )
        raise SpeechkdError(f"{path} is not a CTranslate2 Whisper model directory (no {CT2_WEIGHTS_FILE})")


class FasterWhisper:
    """Whisper through faster-whisper (CTranslate2): ``BatchedInferencePipeline`` over a batch of clips.

    The clips of one :meth:`transcribe` call are laid end to end and handed to the pipeline with one
    ``clip_timestamps`` entry per clip (no VAD, no timestamps), so each clip is one element of the
    pipeline's batch; its ``batch_size`` is this class's ``batch_size``.

    Args:
        path: CTranslate2 Whisper directory (``model.bin``, ``config.json``, tokenizer), or a faster-whisper
            model name / hub id (downloaded by faster-whisper: network).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; ``device_index`` picks the GPU.
        compute_type: CTranslate2 compute type (``"default"``, ``"int8"``, ``"float32"``, ``"float16"``, ...).
        beam_size: 1 = greedy, more = beam search.
        batch_size: clips per CTranslate2 ``generate`` call.
        language: e.g. ``"en"``; ``None`` detects it per clip on multilingual models.
        task: ``"transcribe"`` or ``"translate"``.
        cpu_threads: CTranslate2 intra-op threads (0 = its default).
        max_new_tokens: cap on generated tokens per clip (``None``: the model's maximum, 448). A clip caught in
            a repetition loop decodes to the cap, and a batch runs as long as its longest clip, so a cap near
            the longest real transcript (about 6 tokens per second of speech) bounds the cost of loops; the
            capped text is still dropped by the compression-ratio filter.
        name: label stored with every pseudo-label (default: ``path``).
    """

    backend = "faster-whisper"

    def __init__(
        self,
        path: str,
        device: str = "cpu",
        compute_type: str = "default",
        beam_size: int = 1,
        batch_size: int = 8,
        language: Optional[str] = None,
        task: str = "transcribe",
        cpu_threads: int = 0,
        device_index: int = 0,
        max_new_tokens: Optional[int] = None,
        name: Optional[str] = None,
    ) -> None:
        try:
            from faster_whisper import BatchedInferencePipeline, WhisperModel
        except ImportError:
            raise SpeechkdError(
                "the faster-whisper backend needs the optional package: pip install faster-whisper"
            ) from None
        if beam_size < 1 or batch_size < 1:
            raise SpeechkdError(f"beam_size and batch_size must be >= 1, got {beam_size} and {batch_size}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise SpeechkdError(f"max_new_tokens must be >= 1 or None, got {max_new_tokens}")
        local = Path(path).expanduser()
        if local.exists():
            _check_ct2_whisper_dir(local)
        try:
            self.model = WhisperModel(
                str(local) if local.exists() else str(path),
                device=device,
                device_index=device_index,
                compute_type=compute_type,
                cpu_threads=cpu_threads,
                local_files_only=local.exists(),
            )
        except (RuntimeError, ValueError, OSError) as e:
            raise SpeechkdError(f"{path}: faster-whisper cannot load this model ({e})") from None
        fw_logger = logging.getLogger("faster_whisper")
        if fw_logger.level == logging.NOTSET:  # two INFO lines per batch: silenced unless configured
            fw_logger.setLevel(logging.WARNING)
        self.pipeline = BatchedInferencePipeline(self.model)
        self.path = str(local) if local.exists() else str(path)
        self.name = name or str(path)
        self.device, self.compute_type = device, compute_type
        self.beam_size, self.batch_size, self.task = beam_size, batch_size, task
        self.max_new_tokens = max_new_tokens
        self.multilingual = bool(self.model.model.is_multilingual)
        if not self.multilingual and language not in (None, "en"):
            logger.info("%s is English-only: language %r ignored", self.name, language)
        self.language = language if self.multilingual else "en"

    def describe(self) -> dict[str, Any]:
        weights = Path(self.path) / CT2_WEIGHTS_FILE
        desc: dict[str, Any] = {
            "name": self.name,
            "backend": self.backend,
            "path_or_id": self.path,
            "beam_size": self.beam_size,
            "compute_type": self.compute_type,
            "language": self.language,
            "task": self.task if self.multilingual else None,
            "weights_file": str(weights) if weights.is_file() else None,
            "weights_sha256": _sha256_or_none(weights),
        }
        if self.max_new_tokens is not None:  # only when set: label sets made before the option keep their resume key
            desc["max_new_tokens"] = self.max_new_tokens
        return desc

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[Transcript]:
        """Transcribe waveforms ``(S_i,)``: one pipeline call, one segment per clip."""
        wavs = check_audios(audios)
        if not wavs:
            return []
        bounds = np.cumsum([0] + [w.size for w in wavs])
        clips = [
            {"start": (int(a) + _HALF_SAMPLE) / SAMPLE_RATE, "end": (int(b) + _HALF_SAMPLE) / SAMPLE_RATE}
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        segments, _info = self.pipeline.transcribe(
            np.concatenate(wavs),
            language=self.language,
            task=self.task,
            beam_size=self.beam_size,
            batch_size=self.batch_size,
            clip_timestamps=clips,
            without_timestamps=True,
            vad_filter=False,
            multilingual=self.multilingual and self.language is None,
            max_new_tokens=self.max_new_tokens,
        )
        segments = list(segments)
        starts = [round(float(a) / SAMPLE_RATE, 3) for a in bounds[:-1]]
        got = [round(float(s.start), 3) for s in segments]
        if got != starts:
            raise SpeechkdError(
                f"{self.name}: faster-whisper returned segments starting at {got}, expected one per clip at {starts}"
            )
        return [
            Transcript(
                text_raw=s.text.strip(),
                avg_logprob=float(s.avg_logprob),
                compression_ratio=compression_ratio(s.text.strip()),
                no_speech_prob=float(s.no_speech_prob),
            )
            for s in segments
        ]


def load_whisper_teacher(path_or_id: str, backend: str = "transformers", **options: Any) -> WhisperTeacherASR:
    """Load a Whisper ASR teacher; ``options`` go to :class:`TransformersWhisper` or :class:`FasterWhisper`.

    For faster-whisper, ``packaged:tiny.en`` names the pip-packaged CTranslate2 Whisper tiny.en.
    """
    if backend == "transformers":
        return TransformersWhisper(path_or_id, **options)
    if backend == "faster-whisper":
        from speechkd.teachers.ct2_convert import resolve_ct2_dir

        return FasterWhisper(str(resolve_ct2_dir(path_or_id)), **options)
    raise SpeechkdError(f"unknown Whisper backend {backend!r}; use one of {BACKENDS}")
