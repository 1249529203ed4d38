"""Smoke run of egs/minilibri/run.sh --tiny true, data stages 0-4, in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "egs" / "minilibri" / "run.sh"
SPLITS = ("train", "dev", "test-clean", "test-other")
TINY_VOCAB = 48  # run.sh's default --tiny-vocab-size


def run_recipe(tmp: Path, *args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)  # one job: process start-up dominates on tiny data
    cmd = ["bash", str(RUN), "--tiny", "true", "--nj", "1", "--download-dir", str(tmp / "download"),
           "--data-dir", str(tmp / "data"), "--exp-dir", str(tmp / "exp"), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert res.returncode == 0 or not check, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def stages_run(log: str) -> list[int]:
    """Stages whose headline was logged and that did not report "already done"."""
    started = [int(n) for n in re.findall(r"\) Stage (\d+): (?!already done)", log)]
    skipped = {int(n) for n in re.findall(r"\) Stage (\d+): already done", log)}
    return [n for n in started if n not in skipped]


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
def test_tiny_data_stages(tmp_path: Path) -> None:
    first = run_recipe(tmp_path, "--stop-stage", "4")
    data = tmp_path / "data"
    assert stages_run(first.stderr) == [0, 1, 2, 3, 4]
    assert (tmp_path / "download" / "MiniLibri" / ".complete").is_file()
    for split in SPLITS:
        for kind in ("recordings", "supervisions"):
            assert (data / "manifests" / f"librispeech_{kind}_{split}.jsonl.gz").is_file()
        assert (data / "fbank" / f"librispeech_cuts_{split}.jsonl.gz").is_file()
    bpe = data / f"lang_bpe_{TINY_VOCAB}" / "bpe.model"
    assert bpe.is_file()
    summary = (data / "summary.tsv").read_text()
    assert all(split in summary for split in SPLITS)

    # identical second run: every stage is skipped and nothing is rewritten
    outputs = (bpe, data / "summary.tsv", data / "fbank" / "librispeech_cuts_train.jsonl.gz")
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    second = run_recipe(tmp_path, "--stop-stage", "4")
    assert stages_run(second.stderr) == []
    for n in range(5):
        assert f"Stage {n}: already done (remove {data}/.done/stage{n}." in second.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # --stage 3 --stop-stage 3 with another vocabulary runs stage 3 only
    third = run_recipe(tmp_path, "--stage", "3", "--stop-stage", "3", "--tiny-vocab-size", "40")
    assert stages_run(third.stderr) == [3]
    assert "Stage 3: already done" not in third.stderr
    assert (data / "lang_bpe_40" / "bpe.model").is_file()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
