"""speechkd.utils.atomic: the one helper behind every "write then rename" of the package."""
import gzip
import json
import os

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


def test_a_text_temporary_never_matches_a_glob_for_the_destination(tmp_path, monkeypatch):
    """make-minilibri writes *.trans.txt that prepare globs for: a half-written file must not be read as one."""
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(sorted(p.name for p in tmp_path.glob("*.trans.txt")))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_text(tmp_path / "1001-10012.trans.txt", "1001-10012-0000 A B\n")
    assert seen == [[]]
    assert [p.name for p in tmp_path.glob("*.trans.txt")] == ["1001-10012.trans.txt"]
