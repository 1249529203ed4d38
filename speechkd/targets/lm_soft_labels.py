"""Masked-LM soft labels of training transcripts, stored on lhotse cuts: sharded, atomic per shard, resumable.

For every cut of ``<cuts_dir>/librispeech_cuts_<part>.jsonl.gz`` the transcript (its supervision texts)
is tokenised by the LM and labelled by :meth:`speechkd.teachers.masked_lm.MaskedLmTeacher.soft_labels`.
Three per-token ``lhotse.Array`` custom fields (axis 0 = LM token, stored losslessly in HDF5) are added:

* ``lm_tokens``      ``(L,)``   int32: the transcript in the LM's vocabulary (hard labels);
* ``lm_topk_ids``    ``(L, k)`` int32: top-k token ids per position;
* ``lm_topk_probs``  ``(L, k)`` float16: their temperature-``T`` probabilities, renormalised over the k.

Output directory::

    <part>/shard-<k>-of-<n>.jsonl.gz, .done   cuts and markers of each shard (the pseudo-label machinery:
    <part>/soft-labels-<k>-of-<n>.h5          :mod:`speechkd.targets.pseudo_label`; resumable, settings-checked)
    librispeech_cuts_<part>.jsonl.gz          all shards of the part in input order (read by ``asr train``)
    metadata.yaml                             LM identity (name, fingerprint, tokenizer + fingerprint,
                                              vocabulary), k, temperature, max_tokens, text normalisation,
                                              fields, per-part counts and skips
    skipped-<part>.tsv                        every skipped cut: cut_id, shard, reason, detail

Skipped (counted per reason in the metadata, logged by cut id): transcripts that tokenise to nothing
(``empty_lm_tokens``) and transcripts of more than ``max_tokens`` LM tokens (``too_many_lm_tokens``).
Training compares the metadata with its config (:func:`check_soft_label_metadata`) before the first step.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

from speechkd.errors import SpeechkdError
from speechkd.targets.pseudo_label import (
    _check_settings,
    _read_done,
    _read_lines_gz,
    default_num_shards,
    done_path,
    open_cuts,
    shard_is_done,
    shard_path,
    shard_range,
    shards_to_run,
    write_jsonl_gz_atomic,
    write_skipped_tsv,
)
from speechkd.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
FORMAT_VERSION = 1
METADATA_FILE = "metadata.yaml"
CUTS_PREFIX = "librispeech_cuts"
FIELD_TOKENS = "lm_tokens"
FIELD_IDS = "lm_topk_ids"
FIELD_PROBS = "lm_topk_probs"
FIELDS = (FIELD_TOKENS, FIELD_IDS, FIELD_PROBS)
SKIP_EMPTY = "empty_lm_tokens"
SKIP_TOO_LONG = "too_many_lm_tokens"
#: metadata keys a training run checks against its own configuration (and the LM it names)
CHECKED_KEYS = ("lm_fingerprint", "tokenizer_fingerprint", "vocab_size", "k", "temperature")


@dataclass
class SoftLabelShardStats:
    shard_id: int
    num_shards: int
    num_input: int = 0
    num_labelled: int = 0
    num_tokens: int = 0
    elapsed_seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)


def part_cuts_path(out_dir: PathLike, part: str) -> Path:
    return Path(out_dir) / f"{CUTS_PREFIX}_{part}.jsonl.gz"


def _h5_path(part_dir: Path, shard_id: int, num_shards: int) -> Path:
    return part_dir / f"soft-labels-{shard_id}-of-{num_shards}.h5"


def label_shard(cuts: Sequence[Any], teacher: Any, k: int, temperature: float, max_tokens: int, h5: Path,
                stats: SoftLabelShardStats, utterances_per_batch: int = 32) -> list[Any]:
    """Soft-label ``cuts`` into ``h5``; returns the labelled cuts (skips recorded in ``stats``)."""
    from lhotse.features.io import NumpyHdf5Writer

    from speechkd.data.collate import cut_text

    out: list[Any] = []
    with NumpyHdf5Writer(str(h5), mode="w") as writer:
        for start in range(0, len(cuts), utterances_per_batch):
            batch = list(cuts[start : start + utterances_per_batch])
            tokens = teacher.tokenize([cut_text(c) for c in batch])
            kept = []
            for cut, toks in zip(batch, tokens):
                reason = SKIP_EMPTY if not toks else SKIP_TOO_LONG if len(toks) > max_tokens else None
                if reason:
                    detail = f"{len(toks)} LM tokens" + (f" > {max_tokens}" if toks else f" from {cut_text(cut)!r}")
                    log.warning("skipping cut %s (%s: %s)", cut.id, reason, detail)
                    stats.skipped.append({"cut_id": cut.id, "reason": reason, "detail": detail})
                else:
                    kept.append((cut, toks))
            labels = teacher.soft_labels([t for _, t in kept], k, temperature) if kept else []
            for (cut, _), sl in zip(kept, labels):
                for name, arr in ((FIELD_TOKENS, sl.tokens), (FIELD_IDS, sl.topk_ids), (FIELD_PROBS, sl.topk_probs)):
                    cut = cut.with_custom(name, writer.store_array(f"{cut.id}/{name}", arr))
                stats.num_tokens += len(sl.tokens)
                out.append(cut)
    stats.num_labelled = len(out)
    return out


def _run_shard(cuts: Sequence[Any], teacher: Any, part_dir: Path, shard_id: int, settings: Mapping[str, Any],
               utterances_per_batch: int) -> SoftLabelShardStats:
    n = settings["num_shards"]
    start = time.monotonic()
    stats = SoftLabelShardStats(shard_id=shard_id, num_shards=n, num_input=len(cuts))
    labelled = label_shard(cuts, teacher, settings["k"], settings["temperature"], settings["max_tokens"],
                           _h5_path(part_dir, shard_id, n), stats, utterances_per_batch)
    write_jsonl_gz_atomic(shard_path(part_dir, shard_id, n), (json.dumps(c.to_dict()) for c in labelled))
    stats.elapsed_seconds = time.monotonic() - start
    atomic_write_text(done_path(part_dir, shard_id, n),
                      json.dumps({"settings": dict(settings), "stats": stats.__dict__}, indent=1) + "\n")
    log.info("shard %d/%d: %d of %d cuts labelled (%d LM tokens), skipped %s, %.1f s", shard_id, n, stats.num_labelled,
             stats.num_input, stats.num_tokens, dict(Counter(s["reason"] for s in stats.skipped)) or "none",
             stats.elapsed_seconds)
    return stats


def _merge_part(out_dir: Path, part: str, num_shards: int) -> dict[str, Any]:
    part_dir = out_dir / part
    markers = []
    for k in range(num_shards):
        if not (done_path(part_dir, k, num_shards).is_file() and shard_path(part_dir, k, num_shards).is_file()):
            raise SpeechkdError(f"cannot merge: shard {k} of {num_shards} in {part_dir} is not finished")
        markers.append(_read_done(done_path(part_dir, k, num_shards)))
    for k, m in enumerate(markers):
        _check_settings(done_path(part_dir, k, num_shards), m["settings"], markers[0]["settings"])
    lines = (line for k in range(num_shards) for line in _read_lines_gz(shard_path(part_dir, k, num_shards)))
    num_cuts = write_jsonl_gz_atomic(part_cuts_path(out_dir, part), lines)
    skipped = [dict(s, shard=str(m["stats"]["shard_id"])) for m in markers for s in m["stats"]["skipped"]]
    write_skipped_tsv(out_dir / f"skipped-{part}.tsv", skipped)
    return {"num_input_cuts": sum(m["stats"]["num_input"] for m in markers), "num_labelled_cuts": num_cuts,
            "num_lm_tokens": sum(m["stats"]["num_tokens"] for m in markers), "num_skipped_cuts": len(skipped),
            "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)), "num_shards": num_shards,
            "labelling_seconds": round(sum(m["stats"]["elapsed_seconds"] for m in markers), 1)}


def read_soft_label_metadata(out_dir: PathLike) -> dict[str, Any]:
    path = Path(out_dir) / METADATA_FILE
    if not path.is_file():
        raise SpeechkdError(f"{path} not found: these cuts carry no LM soft labels (run the soft-label stage first)")
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if meta.get("format_version") != FORMAT_VERSION:
        raise SpeechkdError(f"{path}: format_version {meta.get('format_version')!r}, this speechkd reads {FORMAT_VERSION}")
    return meta


def _write_metadata(out_dir: Path, lm: Mapping[str, Any], settings: Mapping[str, Any], part: str,
                    part_meta: dict[str, Any]) -> dict[str, Any]:
    path = out_dir / METADATA_FILE
    new = {"format_version": FORMAT_VERSION, **lm, "k": settings["k"], "temperature": settings["temperature"],
           "max_tokens": settings["max_tokens"], "fields": {FIELD_TOKENS: "(L,) int32 LM token ids",
           FIELD_IDS: "(L, k) int32 top-k ids", FIELD_PROBS: "(L, k) float16 top-k probabilities (temperature, renormalised)"}}
    if "lm_dtype" in settings:
        new["lm_dtype"] = settings["lm_dtype"]
    meta = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if meta:
        diff = {k: (meta.get(k), v) for k, v in new.items() if k != "fields" and meta.get(k) != v}
        if diff:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in sorted(diff.items()))
            raise SpeechkdError(f"{path} describes soft labels made with other settings ({detail}); use another directory")
    parts = dict((meta or {}).get("parts") or {})
    parts[part] = dict(part_meta, input=settings["input"])
    new["parts"] = parts
    atomic_write_text(path, yaml.safe_dump(new, sort_keys=False))
    return new


def make_soft_labels(cuts_path: PathLike, out_dir: PathLike, part: str, teacher: Any, k: int = 8,
                     temperature: float = 3.0, max_tokens: Optional[int] = None, num_shards: Optional[int] = None,
                     shard_id: Optional[int] = None, utterances_per_batch: int = 32) -> Optional[Path]:
    """Soft-label the cuts of ``cuts_path`` as part ``part`` into ``out_dir`` (module docstring).

    Returns the merged ``librispeech_cuts_<part>.jsonl.gz`` once every shard is done, else None.
    ``max_tokens`` defaults to the LM's limit (its positions minus [CLS]/[SEP]).
    """
    max_tokens = teacher.max_positions if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= teacher.max_positions:
        raise SpeechkdError(f"max_tokens={max_tokens} must be in [1, {teacher.max_positions}] (the LM's limit)")
    num_shards = default_num_shards() if num_shards is None else num_shards
    out_dir = Path(out_dir)
    part_dir = out_dir / part
    part_dir.mkdir(parents=True, exist_ok=True)
    cuts = open_cuts(cuts_path)
    num_cuts = sum(1 for _ in cuts)
    if num_cuts == 0:
        raise SpeechkdError(f"input CutSet {cuts_path} is empty")
    lm = teacher.describe()
    settings = {"input": str(Path(cuts_path).resolve()), "num_input_cuts": num_cuts, "num_shards": num_shards,
                "k": k, "temperature": float(temperature), "max_tokens": max_tokens, "lm": lm}
    dtype = getattr(teacher, "dtype", "float32")
    if dtype != "float32":  # the LM's compute dtype; absent means float32 (soft labels made before it existed)
        settings["lm_dtype"] = dtype
    for s in shards_to_run(num_shards, shard_id):
        if shard_is_done(part_dir, s, num_shards, settings):
            log.info("%s shard %d of %d already done: skipped", part, s, num_shards)
            continue
        rng = shard_range(num_cuts, num_shards, s)
        _run_shard(list(itertools.islice(cuts, rng.start, rng.stop)), teacher, part_dir, s, settings, utterances_per_batch)
    if any(not shard_is_done(part_dir, s, num_shards, settings) for s in range(num_shards)):
        log.info("%s: shards still to do, not merging yet", part)
        return None
    part_meta = _merge_part(out_dir, part, num_shards)
    _write_metadata(out_dir, lm, settings, part, part_meta)
    log.info("%s: %d of %d cuts soft-labelled, skipped %s", part, part_meta["num_labelled_cuts"],
             part_meta["num_input_cuts"], part_meta["skipped_by_reason"] or "none")
    return part_cuts_path(out_dir, part)


def check_soft_label_metadata(meta: Mapping[str, Any], expected: Mapping[str, Any], where: PathLike) -> None:
    """Raise naming both values when ``meta`` disagrees with ``expected`` on any of :data:`CHECKED_KEYS`
    (only the keys present in ``expected`` are compared)."""
    bad = [k for k in CHECKED_KEYS if k in expected and meta.get(k) != expected[k]]
    if bad:
        detail = "; ".join(f"{k}: {meta.get(k)!r} in the soft labels vs {expected[k]!r} in the training config" for k in bad)
        raise SpeechkdError(f"{where}: soft labels do not match this training run ({detail}); "
                            f"made with LM {meta.get('lm')!r}, remake them or fix the config")
