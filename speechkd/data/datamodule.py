"""Data loading over lhotse: samplers, input features, batch dicts, exact mid-epoch resume.

``AsrDataModule(cfg, tokenizer, target_fields)`` builds DataLoaders whose batches are the dicts of
docs/INTERFACES.md (see :mod:`speechkd.data.collate`).

- Training: ``DynamicBucketingSampler`` by ``max_duration`` (seconds of audio per batch and rank),
  with ``num_buckets``, ``shuffle``, ``seed``, ``drop_last``; cuts outside
  ``[min_cut_duration, max_cut_duration]`` and cuts with an empty transcript (``drop_empty_text``)
  are removed while sampling, and the counts are logged at the end of every epoch.
- Evaluation: ``SimpleCutSampler`` by ``max_duration``, no shuffling, no filtering.
- SpecAugment (``spec_augment.enabled``, training batches only): lhotse's ``SpecAugment`` time warp
  inside each utterance's frames, then frequency and time masks.
- Inputs: ``input: fbank`` with ``features: precomputed`` (features stored on the cuts) or
  ``features: on_the_fly`` (lhotse's own ``Fbank``, no torchaudio), or ``input: audio`` (raw samples,
  resampled to ``sampling_rate`` when a cut differs).
- DDP: rank and world size come from ``torchrun``'s environment (or the constructor) and are passed
  to the lhotse samplers, so each rank gets its own share of batches and all ranks the same count.

Mid-epoch resume: the training loader's sampler is a :class:`ResumableSampler`.
:func:`set_loader_epoch` (``loader, epoch, skip_batches``) makes the next iteration of the loader
re-run the lhotse sampler for that epoch and throw away the first ``skip_batches`` mini-batch
``CutSet`` s *before* they reach the dataset (no audio/feature loading), then continue. That gives the
same batch sequence as an uninterrupted run regardless of worker prefetching (lhotse's own sampler
``state_dict`` records what the sampler *produced*, which runs ahead of what training *consumed*
when ``num_workers > 0``). Every training batch is made under python/numpy/torch random generators
seeded from ``(seed, epoch, rank, batch index)`` (:func:`batch_seed`), so its random augmentation
(SpecAugment, on-the-fly transforms) does not depend on which worker builds it or on what that worker
built before: a resumed run with workers and augmentation gets the same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from speechkd.data.collate import AsrBatchDataset, TokenizerLike, cut_text, is_untranscribed
from speechkd.errors import SpeechkdError
from speechkd.training.dist import dist_info_from_env

log = logging.getLogger(__name__)

INPUT_KINDS = ("fbank", "audio")
FEATURE_SOURCES = ("precomputed", "on_the_fly")
# Each epoch's DataLoader base seed is seed + EPOCH_SEED_STRIDE * epoch + rank.
EPOCH_SEED_STRIDE = 1000
# How many removed cut ids to quote in the per-epoch filter report.
REPORT_EXAMPLES = 3


@dataclass
class SpecAugmentConfig:
    """lhotse ``SpecAugment`` knobs (defaults: icefall's LibriSpeech recipes)."""

    enabled: bool = False
    time_warp_factor: int = 80  # 0: no time warping
    num_feature_masks: int = 2
    features_mask_size: int = 27  # widest frequency mask, in bins
    num_frame_masks: int = 10
    frames_mask_size: int = 100  # widest time mask, in frames
    max_frames_mask_fraction: float = 0.15  # at most this share of a batch row's frames is masked
    p: float = 0.9  # probability that an utterance is augmented at all

    def validate(self) -> None:
        ints = ("time_warp_factor", "num_feature_masks", "features_mask_size", "num_frame_masks", "frames_mask_size")
        for name in ints:
            if getattr(self, name) < 0:
                raise SpeechkdError(f"data.spec_augment.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_frames_mask_fraction", "p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SpeechkdError(f"data.spec_augment.{name} must be in [0, 1], got {getattr(self, name)}")


class SpecAugmentInputs:
    """inputs (N, T, F), input_lens (N,) -> augmented inputs (N, T, F) (lhotse's SpecAugment, with
    each row's valid frames as its supervision segment so time warping stays inside them)."""

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        from lhotse.dataset import SpecAugment

        self.augment = SpecAugment(
            time_warp_factor=cfg.time_warp_factor or None,
            num_feature_masks=cfg.num_feature_masks,
            features_mask_size=cfg.features_mask_size,
            num_frame_masks=cfg.num_frame_masks,
            frames_mask_size=cfg.frames_mask_size,
            max_frames_mask_fraction=cfg.max_frames_mask_fraction,
            p=cfg.p,
        )

    def __call__(self, inputs: torch.Tensor, input_lens: torch.Tensor) -> torch.Tensor:
        n = inputs.size(0)
        segments = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.int64), input_lens.cpu()], dim=1)
        return self.augment(inputs, supervision_segments=segments.to(torch.int32))


@dataclass
class DataConfig:
    input: str = "fbank"  # fbank | audio
    features: str = "precomputed"  # precomputed | on_the_fly (input=fbank only)
    num_mel_bins: int = 80  # on-the-fly fbank
    sampling_rate: int = 16000  # on-the-fly fbank / audio input: cuts are resampled to this rate
    # Seconds of audio per batch and rank, lhotse's padding-aware limit: cuts join a batch while
    # (cuts + 1) * longest <= max_duration, so the last cut (if longer) may overshoot it.
    max_duration: float = 200.0
    num_buckets: int = 30
    # Cuts held by the bucketing sampler, which shuffles only inside this buffer (lhotse 1.33 folds its
    # old shuffle_buffer_size into it). A local shuffle: train on a pre-shuffled manifest (``speechkd data
    # shuffle-cuts``, recipe data stage 5) so that batches mix all parts from the first step.
    buffer_size: int = 20000
    shuffle: bool = True
    drop_last: bool = True
    seed: int = 42
    num_workers: int = 2
    pin_memory: bool = True  # page-locked batches for asynchronous host-to-GPU copies (only when CUDA is available)
    min_cut_duration: float = 1.0  # training cuts shorter than this are removed (logged)
    max_cut_duration: float = 20.0  # training cuts longer than this are removed (logged)
    drop_empty_text: bool = True  # remove training cuts with an empty transcript (logged)
    # Training cuts, drawn at random from all training parts, that estimate the global CMVN statistics
    # of models with encoder.global_cmvn=true.
    cmvn_max_cuts: int = 2000
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)

    def validate(self) -> None:
        if self.input not in INPUT_KINDS:
            raise SpeechkdError(f"data.input must be one of {INPUT_KINDS}, got {self.input!r}")
        if self.features not in FEATURE_SOURCES:
            raise SpeechkdError(f"data.features must be one of {FEATURE_SOURCES}, got {self.features!r}")
        if self.max_duration <= 0:
            raise SpeechkdError(f"data.max_duration must be > 0, got {self.max_duration}")
        if self.min_cut_duration > self.max_cut_duration:
            raise SpeechkdError(
                f"data.min_cut_duration ({self.min_cut_duration}) > data.max_cut_duration ({self.max_cut_duration})"
            )
        if self.max_cut_duration > self.max_duration:
            raise SpeechkdError(
                f"data.max_cut_duration ({self.max_cut_duration}) exceeds data.max_duration "
                f"({self.max_duration}): such cuts could never fit in a batch"
            )
        self.spec_augment.validate()  # also when DataConfig is built directly, not from YAML
        if self.spec_augment.enabled and self.input != "fbank":
            raise SpeechkdError(f"data.spec_augment needs fbank input, but data.input={self.input!r}")
        if self.cmvn_max_cuts < 1:
            raise SpeechkdError(f"data.cmvn_max_cuts must be >= 1, got {self.cmvn_max_cuts}")
        if self.buffer_size < 1:
            raise SpeechkdError(f"data.buffer_size must be >= 1, got {self.buffer_size}")
        if self.num_workers < 0 or self.num_buckets < 2:
            # lhotse's DynamicBucketingSampler asserts num_buckets > 1: say so before training starts
            raise SpeechkdError(
                f"data.num_workers must be >= 0 and data.num_buckets >= 2 "
                f"(got num_workers={self.num_workers}, num_buckets={self.num_buckets})"
            )


class CutFilter:
    """Sampling-time predicate that counts what it removes, by reason.

    Reasons: ``too_short``, ``too_long`` (duration outside ``[min_s, max_s]``) and ``empty_text`` (never for a
    cut marked untranscribed: it has no text by design).
    """

    def __init__(self, min_s: float, max_s: float, drop_empty_text: bool) -> None:
        self.min_s, self.max_s, self.drop_empty_text = min_s, max_s, drop_empty_text
        self.reset()

    def reset(self) -> None:
        self.seen = 0
        self.untranscribed = 0  # cuts of untranscribed parts seen (kept without text)
        self.removed: dict[str, int] = {"too_short": 0, "too_long": 0, "empty_text": 0}
        self.examples: dict[str, list[str]] = {k: [] for k in self.removed}

    def reason(self, cut: Any) -> Optional[str]:
        if cut.duration < self.min_s:
            return "too_short"
        if cut.duration > self.max_s:
            return "too_long"
        if self.drop_empty_text and not is_untranscribed(cut) and not cut_text(cut):
            return "empty_text"
        return None

    def __call__(self, cut: Any) -> bool:
        self.seen += 1
        if is_untranscribed(cut):
            self.untranscribed += 1
        why = self.reason(cut)
        if why is None:
            return True
        self.removed[why] += 1
        if len(self.examples[why]) < REPORT_EXAMPLES:
            self.examples[why].append(cut.id)
        return False

    def report(self, what: str) -> str:
        total = sum(self.removed.values())
        parts = [
            f"{k}={n} (e.g. {', '.join(self.examples[k])})" for k, n in self.removed.items() if n
        ]
        return (
            f"{what}: removed {total} of {self.seen} cuts"
            + (f": {'; '.join(parts)}" if parts else "")
            + f" [kept durations in [{self.min_s}, {self.max_s}] s"
            + (", non-empty text]" if self.drop_empty_text else "]")
            + (f"; {self.untranscribed} cuts of untranscribed parts kept without text" if self.untranscribed else "")
        )


class ResumableSampler(Sampler):
    """Wraps a lhotse sampler: per-epoch iteration with an optional number of leading batches to
    skip (re-sampled, never loaded) for exact mid-epoch resume."""

    def __init__(self, sampler: Any, cut_filter: Optional[CutFilter] = None) -> None:
        self.sampler = sampler
        self.cut_filter = cut_filter
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        if skip_batches < 0:
            raise SpeechkdError(f"skip_batches must be >= 0, got {skip_batches}")
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __iter__(self) -> Iterator[Any]:
        """Yields ``(seed, CutSet)``: each batch with its :func:`batch_seed`."""
        self.sampler.set_epoch(self.epoch)
        self.sampler.allow_iter_to_reset_state()
        if self.cut_filter is not None:
            self.cut_filter.reset()
        skip, self.skip_batches = self.skip_batches, 0
        skipped = 0
        base = (int(getattr(self.sampler, "seed", 0)), self.epoch, int(getattr(self.sampler, "rank", 0)))
        for index, batch in enumerate(self.sampler):
            if skipped < skip:
                skipped += 1
                continue
            yield batch_seed(*base, index), batch
        if skipped < skip:
            raise SpeechkdError(
                f"cannot resume epoch {self.epoch} at batch {skip}: the sampler only has {skipped} batches "
                "(did the training cuts or data config change since the checkpoint?)"
            )
        if self.cut_filter is not None:
            log.info("%s", self.cut_filter.report(f"training cuts, epoch {self.epoch}"))

    def __len__(self) -> int:  # pragma: no cover - dynamic batches have no cheap length
        raise TypeError("ResumableSampler has no length (dynamic batches)")


def batch_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    """A 32-bit seed for training batch ``index`` of ``epoch`` on ``rank`` (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, epoch, rank, index]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """python ``random``, numpy's global generator and torch's CPU generator seeded with ``seed`` inside,
    restored afterwards (so the training process's own random stream is untouched)."""
    import random

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededBatchDataset(torch.utils.data.Dataset):
    """``dataset[(seed, cuts)] -> dataset[cuts]`` built under :func:`seeded_rngs` (training batches)."""

    def __init__(self, dataset: AsrBatchDataset) -> None:
        super().__init__()
        self.dataset = dataset

    def __getitem__(self, item: tuple[int, Any]) -> dict[str, Any]:
        seed, cuts = item
        with seeded_rngs(seed):
            return self.dataset[cuts]

    def __len__(self) -> int:  # pragma: no cover - sampler-driven dataset
        raise TypeError("SeededBatchDataset is indexed by (seed, CutSet) pairs; it has no length")


def _resample_cut(cut: Any, sampling_rate: int) -> Any:
    return cut if cut.sampling_rate == sampling_rate else cut.resample(sampling_rate)


def _seed_worker(worker_id: int) -> None:
    """Seed python/numpy in a DataLoader worker from torch's per-worker seed (base seed + id)."""
    import random

    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


def set_loader_epoch(loader: DataLoader, epoch: int, skip_batches: int = 0) -> None:
    """Prepare ``loader`` (from :meth:`AsrDataModule.train_dataloader`) for ``epoch``: the next
    iteration yields that epoch's batches after the first ``skip_batches``."""
    sampler = loader.sampler
    if not isinstance(sampler, ResumableSampler):
        raise SpeechkdError("set_loader_epoch needs a loader built by AsrDataModule.train_dataloader")
    sampler.set_epoch(epoch, skip_batches)
    if loader.generator is not None:
        rank = getattr(sampler.sampler, "rank", 0)
        loader.generator.manual_seed(int(getattr(sampler.sampler, "seed", 0)) + EPOCH_SEED_STRIDE * epoch + rank)


class AsrDataModule:
    """Builds train/eval DataLoaders of batch dicts.

    Args:
        cfg: data options.
        tokenizer: object with ``encode(list[str]) -> list[list[int]]`` (e.g.
            ``speechkd.text.tokenizer.Tokenizer``); None leaves ``batch["tokens"]`` None.
        target_fields: custom TemporalArray fields of the cuts to collate into ``batch["targets"]``.
        world_size, rank: DDP position (default: from the ``torchrun`` environment).
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer: Optional[TokenizerLike] = None,
        target_fields: Sequence[str] = (),
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.target_fields = tuple(target_fields)
        env = dist_info_from_env()
        self.world_size = env.world_size if world_size is None else world_size
        self.rank = env.rank if rank is None else rank
        self.seconds_per_input_unit: Optional[float] = None

    # ---------------------------------------------------------------- inputs
    def _input_strategy(self, cuts: Any) -> Any:
        from lhotse.dataset.input_strategies import AudioSamples, OnTheFlyFeatures, PrecomputedFeatures

        cfg = self.cfg
        if cfg.input == "audio":
            self.seconds_per_input_unit = 1.0 / cfg.sampling_rate
            return AudioSamples()
        if cfg.features == "on_the_fly":
            extractor = self._fbank_extractor()
            self.seconds_per_input_unit = extractor.frame_shift
            return OnTheFlyFeatures(extractor)
        first = next(iter(cuts), None)
        if first is not None:
            if not first.has_features:
                raise SpeechkdError(
                    f"cut '{first.id}' has no precomputed features but data.features=precomputed; "
                    "run the fbank stage or set data.features=on_the_fly"
                )
            self.seconds_per_input_unit = first.frame_shift
        return PrecomputedFeatures()

    def _fbank_extractor(self) -> Any:
        """The on-the-fly extractor: the stored features' config at ``data.sampling_rate``."""
        from speechkd.data.features import make_fbank_extractor

        return make_fbank_extractor(self.cfg.num_mel_bins, self.cfg.sampling_rate)

    def _prepare_cuts(self, cuts: Any) -> Any:
        """Resample audio-based inputs to ``cfg.sampling_rate`` where a cut's rate differs."""
        cfg = self.cfg
        if cfg.input == "fbank" and cfg.features == "precomputed":
            return cuts
        return cuts.map(partial(_resample_cut, sampling_rate=cfg.sampling_rate))

    def global_feature_stats(self, cuts: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-bin mean (C,) and standard deviation (C,) of the fbank input over ``data.cmvn_max_cuts``
        cuts drawn uniformly (seed ``data.seed``) from all of ``cuts``, and the number of cuts used
        (lhotse's global stats, computed from stored features or with the on-the-fly extractor, as
        training will see them). One lazy pass over the manifest; only the sample is held in memory."""
        from lhotse import CutSet

        from speechkd.data.cutsets import reservoir_sample

        cfg = self.cfg
        if cfg.input != "fbank":
            raise SpeechkdError(f"global CMVN needs fbank input, but data.input={cfg.input!r}")
        sample = CutSet.from_cuts(reservoir_sample(self._prepare_cuts(cuts), cfg.cmvn_max_cuts, cfg.seed))
        if len(sample) == 0:
            raise SpeechkdError("global CMVN: the training set has no cuts to estimate statistics from")
        extractor = None
        if cfg.features == "on_the_fly":
            extractor = self._fbank_extractor()
        else:
            missing = [c.id for c in sample if not c.has_features]
            if missing:
                raise SpeechkdError(
                    f"global CMVN: {len(missing)} cut(s) have no precomputed features (first: '{missing[0]}'); "
                    "run the fbank stage or set data.features=on_the_fly"
                )
        stats = sample.compute_global_feature_stats(extractor=extractor)
        mean = torch.as_tensor(stats["norm_means"], dtype=torch.float32)
        std = torch.as_tensor(stats["norm_stds"], dtype=torch.float32)
        return mean, std, len(sample)

    def _dataset(self, cuts: Any, train: bool = False) -> AsrBatchDataset:
        augment = train and self.cfg.spec_augment.enabled
        transform = SpecAugmentInputs(self.cfg.spec_augment) if augment else None
        return AsrBatchDataset(self._input_strategy(cuts), self.tokenizer, self.target_fields, transform)

    def _loader(self, dataset: torch.utils.data.Dataset, sampler: Sampler) -> DataLoader:
        nw = self.cfg.num_workers
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=nw,
            persistent_workers=False,
            worker_init_fn=_seed_worker if nw > 0 else None,
            generator=torch.Generator().manual_seed(self.cfg.seed + self.rank),
            pin_memory=self.cfg.pin_memory and torch.cuda.is_available(),
        )

    # ---------------------------------------------------------------- loaders
    def train_dataloader(self, cuts: Any) -> DataLoader:
        """Shuffled, duration-bucketed training batches (see module docstring).

        Call :func:`set_loader_epoch` before iterating each epoch.
        """
        from lhotse.dataset import DynamicBucketingSampler

        cfg = self.cfg
        cuts = self._prepare_cuts(cuts)
        cut_filter = CutFilter(cfg.min_cut_duration, cfg.max_cut_duration, cfg.drop_empty_text)
        sampler = DynamicBucketingSampler(
            cuts,
            max_duration=cfg.max_duration,
            num_buckets=cfg.num_buckets,
            buffer_size=cfg.buffer_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=cfg.seed,
            world_size=self.world_size,
            rank=self.rank,
        )
        sampler.filter(cut_filter)
        return self._loader(SeededBatchDataset(self._dataset(cuts, train=True)), ResumableSampler(sampler, cut_filter))

    def eval_dataloader(self, cuts: Any) -> DataLoader:
        """Batches of up to ``max_duration`` seconds in manifest order; nothing is filtered."""
        from lhotse.dataset import SimpleCutSampler

        cuts = self._prepare_cuts(cuts)
        sampler = SimpleCutSampler(
            cuts, max_duration=self.cfg.max_duration, shuffle=False, world_size=self.world_size, rank=self.rank
        )
        return self._loader(self._dataset(cuts), sampler)

    def batch_duration(self, batch: dict[str, Any]) -> float:
        """Seconds of audio in ``batch`` (from ``input_lens``), for throughput logging."""
        unit = self.seconds_per_input_unit
        if unit is None:
            return 0.0
        return float(batch["input_lens"].sum().item()) * unit
