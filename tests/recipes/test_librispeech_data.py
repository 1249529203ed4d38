"""egs/librispeech/run.sh data stages on a generated LibriSpeech-layout corpus (several speakers,
chapters and splits), with counts and durations checked against the generator."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechkd.testing.fake_librispeech import make_fake_librispeech

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "egs" / "librispeech" / "run.sh"
PARTS = {"train-clean-100": (3, 2, 4), "dev-clean": (2, 1, 3), "test-clean": (2, 1, 3), "test-other": (2, 2, 2)}


@pytest.mark.slow
def test_librispeech_data_stages_on_generated_corpus(tmp_path: Path) -> None:
    info = make_fake_librispeech(tmp_path / "LibriSpeech", PARTS, seed=3, bad_inputs=("missing_audio",),
                                 bad_part="train-clean-100")
    data = tmp_path / "data"
    cmd = ["bash", str(RUN), "--corpus-dir", str(tmp_path / "LibriSpeech"), "--data-dir", str(data),
           "--train-parts", "train-clean-100", "--eval-parts", "dev-clean test-clean test-other",
           "--speed-perturb", "true", "--vocab-size", "30", "--nj", "1", "--stop-stage", "5"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0, res.stderr[-3000:]

    summary = {r.split("\t")[0]: r.split("\t") for r in (data / "summary.tsv").read_text().splitlines()[1:]}
    for part, expected in info.parts.items():
        _, hours, utts, spk = summary[part][:4]
        assert int(utts) == expected.num_utterances
        assert int(spk) == expected.num_speakers
        assert float(hours) == pytest.approx(expected.duration_seconds / 3600, abs=1e-3)
        with gzip.open(data / "fbank" / f"librispeech_cuts_{part}.jsonl.gz", "rt") as f:
            cuts = [json.loads(line) for line in f]
        factor = 3 if part == "train-clean-100" else 1  # speed perturbation 0.9 / 1.1 on the train part
        assert len(cuts) == factor * expected.num_utterances
    # the planted transcript line without audio is reported, not silently dropped
    report = (data / "manifests" / "prepare-report-train-clean-100.tsv").read_text()
    assert "missing_audio" in report
    assert (data / "lang_bpe_30" / "bpe.model").is_file()
    # stage 5: the training cuts (with their perturbed copies) in random order, what training reads
    def ids(name):
        with gzip.open(data / "fbank" / f"librispeech_cuts_{name}.jsonl.gz", "rt") as f:
            return [json.loads(line)["id"] for line in f]

    shuffled, ordered = ids("train-all-shuf"), ids("train-clean-100")
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered


def test_librispeech_run_accepts_the_readme_set_form(tmp_path: Path) -> None:
    cmd = ["bash", str(RUN), "--set", "trainer.amp=bf16", "--stop-stage", "0", "--data-dir", str(tmp_path / "d")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0, res.stderr[-2000:]
    readme = (ROOT / "README.md").read_text()
    assert '--set "trainer.amp=bf16' in readme  # the documented form is the one tested here


def test_librispeech_streaming_decode_uses_trained_chunk_sizes() -> None:
    import re

    import yaml

    text = RUN.read_text()
    decoded = [int(c) for c in re.search(r'^chunk_sizes="([0-9 ]+)"', text, re.M).group(1).split()]
    conf = yaml.safe_load((ROOT / "egs" / "librispeech" / "conf" / "asr_transducer_small.yaml").read_text())
    assert set(decoded) <= set(conf["model"]["encoder"]["train_chunk_sizes"])
