"""speechkd.utils.atomic: the one helper behind every "write then rename" of the package."""
import gzip
import json

import pytest

from speechkd.utils.atomic import atomic_to_file, atomic_write_text


def test_text_is_replaced_whole_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "metadata.yaml"
    path.write_text("old\n")
    atomic_write_text(path, "new: ü\n")
    assert path.read_text(encoding="utf-8") == "new: ü\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.yaml"]


class _Failing:
    """A manifest whose writer dies half-way (disk full, killed job)."""

    def to_file(self, path):
        with open(path, "w") as f:
            f.write('{"id": "half')
        raise OSError("disk full")


def test_a_failed_manifest_write_keeps_the_old_file_and_leaves_no_scratch(tmp_path):
    path = tmp_path / "librispeech_cuts_train.jsonl.gz"
    path.write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        atomic_to_file(_Failing(), path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_lhotse_writes_the_format_of_the_final_suffix(tmp_path):
    from lhotse import Recording, RecordingSet

    recs = RecordingSet.from_recordings([Recording(id="r1", sources=[], sampling_rate=16000, num_samples=16000,
                                                   duration=1.0)])
    path = tmp_path / "recordings.jsonl.gz"
    atomic_to_file(recs, path)
    with gzip.open(path, "rt") as f:  # gzip, because the temporary name kept the .jsonl.gz suffix
        assert json.loads(f.readline())["id"] == "r1"
    assert RecordingSet.from_file(path)[0].id == "r1"
