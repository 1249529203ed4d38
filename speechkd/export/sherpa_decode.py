"""Decode a lhotse CutSet with an exported directory through sherpa-onnx (``speechkd export decode``).

sherpa-onnx computes its own features from the waveform (kaldi fbank, 80 bins, no dither,
``snip_edges=False``), so this is the deployed pipeline end to end. The directory is validated with
:func:`speechkd.export.metadata.validate_export_dir` first: sherpa-onnx would terminate the process
on a missing metadata key.

* offline kinds: ``OfflineRecognizer`` (``from_transducer`` / ``from_zipformer_ctc``), greedy search,
  ``batch_size`` utterances per ``decode_streams`` call;
* ``streaming-transducer``: ``OnlineRecognizer.from_transducer``; each utterance is fed in pieces of
  ``feed_seconds`` as a live stream would be, decoding whenever a chunk is ready, then
  ``tail_padding_seconds`` of silence (at least one chunk, so the last real frames are decoded)
  and ``input_finished``.

Known difference from our own greedy search: sherpa-onnx treats ``<unk>`` as blank in transducer
search (it is neither emitted nor fed to the decoder).

Results: :func:`speechkd.decoding.scoring.write_results` files in ``out_dir`` with tag
``sherpa-<offline|streaming-chunkC-leftL|ctc>[-int8]``, and one ``rtf-<set>-<tag>.txt`` line
(audio seconds, decoding seconds, real-time factor).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from speechkd.errors import SpeechkdError
from speechkd.export.metadata import CTC, STREAMING_TRANSDUCER, TOKENS_FILE, ExportInfo, validate_export_dir

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

FRAME_SHIFT_S = 0.01  # sherpa-onnx's fbank frame shift


@dataclass
class SherpaHyp:
    """One decoded utterance: token symbols as sherpa-onnx reports them, and its text."""

    cut_id: str
    ref: str
    text: str
    tokens: list[str]


@dataclass
class SherpaRun:
    hyps: list[SherpaHyp]
    audio_seconds: float
    decode_seconds: float

    @property
    def rtf(self) -> float:
        return self.decode_seconds / max(self.audio_seconds, 1e-9)


def symbols_to_ids(symbols: Sequence[str], tokens: dict[int, str]) -> list[int]:
    """Token ids of sherpa-onnx's result symbols (it shows sentencepiece's word mark ``▁`` as a space)."""
    ids = {s: i for i, s in tokens.items()}
    out = []
    for sym in symbols:
        key = sym if sym in ids else sym.replace(" ", "\u2581")
        if key not in ids:
            raise SpeechkdError(f"sherpa-onnx returned symbol {sym!r} that is not in tokens.txt")
        out.append(ids[key])
    return out


def decode_tag(info: ExportInfo, int8: bool) -> str:
    """``sherpa-offline``, ``sherpa-streaming-chunk16-left64``, ``sherpa-ctc``, each ``-int8`` when quantised."""
    if info.kind == STREAMING_TRANSDUCER:
        tag = f"sherpa-streaming-chunk{info.manifest['chunk_size']}-left{info.manifest['left_context']}"
    elif info.kind == CTC:
        tag = "sherpa-ctc"
    else:
        tag = "sherpa-offline"
    return tag + ("-int8" if int8 else "")


def make_recognizer(info: ExportInfo, num_threads: int = 1) -> Any:
    """A sherpa-onnx recognizer for a validated export (``info.files`` are fp32 or int8 files)."""
    import sherpa_onnx

    tokens = str(info.directory / TOKENS_FILE)
    rate, dim = int(info.manifest["sample_rate"]), int(info.manifest["feature_dim"])
    f = {k: str(v) for k, v in info.files.items()}
    if info.kind == CTC:
        return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
            f["model"], tokens, num_threads=num_threads, sample_rate=rate, feature_dim=dim
        )
    if info.kind == STREAMING_TRANSDUCER:
        return sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens, f["encoder"], f["decoder"], f["joiner"], num_threads=num_threads, sample_rate=rate,
            feature_dim=dim, decoding_method="greedy_search",
        )
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        f["encoder"], f["decoder"], f["joiner"], tokens, num_threads=num_threads, sample_rate=rate,
        feature_dim=dim, decoding_method="greedy_search",
    )


def _samples(cut: Any, rate: int) -> Any:
    """Mono float32 samples in [-1, 1] at ``rate``."""
    if cut.sampling_rate != rate:
        cut = cut.resample(rate)
    audio = cut.load_audio()
    return audio[0] if audio.ndim == 2 else audio


def _ref(cut: Any) -> str:
    return " ".join(s.text or "" for s in cut.supervisions).strip()


def decode_offline_waveforms(recognizer: Any, wavs: Sequence[Any], rate: int) -> list[tuple[str, list[str]]]:
    """(text, token symbols) per waveform (S,) float32 in [-1, 1], one ``decode_streams`` call."""
    streams = []
    for samples in wavs:
        s = recognizer.create_stream()
        s.accept_waveform(rate, samples)
        streams.append(s)
    recognizer.decode_streams(streams)
    return [(s.result.text, list(s.result.tokens)) for s in streams]


def decode_online_waveform(
    recognizer: Any, samples: Any, rate: int, chunk_frames: int, feed_seconds: float, tail_padding_seconds: float
) -> tuple[str, list[str]]:
    """(text, token symbols) of one waveform fed in ``feed_seconds`` pieces, as a live stream."""
    import numpy as np

    # One chunk plus two frames of silence at least: sherpa-onnx decodes a chunk only once a later frame exists.
    tail = max(tail_padding_seconds, (chunk_frames + 2) * FRAME_SHIFT_S)
    samples = np.concatenate([samples, np.zeros(int(round(tail * rate)), dtype=np.float32)])
    step = max(1, int(round(feed_seconds * rate)))
    s = recognizer.create_stream()
    for start in range(0, len(samples), step):
        s.accept_waveform(rate, samples[start : start + step])
        while recognizer.is_ready(s):
            recognizer.decode_stream(s)
    s.input_finished()
    while recognizer.is_ready(s):
        recognizer.decode_stream(s)
    return recognizer.get_result(s), list(recognizer.tokens(s))


def sherpa_decode_cuts(
    export_dir: PathLike,
    cuts: Iterable[Any],
    int8: bool = False,
    num_threads: int = 1,
    batch_size: int = 8,
    feed_seconds: float = 0.1,
    tail_padding_seconds: float = 0.0,
) -> SherpaRun:
    """Decode ``cuts`` (one supervision text per cut used as reference) with sherpa-onnx."""
    info = validate_export_dir(export_dir, int8=int8)
    recognizer = make_recognizer(info, num_threads)
    rate = int(info.manifest["sample_rate"])
    hyps: list[SherpaHyp] = []
    audio_s = decode_s = 0.0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal decode_s
        wavs = [_samples(c, rate) for c in batch]
        t0 = time.perf_counter()
        out = decode_offline_waveforms(recognizer, wavs, rate)
        decode_s += time.perf_counter() - t0
        hyps.extend(SherpaHyp(c.id, _ref(c), text.strip(), toks) for c, (text, toks) in zip(batch, out))
        batch.clear()

    for cut in cuts:
        audio_s += cut.duration
        if info.kind == STREAMING_TRANSDUCER:
            samples = _samples(cut, rate)
            t0 = time.perf_counter()
            chunk_frames = int(info.manifest["chunk_size"]) * 4
            text, toks = decode_online_waveform(recognizer, samples, rate, chunk_frames, feed_seconds, tail_padding_seconds)
            decode_s += time.perf_counter() - t0
            hyps.append(SherpaHyp(cut.id, _ref(cut), text.strip(), toks))
            continue
        batch.append(cut)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if not hyps:
        raise SpeechkdError(f"no cuts to decode with {export_dir}")
    return SherpaRun(hyps, audio_s, decode_s)


def sherpa_decode(
    export_dir: PathLike,
    cuts_dir: PathLike,
    parts: Sequence[str],
    out_dir: PathLike,
    int8: bool = False,
    num_threads: int = 1,
    tag: Optional[str] = None,
    feed_seconds: float = 0.1,
    tail_padding_seconds: float = 0.0,
) -> dict[tuple[str, str], Any]:
    """Decode ``<cuts_dir>/librispeech_cuts_<part>.jsonl.gz`` for each part; write scoring files to
    ``out_dir``. Returns ``{(part, tag): WerStats}``."""
    from speechkd.decoding.scoring import write_results
    from speechkd.training.asr_experiment import load_cuts

    info = validate_export_dir(export_dir, int8=int8)
    tag = tag or decode_tag(info, int8)
    results = {}
    for part in parts:
        run = sherpa_decode_cuts(
            export_dir, load_cuts(cuts_dir, [part]), int8, num_threads,
            feed_seconds=feed_seconds, tail_padding_seconds=tail_padding_seconds,
        )
        stats = write_results([(h.cut_id, h.ref, h.text) for h in run.hyps], out_dir, part, tag=tag)
        rtf_line = f"audio_s={run.audio_seconds:.2f}\tdecode_s={run.decode_seconds:.3f}\trtf={run.rtf:.4f}\n"
        (Path(out_dir) / f"rtf-{part}-{tag}.txt").write_text(rtf_line, encoding="utf-8")
        log.info("%s %s: WER %.2f%% (%d utts), RTF %.4f", part, tag, stats.wer, len(run.hyps), run.rtf)
        results[(part, tag)] = stats
    return results
