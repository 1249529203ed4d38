"""MVQ-KD targets: a multi-codebook quantizer of one teacher layer, and its indexes stored on lhotse cuts.

Quantizer (:func:`train_quantizer`): the teacher's hidden states at ``layer`` for a seeded sample of
utterances, split by utterance into training and held-out frames, train k2-fsa's ``multi_quantization``
``QuantizerTrainer`` (``num_codebooks`` codebooks of 256 entries = ``num_codebooks`` bytes per frame). The
file (``torch.save`` dict) holds the quantizer's weights, its id, dim, codebooks, the teacher's name and
fingerprint for ``[layer]``, the layer, the frame shift and the relative reconstruction error on the held-out
frames (squared error / squared deviation from the held-out mean).

Extraction (:func:`extract_codebooks`): the cuts of a part are cut into *chunks* of ``chunk_cuts`` cuts in
manifest order; chunk ``j`` belongs to shard ``j % num_shards``. Each chunk is written to
``<output_dir>/chunks/<part>/<j>.u8a`` (:mod:`speechkd.data.uint8_storage`, a lhotse storage backend: raw
``uint8 (T, num_codebooks)`` bytes per cut, no per-cut overhead; a ``TemporalArray`` with the teacher's frame
shift) and is finished when its manifest ``<j>.jsonl.gz`` appears (written atomically after the index file is
closed). A killed run restarts at the
first unfinished chunk and, since batches never cross chunks, gives identical indexes. When every chunk
of a part is finished, ``<output_dir>/librispeech_cuts_<part>.jsonl.gz`` (all cuts, manifest order) and
``metadata.yaml`` (teacher, layer, frame shift, quantizer id and sha256, codebooks, lhotse version, cut-id
checksums, counts) are written.

Training side (:func:`attach_codebooks`): joins the indexes to the training cuts *by cut id*, after
checking the metadata against the configured teacher/layer/codebooks/quantizer; cuts without indexes,
cut-id checksum differences and frame counts off by more than a tolerance are errors naming both values
before any step is taken.

Speed-perturbed cuts are handled, not refused: the teacher runs on the perturbed audio (lhotse applies the
transform on load), so their indexes describe what the student hears; they are counted in the metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import yaml

from speechkd.errors import SpeechkdError
from speechkd.targets.hidden_states import (
    CUTS_PREFIX,
    LOGGED_EXAMPLES,
    ExtractionReport,
    cuts_path,
    teacher_layer_frames,
    write_cuts_atomic,
)
from speechkd.utils.atomic import atomic_write_text
from speechkd.utils.hashing import sha256_file as file_sha256

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

QUANTIZER_FORMAT = 1
METADATA_FORMAT = 1
METADATA_FILE = "metadata.yaml"
CHUNKS_DIR = "chunks"
INDEX_SUFFIX = ".u8a"  # speechkd.data.uint8_storage: raw bytes, no per-cut overhead
DEFAULT_FIELD = "codebook_indexes"
CODEBOOK_SIZE = 256  # multi_quantization's trainer always ends with one byte per codebook
#: metadata keys a training run checks against its configuration and the quantizer file
CHECKED_KEYS = ("teacher_fingerprint", "layer", "num_codebooks", "codebook_size", "quantizer_id",
                "quantizer_sha256", "frame_shift", "field", "refine_iters")
DEFAULT_REFINE_ITERS = 5  # multi_quantization's Quantizer.encode default


@dataclass
class QuantizerReport:
    """What :func:`train_quantizer` did."""

    path: Path
    quantizer_id: str
    dim: int
    num_codebooks: int
    num_utterances: int
    train_frames: int
    heldout_frames: int
    rel_reconstruction_error: float
    seconds: float


# ----------------------------------------------------------------------------------------- quantizer
def cut_ids_sha256(ids: Iterable[str]) -> str:
    """sha256 over the cut ids in the given order (one per line)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\n")
    return h.hexdigest()


def _layer_frames(
    cuts: Any, teacher: Any, layer: int, max_duration: float
) -> tuple[list[np.ndarray], ExtractionReport]:
    """Per usable cut, the teacher's ``(T, D)`` float32 frames of ``layer``."""
    report = ExtractionReport(part="quantizer-sample", cuts_path=Path("-"))
    arrays = [arr[:, 0] for _, arr in teacher_layer_frames(cuts, teacher, [layer], max_duration, report)]
    return arrays, report


def relative_reconstruction_error(quantizer: Any, x: torch.Tensor) -> float:
    """``|x - decode(encode(x))|^2 / |x - mean(x)|^2`` over frames ``x (T, D)`` (0: perfect, 1: as bad as the mean)."""
    with torch.no_grad():
        x = x.float()
        approx = quantizer.decode(quantizer.encode(x))
        err = (x - approx).pow(2).sum()
        var = (x - x.mean(dim=0, keepdim=True)).pow(2).sum().clamp_min(1e-20)
        return float(err / var)


def train_quantizer(
    cuts: Any,
    teacher: Any,
    layer: int,
    out_path: PathLike,
    num_codebooks: int = 8,
    num_utterances: int = 1000,
    heldout_fraction: float = 0.1,
    batch_frames: int = 600,
    phase_one_iters: int = 10000,
    phase_two_iters: int = 10000,
    lr: float = 0.005,
    seed: int = 0,
    max_duration: float = 60.0,
) -> QuantizerReport:
    """Train a quantizer of ``teacher``'s ``layer`` on a sample of ``cuts`` and save it (module docstring)."""
    import time

    from multi_quantization import QuantizerTrainer

    from speechkd.training.checkpoint import save_checkpoint_atomic

    teacher.config_fingerprint([layer])  # validates the layer index
    if num_codebooks not in (1, 2, 4, 8, 16, 32):
        raise SpeechkdError(f"num_codebooks={num_codebooks}: multi_quantization supports 1, 2, 4, 8, 16 or 32")
    if not 0.0 < heldout_fraction < 1.0:
        raise SpeechkdError(f"heldout_fraction={heldout_fraction} must be in (0, 1)")
    start = time.time()
    sample = cuts.to_eager().shuffle(rng=random.Random(seed)).subset(first=min(num_utterances, len(cuts.to_eager())))
    arrays, report = _layer_frames(sample, teacher, layer, max_duration)
    if len(arrays) < 2:
        raise SpeechkdError(f"quantizer training needs at least 2 usable utterances, got {len(arrays)} "
                            f"(skipped: { {k: len(v) for k, v in report.skipped.items()} })")
    n_held = min(len(arrays) - 1, max(1, int(round(heldout_fraction * len(arrays)))))
    train = torch.from_numpy(np.concatenate(arrays[:-n_held]))  # (F, D)
    held = torch.from_numpy(np.concatenate(arrays[-n_held:]))  # (F_h, D)
    random.seed(seed)  # QuantizerTrainer draws from python's random and torch's generator
    torch.manual_seed(seed)
    device = teacher.device
    trainer = QuantizerTrainer(dim=train.shape[1], bytes_per_frame=num_codebooks, device=device,
                               phase_one_iters=phase_one_iters, phase_two_iters=phase_two_iters, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    while not trainer.done():
        idx = torch.randint(0, train.shape[0], (batch_frames,), generator=gen)
        trainer.step(train[idx].to(device))
    quantizer = trainer.get_quantizer().cpu().eval()
    rel = relative_reconstruction_error(quantizer, held)
    desc = teacher.describe([layer])
    payload = {
        "format_version": QUANTIZER_FORMAT,
        "quantizer_id": quantizer.get_id(),
        "dim": int(quantizer.dim),
        "num_codebooks": int(quantizer.num_codebooks),
        "codebook_size": int(quantizer.codebook_size),
        "teacher": desc["name"],
        "teacher_fingerprint": desc["fingerprint"],
        "layer": int(layer),
        "frame_shift": float(teacher.frame_shift),
        "num_utterances": len(arrays),
        "train_frames": int(train.shape[0]),
        "heldout_frames": int(held.shape[0]),
        "rel_reconstruction_error": rel,
        "options": {"phase_one_iters": phase_one_iters, "phase_two_iters": phase_two_iters, "lr": lr,
                    "batch_frames": batch_frames, "seed": seed},
        "state_dict": quantizer.state_dict(),
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_atomic(payload, out_path)
    seconds = time.time() - start
    log.info("quantizer %s (%d codebooks, dim %d, layer %d): relative reconstruction error %.4f on %d held-out "
             "frames; %.1f s", payload["quantizer_id"], num_codebooks, payload["dim"], layer, rel, held.shape[0],
             seconds)
    return QuantizerReport(out_path, payload["quantizer_id"], payload["dim"], num_codebooks, len(arrays),
                           payload["train_frames"], payload["heldout_frames"], rel, seconds)


def read_quantizer_info(path: PathLike) -> dict[str, Any]:
    """The quantizer file's description (everything but the weights)."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"quantizer {path} not found: run `speechkd distill train-quantizer` first")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or obj.get("format_version") != QUANTIZER_FORMAT:
        raise SpeechkdError(f"{path} is not a speechkd quantizer (format_version {QUANTIZER_FORMAT})")
    return obj


def load_quantizer(path: PathLike) -> tuple[Any, dict[str, Any]]:
    """``(multi_quantization.Quantizer in eval mode, its description)``."""
    from multi_quantization import Quantizer

    info = read_quantizer_info(path)
    q = Quantizer(dim=info["dim"], codebook_size=info["codebook_size"], num_codebooks=info["num_codebooks"])
    q.load_state_dict(info.pop("state_dict"))
    if q.get_id() != info["quantizer_id"]:
        raise SpeechkdError(f"{path}: quantizer id {q.get_id()!r} differs from the recorded {info['quantizer_id']!r}")
    return q.eval(), info


def check_quantizer_teacher(info: dict[str, Any], teacher: Any, layer: int, path: PathLike) -> None:
    """SpeechkdError unless the quantizer was trained on ``teacher``'s ``layer``."""
    expected = teacher.config_fingerprint([layer])
    problems = []
    if info["layer"] != layer:
        problems.append(f"layer: quantizer {info['layer']}, configured {layer}")
    if info["teacher_fingerprint"] != expected:
        problems.append(f"teacher fingerprint: quantizer {info['teacher_fingerprint']!r} ({info['teacher']}), "
                        f"configured {expected!r} ({teacher.name})")
    if info["dim"] != teacher.hidden_size:
        problems.append(f"dim: quantizer {info['dim']}, teacher hidden size {teacher.hidden_size}")
    if problems:
        raise SpeechkdError(f"quantizer {path} does not belong to this teacher/layer: " + "; ".join(problems)
                            + ". Train a quantizer for it (speechkd distill train-quantizer).")


# ---------------------------------------------------------------------------------------- extraction
@dataclass
class CodebookExtraction:
    """What :func:`extract_codebooks` did for one part and shard."""

    part: str
    shard_id: int
    num_shards: int
    chunks_done: int = 0  # chunks written by this call
    chunks_skipped: int = 0  # chunks found finished
    num_cuts: int = 0
    num_frames: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    finalized: bool = False
    skipped: dict[str, list[str]] = field(default_factory=dict)


def chunk_dir(output_dir: PathLike, part: str) -> Path:
    return Path(output_dir) / CHUNKS_DIR / part


def shard_position(num_shards: Optional[int], shard_id: Optional[int]) -> tuple[int, int]:
    """``(num_shards, shard_id)``: the given ones, else torchrun's world size and rank, else (1, 0)."""
    from speechkd.training.dist import dist_info_from_env

    if num_shards is None and shard_id is None:
        env = dist_info_from_env()
        return env.world_size, env.rank
    num_shards = 1 if num_shards is None else num_shards
    shard_id = 0 if shard_id is None else shard_id
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise SpeechkdError(f"--shard-id {shard_id} must be in 0..{num_shards - 1} (--num-shards {num_shards})")
    return num_shards, shard_id


def codebooks_metadata(qinfo: dict[str, Any], quantizer_sha: str, field_name: str, refine_iters: int) -> dict[str, Any]:
    import lhotse

    return {
        "format_version": METADATA_FORMAT,
        "teacher": qinfo["teacher"],
        "teacher_fingerprint": qinfo["teacher_fingerprint"],
        "layer": qinfo["layer"],
        "frame_shift": qinfo["frame_shift"],
        "quantizer_id": qinfo["quantizer_id"],
        "quantizer_sha256": quantizer_sha,
        "num_codebooks": qinfo["num_codebooks"],
        "codebook_size": qinfo["codebook_size"],
        "field": field_name,
        "refine_iters": refine_iters,
        "dtype": "uint8",
        "layout": "(T, num_codebooks): time at the teacher's frame shift, one byte per codebook",
        "storage": "speechkd_uint8_chunky (raw bytes; lhotse backend of speechkd.data.uint8_storage), a file per chunk",
        "lhotse_version": lhotse.__version__,
        "parts": {},
    }


def _encode_chunk(
    chunk: list[Any], teacher: Any, quantizer: Any, layer: int, index_path: Path, field_name: str,
    max_duration: float, report: ExtractionReport, refine_iters: int,
) -> list[Any]:
    """Indexes of one chunk's cuts into ``index_path``; the cuts with their new field."""
    from speechkd.data.uint8_storage import Uint8ChunkyWriter

    kept = []
    with Uint8ChunkyWriter(index_path, mode="wb") as writer:
        for cut, arr in teacher_layer_frames(chunk, teacher, [layer], max_duration, report):
            with torch.no_grad():
                x = torch.from_numpy(arr[:, 0]).to(quantizer.to_logits.weight.device)
                idx = quantizer.encode(x, refine_indexes_iters=refine_iters)
            idx = idx.to(torch.uint8).cpu().numpy()  # (T, num_codebooks)
            manifest = writer.store_array(cut.id, idx, frame_shift=teacher.frame_shift, temporal_dim=0, start=cut.start)
            kept.append(cut.with_custom(field_name, manifest))
            report.num_frames += idx.shape[0]
    return kept


def extract_codebooks(
    cuts: Any,
    teacher: Any,
    quantizer_path: PathLike,
    output_dir: PathLike,
    part: str,
    layer: Optional[int] = None,
    num_shards: Optional[int] = None,
    shard_id: Optional[int] = None,
    chunk_cuts: int = 100,
    max_duration: float = 60.0,
    field_name: str = DEFAULT_FIELD,
    stop_after_chunks: Optional[int] = None,
    refine_iters: int = DEFAULT_REFINE_ITERS,
) -> CodebookExtraction:
    """Store the quantizer's indexes of ``teacher``'s layer for this shard's chunks of ``cuts`` (module docstring).

    ``layer`` (default: the quantizer's) must be the quantizer's layer and ``teacher`` its teacher.
    ``stop_after_chunks`` ends the call after writing that many chunks (tests of resumption).
    ``refine_iters``: the quantizer's index-refinement iterations per frame (most of the encoding time).
    """
    import time

    start = time.time()
    num_shards, shard_id = shard_position(num_shards, shard_id)
    if chunk_cuts < 1:
        raise SpeechkdError(f"chunk_cuts={chunk_cuts} must be >= 1")
    quantizer, qinfo = load_quantizer(quantizer_path)
    layer = qinfo["layer"] if layer is None else layer
    check_quantizer_teacher(qinfo, teacher, layer, quantizer_path)
    quantizer.to(teacher.device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with _metadata_lock(output_dir):
        _merge_metadata(output_dir, codebooks_metadata(qinfo, file_sha256(quantizer_path), field_name, refine_iters))
    cdir = chunk_dir(output_dir, part)
    cdir.mkdir(parents=True, exist_ok=True)
    all_cuts = list(cuts)
    chunks = [all_cuts[i : i + chunk_cuts] for i in range(0, len(all_cuts), chunk_cuts)]
    result = CodebookExtraction(part, shard_id, num_shards)
    for j in range(shard_id, len(chunks), num_shards):
        done = cdir / f"{j:06d}.jsonl.gz"
        if done.is_file():
            result.chunks_skipped += 1
            continue
        if stop_after_chunks is not None and result.chunks_done >= stop_after_chunks:
            break
        report = ExtractionReport(part=part, cuts_path=done)
        kept = _encode_chunk(chunks[j], teacher, quantizer, layer, cdir / f"{j:06d}{INDEX_SUFFIX}", field_name,
                             max_duration, report, refine_iters)
        atomic_write_text(cdir / f"{j:06d}.yaml", yaml.safe_dump(
            {"num_cuts": len(kept), "num_frames": report.num_frames,
             "audio_seconds": float(sum(c.duration for c in kept)),
             "skipped": {k: list(v) for k, v in report.skipped.items()}}))
        write_cuts_atomic(kept, done)  # last: marks the chunk finished
        result.chunks_done += 1
        result.num_cuts += len(kept)
        result.num_frames += report.num_frames
        result.audio_seconds += float(sum(c.duration for c in kept))
        for k, v in report.skipped.items():
            result.skipped.setdefault(k, []).extend(v)
    result.seconds = time.time() - start
    for reason, ids in result.skipped.items():
        log.warning("%s: %d cut(s) skipped (%s), e.g. %s", part, len(ids), reason, ids[:LOGGED_EXAMPLES])
    result.finalized = finalize_part(output_dir, part, all_cuts, len(chunks))
    return result


def finalize_part(output_dir: Path, part: str, source_cuts: Sequence[Any], num_chunks: int) -> bool:
    """When every chunk of ``part`` is finished: its cut manifest and its entry in ``metadata.yaml``."""
    from lhotse import CutSet

    cdir = chunk_dir(output_dir, part)
    paths = [cdir / f"{j:06d}.jsonl.gz" for j in range(num_chunks)]
    if not all(p.is_file() for p in paths):
        log.info("%s: %d of %d chunks finished; the part is complete when every shard has run", part,
                 sum(p.is_file() for p in paths), num_chunks)
        return False
    kept = [c for p in paths for c in CutSet.from_file(p)]
    infos = [yaml.safe_load((cdir / f"{j:06d}.yaml").read_text()) for j in range(num_chunks)]
    skipped: dict[str, int] = {}
    for info in infos:
        for k, v in (info.get("skipped") or {}).items():
            skipped[k] = skipped.get(k, 0) + len(v)
    write_cuts_atomic(kept, cuts_path(output_dir, part))
    entry = {
        "num_cuts": len(kept),
        "num_frames": int(sum(i["num_frames"] for i in infos)),
        "audio_seconds": float(sum(i["audio_seconds"] for i in infos)),
        "num_speed_perturbed": sum(1 for c in kept if _is_perturbed(c)),
        "skipped": skipped,
        "cut_ids_sha256": cut_ids_sha256(c.id for c in kept),
        "source_cut_ids_sha256": cut_ids_sha256(c.id for c in source_cuts),
        "num_source_cuts": len(source_cuts),
    }
    with _metadata_lock(output_dir):  # shards of other parts may finalize at the same time: re-read, then add
        meta = read_codebooks_metadata(output_dir)
        meta.setdefault("parts", {})[part] = entry
        atomic_write_text(output_dir / METADATA_FILE, yaml.safe_dump(meta, sort_keys=False))
    log.info("%s: %d cuts, %d frames of codebook indexes in %s", part, len(kept), entry["num_frames"],
             output_dir)
    return True


@contextlib.contextmanager
def _metadata_lock(output_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``<output_dir>/.metadata.lock`` for read-modify-write of ``metadata.yaml``."""
    import fcntl

    with open(output_dir / ".metadata.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_perturbed(cut: Any) -> bool:
    rec = getattr(cut, "recording", None)
    return bool(rec is not None and getattr(rec, "transforms", None))


def read_codebooks_metadata(codebook_dir: PathLike) -> dict[str, Any]:
    path = Path(codebook_dir) / METADATA_FILE
    if not path.is_file():
        raise SpeechkdError(
            f"{path} not found: is {codebook_dir} a directory made by `speechkd distill extract-codebooks`?"
        )
    meta = yaml.safe_load(path.read_text())
    if not isinstance(meta, dict) or meta.get("format_version") != METADATA_FORMAT or "quantizer_id" not in meta:
        raise SpeechkdError(f"{path}: not a speechkd codebook-index description (format_version {METADATA_FORMAT})")
    return meta


def _merge_metadata(output_dir: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Existing metadata when it describes the same indexes (parts accumulate); another quantizer is an error."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if not (output_dir / METADATA_FILE).is_file():
        atomic_write_text(output_dir / METADATA_FILE, yaml.safe_dump(new, sort_keys=False))
        return new
    old = read_codebooks_metadata(output_dir)
    diff = [k for k in CHECKED_KEYS if old.get(k) != new.get(k)]
    if diff:
        raise SpeechkdError(
            f"{output_dir / METADATA_FILE} describes other indexes "
            f"({', '.join(f'{k}: stored {old.get(k)!r} vs now {new.get(k)!r}' for k in diff)}); "
            "use another --output-dir or remove it"
        )
    old["parts"] = old.get("parts") or {}
    return old


# ------------------------------------------------------------------------------------ training side
def check_codebooks_metadata(meta: dict[str, Any], expected: dict[str, Any], where: PathLike) -> None:
    """SpeechkdError naming both values for every key of ``expected`` that differs from ``meta``."""
    problems = [f"{k}: stored {meta.get(k)!r}, configured {v!r}" for k, v in expected.items() if meta.get(k) != v]
    if problems:
        raise SpeechkdError(f"{Path(where) / METADATA_FILE}: codebook indexes do not match this run: "
                            + "; ".join(problems) + ". Re-run the extraction stages for this configuration.")


def attach_codebooks(
    cuts: Any,
    codebook_dir: PathLike,
    parts: Sequence[str],
    field_name: str,
    frame_tolerance: int,
    what: str = "training",
) -> Any:
    """The eager CutSet ``cuts`` with each cut's codebook indexes (field ``field_name``) joined by cut id.

    Errors (before training starts): a part not extracted, a manifest whose cut ids do not give the
    checksum in the metadata, cuts without indexes (counted, with examples), or indexes whose frame count
    differs from ``duration / frame_shift`` by more than ``frame_tolerance`` frames.
    """
    from lhotse import CutSet

    meta = read_codebooks_metadata(codebook_dir)
    index: dict[str, Any] = {}
    for part in parts:
        pinfo = (meta.get("parts") or {}).get(part)
        if pinfo is None:
            raise SpeechkdError(f"{Path(codebook_dir) / METADATA_FILE}: no codebook indexes for part {part!r} "
                                f"(extracted: {sorted(meta.get('parts') or {})})")
        stored = CutSet.from_file(cuts_path(codebook_dir, part))
        ids = [c.id for c in stored]
        got = cut_ids_sha256(ids)
        if got != pinfo["cut_ids_sha256"]:
            raise SpeechkdError(f"{cuts_path(codebook_dir, part)}: cut ids checksum {got[:16]} differs from the "
                                f"metadata's {pinfo['cut_ids_sha256'][:16]} ({len(ids)} vs {pinfo['num_cuts']} cuts): "
                                "the manifest was changed after extraction")
        for c in stored:
            index[c.id] = getattr(c, field_name)
    cuts = cuts.to_eager()
    missing = [c.id for c in cuts if c.id not in index]
    if missing:
        raise SpeechkdError(
            f"{len(missing)} of {len(cuts)} {what} cut(s) have no codebook indexes in {codebook_dir} "
            f"(parts {list(parts)}; e.g. {missing[:LOGGED_EXAMPLES]}; the indexes have {len(index)} cuts): "
            "the cut ids of the features and of the indexes differ; re-run the extraction on these cuts"
        )
    frame_shift = float(meta["frame_shift"])
    out = []
    for c in cuts:
        arr = index[c.id]
        expected = int(round(c.duration / frame_shift))
        if abs(arr.shape[0] - expected) > frame_tolerance:
            raise SpeechkdError(
                f"cut {c.id!r}: {arr.shape[0]} frames of codebook indexes but {expected} expected from its duration "
                f"{c.duration:.3f} s at frame shift {frame_shift} (tolerance {frame_tolerance})"
            )
        out.append(c.with_custom(field_name, arr))
    log.info("%s: codebook indexes joined to %d cuts (%s)", what, len(out), codebook_dir)
    return CutSet.from_cuts(out)


__all__ = [
    "CHECKED_KEYS", "CODEBOOK_SIZE", "CUTS_PREFIX", "DEFAULT_FIELD", "QuantizerReport", "CodebookExtraction",
    "attach_codebooks", "check_codebooks_metadata", "check_quantizer_teacher", "extract_codebooks",
    "finalize_part", "load_quantizer", "read_codebooks_metadata", "read_quantizer_info", "train_quantizer",
]
