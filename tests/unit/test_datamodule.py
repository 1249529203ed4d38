"""AsrDataModule: batch dicts, custom-field collation, bucketing, filtering, resume skipping."""

import logging

import numpy as np
import pytest
import torch

from speechkd.data.collate import FLOAT_PAD, INT_PAD, collate_targets
from speechkd.data.datamodule import AsrDataModule, DataConfig, SpecAugmentConfig, set_loader_epoch
from speechkd.errors import SpeechkdError
from speechkd.testing.toy import ToyTokenizer, attach_toy_targets, make_toy_cuts

MAX_DURATION = 5.0


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    d = tmp_path_factory.mktemp("dm")
    return make_toy_cuts(d / "audio", num_cuts=10, seed=3)


def _dm(**kw):
    cfg = dict(features="on_the_fly", max_duration=MAX_DURATION, num_buckets=2, num_workers=0,
               max_cut_duration=3.0, drop_last=False)
    cfg.update(kw)
    return AsrDataModule(DataConfig(**cfg), tokenizer=ToyTokenizer())


def _epoch(loader, epoch=1, skip=0):
    set_loader_epoch(loader, epoch, skip)
    return list(loader)


def test_custom_fields_padded_with_lengths(cuts, tmp_path):
    tc = attach_toy_targets(cuts, tmp_path / "cb", name="codebook_indexes", frame_shift=0.04, trailing_shape=(4,))
    tc = attach_toy_targets(tc, tmp_path / "emb", name="emb", frame_shift=0.02, trailing_shape=(3,), dtype="float16")
    batch_cuts = [tc[i] for i in (0, 1, 2)]
    out = collate_targets(batch_cuts, ["codebook_indexes", "emb"])
    for name, fs, pad, dtype in (("codebook_indexes", 0.04, INT_PAD, torch.int64), ("emb", 0.02, FLOAT_PAD, torch.float32)):
        x, lens = out[name], out[name + "_lens"]
        expect_lens = [int(round(c.duration / fs)) for c in batch_cuts]
        assert lens.tolist() == expect_lens and lens.dtype == torch.int64
        assert x.dtype == dtype and x.shape[:2] == (3, max(expect_lens))
        for i, c in enumerate(batch_cuts):
            stored = torch.from_numpy(c.load_custom(name).astype(np.float64))
            assert torch.equal(x[i, : lens[i]].double(), stored)
            assert (x[i, lens[i]:] == pad).all()
    # a batch through the loader carries the same fields
    dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=MAX_DURATION, num_buckets=2, num_workers=0,
                                  max_cut_duration=3.0, drop_last=False),
                       tokenizer=ToyTokenizer(), target_fields=["codebook_indexes"])
    batch = _epoch(dm.train_dataloader(tc))[0]
    assert set(batch["targets"]) == {"codebook_indexes", "codebook_indexes_lens"}
    assert batch["targets"]["codebook_indexes"].shape[0] == len(batch["cut_ids"])


def test_missing_field_names_the_cut(cuts, tmp_path):
    tc = attach_toy_targets(cuts, tmp_path / "cb")
    bad = tc[1].with_custom("codebook_indexes", None)
    bad.custom.pop("codebook_indexes")
    with pytest.raises(SpeechkdError, match=rf"cut '{bad.id}' has no custom field 'codebook_indexes'"):
        collate_targets([tc[0], bad], ["codebook_indexes"])


def test_batch_dict_and_bucketing(cuts):
    tok = ToyTokenizer()
    batches = _epoch(_dm().train_dataloader(cuts))
    seen = []
    by_id = {c.id: c for c in cuts}
    for b in batches:
        durs = [by_id[i].duration for i in b["cut_ids"]]
        # lhotse's padding-aware limit: before its last cut joined, the batch could not take one
        # more cut as long as its longest one: len * longest(all but the last) <= max_duration
        if len(durs) > 1:
            assert len(durs) * max(durs[:-1]) <= MAX_DURATION + 1e-6
        n = len(b["cut_ids"])
        # lhotse's fbank: 10 ms shift, frames = round(duration / 0.01) for these durations
        assert b["input_lens"].tolist() == [int(round(d / 0.01)) for d in durs]
        assert b["inputs"].shape == (n, max(b["input_lens"]), 80) and b["input_lens"].dtype == torch.int64
        assert b["texts"] == [by_id[i].supervisions[0].text for i in b["cut_ids"]]
        assert b["tokens"] == tok.encode(b["texts"])
        assert b["targets"] == {}
        seen += b["cut_ids"]
    # every cut inside [1, 3] s exactly once (drop_last=False)
    assert sorted(seen) == sorted(c.id for c in cuts if c.duration <= 3.0)


def test_audio_input(cuts):
    b = _epoch(_dm(input="audio").train_dataloader(cuts))[0]
    by_id = {c.id: c for c in cuts}
    assert b["input_lens"].tolist() == [by_id[i].num_samples for i in b["cut_ids"]]
    assert b["inputs"].shape == (len(b["cut_ids"]), max(b["input_lens"]))
    row = by_id[b["cut_ids"][0]].load_audio()[0]
    assert torch.allclose(b["inputs"][0, : len(row)], torch.from_numpy(row))


def test_precomputed_equals_on_the_fly(cuts, tmp_path):
    from lhotse import Fbank, FbankConfig
    from lhotse.features.io import NumpyFilesWriter

    sub = cuts.subset(first=3)
    feats = sub.compute_and_store_features(Fbank(FbankConfig(num_mel_bins=80)), tmp_path / "feats",
                                           storage_type=NumpyFilesWriter)
    a = _dm(features="on_the_fly", shuffle=False).eval_dataloader(sub)
    b = _dm(features="precomputed", shuffle=False).eval_dataloader(feats)
    for x, y in zip(a, b):
        assert x["cut_ids"] == y["cut_ids"]
        assert torch.equal(x["input_lens"], y["input_lens"])
        assert torch.allclose(x["inputs"], y["inputs"], atol=1e-4)
    with pytest.raises(SpeechkdError, match="no precomputed features"):
        _dm(features="precomputed").train_dataloader(sub)


@pytest.mark.parametrize("features", ["on_the_fly", "precomputed"])
def test_global_feature_stats_match_numpy_over_a_seeded_random_sample(cuts, tmp_path, features):
    from lhotse import Fbank, FbankConfig
    from lhotse.features.io import NumpyFilesWriter

    from speechkd.data.cutsets import reservoir_sample

    sub = cuts.subset(first=4)
    stored = sub.compute_and_store_features(Fbank(FbankConfig(num_mel_bins=80)), tmp_path / "feats",
                                            storage_type=NumpyFilesWriter)
    sample = reservoir_sample(stored, 3, seed=42)  # data.seed's sample of 3 of the 4 cuts
    frames = np.concatenate([c.load_features() for c in sample])  # (sum T, 80)
    dm = _dm(features=features, cmvn_max_cuts=3, seed=42)
    mean, std, n = dm.global_feature_stats(stored if features == "precomputed" else sub)
    assert n == 3 and mean.shape == std.shape == (80,)
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), atol=1e-3)
    np.testing.assert_allclose(std.numpy(), frames.std(0), rtol=1e-3, atol=1e-3)
    with pytest.raises(SpeechkdError, match="no precomputed features"):
        _dm(features="precomputed").global_feature_stats(sub)
    with pytest.raises(SpeechkdError, match="needs fbank input"):
        _dm(input="audio").global_feature_stats(sub)


def test_spec_augment_masks_training_batches_only(cuts):
    aug = SpecAugmentConfig(enabled=True, p=1.0, time_warp_factor=0, num_feature_masks=2, features_mask_size=27,
                            num_frame_masks=2, frames_mask_size=30, max_frames_mask_fraction=0.5)
    plain, augmented = _dm(shuffle=False), _dm(shuffle=False, spec_augment=aug)
    train_a, train_b = _epoch(plain.train_dataloader(cuts)), _epoch(augmented.train_dataloader(cuts))

    def constant_bins(batch):  # frequency bins constant over a row's valid frames: what a mask leaves
        return sum(int((x[:n].std(0) == 0).sum()) for x, n in zip(batch["inputs"], batch["input_lens"]))

    assert [b["cut_ids"] for b in train_a] == [b["cut_ids"] for b in train_b]
    for a, b in zip(train_a, train_b):
        assert torch.equal(a["input_lens"], b["input_lens"]) and a["inputs"].shape == b["inputs"].shape
        assert constant_bins(a) == 0
    assert sum(constant_bins(b) for b in train_b) > 0
    assert all(not torch.equal(a["inputs"], b["inputs"]) for a, b in zip(train_a, train_b))
    for a, b in zip(plain.eval_dataloader(cuts), augmented.eval_dataloader(cuts)):
        assert torch.equal(a["inputs"], b["inputs"])
    with pytest.raises(SpeechkdError, match="spec_augment needs fbank input"):
        DataConfig(input="audio", spec_augment=aug).validate()
    with pytest.raises(SpeechkdError, match="spec_augment.p"):
        SpecAugmentConfig(p=1.5).validate()
    with pytest.raises(SpeechkdError, match="spec_augment.num_frame_masks"):
        DataConfig(spec_augment=SpecAugmentConfig(num_frame_masks=-1)).validate()


def test_filters_are_counted_and_logged(tmp_path, caplog):
    cuts = make_toy_cuts(tmp_path, num_cuts=8, min_duration=0.5, max_duration=4.0, seed=5, empty_text_ids=[0, 1])
    expect = {"too_short": [], "too_long": [], "empty_text": []}
    for c in cuts:
        why = ("too_short" if c.duration < 1.0 else "too_long" if c.duration > 3.0
               else "empty_text" if not c.supervisions[0].text else None)
        if why:
            expect[why].append(c.id)
    assert sum(map(len, expect.values())) >= 2
    with caplog.at_level(logging.INFO, logger="speechkd"):
        batches = _epoch(_dm().train_dataloader(cuts))
    seen = {i for b in batches for i in b["cut_ids"]}
    removed = {i for ids in expect.values() for i in ids}
    assert seen == {c.id for c in cuts} - removed
    msg = [r.getMessage() for r in caplog.records if "training cuts, epoch 1" in r.getMessage()]
    assert len(msg) == 1 and f"removed {len(removed)} of 8 cuts" in msg[0]
    for why, ids in expect.items():
        if ids:
            assert f"{why}={len(ids)}" in msg[0]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_untranscribed_cuts_are_kept_without_text_and_their_text_is_never_read(tmp_path, num_workers):
    """Cuts of an untranscribed part reach the batch (not removed as empty text) with text "" and
    ``transcribed`` False, even when they carry a text; transcribed cuts with empty text are still removed."""
    from lhotse import combine

    from speechkd.data.collate import mark_untranscribed

    labelled = make_toy_cuts(tmp_path / "a", num_cuts=4, min_duration=1.0, max_duration=2.5, seed=7,
                             empty_text_ids=[0])
    pool = make_toy_cuts(tmp_path / "b", num_cuts=4, min_duration=1.0, max_duration=2.5, seed=8,
                         empty_text_ids=[0, 1]).modify_ids(lambda i: f"pool-{i}")
    batches = _epoch(_dm(num_workers=num_workers).train_dataloader(combine(labelled, mark_untranscribed(pool))))
    rows = {i: (t, tr, tok) for b in batches for i, t, tr, tok in zip(b["cut_ids"], b["texts"], b["transcribed"], b["tokens"])}
    assert set(rows) == {c.id for c in labelled if c.supervisions[0].text} | {c.id for c in pool}
    for c in pool:
        assert rows[c.id] == ("", False, [])  # text or not, it is never read
    for c in labelled:
        if c.id in rows:
            assert rows[c.id][0] == c.supervisions[0].text and rows[c.id][1] is True and rows[c.id][2]


def test_cut_filter_report_says_untranscribed_cuts_were_kept_without_text(tmp_path):
    from speechkd.data.collate import mark_untranscribed
    from speechkd.data.datamodule import CutFilter

    labelled = make_toy_cuts(tmp_path / "a", num_cuts=3, min_duration=1.0, max_duration=2.5, seed=7, empty_text_ids=[0])
    pool = make_toy_cuts(tmp_path / "b", num_cuts=2, min_duration=1.0, max_duration=2.5, seed=8, empty_text_ids=[0, 1])
    f = CutFilter(0.5, 30.0, drop_empty_text=True)
    kept = [c.id for c in list(labelled) + list(mark_untranscribed(pool)) if f(c)]
    assert len(kept) == 4 and f.removed["empty_text"] == 1 and f.untranscribed == 2
    assert f.report("train").endswith("non-empty text]; 2 cuts of untranscribed parts kept without text")
    plain = CutFilter(0.5, 30.0, drop_empty_text=True)
    for c in labelled:
        plain(c)
    assert "untranscribed" not in plain.report("train")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_skip_batches_resumes_the_same_sequence(cuts, num_workers):
    loader = _dm(num_workers=num_workers).train_dataloader(cuts)
    full = [b["cut_ids"] for b in _epoch(loader, epoch=2)]
    assert len(full) >= 3
    rest = [b["cut_ids"] for b in _epoch(loader, epoch=2, skip=2)]
    assert rest == full[2:]
    other = [b["cut_ids"] for b in _epoch(loader, epoch=3)]
    assert other != full  # a different epoch is shuffled differently
    with pytest.raises(SpeechkdError, match="cannot resume epoch 2"):
        _epoch(loader, epoch=2, skip=len(full) + 1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_with_spec_augment_and_workers_gives_the_same_augmented_batches(cuts, num_workers):
    aug = SpecAugmentConfig(enabled=True, p=1.0, time_warp_factor=20, num_feature_masks=2, features_mask_size=27,
                            num_frame_masks=2, frames_mask_size=30, max_frames_mask_fraction=0.5)
    loader = _dm(num_workers=num_workers, spec_augment=aug, max_duration=3.5).train_dataloader(cuts)
    full = _epoch(loader, epoch=2)
    assert len(full) >= 4
    for skip in (1, 3):
        rest = _epoch(loader, epoch=2, skip=skip)
        assert [b["cut_ids"] for b in rest] == [b["cut_ids"] for b in full[skip:]]
        for a, b in zip(rest, full[skip:]):
            assert torch.equal(a["inputs"], b["inputs"])  # the same masks and warps, batch by batch
    plain = _epoch(_dm(num_workers=0, max_duration=3.5).train_dataloader(cuts), epoch=2)
    assert any(not torch.equal(a["inputs"], b["inputs"]) for a, b in zip(full, plain))  # augmentation was on
    # the training process's own random stream is not reseeded by the batches
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _epoch(_dm(num_workers=0, spec_augment=aug).train_dataloader(cuts), epoch=2)
    assert torch.equal(torch.rand(3), expected)
