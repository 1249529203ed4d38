"""80-dim log-mel filter-bank features with lhotse's own ``Fbank`` (no torchaudio needed).

Input: ``<manifest_dir>/librispeech_{recordings,supervisions}_<part>.jsonl.gz`` (from
:mod:`speechkd.data.prepare`). Output (see docs/INTERFACES.md)::

    <output_dir>/librispeech_cuts_<part>.jsonl.gz   # CutSet with features attached
    <output_dir>/librispeech_feats_<part>/feats-<i>.lca   # lilcom-compressed arrays, one file per job
    <output_dir>/fbank-report-<part>.tsv            # cuts left out (audio lhotse could not load), as prepare's TSV

Cut ids are the recording (= utterance) ids. Speed perturbation (``speed_perturb_parts``) adds ``<id>_sp<factor>`` copies of every cut, made by
lhotse's own resampler (torch only; no torchaudio). :func:`compute_narrowband` writes a band-limited
copy of a part (``<part>-nb<rate>``, audio resampled to e.g. 8 kHz and back) from its cuts manifest, for
training on telephone-band audio. A part whose cuts manifest already exists is
skipped unless ``overwrite``. Cuts whose audio lhotse fails to load are dropped by lhotse: they are
counted, logged by id, returned in :class:`FbankReport` and listed in ``fbank-report-<part>.tsv`` (the
columns of preparation's report; :func:`speechkd.data.prepare.read_report` reads it) rather than lost
silently.

Feature storage paths in the cuts manifest are absolute, so that training and decoding can start from
any directory; :func:`check_cut_paths` explains a manifest whose paths do not resolve from here (e.g. one
written by an older speechkd with paths relative to where the fbank stage ran).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from speechkd.data.prepare import MANIFEST_PREFIX, SkippedInput, SkipReason, manifest_paths, write_report
from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_to_file, atomic_write_text
from speechkd.utils.hashing import sha256_file

if TYPE_CHECKING:
    from lhotse import CutSet, Fbank
    from lhotse.dataset import OnTheFlyFeatures

log = logging.getLogger(__name__)

Pathlike = Union[str, Path]

DEFAULT_NUM_MEL_BINS = 80
DEFAULT_SPEED_FACTORS: tuple[float, ...] = (0.9, 1.1)


@dataclasses.dataclass
class FbankReport:
    """What :func:`compute_fbank` did for one part."""

    part: str
    cuts_path: Path
    num_cuts: int  # cuts in the written manifest (0 when reused: not re-counted)
    reused: bool = False
    failed_cut_ids: list[str] = dataclasses.field(default_factory=list)
    report_path: Optional[Path] = None  # the TSV listing the failed cuts (None when reused)


def cuts_path(output_dir: Pathlike, part: str) -> Path:
    return Path(output_dir) / f"{MANIFEST_PREFIX}_cuts_{part}.jsonl.gz"


def fbank_report_path(output_dir: Pathlike, part: str) -> Path:
    return Path(output_dir) / f"fbank-report-{part}.tsv"


def feats_dir(output_dir: Pathlike, part: str) -> Path:
    return Path(output_dir) / f"{MANIFEST_PREFIX}_feats_{part}"


def make_fbank_extractor(
    num_mel_bins: int = DEFAULT_NUM_MEL_BINS, sampling_rate: int = 16000, dither: float = 0.0
) -> "Fbank":
    """The feature extractor used for stored features; reuse it for on-the-fly extraction so both
    paths give the same features (10 ms shift, 25 ms window, log-mel, kaldi-compatible)."""
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=num_mel_bins, sampling_rate=sampling_rate, dither=dither))


def make_on_the_fly_fbank(num_mel_bins: int = DEFAULT_NUM_MEL_BINS, sampling_rate: int = 16000) -> "OnTheFlyFeatures":
    """``lhotse.dataset.OnTheFlyFeatures`` input strategy with :func:`make_fbank_extractor`'s config."""
    from lhotse.dataset import OnTheFlyFeatures

    return OnTheFlyFeatures(make_fbank_extractor(num_mel_bins, sampling_rate))


def available_parts(manifest_dir: Pathlike) -> list[str]:
    """Parts that have both recordings and supervisions manifests in ``manifest_dir``."""
    manifest_dir = Path(manifest_dir)
    prefix, suffix = f"{MANIFEST_PREFIX}_recordings_", ".jsonl.gz"
    parts = [p.name[len(prefix) : -len(suffix)] for p in sorted(manifest_dir.glob(f"{prefix}*{suffix}"))]
    return [p for p in parts if manifest_paths(manifest_dir, p)[1].is_file()]


def compute_fbank(
    manifest_dir: Pathlike,
    output_dir: Pathlike,
    parts: Optional[Sequence[str]] = None,
    num_jobs: int = 1,
    speed_perturb_parts: Sequence[str] = (),
    num_mel_bins: int = DEFAULT_NUM_MEL_BINS,
    overwrite: bool = False,
    speed_factors: Sequence[float] = DEFAULT_SPEED_FACTORS,
) -> dict[str, FbankReport]:
    """Compute and store fbank features for each part; write ``librispeech_cuts_<part>.jsonl.gz``.

    Args:
        manifest_dir: directory with the recording/supervision manifests.
        output_dir: directory for cuts manifests and feature storage (created if needed).
        parts: parts to process; None = every part with manifests in ``manifest_dir``.
        num_jobs: worker processes (lhotse spawns them; 1 = in this process).
        speed_perturb_parts: parts that also get ``_sp<factor>`` copies for each of ``speed_factors``.
        num_mel_bins: feature dimension C.
        overwrite: recompute parts whose cuts manifest already exists.
        speed_factors: speed perturbation factors.

    Returns:
        part -> :class:`FbankReport`.
    """
    manifest_dir, output_dir = Path(manifest_dir), Path(output_dir)
    if not manifest_dir.is_dir():
        raise SpeechkdError(f"manifest directory not found: {manifest_dir}")
    if num_jobs < 1:
        raise SpeechkdError(f"num_jobs must be >= 1, got {num_jobs}")
    if parts is None:
        parts = available_parts(manifest_dir)
        if not parts:
            raise SpeechkdError(f"no librispeech_recordings_<part>.jsonl.gz manifests in {manifest_dir}")
    unknown = sorted(set(speed_perturb_parts) - set(parts))
    if unknown:
        raise SpeechkdError(
            f"--speed-perturb-parts {' '.join(unknown)} not among the parts processed: {' '.join(parts)}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for part in parts:
        out = cuts_path(output_dir, part)
        if out.is_file() and not overwrite:
            log.info("Part %s: %s exists - skipping", part, out)
            reports[part] = FbankReport(part, out, num_cuts=0, reused=True)
            continue
        factors = tuple(speed_factors) if part in speed_perturb_parts else ()
        reports[part] = _compute_part(manifest_dir, output_dir, part, num_jobs, factors, num_mel_bins)
    return reports


def load_cuts(manifest_dir: Path, part: str) -> "CutSet":
    """CutSet of one part built from its recording and supervision manifests.

    One cut per recording, and the cut id is the recording id (for LibriSpeech: the utterance id),
    so stored targets and decoding results can be keyed by utterance id.
    """
    from lhotse import CutSet, load_manifest

    rec_path, sup_path = manifest_paths(manifest_dir, part)
    for p in (rec_path, sup_path):
        if not p.is_file():
            raise SpeechkdError(f"manifest not found for part {part}: {p} (run `speechkd data prepare-librispeech`)")
    cuts = CutSet.from_manifests(recordings=load_manifest(rec_path), supervisions=load_manifest(sup_path))
    cuts = CutSet.from_cuts(c.with_id(c.recording_id) for c in cuts)
    if len(cuts) == 0:
        raise SpeechkdError(f"part {part}: {rec_path} holds no recordings")
    return cuts


def add_speed_perturbation(cuts: "CutSet", factors: Sequence[float]) -> "CutSet":
    """``cuts`` followed by a ``_sp<factor>`` copy of each cut per factor (lhotse resampling)."""
    out = cuts
    for factor in factors:
        if factor <= 0:
            raise SpeechkdError(f"speed perturbation factor must be > 0, got {factor}")
        out = out + cuts.perturb_speed(factor)
    return out


def _compute_part(
    manifest_dir: Path, output_dir: Path, part: str, num_jobs: int, factors: Sequence[float], num_mel_bins: int
) -> FbankReport:
    cuts = load_cuts(manifest_dir, part)
    cuts = add_speed_perturbation(cuts, factors)
    log.info("Part %s: %d cuts (speed factors %s)", part, len(cuts), list(factors) or "none")
    return _store_features(cuts, output_dir, part, num_jobs, num_mel_bins, source=str(manifest_paths(manifest_dir, part)[0]))


def _store_features(
    cuts: "CutSet", output_dir: Path, part: str, num_jobs: int, num_mel_bins: int, source: str
) -> FbankReport:
    """Extract fbank for ``cuts`` into ``output_dir`` as ``part``: features under ``librispeech_feats_<part>``,
    the manifest ``librispeech_cuts_<part>.jsonl.gz`` and the report of cuts whose audio failed to load.
    ``source`` names the input in the error raised when no cut could be loaded."""
    import torch
    from lhotse import LilcomChunkyWriter

    _require_lilcom()
    expected_ids = [c.id for c in cuts]
    storage = feats_dir(os.path.abspath(output_dir), part)  # absolute: the manifest works from any directory
    if storage.exists():  # left by an interrupted run (no cuts manifest was written)
        log.info("Part %s: removing incomplete feature storage %s", part, storage)
        shutil.rmtree(storage)
    storage.mkdir(parents=True)
    log.info("Part %s: %d cuts, %d job(s) -> %s", part, len(expected_ids), num_jobs, storage)
    threads = torch.get_num_threads()
    if num_jobs > 1:
        torch.set_num_threads(1)  # lhotse warns that threads x processes can hang
    try:
        with_feats = cuts.compute_and_store_features(
            extractor=make_fbank_extractor(num_mel_bins, _sampling_rate(cuts)),
            # num_jobs == 1 writes one file at storage_path: keep the same "<dir>/feats-<i>" layout.
            storage_path=storage if num_jobs > 1 else storage / "feats-0",
            num_jobs=num_jobs,
            storage_type=LilcomChunkyWriter,
        )
        with_feats = with_feats.to_eager()
    finally:
        torch.set_num_threads(threads)
    failed = sorted(set(expected_ids) - {c.id for c in with_feats})
    for cut_id in failed:
        log.warning("Part %s: no features for cut %s (lhotse could not load its audio)", part, cut_id)
    tsv = fbank_report_path(output_dir, part)
    failed_cuts = {c.id: c for c in cuts if c.id in frozenset(failed)}
    write_report(tsv, [_failed_input(failed_cuts[cut_id]) for cut_id in failed])
    if len(with_feats) == 0:
        raise SpeechkdError(f"part {part}: no cut's audio could be loaded from {source}")
    out = cuts_path(output_dir, part)
    atomic_to_file(with_feats, out)
    log.info("Part %s: wrote %s (%d cuts, %d failed, listed in %s)", part, out, len(with_feats), len(failed), tsv)
    return FbankReport(part, out, num_cuts=len(with_feats), failed_cut_ids=failed, report_path=tsv)


# --------------------------------------------------------------------------------------------------
# narrowband copies


def narrowband_part(part: str, rate: int) -> str:
    """Name of the band-limited copy of ``part``: ``<part>-nb<rate>`` (e.g. ``train-nb8000``)."""
    return f"{part}-nb{rate}"


def narrowband_copies(cuts: "CutSet", rate: int) -> "CutSet":
    """Each cut band-limited to ``rate / 2`` Hz, as telephone audio is, at its own sampling rate.

    The audio is resampled to ``rate`` and back by lhotse's resampler (a windowed-sinc low-pass; no
    torchaudio), lazily on load, so the copy has the same length, rate and supervisions (text, custom
    fields such as pseudo-label scores or the untranscribed mark) as the original. The cut id gets lhotse's
    ``_rs<rate>`` suffix (recording and supervision ids stay, so the copy still names its source). Stored
    features are dropped: they belong to the original audio.

    Raises:
        SpeechkdError: ``rate`` not below a cut's sampling rate, or a cut without a recording.
    """
    from lhotse import CutSet

    if rate <= 0:
        raise SpeechkdError(f"narrowband rate must be > 0 Hz, got {rate}")

    def one(cut: Any) -> Any:
        if not getattr(cut, "has_recording", False):
            raise SpeechkdError(f"cut {cut.id} has no recording: a narrowband copy needs its audio")
        if rate >= cut.sampling_rate:
            raise SpeechkdError(
                f"narrowband rate {rate} Hz is not below cut {cut.id}'s sampling rate {cut.sampling_rate} Hz"
            )
        return cut.drop_features().resample(rate, affix_id=True).resample(cut.sampling_rate)

    return CutSet.from_cuts(one(c) for c in cuts)


def compute_narrowband(
    cuts_dir: Pathlike,
    parts: Sequence[str],
    rate: int = 8000,
    output_dir: Optional[Pathlike] = None,
    num_jobs: int = 1,
    num_mel_bins: int = DEFAULT_NUM_MEL_BINS,
    overwrite: bool = False,
) -> dict[str, FbankReport]:
    """Write a band-limited copy of each part as part ``<part>-nb<rate>``, with fbank features.

    Input: ``<cuts_dir>/librispeech_cuts_<part>.jsonl.gz`` (cuts with recordings: the fbank stage's output,
    or a pseudo-label recipe's data). Output: ``<output_dir>/librispeech_cuts_<part>-nb<rate>.jsonl.gz``
    and its features, as :func:`compute_fbank` writes them (``output_dir`` defaults to ``cuts_dir``).
    A copy whose manifest exists is skipped unless ``overwrite``, but only while its sidecar
    ``librispeech_cuts_<part>-nb<rate>.source.yaml`` says it was made from the same input (sha256) and settings;
    otherwise it is made again (e.g. after new pseudo-labels).

    Train on ``--train-parts <part> <part>-nb<rate>`` to teach a wideband-trained model telephone-band
    audio (8 kHz sources such as MiniLibri's test-other).

    Returns:
        copy part -> :class:`FbankReport`.
    """
    import yaml
    from lhotse import CutSet

    cuts_dir = Path(cuts_dir)
    output_dir = Path(output_dir) if output_dir is not None else cuts_dir
    if num_jobs < 1:
        raise SpeechkdError(f"num_jobs must be >= 1, got {num_jobs}")
    inputs = {part: cuts_path(cuts_dir, part) for part in parts}
    missing = [str(p) for p in inputs.values() if not p.is_file()]
    if missing:
        raise SpeechkdError(f"cuts manifest(s) not found: {' '.join(missing)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for part, src in inputs.items():
        name = narrowband_part(part, rate)
        out = cuts_path(output_dir, name)
        source = _narrowband_source(src, rate, num_mel_bins)
        sidecar = out.with_name(f"{MANIFEST_PREFIX}_cuts_{name}.source.yaml")
        if out.is_file() and not overwrite:
            if _read_yaml(sidecar) == source:
                log.info("Part %s: %s exists (made from this %s) - skipping", name, out, src)
                reports[name] = FbankReport(name, out, num_cuts=0, reused=True)
                continue
            log.warning("Part %s: %s was made from another input (%s changed since?) - making it again",
                        name, out, src)
        cuts = narrowband_copies(CutSet.from_file(src).to_eager(), rate)
        reports[name] = _store_features(cuts, output_dir, name, num_jobs, num_mel_bins, source=str(src))
        atomic_write_text(sidecar, yaml.safe_dump(source, sort_keys=False))
    return reports


def _narrowband_source(src: Path, rate: int, num_mel_bins: int) -> dict[str, Any]:
    """What a narrowband copy was made from: the input manifest (path and content hash) and the settings.
    Kept beside the copy (``<copy>.source.yaml``), so a rerun after the input changed (e.g. new pseudo-labels)
    makes the copy again instead of reusing a stale one."""
    return {
        "source": str(src.resolve()),
        "source_sha256": sha256_file(src),
        "rate": rate,
        "num_mel_bins": num_mel_bins,
    }


def _read_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _failed_input(cut: object) -> SkippedInput:
    """The report row of a cut that got no features: its id and audio file."""
    sources = getattr(getattr(cut, "recording", None), "sources", None) or ()
    audio = " ".join(s.source for s in sources if s.type == "file")
    return SkippedInput(SkipReason.NO_FEATURES, cut.id, audio, "lhotse could not load its audio")


def check_cut_paths(cuts: "CutSet", manifest: Pathlike) -> None:
    """Fail with the cause and the fix when the first cut's stored data cannot be found from here.

    Checks the feature storage (the audio files when it has no features) and the custom target arrays
    of the first cut of ``cuts`` (read from ``manifest``); a path relative to another working directory
    is the usual cause.

    Raises:
        SpeechkdError: naming the manifest, the missing path and the current directory.
    """
    first = next(iter(cuts), None)
    if first is None:
        return
    for what, path in _stored_paths(first):
        if Path(path).exists():
            continue
        msg = f"{manifest}: {what} {path} of cut {first.id} not found"
        if not Path(path).is_absolute():
            msg += (
                f" (a path relative to the directory its stage ran in; this command runs in {Path.cwd()}). "
                "Run it from that directory, or rerun the stage that wrote the manifest (e.g. "
                "`speechkd data prepare-librispeech`/`data fbank` with --overwrite): it now writes absolute paths"
            )
        else:
            msg += " (moved or deleted since the manifest was written? rerun the stage that wrote it)"
        raise SpeechkdError(msg)


def _stored_paths(cut: object) -> list[tuple[str, str]]:
    """``(what, path)`` of the files a cut reads: its feature storage (or, without features, its audio
    files: audio deleted after the fbank stage is fine) and its custom target arrays."""
    out = []
    features = getattr(cut, "features", None)
    if features is not None:
        out.append(("feature storage", features.storage_path))
    else:
        recording = getattr(cut, "recording", None)
        out += [("audio file", s.source) for s in getattr(recording, "sources", None) or () if s.type == "file"]
    for name, value in (getattr(cut, "custom", None) or {}).items():
        if isinstance(getattr(value, "storage_path", None), str):
            out.append((f"'{name}' storage", value.storage_path))
    return out


def _sampling_rate(cuts: "CutSet") -> int:
    rates = {c.sampling_rate for c in cuts}
    if len(rates) != 1:
        raise SpeechkdError(f"cuts mix sampling rates {sorted(rates)}; resample the corpus to one rate first")
    return rates.pop()


def _require_lilcom() -> None:
    try:
        import lilcom  # noqa: F401
    except ImportError as e:
        raise SpeechkdError("feature storage needs the 'lilcom' package: pip install lilcom") from e
