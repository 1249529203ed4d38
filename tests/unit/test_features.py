"""Fbank feature extraction + storage on a tiny fake part."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from speechkd.cli import main
from speechkd.data.features import compute_fbank, cuts_path, feats_dir, make_fbank_extractor
from speechkd.data.prepare import prepare_librispeech
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
