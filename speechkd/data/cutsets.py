"""Corpus-scale operations on lazy cut manifests: a disk-backed shuffle across parts, a bounded random
sample, and the speed-perturbation filter. None of them holds a whole corpus in memory.

- :func:`shuffle_manifests`: the lines (cuts) of several ``.jsonl.gz`` manifests -> one manifest in a
  uniformly random order (icefall's ``train-all-shuf``), by scattering lines into random temporary
  buckets and shuffling each bucket in memory: memory ``O(lines_per_bucket)``, time ``O(N)``, lines
  copied verbatim (never parsed).
- :func:`reservoir_sample`: ``k`` cuts drawn uniformly from a lazy CutSet of unknown length, memory ``O(k)``.
- :func:`is_speed_perturbed` / :func:`drop_speed_perturbed`: the ``<id>_sp<factor>`` copies written by
  :func:`speechkd.data.features.add_speed_perturbation` are for fbank ASR training; audio methods
  (DistilHuBERT, target extraction, probes, pseudo-labelling) leave them out.
"""

from __future__ import annotations

import gzip
import logging
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from speechkd.errors import SpeechkdError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SPEED_PERTURBED_RE = re.compile(r"_sp\d+(\.\d+)?$")
DEFAULT_LINES_PER_BUCKET = 50_000  # cuts held in memory at once by shuffle_manifests (~30 MB of JSON)


def is_speed_perturbed(cut: Any) -> bool:
    """Whether ``cut`` (or a cut id) is a ``_sp<factor>`` speed-perturbed copy."""
    cut_id = cut if isinstance(cut, str) else cut.id
    return SPEED_PERTURBED_RE.search(cut_id) is not None


def _not_speed_perturbed(cut: Any) -> bool:  # module level: picklable for DataLoader workers
    return not is_speed_perturbed(cut)


def drop_speed_perturbed(cuts: Any) -> Any:
    """The CutSet without its speed-perturbed copies (lazy filter; nothing is loaded)."""
    return cuts.filter(_not_speed_perturbed)


def reservoir_sample(items: Iterable[Any], k: int, seed: int) -> list[Any]:
    """``k`` items drawn uniformly without replacement from an iterable of unknown length (Algorithm R),
    in the order they were met; all of them when there are at most ``k``. Memory ``O(k)``, one pass."""
    if k < 1:
        raise SpeechkdError(f"reservoir sample size must be >= 1, got {k}")
    rng = random.Random(seed)
    reservoir: list[tuple[int, Any]] = []
    for i, item in enumerate(items):
        if i < k:
            reservoir.append((i, item))
            continue
        j = rng.randint(0, i)
        if j < k:
            reservoir[j] = (i, item)
    return [item for _, item in sorted(reservoir, key=lambda p: p[0])]


def _open_text(path: Path, mode: str):
    return gzip.open(path, mode + "t", encoding="utf-8") if path.suffix == ".gz" else open(path, mode, encoding="utf-8")


def _count_lines(paths: Sequence[Path]) -> int:
    n = 0
    for path in paths:
        with _open_text(path, "r") as f:
            n += sum(1 for line in f if line.strip())
    return n


def shuffle_manifests(
    inputs: Sequence[PathLike],
    output: PathLike,
    seed: int = 0,
    lines_per_bucket: int = DEFAULT_LINES_PER_BUCKET,
    max_cuts: Optional[int] = None,
    skip_cuts: int = 0,
) -> int:
    """Write the non-empty lines of ``inputs`` (``.jsonl`` or ``.jsonl.gz`` manifests) to ``output`` in a
    uniformly random order fixed by ``seed``; returns the number of lines written. ``max_cuts``: write only the
    first ``max_cuts`` of that order, a uniformly random subset (e.g. part of an unlabelled pool).
    ``skip_cuts``: leave out the first ``skip_cuts`` of that order, so that slices taken with the same seed
    (``skip_cuts=0, max_cuts=n`` then ``skip_cuts=n, max_cuts=n``) are disjoint: a pool labelled slice by slice.

    Two passes over the inputs (count, scatter into ``ceil(N / lines_per_bucket)`` temporary buckets next
    to ``output``), then each bucket is shuffled in memory and appended. ``output`` appears atomically.

    Raises:
        SpeechkdError: an input is missing, or all of them are empty.
    """
    paths = [Path(p) for p in inputs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SpeechkdError(f"cannot shuffle: manifest(s) not found: {', '.join(missing)}")
    if lines_per_bucket < 1:
        raise SpeechkdError(f"lines_per_bucket must be >= 1, got {lines_per_bucket}")
    if max_cuts is not None and max_cuts < 1:
        raise SpeechkdError(f"max_cuts must be >= 1, got {max_cuts}")
    if skip_cuts < 0:
        raise SpeechkdError(f"skip_cuts must be >= 0, got {skip_cuts}")
    total = _count_lines(paths)
    if total == 0:
        raise SpeechkdError(f"cannot shuffle: no cuts in {', '.join(map(str, paths))}")
    if skip_cuts >= total:
        raise SpeechkdError(f"skip_cuts={skip_cuts} leaves nothing of the {total} cuts of {', '.join(map(str, paths))}")
    num_buckets = -(-total // lines_per_bucket)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        buckets = [open(tmp_dir / f"{i}.jsonl", "w", encoding="utf-8") for i in range(num_buckets)]
        try:
            for path in paths:
                with _open_text(path, "r") as f:
                    for line in f:
                        if line.strip():
                            buckets[rng.randrange(num_buckets)].write(line if line.endswith("\n") else line + "\n")
        finally:
            for b in buckets:
                b.close()
        tmp_out = tmp_dir / out.name
        skip = skip_cuts
        left = total - skip if max_cuts is None else min(max_cuts, total - skip)
        written = left
        with _open_text(tmp_out, "w") as w:
            for i in range(num_buckets):
                with open(tmp_dir / f"{i}.jsonl", encoding="utf-8") as f:
                    lines = f.readlines()
                rng.shuffle(lines)  # every bucket is shuffled, whatever is skipped: the order never depends on the slice
                dropped = min(skip, len(lines))
                lines = lines[dropped:]
                skip -= dropped
                w.writelines(lines[:left])
                left -= min(left, len(lines))
                os.remove(tmp_dir / f"{i}.jsonl")
        os.replace(tmp_out, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    log.info("shuffled %d cuts of %s into %s (%d buckets), wrote %d", total, ", ".join(p.name for p in paths), out,
             num_buckets, written)
    return written
