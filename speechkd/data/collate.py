"""Turning a mini-batch ``CutSet`` into the batch dict of docs/INTERFACES.md.

Batch keys:

- ``inputs``: ``(N, T, C)`` float fbank, or ``(N, S)`` float audio samples.
- ``input_lens``: ``(N,)`` int64 valid frames / samples per row.
- ``tokens``: ``list[list[int]]`` from the tokenizer's ``encode``; None when no tokenizer is given.
- ``texts``: ``list[str]`` (supervision texts of each cut joined by a space; ``""`` for an untranscribed cut).
- ``transcribed``: ``list[bool]``: False for a cut marked untranscribed (:func:`mark_untranscribed`: audio of an
  untranscribed part, trained only by transcript-free losses such as MVQ-KD's codebook loss).
- ``cut_ids``: ``list[str]``.
- ``targets``: ``dict[name, Tensor (N, T_f, ...)]`` for each requested custom field, padded along
  time (a ``TemporalArray``'s temporal axis; axis 0 of a plain ``lhotse.Array``, e.g. per-token LM
  soft labels) with :data:`INT_PAD` (integer arrays, promoted to int64) or :data:`FLOAT_PAD` (float
  arrays, as float32), plus ``targets[name + "_lens"]`` ``(N,)`` int64.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np
import torch

from speechkd.errors import SpeechkdError

INT_PAD = -100
FLOAT_PAD = 0.0
UNTRANSCRIBED = "untranscribed"  # cut.custom key set by mark_untranscribed


class TokenizerLike(Protocol):
    def encode(self, texts: list[str]) -> list[list[int]]: ...


def cut_text(cut: Any) -> str:
    """The cut's supervision texts joined with single spaces ('' when there are none)."""
    parts = [(s.text or "").strip() for s in getattr(cut, "supervisions", [])]
    return " ".join(p for p in parts if p)


def is_untranscribed(cut: Any) -> bool:
    """Whether ``cut`` comes from an untranscribed part (:func:`mark_untranscribed`)."""
    custom = getattr(cut, "custom", None)
    return bool(custom and custom.get(UNTRANSCRIBED))


def _mark_untranscribed(cut: Any) -> Any:  # module level: picklable for DataLoader workers
    cut.custom = {**(cut.custom or {}), UNTRANSCRIBED: True}
    return cut


def mark_untranscribed(cuts: Any) -> Any:
    """``cuts`` (a CutSet, lazily) with every cut marked untranscribed: its text, if any, is never read
    (``batch["texts"]`` is empty for it, ``batch["transcribed"]`` False)."""
    return cuts.map(_mark_untranscribed)


def _has_field(cut: Any, name: str) -> bool:
    has = getattr(cut, "has_custom", None)
    if callable(has):
        return bool(has(name))
    return getattr(cut, name, None) is not None


def _is_plain_array(manifest: Any) -> bool:
    from lhotse.array import Array

    return isinstance(manifest, Array)


def load_custom_array(cut: Any, name: str) -> np.ndarray:
    """Load custom field ``name`` of ``cut`` with its temporal axis moved to axis 0 (a plain
    ``lhotse.Array`` keeps its axis 0 first, e.g. the token axis of LM soft labels).

    Raises SpeechkdError naming the cut and field when the cut lacks it.
    """
    if not _has_field(cut, name):
        raise SpeechkdError(
            f"cut '{cut.id}' has no custom field '{name}' (required target field); "
            "were the targets computed for this cut set?"
        )
    import speechkd.data.uint8_storage  # noqa: F401 - registers the codebook-index storage backend with lhotse

    manifest = getattr(cut, name)
    arr = np.asarray(cut.load_custom(name))
    temporal_dim = getattr(manifest, "temporal_dim", None)
    if temporal_dim is None and _is_plain_array(manifest) and arr.ndim >= 1:
        return arr
    if temporal_dim is None:
        raise SpeechkdError(
            f"cut '{cut.id}': custom field '{name}' is not a TemporalArray (no temporal_dim); "
            "targets must be stored with a frame_shift (or as a lhotse Array with the padded axis first)"
        )
    return np.moveaxis(arr, temporal_dim, 0)


def pad_arrays(arrays: Sequence[np.ndarray], name: str = "field") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``arrays`` (each ``(T_i, ...)``) along axis 0 into ``(N, max T_i, ...)``.

    Integer/bool arrays become int64 padded with :data:`INT_PAD`; float arrays become float32
    padded with :data:`FLOAT_PAD`. Returns ``(padded, lens (N,) int64)``.
    """
    if not arrays:
        raise SpeechkdError(f"pad_arrays: no arrays for '{name}'")
    trailing = arrays[0].shape[1:]
    for a in arrays:
        if a.shape[1:] != trailing:
            raise SpeechkdError(
                f"custom field '{name}': non-temporal shapes differ within a batch ({trailing} vs {a.shape[1:]})"
            )
    is_float = np.issubdtype(arrays[0].dtype, np.floating)
    dtype, pad = (torch.float32, FLOAT_PAD) if is_float else (torch.int64, INT_PAD)
    lens = torch.tensor([a.shape[0] for a in arrays], dtype=torch.int64)
    out = torch.full((len(arrays), int(lens.max()), *trailing), pad, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    return out, lens


def collate_targets(cuts: Sequence[Any], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Load and pad each custom field in ``names`` for every cut (see module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        padded, lens = pad_arrays([load_custom_array(c, name) for c in cuts], name)
        out[name] = padded
        out[name + "_lens"] = lens
    return out


class AsrBatchDataset(torch.utils.data.Dataset):
    """A lhotse-style map dataset: ``dataset[cuts: CutSet] -> batch dict``.

    Args:
        input_strategy: a lhotse BatchIO (``PrecomputedFeatures``, ``OnTheFlyFeatures``,
            ``AudioSamples``) returning ``(inputs, input_lens)``.
        tokenizer: anything with ``encode(list[str]) -> list[list[int]]``, or None.
        target_fields: names of TemporalArray custom fields to collate into ``targets``.
        input_transform: ``(inputs, input_lens) -> inputs`` applied to every batch (e.g. SpecAugment).
    """

    def __init__(
        self,
        input_strategy: Callable[[Any], tuple[torch.Tensor, torch.Tensor]],
        tokenizer: Optional[TokenizerLike] = None,
        target_fields: Sequence[str] = (),
        input_transform: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    ) -> None:
        super().__init__()
        self.input_strategy = input_strategy
        self.tokenizer = tokenizer
        self.target_fields = tuple(target_fields)
        self.input_transform = input_transform

    def __getitem__(self, cuts: Any) -> dict[str, Any]:
        cuts = list(cuts)
        from lhotse import CutSet

        inputs, input_lens = self.input_strategy(CutSet.from_cuts(cuts))[:2]
        if self.input_transform is not None:
            inputs = self.input_transform(inputs, input_lens)
        transcribed = [not is_untranscribed(c) for c in cuts]
        texts = [cut_text(c) if t else "" for c, t in zip(cuts, transcribed)]
        tokens = self.tokenizer.encode(texts) if self.tokenizer is not None else None
        return {
            "inputs": inputs,
            "input_lens": input_lens.to(torch.int64),
            "tokens": tokens,
            "texts": texts,
            "transcribed": transcribed,
            "cut_ids": [c.id for c in cuts],
            "targets": collate_targets(cuts, self.target_fields),
        }

    def __len__(self) -> int:  # pragma: no cover - sampler-driven dataset
        raise TypeError("AsrBatchDataset is indexed by CutSets from a lhotse sampler; it has no length")


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Copy of ``batch`` with its tensors (also inside ``targets``) moved to ``device``."""

    def mv(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, dict):
            return {k: mv(x) for k, x in v.items()}
        return v

    return {k: mv(v) for k, v in batch.items()}
