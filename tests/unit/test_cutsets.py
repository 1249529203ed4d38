"""Corpus-scale manifest operations: cross-part shuffle, random CMVN sample, speed-perturbation filter."""

import collections
import gzip

import pytest

from speechkd.data.cutsets import drop_speed_perturbed, is_speed_perturbed, reservoir_sample, shuffle_manifests
from speechkd.errors import SpeechkdError
from speechkd.testing.fake_manifests import write_fake_cuts_manifest

PARTS = {"train-clean-100": 60, "train-clean-360": 120, "train-other-500": 180}


@pytest.fixture(scope="module")
def cuts_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("parts")
    offset = 0
    for i, (part, n) in enumerate(PARTS.items()):
        write_fake_cuts_manifest(d / f"librispeech_cuts_{part}.jsonl.gz", part, n, seed=i, speed_factors=(0.9, 1.1),
                                 speaker_offset=offset)
        offset += 1000
    return d


def _lines(path):
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def _part_of(cut):
    return int(cut.supervisions[0].speaker) // 1000


def _first_batches(cuts, n=3, **kw):
    from lhotse.dataset import DynamicBucketingSampler

    sampler = DynamicBucketingSampler(cuts, max_duration=400, num_buckets=4, shuffle=True, seed=1, buffer_size=200, **kw)
    return [b for _, b in zip(range(n), sampler)]


def test_shuffled_manifest_is_a_bounded_memory_permutation_that_mixes_parts_from_the_first_batch(cuts_dir, tmp_path):
    from speechkd.training.asr_experiment import load_cuts

    inputs = [cuts_dir / f"librispeech_cuts_{p}.jsonl.gz" for p in PARTS]
    out = cuts_dir / "librispeech_cuts_train-all-shuf.jsonl.gz"
    n = shuffle_manifests(inputs, out, seed=3, lines_per_bucket=100)  # 11 buckets
    originals = [line for p in inputs for line in _lines(p)]
    shuffled = _lines(out)
    assert n == len(originals) == 3 * sum(PARTS.values())
    assert sorted(shuffled) == sorted(originals) and shuffled != originals
    assert not list(cuts_dir.glob(".librispeech_cuts_train-all-shuf*"))  # temporary buckets removed
    # same seed, same order; another seed, another order
    again = tmp_path / "again.jsonl.gz"
    shuffle_manifests(inputs, again, seed=3, lines_per_bucket=100)
    assert _lines(again) == shuffled
    shuffle_manifests(inputs, again, seed=4, lines_per_bucket=100)
    assert _lines(again) != shuffled
    # the chained parts (the old training input) start with one part only, even through the sampler's
    # buffer; the shuffled manifest's first batches hold all three parts and split perturbed copies
    chained = load_cuts(cuts_dir, list(PARTS))
    assert 2 not in {_part_of(c) for b in _first_batches(chained) for c in b}
    batches = _first_batches(load_cuts(cuts_dir, ["train-all-shuf"]))
    assert {_part_of(c) for b in batches for c in b} == {0, 1, 2}
    for b in batches:
        assert {_part_of(c) for c in b} == {0, 1, 2}
    # where a part's cuts sit in the shuffled manifest: spread over the whole file, not in a block
    positions = collections.defaultdict(list)
    for i, c in enumerate(load_cuts(cuts_dir, ["train-all-shuf"])):
        positions[_part_of(c)].append(i / n)
    for part, pos in positions.items():
        assert min(pos) < 0.05 and max(pos) > 0.95, part


def test_max_cuts_keeps_the_head_of_the_same_random_order(cuts_dir, tmp_path):
    """--max-cuts N: the first N lines of the order the full shuffle writes (a uniform subset without repeats),
    across bucket boundaries; more than there are keeps all; 0 is refused."""
    inputs = [cuts_dir / f"librispeech_cuts_{p}.jsonl.gz" for p in PARTS]
    full, head = tmp_path / "full.jsonl.gz", tmp_path / "head.jsonl.gz"
    total = shuffle_manifests(inputs, full, seed=5, lines_per_bucket=100)
    assert shuffle_manifests(inputs, head, seed=5, lines_per_bucket=100, max_cuts=150) == 150
    assert _lines(head) == _lines(full)[:150] and len(set(_lines(head))) == 150
    assert shuffle_manifests(inputs, head, seed=5, lines_per_bucket=100, max_cuts=total + 7) == total
    with pytest.raises(SpeechkdError, match="max_cuts must be >= 1"):
        shuffle_manifests(inputs, head, max_cuts=0)


def test_skip_cuts_takes_the_next_slice_of_the_same_order(cuts_dir, tmp_path):
    """--skip-cuts N --max-cuts M: lines N..N+M of the full order (across bucket boundaries), disjoint from the
    --max-cuts N head, so that a pool grows slice by slice; skipping everything is refused."""
    inputs = [cuts_dir / f"librispeech_cuts_{p}.jsonl.gz" for p in PARTS]
    full, head, nxt, rest = (tmp_path / f"{n}.jsonl.gz" for n in ("full", "head", "next", "rest"))
    total = shuffle_manifests(inputs, full, seed=5, lines_per_bucket=100)
    shuffle_manifests(inputs, head, seed=5, lines_per_bucket=100, max_cuts=130)
    assert shuffle_manifests(inputs, nxt, seed=5, lines_per_bucket=100, max_cuts=130, skip_cuts=130) == 130
    assert _lines(nxt) == _lines(full)[130:260] and not set(_lines(nxt)) & set(_lines(head))
    assert shuffle_manifests(inputs, rest, seed=5, lines_per_bucket=100, skip_cuts=260) == total - 260
    assert _lines(head) + _lines(nxt) + _lines(rest) == _lines(full)
    with pytest.raises(SpeechkdError, match=f"skip_cuts={total} leaves nothing"):
        shuffle_manifests(inputs, rest, skip_cuts=total)
    with pytest.raises(SpeechkdError, match="skip_cuts must be >= 0"):
        shuffle_manifests(inputs, rest, skip_cuts=-1)


def test_shuffle_rejects_missing_and_empty_inputs(tmp_path):
    with pytest.raises(SpeechkdError, match="not found: .*nope.jsonl.gz"):
        shuffle_manifests([tmp_path / "nope.jsonl.gz"], tmp_path / "out.jsonl.gz")
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt") as f:
        f.write("\n")
    with pytest.raises(SpeechkdError, match="no cuts"):
        shuffle_manifests([empty], tmp_path / "out.jsonl.gz")
    assert not (tmp_path / "out.jsonl.gz").exists()


def test_reservoir_sample_is_uniform_and_bounded():
    assert reservoir_sample(range(5), 10, seed=0) == [0, 1, 2, 3, 4]
    picks = reservoir_sample(iter(range(1000)), 10, seed=0)
    assert len(set(picks)) == 10 and picks == sorted(picks)
    assert reservoir_sample(range(1000), 10, seed=0) == picks  # seeded
    counts = collections.Counter(i // 100 for s in range(400) for i in reservoir_sample(range(1000), 10, seed=s))
    # 4000 picks over 10 deciles: 400 each expected; a "first cuts" sample would put all in decile 0
    assert all(330 < counts[d] < 470 for d in range(10)), counts
    with pytest.raises(SpeechkdError, match=">= 1"):
        reservoir_sample(range(3), 0, seed=0)


def test_cmvn_sample_is_drawn_from_every_part(cuts_dir, monkeypatch):
    from lhotse import CutSet

    from speechkd.data.datamodule import AsrDataModule, DataConfig
    from speechkd.training.asr_experiment import load_cuts

    seen = {}

    def fake_stats(self, extractor=None):  # stands in for reading features (the fake cuts have none)
        seen["cuts"] = list(self)
        return {"norm_means": [0.0] * 80, "norm_stds": [1.0] * 80}

    monkeypatch.setattr(CutSet, "compute_global_feature_stats", fake_stats)
    dm = AsrDataModule(DataConfig(cmvn_max_cuts=30, num_workers=0))
    _, _, n = dm.global_feature_stats(load_cuts(cuts_dir, list(PARTS)))
    assert n == 30 and {_part_of(c) for c in seen["cuts"]} == {0, 1, 2}


def test_speed_perturbed_filter(cuts_dir):
    from speechkd.training.asr_experiment import load_cuts

    assert is_speed_perturbed("1-2-0003_sp0.9") and is_speed_perturbed("1-2-0003_sp1.1")
    assert not is_speed_perturbed("1-2-0003") and not is_speed_perturbed("sp0.9-1-2")
    part = "train-clean-100"
    kept = list(drop_speed_perturbed(load_cuts(cuts_dir, [part])))
    assert len(kept) == PARTS[part] and not any(is_speed_perturbed(c) for c in kept)
    assert len(list(load_cuts(cuts_dir, [part], speed_perturbed=False))) == PARTS[part]
    assert len(list(load_cuts(cuts_dir, [part]))) == 3 * PARTS[part]
