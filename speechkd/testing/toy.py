"""Tiny synthetic data, tokenizer, model and task for tests and smoke runs of the trainer.

Nothing here is downloaded: audio is noise written to flac files with soundfile, transcripts are
random letter strings, and the model is two linear layers with CTC on fbank features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from speechkd.tasks.base import LossOutput

PathLike = Union[str, Path]

TOY_LETTERS = "ABCDEFGH"
TOY_SPECIALS = ("<blk>", "<sos/eos>", "<unk>")  # ids 0, 1, 2 as in docs/INTERFACES.md
TOY_NOISE_SCALE = 0.1
TOY_DURATION_STEP = 0.25  # seconds; toy durations are multiples of this


def make_toy_cuts(
    out_dir: PathLike,
    num_cuts: int = 12,
    min_duration: float = 1.0,
    max_duration: float = 3.0,
    sampling_rate: int = 16000,
    seed: int = 0,
    words_per_cut: tuple[int, int] = (1, 4),
    empty_text_ids: Iterable[int] = (),
) -> Any:
    """A CutSet of ``num_cuts`` mono cuts with one supervision each, audio in ``out_dir/*.flac``.

    Durations are random multiples of :data:`TOY_DURATION_STEP` in ``[min_duration, max_duration]``;
    transcripts are 1-4 random words of letters from :data:`TOY_LETTERS`. Cuts whose index is in
    ``empty_text_ids`` get an empty transcript. Cut ids are ``toy-<index:03d>``.
    """
    import soundfile as sf
    from lhotse import CutSet, Recording, SupervisionSegment

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    empty = set(empty_text_ids)
    steps = np.arange(min_duration, max_duration + 1e-9, TOY_DURATION_STEP)
    cuts = []
    for i in range(num_cuts):
        dur = float(rng.choice(steps))
        audio = (TOY_NOISE_SCALE * rng.standard_normal(int(round(dur * sampling_rate)))).astype(np.float32)
        path = out_dir / f"toy-{i:03d}.flac"
        sf.write(path, audio, sampling_rate)
        rec = Recording.from_file(path, recording_id=f"toy-{i:03d}")
        n_words = int(rng.integers(words_per_cut[0], words_per_cut[1] + 1))
        words = ["".join(rng.choice(list(TOY_LETTERS), size=int(rng.integers(1, 4)))) for _ in range(n_words)]
        text = "" if i in empty else " ".join(words)
        cut = rec.to_cut()
        cut.supervisions = [
            SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration, text=text)
        ]
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def attach_toy_targets(
    cuts: Any,
    storage_dir: PathLike,
    name: str = "codebook_indexes",
    frame_shift: float = 0.04,
    trailing_shape: Sequence[int] = (4,),
    dtype: str = "uint8",
    seed: int = 0,
) -> Any:
    """Attach a random TemporalArray custom field ``name`` to every cut (stored as .npy files).

    Each array has ``round(duration / frame_shift)`` frames along axis 0 and ``trailing_shape`` after.
    Returns the new CutSet (eager).
    """
    from lhotse import CutSet
    from lhotse.features.io import NumpyFilesWriter

    rng = np.random.default_rng(seed)
    out = []
    with NumpyFilesWriter(str(storage_dir)) as writer:
        for cut in cuts:
            n = int(round(cut.duration / frame_shift))
            if np.issubdtype(np.dtype(dtype), np.integer):
                arr = rng.integers(0, np.iinfo(np.dtype(dtype)).max, size=(n, *trailing_shape)).astype(dtype)
            else:
                arr = rng.standard_normal((n, *trailing_shape)).astype(dtype)
            manifest = writer.store_array(cut.id, arr, frame_shift=frame_shift, temporal_dim=0)
            out.append(cut.with_custom(name, manifest))
    return CutSet.from_cuts(out)


class ToyTokenizer:
    """Character tokenizer over :data:`TOY_LETTERS` plus space; ids 0/1/2 are blank/sos-eos/unk."""

    def __init__(self) -> None:
        self.symbols = list(TOY_SPECIALS) + [" "] + list(TOY_LETTERS)
        self._ids = {s: i for i, s in enumerate(self.symbols)}
        self.blank_id = 0
        self.unk_id = 2

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [[self._ids.get(ch, self.unk_id) for ch in t] for t in texts]

    def decode(self, ids: list[list[int]]) -> list[str]:
        return ["".join(self.symbols[i] for i in seq if i >= len(TOY_SPECIALS)) for seq in ids]


class ToyModel(nn.Module):
    """``(N, T, C)`` features -> ``(N, T, V)`` log-probs: Linear, ReLU, Dropout, Linear."""

    def __init__(self, num_features: int = 80, hidden: int = 32, vocab_size: int = 12, dropout: float = 0.1) -> None:
        super().__init__()
        self.inp = nn.Linear(num_features, hidden)
        self.norm = nn.BatchNorm1d(hidden)  # has an int buffer (num_batches_tracked)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.inp(x))
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.out(self.dropout(h)).log_softmax(dim=-1), x_lens


class ToyCtcTask:
    """CTC loss (summed over the batch) of :class:`ToyModel` on fbank batches.

    Args:
        nan_cut_ids: batches containing any of these cut ids get a NaN loss (to test skipping).
        skip_cut_ids: batches containing any of these cut ids are skipped on purpose.
    """

    def __init__(self, nan_cut_ids: Iterable[str] = (), skip_cut_ids: Iterable[str] = ()) -> None:
        self.nan_cut_ids = set(nan_cut_ids)
        self.skip_cut_ids = set(skip_cut_ids)

    def compute_loss(self, model: nn.Module, batch: dict[str, Any], training: bool) -> LossOutput:
        if self.skip_cut_ids.intersection(batch["cut_ids"]):
            return LossOutput.skip("toy: batch holds a cut listed in skip_cut_ids")
        log_probs, lens = model(batch["inputs"], batch["input_lens"])
        tokens: Optional[list[list[int]]] = batch["tokens"]
        assert tokens is not None, "ToyCtcTask needs a tokenizer"
        targets = torch.tensor([t for seq in tokens for t in seq], dtype=torch.long)
        target_lens = torch.tensor([len(seq) for seq in tokens], dtype=torch.long)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1), targets, lens, target_lens, blank=0, reduction="sum", zero_infinity=True
        )
        if self.nan_cut_ids.intersection(batch["cut_ids"]):
            loss = loss * float("nan")
        return LossOutput(loss=loss, num_frames=float(lens.sum().item()), info={"ctc": float(loss.detach())})
