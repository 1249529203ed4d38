"""Pre-extracted teacher hidden states for layer-wise distillation (DistilHuBERT), stored on lhotse cuts.

``extract_hidden_states(cuts, teacher, layers, output_dir, part)`` runs the frozen teacher once over a
CutSet and stores, per cut, the chosen layers as one fp16 array ``(T, H, D)`` (time first, ``H`` =
``len(layers)`` in the given order) in ``<output_dir>/<field>_<part>.<chunk>.h5`` (lhotse ``NumpyHdf5Writer``:
lossless, unlike lilcom). The cuts, each with a ``TemporalArray`` custom field ``<field>`` (frame shift =
the teacher's), go to ``<output_dir>/librispeech_cuts_<part>.jsonl.gz``, so the training side reads
them with the usual ``load_cuts(output_dir, parts)`` and the datamodule collates ``batch["targets"]
[field] (N, T, H, D)``.

``<output_dir>/metadata.yaml`` describes the targets (teacher name, kind, model type, fingerprint of
config + weights + layers, layers, frame shift, dtype, field, hidden size, per-part counts).
:func:`check_targets_metadata` compares it with the teacher and layers a training run is configured
with and raises :class:`~speechkd.errors.SpeechkdError` on any mismatch.

Cuts whose audio cannot be loaded, or that are too short for the teacher, are left out of the output
cut set; they are counted by reason in the metadata and logged by id.

Resumable at scale: a part is written in chunks of ``chunk_cuts`` input cuts (manifest order). Chunk ``k``
gets its own HDF5 file ``<field>_<part>.<k>.h5`` and, once that file is closed, its cuts in
``chunks/<part>.<k>.jsonl.gz`` and a ``chunks/<part>.<k>.done`` marker (input cut ids, counts), both
written atomically. A rerun skips finished chunks without loading their audio, so a crash loses at most one
chunk; only one chunk's cuts are in memory. When every chunk is done, the chunk manifests are concatenated
(streamed) into the part's cut manifest.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_to_file, atomic_write_text

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

DEFAULT_FIELD = "teacher_hidden"
METADATA_FILE = "metadata.yaml"
FORMAT_VERSION = 1
CUTS_PREFIX = "librispeech_cuts"
STORAGE_DTYPES = ("float16", "float32")
#: metadata keys that must agree between the stored targets and the training configuration
CHECKED_KEYS = ("fingerprint", "layers", "frame_shift", "field", "hidden_size")
LOGGED_EXAMPLES = 5
DEFAULT_CHUNK_CUTS = 2000  # input cuts per resumable chunk (~7 h of LibriSpeech)
CHUNKS_DIR = "chunks"


@dataclass
class ExtractionReport:
    """What :func:`extract_hidden_states` did for one part."""

    part: str
    cuts_path: Path
    num_cuts: int = 0
    num_frames: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> cut ids


def cuts_path(output_dir: PathLike, part: str) -> Path:
    return Path(output_dir) / f"{CUTS_PREFIX}_{part}.jsonl.gz"


def storage_path(output_dir: PathLike, part: str, field_name: str = DEFAULT_FIELD, chunk: int = 0) -> Path:
    return Path(output_dir) / f"{field_name}_{part}.{chunk:05d}.h5"


def chunk_paths(output_dir: PathLike, part: str, chunk: int) -> tuple[Path, Path]:
    """``(cuts manifest, done marker)`` of one chunk of a part."""
    base = Path(output_dir) / CHUNKS_DIR
    return base / f"{part}.{chunk:05d}.jsonl.gz", base / f"{part}.{chunk:05d}.done"


def targets_metadata(
    teacher: Any, layers: Sequence[int], field_name: str = DEFAULT_FIELD, dtype: str = "float16"
) -> dict[str, Any]:
    """The self-description of targets made by ``teacher`` (a :class:`~speechkd.teachers.Teacher`)."""
    desc = teacher.describe(layers)
    return {
        "format_version": FORMAT_VERSION,
        "teacher": desc["name"],
        "kind": desc["kind"],
        "model_type": desc["model_type"],
        "fingerprint": desc["fingerprint"],
        "weights_sha256": desc["weights_sha256"],
        "layers": [int(i) for i in layers],
        "frame_shift": float(teacher.frame_shift),
        "hidden_size": int(teacher.hidden_size),
        "dtype": dtype,
        "field": field_name,
        "layout": "(T, H, D): time, target layer (in 'layers' order), hidden",
        "storage": "lhotse NumpyHdf5Writer",
        "parts": {},
    }


def read_targets_metadata(targets_dir: PathLike) -> dict[str, Any]:
    path = Path(targets_dir) / METADATA_FILE
    if not path.is_file():
        raise SpeechkdError(f"{path} not found: is {targets_dir} a directory made by `speechkd distill extract-targets`?")
    meta = yaml.safe_load(path.read_text())
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise SpeechkdError(f"{path}: not a speechkd hidden-state target description (format_version {FORMAT_VERSION})")
    return meta


def check_targets_metadata(
    targets_dir: PathLike,
    teacher: Any,
    layers: Sequence[int],
    field_name: str = DEFAULT_FIELD,
    parts: Sequence[str] = (),
) -> dict[str, Any]:
    """Raise SpeechkdError unless the targets in ``targets_dir`` were made by ``teacher`` for ``layers``.

    Compares :data:`CHECKED_KEYS` (fingerprint = teacher config + weights + layers) and that every part
    in ``parts`` was extracted. Returns the metadata.
    """
    meta = read_targets_metadata(targets_dir)
    expected = targets_metadata(teacher, layers, field_name, dtype=str(meta.get("dtype")))
    path = Path(targets_dir) / METADATA_FILE
    problems = []
    for key in CHECKED_KEYS:
        if meta.get(key) != expected[key]:
            problems.append(f"{key}: stored {meta.get(key)!r}, configured {expected[key]!r}")
    if problems:
        raise SpeechkdError(
            f"{path}: pre-extracted targets do not match this run (made by teacher {meta.get('teacher')!r} for layers "
            f"{meta.get('layers')}; this run uses teacher {teacher.name!r}, layers {list(layers)}): "
            + "; ".join(problems)
            + ". Re-run `speechkd distill extract-targets` for this teacher and layer set."
        )
    missing = [p for p in parts if p not in (meta.get("parts") or {})]
    if missing:
        raise SpeechkdError(f"{path}: no targets extracted for part(s) {missing}; extracted: {sorted(meta.get('parts') or {})}")
    return meta


def _batches(cuts: Any, max_duration: float) -> Iterator[list[Any]]:
    """Cuts in manifest order, grouped while their total duration stays within ``max_duration``."""
    batch: list[Any] = []
    total = 0.0
    for cut in cuts:
        if batch and total + cut.duration > max_duration:
            yield batch
            batch, total = [], 0.0
        batch.append(cut)
        total += cut.duration
    if batch:
        yield batch


def _load_mono(cut: Any, sample_rate: int) -> np.ndarray:
    """``(S,)`` float32 samples of a mono cut at ``sample_rate``."""
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    audio = cut.load_audio()
    if audio.ndim != 2 or audio.shape[0] != 1:
        raise SpeechkdError(f"cut {cut.id}: expected mono audio, got shape {audio.shape}")
    return audio[0].astype(np.float32)


def _pad(wavs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``(S_i,)`` arrays -> ``(N, S_max)`` zero-padded tensor and ``(N,)`` lengths."""
    lens = torch.tensor([len(w) for w in wavs], dtype=torch.long)
    out = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, lens


def teacher_targets(teacher: Any, wavs: torch.Tensor, wav_lens: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``teacher`` and keep ``layers``: ``(N, S)`` -> ``((N, H, T, D) float32, lens (N,))``."""
    from speechkd.models.distilhubert import stack_target_layers

    out = teacher(wavs, wav_lens)
    return stack_target_layers(out.hidden_states, layers).float(), out.lens


def _min_samples(teacher: Any) -> int:
    """Fewest samples that give the teacher at least one frame."""
    n = 1
    while int(teacher.output_lengths(torch.tensor([n]))[0]) < 1:
        n *= 2
    return n


def teacher_layer_frames(
    cuts: Any, teacher: Any, layers: Sequence[int], max_duration: float, report: ExtractionReport
) -> Iterator[tuple[Any, np.ndarray]]:
    """``(cut, (T, H, D) float32 array)`` for every usable cut of ``cuts``, in manifest order.

    The teacher runs on batches of up to ``max_duration`` seconds; unreadable or too-short cuts are
    recorded in ``report.skipped`` (by reason) and not yielded. Shared by every producer of stored
    teacher targets (hidden states here, codebook indexes in :mod:`speechkd.targets.codebooks`).
    """
    min_samples = _min_samples(teacher)
    for batch in _batches(cuts, max_duration):
        loaded = _load_batch(batch, teacher.sample_rate, min_samples, report)
        if not loaded:
            continue
        wavs, lens = _pad([w for _, w in loaded])
        targets, frame_lens = teacher_targets(teacher, wavs, lens, layers)  # (N, H, T, D)
        for i, (cut, _) in enumerate(loaded):
            yield cut, targets[i, :, : int(frame_lens[i])].transpose(0, 1).cpu().numpy()  # (T, H, D)


def _chunks(cuts: Any, size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for cut in cuts:
        batch.append(cut)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_done_chunk(path: Path, ids: Sequence[str]) -> Optional[dict[str, Any]]:
    """The chunk's marker when it is finished for exactly these input cuts, else None (redo it)."""
    if not path.is_file() or not path.with_name(path.name[: -len(".done")] + ".jsonl.gz").is_file():
        return None
    marker = json.loads(path.read_text())
    if marker.get("input") != [ids[0], ids[-1], len(ids)]:
        raise SpeechkdError(
            f"{path} was written for other input cuts ({marker.get('input')} vs {[ids[0], ids[-1], len(ids)]}): "
            "did the cut manifest or chunk_cuts change? Remove the part's chunks to extract it again"
        )
    return marker


def _extract_chunk(
    chunk: list[Any], teacher: Any, layers: Sequence[int], h5_path: Path, field_name: str, max_duration: float,
    dtype: str, report: ExtractionReport,
) -> tuple[list[Any], int]:
    """Teacher targets of one chunk into ``h5_path`` (overwritten); returns ``(kept cuts, frames)``."""
    from lhotse.features.io import NumpyHdf5Writer

    kept, frames = [], 0
    with NumpyHdf5Writer(h5_path, mode="w") as writer:
        for cut, arr in teacher_layer_frames(chunk, teacher, layers, max_duration, report):
            arr = arr.astype(dtype)  # (T, H, D)
            manifest = writer.store_array(cut.id, arr, frame_shift=teacher.frame_shift, temporal_dim=0, start=cut.start)
            kept.append(cut.with_custom(field_name, manifest))
            frames += arr.shape[0]
    return kept, frames


def extract_hidden_states(
    cuts: Any,
    teacher: Any,
    layers: Sequence[int],
    output_dir: PathLike,
    part: str,
    field_name: str = DEFAULT_FIELD,
    max_duration: float = 60.0,
    dtype: str = "float16",
    chunk_cuts: int = DEFAULT_CHUNK_CUTS,
) -> ExtractionReport:
    """Store ``teacher``'s hidden states ``layers`` for every cut of ``cuts`` (see module docstring).

    Args:
        cuts: lhotse CutSet (mono recordings; resampled to the teacher's rate when needed).
        teacher: a frozen :class:`~speechkd.teachers.Teacher`.
        layers: teacher hidden-state indices ``0..num_layers`` to keep, in head order.
        output_dir: receives the cut manifest, the HDF5 storage and ``metadata.yaml``.
        part: part name used in the file names.
        max_duration: seconds of audio per teacher batch.
        dtype: storage dtype (:data:`STORAGE_DTYPES`).
        chunk_cuts: input cuts per resumable chunk (its own HDF5 file and manifest).
    """
    if dtype not in STORAGE_DTYPES:
        raise SpeechkdError(f"targets dtype {dtype!r}: use one of {STORAGE_DTYPES}")
    if chunk_cuts < 1:
        raise SpeechkdError(f"chunk_cuts must be >= 1, got {chunk_cuts}")
    teacher.config_fingerprint(layers)  # validates the layer indices against the teacher
    output_dir = Path(output_dir)
    (output_dir / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
    meta = _merge_metadata(output_dir, targets_metadata(teacher, layers, field_name, dtype))
    report = ExtractionReport(part=part, cuts_path=cuts_path(output_dir, part))
    num_chunks = resumed = 0
    for k, chunk in enumerate(_chunks(cuts, chunk_cuts)):
        num_chunks += 1
        manifest_path, done = chunk_paths(output_dir, part, k)
        ids = [c.id for c in chunk]
        marker = _read_done_chunk(done, ids)
        if marker is None:
            chunk_report = ExtractionReport(part=part, cuts_path=manifest_path)
            h5 = storage_path(os.path.abspath(output_dir), part, field_name, k)  # absolute paths in the manifest
            kept, frames = _extract_chunk(chunk, teacher, layers, h5, field_name, max_duration, dtype, chunk_report)
            write_cuts_atomic(kept, manifest_path)
            marker = {"input": [ids[0], ids[-1], len(ids)], "num_cuts": len(kept), "num_frames": frames,
                      "skipped": chunk_report.skipped}
            atomic_write_text(done, json.dumps(marker) + "\n")
        else:
            resumed += 1
        report.num_cuts += marker["num_cuts"]
        report.num_frames += marker["num_frames"]
        for reason, skipped_ids in marker["skipped"].items():
            report.skipped.setdefault(reason, []).extend(skipped_ids)
    if resumed:
        log.info("%s: %d of %d chunks were already extracted (skipped)", part, resumed, num_chunks)
    _concat_gz_lines([chunk_paths(output_dir, part, k)[0] for k in range(num_chunks)], report.cuts_path)
    for reason, ids in report.skipped.items():
        log.warning("%s: %d cut(s) skipped (%s), e.g. %s", part, len(ids), reason, ids[:LOGGED_EXAMPLES])
    meta["parts"][part] = {
        "num_cuts": report.num_cuts,
        "num_frames": report.num_frames,
        "num_chunks": num_chunks,
        "skipped": {k: len(v) for k, v in report.skipped.items()},
    }
    atomic_write_text(output_dir / METADATA_FILE, yaml.safe_dump(meta, sort_keys=False))
    log.info("%s: stored %d frames of layers %s for %d cuts in %s (%d chunks)", part, report.num_frames,
             list(layers), report.num_cuts, output_dir, num_chunks)
    return report


def write_cuts_atomic(cuts: Sequence[Any], path: Path) -> None:
    from lhotse import CutSet

    atomic_to_file(CutSet.from_cuts(cuts), path)


def _concat_gz_lines(inputs: Sequence[Path], output: Path) -> None:
    """Stream the lines of gzipped manifests into one (atomically)."""
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as w:
        for path in inputs:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                shutil.copyfileobj(f, w)
    os.replace(tmp, output)


def _load_batch(batch: list[Any], sample_rate: int, min_samples: int, report: ExtractionReport) -> list[tuple[Any, np.ndarray]]:
    """Load each cut's audio; unreadable or too-short cuts are recorded in ``report.skipped``."""
    loaded = []
    for cut in batch:
        try:
            wav = _load_mono(cut, sample_rate)
        except SpeechkdError:
            raise
        except Exception as e:  # noqa: BLE001 - any audio backend error means "cannot read this cut"
            log.debug("cut %s: audio not readable: %s", cut.id, e)
            report.skipped.setdefault("unreadable_audio", []).append(cut.id)
            continue
        if len(wav) < min_samples:
            report.skipped.setdefault("too_short_for_teacher", []).append(cut.id)
            continue
        loaded.append((cut, wav))
    return loaded


def _merge_metadata(output_dir: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Existing metadata of ``output_dir`` when it describes the same targets (parts accumulate), else ``new``.

    A directory holding targets of another teacher/layer set is an error (never mixed).
    """
    path = output_dir / METADATA_FILE
    if not path.is_file():
        return new
    old = read_targets_metadata(output_dir)
    diff = [k for k in (*CHECKED_KEYS, "dtype") if old.get(k) != new.get(k)]
    if diff:
        raise SpeechkdError(
            f"{path} describes other targets ({', '.join(f'{k}: {old.get(k)!r} vs {new.get(k)!r}' for k in diff)}); "
            "use another --output-dir or remove it"
        )
    old["parts"] = old.get("parts") or {}
    return old

