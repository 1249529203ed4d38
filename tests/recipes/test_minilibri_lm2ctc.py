"""Smoke run of egs/minilibri/run.sh --methods "asr lm2ctc" --quick true: stand-in masked LM, soft labels,
n-gram, kd and hard students, shallow fusion of the no-KD CTC baseline, one-run decoding speed, paired bootstrap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from test_minilibri_data import run_recipe, stages_run

SETS = ("dev", "test-clean", "test-other")


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
def test_tiny_lm2ctc_stages(tmp_path: Path) -> None:
    args = ("--stop-stage", "39", "--methods", "asr lm2ctc", "--asr-models", "ctc", "--quick", "true")
    first = run_recipe(tmp_path, *args, timeout=900)
    assert stages_run(first.stderr) == [0, 1, 2, 3, 4, 20, 21, 30, 39, 10, 11, 12, 20, 21, 30, 20, 21, 30, 32, 33, 34, 39]
    exp = tmp_path / "exp" / "lm2ctc"
    lm_meta = yaml.safe_load((exp / "mlm" / "metadata.yaml").read_text())
    assert {"heldout", "eval_texts"} <= set(lm_meta["scores"])  # held-out quality reported
    assert lm_meta["source"]["train_cuts"][0].endswith("librispeech_cuts_train.jsonl.gz")
    assert lm_meta["source"]["text_files"][0].endswith("lm_text.txt")  # the novels minus every dev/test sentence
    assert {Path(p).name for p in lm_meta["source"]["excluded_cuts"]} == {
        f"librispeech_cuts_{s}.jsonl.gz" for s in SETS}
    assert lm_meta["source"]["excluded_sentences"] > 0
    sl = yaml.safe_load((exp / "soft_labels" / "metadata.yaml").read_text())
    assert (sl["k"], sl["temperature"], set(sl["parts"])) == (8, 3.0, {"train", "dev"})
    for system in ("kd", "hard"):
        d = exp / f"{system}_seed0"
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert cfg["model"]["attention_decoders"]["layers"] == [1, 2]
        assert cfg["model"]["attention_decoders"]["vocab_size"] == sl["vocab_size"]
        assert cfg["loss"]["lm_kd"]["soft_weight"] == (0.3 if system == "kd" else 0.0)
        assert "lm_kl=" in (d / "log" / "train.log.rank0").read_text()
        assert not any(k.startswith("attention_decoders") for k in torch.load(d / "averaged.pt", weights_only=False)["model"])
        rows = (d / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]
        assert {(r.split("\t")[0], r.split("\t")[1]) for r in rows} == {(s, "ctc-greedy") for s in SETS}
    baseline = (tmp_path / "exp" / "asr_ctc_seed0" / "decode" / "wer-summary.tsv").read_text()
    assert all(f"{s}\tctc-beam8-lm0.5" in baseline for s in SETS)  # shallow fusion of the no-KD model
    rtf = (exp / "rtf.md").read_text()
    params = {line.split("|")[3].strip() for line in rtf.splitlines() if "| ctc-greedy |" in line}
    assert len(params) == 1  # kd, hard and no-KD decode with the same model size: decoders dropped
    for name in ("nokd:asr_ctc_seed0", "kd_seed0", "hard_seed0"):
        assert f"| {name} | ctc-greedy |" in rtf and f"| {name} | ctc-beam |" in rtf
    for system in ("kd", "hard"):  # paired bootstrap against the no-KD baseline, or why nothing was compared
        boot = (exp / f"bootstrap-{system}.md").read_text()
        assert (f"| no-kd WER (seeds) | {system} WER (seeds) |" in boot and "| dev |" in boot) or "no run left" in boot
    seeds = (tmp_path / "exp" / "wer-seeds.md").read_text()
    assert "| lm2ctc-kd | ctc-greedy |" in seeds and "| lm2ctc-hard | ctc-greedy |" in seeds

    second = run_recipe(tmp_path, *args, timeout=900)  # nothing retrains
    assert [n for n in stages_run(second.stderr) if n in (10, 12, 20, 21, 30, 32)] == []
