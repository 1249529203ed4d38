"""Fbank feature extraction + storage on a tiny fake part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, load_manifest

from speechkd.cli import main
from speechkd.data.features import compute_fbank, cuts_path, fbank_report_path, feats_dir, make_fbank_extractor
from speechkd.data.prepare import SkipReason, prepare_librispeech, read_report
from speechkd.errors import SpeechkdError
from speechkd.testing.fake_librispeech import make_fake_librispeech
from speechkd.text.tokenizer import texts_from_manifests

PART = "dev-clean-2"
FACTORS = (0.9, 1.1)
FRAMES_PER_SECOND = 100  # 10 ms frame shift
LILCOM_ATOL = 0.02  # lilcom's lossy compression of log-mel values: steps of 2**-6


@pytest.fixture(scope="module")
def fbank(tmp_path_factory):
    root = tmp_path_factory.mktemp("fbank")
    info = make_fake_librispeech(root / "LS", {PART: (2, 1, 2)}, seed=3)
    prepare_librispeech(info.root, root / "manifests")
    reports = compute_fbank(
        root / "manifests", root / "fbank", [PART], speed_perturb_parts=[PART], speed_factors=FACTORS
    )
    return info, root, reports[PART]


def test_cuts_hold_one_feature_matrix_per_cut_and_speed(fbank):
    info, root, report = fbank
    utts = info.parts[PART].utterances
    cuts = load_manifest(cuts_path(root / "fbank", PART))
    expected = {u: 1.0 for u in utts} | {f"{u}_sp{f}": f for u in utts for f in FACTORS}
    assert sorted(c.id for c in cuts) == sorted(expected)
    assert report.num_cuts == len(expected) and report.failed_cut_ids == []
    for cut in cuts:
        utt = utts[cut.id.split("_sp")[0]]
        feats = cut.load_features()
        seconds = utt.duration / expected[cut.id]
        assert feats.shape[1] == 80
        assert abs(feats.shape[0] - seconds * FRAMES_PER_SECOND) <= 1, (cut.id, feats.shape, seconds)
        assert cut.supervisions[0].text == utt.text
    assert sorted(p.name for p in feats_dir(root / "fbank", PART).iterdir()) == ["feats-0.lca"]


def test_stored_features_equal_on_the_fly_extraction(fbank):
    info, root, _ = fbank
    cuts = load_manifest(cuts_path(root / "fbank", PART))
    extractor = make_fbank_extractor(80)
    for utt in info.parts[PART].utterances.values():
        wav, sr = sf.read(utt.path, dtype="float32")
        direct = extractor.extract(wav, sr)
        stored = cuts[utt.utt_id].load_features()
        assert direct.shape == stored.shape
        np.testing.assert_allclose(stored, direct, atol=LILCOM_ATOL)
    # a speed-perturbed copy stores the features of the resampled signal
    sp_cut = cuts[f"{utt.utt_id}_sp0.9"]
    sp_audio = sp_cut.load_audio()[0]
    assert len(sp_audio) == pytest.approx(len(wav) / 0.9, abs=1)
    np.testing.assert_allclose(sp_cut.load_features(), extractor.extract(sp_audio, sr), atol=LILCOM_ATOL)


def test_rerun_skips_finished_parts(fbank):
    _, root, _ = fbank
    out = cuts_path(root / "fbank", PART)
    mtime = out.stat().st_mtime_ns
    report = compute_fbank(root / "manifests", root / "fbank", [PART])[PART]
    assert report.reused and out.stat().st_mtime_ns == mtime


def test_bad_arguments_are_clear_errors(fbank, tmp_path):
    _, root, _ = fbank
    with pytest.raises(SpeechkdError, match="test-clean"):
        compute_fbank(root / "manifests", tmp_path, ["test-clean"])
    with pytest.raises(SpeechkdError, match="train-clean-100"):
        compute_fbank(root / "manifests", tmp_path, [PART], speed_perturb_parts=["train-clean-100"])


def test_bpe_texts_from_cuts_leave_out_speed_copies(fbank):
    info, root, _ = fbank
    texts = list(texts_from_manifests([cuts_path(root / "fbank", PART)]))
    assert sorted(texts) == sorted(u.text for u in info.parts[PART].utterances.values())


def test_cli_fbank_without_speed_perturbation(fbank, tmp_path):
    info, root, _ = fbank
    assert main(["data", "fbank", "--manifest-dir", str(root / "manifests"), "--output-dir", str(tmp_path)]) == 0
    cuts = load_manifest(cuts_path(tmp_path, PART))
    assert sorted(c.id for c in cuts) == sorted(info.parts[PART].utterances)
    assert "fbank" in (tmp_path / "command.sh").read_text()


def test_manifests_written_with_relative_paths_work_from_another_directory(tmp_path, monkeypatch):
    """`speechkd asr train` from another directory used to die with a raw FileNotFoundError: storage
    and audio paths were relative to where the data stages ran."""
    from speechkd.training.asr_experiment import load_cuts

    work = tmp_path / "egs"
    make_fake_librispeech(work / "download" / "LS", {PART: (1, 1, 2)}, seed=4)
    monkeypatch.chdir(work)
    prepare_librispeech("download/LS", "data/manifests")  # relative, as run.sh passes them
    compute_fbank("data/manifests", "data/fbank", [PART])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cuts = load_cuts(work / "data" / "fbank", [PART])
    assert len(list(cuts)) == 2
    for cut in cuts:
        assert Path(cut.features.storage_path) == feats_dir(work / "data" / "fbank", PART) / "feats-0.lca"
        assert cut.load_features().shape[1] == 80
        assert cut.load_audio().shape[0] == 1  # the audio path is absolute as well


def test_a_manifest_with_paths_relative_to_another_directory_is_explained(fbank, tmp_path, monkeypatch):
    """An older manifest (relative storage path) fails at start naming the cause and the fix."""
    from speechkd.training.asr_experiment import load_cuts

    _, root, _ = fbank
    cuts = load_manifest(cuts_path(root / "fbank", PART))
    old_dir = tmp_path / "old_fbank"
    old_dir.mkdir()
    CutSet.from_cuts(_relative_features(c, root) for c in cuts).to_file(cuts_path(old_dir, PART))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpeechkdError) as err:
        load_cuts(old_dir, [PART])
    msg = str(err.value)
    assert str(cuts_path(old_dir, PART)) in msg and "feature storage fbank/" in msg
    assert f"this command runs in {tmp_path}" in msg and "--overwrite" in msg
    monkeypatch.chdir(root)  # from the directory the paths are relative to, it works
    assert len(list(load_cuts(old_dir, [PART]))) == len(cuts)
    audio_only = tmp_path / "audio_only"  # cuts without features: their audio files are checked
    audio_only.mkdir()
    CutSet.from_cuts(_relative_audio(c.drop_features(), root) for c in cuts).to_file(cuts_path(audio_only, PART))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpeechkdError, match=r"audio file LS/.*\.flac of cut .* not found \(a path relative"):
        load_cuts(audio_only, [PART])


def _relative_features(cut, root):
    import dataclasses

    rel = str(Path(cut.features.storage_path).relative_to(root))
    return dataclasses.replace(cut, features=dataclasses.replace(cut.features, storage_path=rel))


def test_cuts_without_features_are_listed_in_a_report(tmp_path, capsys):
    """A flac whose header reads but whose body is truncated passes preparation and fails at fbank:
    it used to be only logged; now it is listed in fbank-report-<part>.tsv like preparation's skips."""
    info = make_fake_librispeech(tmp_path / "LS", {PART: (1, 1, 3)}, seed=6)
    prepare_librispeech(info.root, tmp_path / "manifests")
    broken = sorted(info.parts[PART].utterances.values(), key=lambda u: u.utt_id)[1]
    broken.path.write_bytes(broken.path.read_bytes()[:200])
    report = compute_fbank(tmp_path / "manifests", tmp_path / "fbank", [PART])[PART]
    assert report.failed_cut_ids == [broken.utt_id] and report.num_cuts == 2
    assert report.report_path == fbank_report_path(tmp_path / "fbank", PART)
    rows = read_report(report.report_path)
    assert [(r.reason, r.utt_id, r.path) for r in rows] == [(SkipReason.NO_FEATURES, broken.utt_id, str(broken.path))]
    assert main(["data", "fbank", "--manifest-dir", str(tmp_path / "manifests"), "--output-dir",
                 str(tmp_path / "fbank2"), "--parts", PART]) == 0
    assert f"1 failed, listed in {fbank_report_path(tmp_path / 'fbank2', PART)}" in capsys.readouterr().out


def _relative_audio(cut, root):
    import dataclasses

    sources = [dataclasses.replace(src, source=str(Path(src.source).relative_to(root))) for src in cut.recording.sources]
    return dataclasses.replace(cut, recording=dataclasses.replace(cut.recording, sources=sources))


# ------------------------------------------------------------------------------------------------
# narrowband copies


def _energy_above(audio: np.ndarray, sr: int, hz: float) -> float:
    """Fraction of the signal's energy above ``hz``."""
    spec = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sr)
    return float(spec[freqs > hz].sum() / spec.sum())


def test_narrowband_copy_removes_the_band_above_half_the_rate_and_keeps_the_rest(fbank, tmp_path):
    from speechkd.data.features import compute_narrowband

    info, root, _ = fbank
    src = CutSet.from_file(cuts_path(root / "fbank", PART))
    plain = CutSet.from_cuts(c for c in src if "_sp" not in c.id)
    # custom fields (a pseudo-label score, the untranscribed mark) must survive the copy
    marked = CutSet.from_cuts(c.with_custom("untranscribed", True) for c in plain)
    (tmp_path / "in").mkdir()
    marked.to_file(cuts_path(tmp_path / "in", "pool"))
    reports = compute_narrowband(tmp_path / "in", ["pool"], rate=8000, output_dir=tmp_path / "out")
    report = reports["pool-nb8000"]
    assert report.num_cuts == len(plain) and report.failed_cut_ids == []
    copies = load_manifest(cuts_path(tmp_path / "out", "pool-nb8000"))
    assert sorted(c.id for c in copies) == sorted(f"{c.id}_rs8000" for c in plain)
    extractor = make_fbank_extractor(80)
    for cut in copies:
        orig = plain[cut.id[: -len("_rs8000")]]
        assert cut.sampling_rate == orig.sampling_rate == 16000
        assert cut.supervisions[0].text == orig.supervisions[0].text
        assert cut.custom["untranscribed"] is True
        wide, narrow = orig.load_audio()[0], cut.load_audio()[0]
        assert abs(len(narrow) - len(wide)) <= 1
        # the fake audio has energy above 4 kHz; the copy keeps under 1% of it
        assert _energy_above(wide, 16000, 4200) > 1e-3
        assert _energy_above(narrow, 16000, 4200) < _energy_above(wide, 16000, 4200) / 100
        # ... and keeps the band below (the copy is the same signal, low-passed)
        n = min(len(wide), len(narrow))
        lo = np.fft.rfftfreq(n, 1 / 16000) < 3000
        a, b = np.abs(np.fft.rfft(wide[:n]))[lo], np.abs(np.fft.rfft(narrow[:n]))[lo]
        assert (b**2).sum() == pytest.approx((a**2).sum(), rel=0.05)
        assert np.corrcoef(a, b)[0, 1] > 0.95
        # stored features are those of the band-limited audio
        np.testing.assert_allclose(cut.load_features(), extractor.extract(narrow, 16000), atol=LILCOM_ATOL)
    # a rerun reuses the copy; a changed input (e.g. new pseudo-labels) makes it again
    again = compute_narrowband(tmp_path / "in", ["pool"], rate=8000, output_dir=tmp_path / "out")
    assert again["pool-nb8000"].reused
    relabelled = CutSet.from_cuts(c.map_supervisions(lambda s: s.transform_text(str.lower)) for c in marked)
    relabelled.to_file(cuts_path(tmp_path / "in", "pool"))
    third = compute_narrowband(tmp_path / "in", ["pool"], rate=8000, output_dir=tmp_path / "out")
    assert not third["pool-nb8000"].reused and third["pool-nb8000"].num_cuts == len(plain)
    remade = load_manifest(cuts_path(tmp_path / "out", "pool-nb8000"))
    assert [c.supervisions[0].text for c in remade] == [c.supervisions[0].text.lower() for c in plain]


def test_narrowband_bad_input_is_a_clear_error(fbank, tmp_path):
    from speechkd.data.features import compute_narrowband, narrowband_copies

    _, root, _ = fbank
    with pytest.raises(SpeechkdError, match="librispeech_cuts_nope.jsonl.gz"):
        compute_narrowband(root / "fbank", ["nope"], rate=8000, output_dir=tmp_path)
    cuts = CutSet.from_file(cuts_path(root / "fbank", PART)).to_eager()
    first = next(iter(cuts))
    with pytest.raises(SpeechkdError, match=f"16000 Hz is not below cut {first.id}'s sampling rate 16000"):
        narrowband_copies(cuts, 16000)
    with pytest.raises(SpeechkdError, match="must be > 0"):
        narrowband_copies(cuts, 0)
    no_audio = CutSet.from_cuts([first.drop_recording()])
    with pytest.raises(SpeechkdError, match=f"cut {first.id} has no recording"):
        narrowband_copies(no_audio, 8000)


def test_cli_narrowband_writes_the_copy_beside_the_input_and_describes_itself(fbank, tmp_path):
    import shutil

    _, root, _ = fbank
    work = tmp_path / "fbank"
    work.mkdir()
    shutil.copy(cuts_path(root / "fbank", PART), cuts_path(work, PART))
    assert main(["data", "narrowband", "--cuts-dir", str(work), "--parts", PART, "--rate", "4000"]) == 0
    copies = load_manifest(cuts_path(work, f"{PART}-nb4000"))
    assert all(c.id.endswith("_rs4000") for c in copies)
    assert len(copies) == len(load_manifest(cuts_path(work, PART)))
    assert "narrowband" in (work / "command.sh").read_text()
    assert not (work / "config.yaml").exists()  # a shared fbank dir keeps its own stage's config.yaml
    source = (work / f"librispeech_cuts_{PART}-nb4000.source.yaml").read_text()
    assert "rate: 4000" in source and "source_sha256:" in source
