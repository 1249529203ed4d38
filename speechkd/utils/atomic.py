"""Atomic writes: a temporary file in the destination's folder, then ``os.replace`` onto it.

A reader (or a resumed stage that takes a file's presence as "done") never sees a half-written file, and an
interrupted write leaves no temporary file behind.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, Path]


def temporary_path(path: Path) -> Path:
    """``.<name>.<pid>.tmp`` beside ``path``: the temporary of a text or binary write. Unique per process, and it
    does not end like ``path``, so a glob for the destination's suffix (``*.trans.txt``, ``*.yaml``; pathlib's
    glob matches dot files) never picks it up."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def stale_temporaries(path: Path) -> list[Path]:
    """Temporaries of ``path`` (:func:`temporary_path`) left by processes killed while writing it."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def _tmp_manifest_name(path: Path) -> Path:
    """``.<pid>.<name>`` beside ``path``: it keeps the suffixes, because lhotse picks the format from
    ``.jsonl.gz``. Manifests are found by their ``librispeech_*`` prefix, which the leading dot breaks."""
    return path.with_name(f".{os.getpid()}.{path.name}")


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_to_file(manifest: Any, path: PathLike) -> None:
    """``manifest.to_file(path)`` atomically, for any lhotse manifest (``CutSet``, ``RecordingSet``, ...)."""
    path = Path(path)
    tmp = _tmp_manifest_name(path)
    try:
        manifest.to_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
