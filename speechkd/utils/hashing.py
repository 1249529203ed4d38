"""Content hashes of files (fingerprints that artifacts record and consumers check)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union


def sha256_file(path: Union[str, Path], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (memory bounded whatever its size)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()
