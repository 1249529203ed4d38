"""A lhotse storage backend for small integer arrays (codebook indexes): raw ``uint8`` bytes, no per-array overhead.

HDF5 (lhotse's ``NumpyHdf5Writer``) spends about 2 KB of metadata per stored array, which for MVQ-KD's 8-16 bytes
per frame is a large share of a typical utterance. Here every array of a file is appended as its raw bytes to
one binary file (``.u8a``); the manifest's ``storage_key`` is ``"<byte offset>,<frames>,<columns>"``, so a file
holds exactly ``frames x columns`` bytes per array and the reader seeks straight to the frames it needs.

Importing this module registers the writer and reader with lhotse under :data:`NAME` (done by
:func:`speechkd.data.collate.load_custom_array` before reading any custom field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from lhotse.features.io import FeaturesReader, FeaturesWriter, register_reader, register_writer

from speechkd.errors import SpeechkdError

NAME = "speechkd_uint8_chunky"
SUFFIX = ".u8a"


@register_writer
class Uint8ChunkyWriter(FeaturesWriter):
    """Appends ``(T, C)`` uint8 arrays to one binary file (see module docstring)."""

    name = NAME

    def __init__(self, storage_path: Union[str, Path], mode: str = "wb", *args: Any, **kwargs: Any) -> None:
        super().__init__()
        p = Path(storage_path)
        self.storage_path_ = p if p.suffix == SUFFIX else p.with_suffix(p.suffix + SUFFIX)
        self.file = open(self.storage_path_, mode="ab" if "a" in mode else "wb")
        self.offset = self.file.tell()

    @property
    def storage_path(self) -> str:
        return str(self.storage_path_)

    def write(self, key: str, value: np.ndarray) -> str:
        if value.dtype != np.uint8 or value.ndim != 2:
            raise SpeechkdError(
                f"{self.storage_path}: array {key!r} must be (T, C) uint8, got {value.dtype} {value.shape}"
            )
        data = np.ascontiguousarray(value).tobytes()
        self.file.write(data)
        storage_key = f"{self.offset},{value.shape[0]},{value.shape[1]}"
        self.offset += len(data)
        return storage_key

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Uint8ChunkyWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@register_reader
class Uint8ChunkyReader(FeaturesReader):
    """Reads frames ``[left, right)`` of an array written by :class:`Uint8ChunkyWriter`."""

    name = NAME

    def __init__(self, storage_path: Union[str, Path], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.storage_path = storage_path

    def read(self, key: str, left_offset_frames: int = 0, right_offset_frames: Optional[int] = None) -> np.ndarray:
        offset, frames, cols = map(int, key.split(","))
        right = frames if right_offset_frames is None else min(right_offset_frames, frames)
        left = max(0, left_offset_frames)
        count = max(0, right - left) * cols
        with open(self.storage_path, "rb") as f:
            f.seek(offset + left * cols)
            data = f.read(count)
        if len(data) != count:
            raise SpeechkdError(f"{self.storage_path}: array at {key!r} is truncated ({len(data)} of {count} bytes)")
        return np.frombuffer(data, dtype=np.uint8).reshape(-1, cols)
