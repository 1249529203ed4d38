"""Smoke run of egs/minilibri/run.sh --tiny true through the ASR stages (20-49) with tiny models."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from test_minilibri_data import TINY_VOCAB, run_recipe, stages_run

from speechkd.decoding.scoring import read_recogs

SETS = ("dev", "test-clean", "test-other")
TAGS = {"asr_ctc": ("ctc-greedy",), "asr_transducer": ("greedy", "beam4", "greedy-chunk8", "greedy-chunk16")}
EXPORT_TAGS = {
    "asr_ctc": ("sherpa-ctc", "sherpa-ctc-int8"),
    "asr_transducer": tuple(
        t + q for t in ("sherpa-offline", "sherpa-streaming-chunk8-left64", "sherpa-streaming-chunk16-left64")
        for q in ("", "-int8")
    ) + ("greedy-chunk8-left64", "greedy-chunk16-left64"),
}


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
def test_tiny_asr_stages(tmp_path: Path) -> None:
    first = run_recipe(tmp_path, "--stop-stage", "39", "--methods", "asr", "--quick", "true", timeout=900)
    # ctc: no streaming stage (31); transducer: all of them; then run.sh's seed table (39)
    assert stages_run(first.stderr) == [0, 1, 2, 3, 4, 20, 21, 30, 39, 20, 21, 30, 31, 39, 39]
    seed_table = (tmp_path / "exp" / "wer-seeds.md").read_text()
    for model, tags in TAGS.items():
        exp = tmp_path / "exp" / f"{model}_seed0"
        # one seed; a 2-epoch tiny model usually decodes to (almost) nothing, which the table flags, not hides
        assert re.search(rf"\| {model.removeprefix('asr_')} \| {tags[0]} \| [01] of 1 \|", seed_table)
        cfg = yaml.safe_load((exp / "config.yaml").read_text())
        assert cfg["model"]["vocab_size"] == TINY_VOCAB  # taken from the BPE model
        assert "trainer.num_epochs=2" in (exp / "command.sh").read_text()
        assert "trainer.seed=0" in (exp / "command.sh").read_text()
        assert yaml.safe_load((exp / "versions.yaml").read_text())["torch"]
        assert (exp / "averaged.pt").is_file() and (exp / "epoch-2.pt").is_file()
        # the presets normalise the input: statistics estimated once, carried by the decoded model
        stats = torch.load(exp / "global_cmvn.pt", weights_only=False)
        averaged = torch.load(exp / "averaged.pt", weights_only=False)["model"]
        assert averaged["encoder.input_norm.num_cuts"].item() == stats["num_cuts"] > 0
        torch.testing.assert_close(averaged["encoder.input_norm.mean"], stats["mean"])
        rows = (exp / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]
        got = {(r.split("\t")[0], r.split("\t")[1]) for r in rows}
        assert got == {(s, t) for s in SETS for t in tags}
        for s in SETS:
            for t in tags:
                assert (exp / "decode" / f"errs-{s}-{t}.txt").read_text().startswith("%WER")
        table = (exp / "decode" / "wer-table.md").read_text()
        assert table.splitlines()[0] == "| decoding | dev | test-clean | test-other |"

    # one stage-times file for the whole run: a row per stage that ran (data and both models), with its seconds
    times = [r.split("\t") for r in (tmp_path / "exp" / "stage_times.tsv").read_text().splitlines()[1:]]
    assert [(r[2], r[3]) for r in times if r[3] in ("0", "20")] == [("run.sh", "0"), ("asr.sh", "20"), ("asr.sh", "20")]
    assert all(int(r[1]) >= 0 for r in times)
    assert "min" in first.stderr.splitlines()[-1] and "stage_times.tsv" in first.stderr.splitlines()[-1]

    # the same command again: every stage is already done, nothing retrains
    second = run_recipe(tmp_path, "--stop-stage", "39", "--methods", "asr", "--quick", "true", timeout=900)
    assert [n for n in stages_run(second.stderr) if n < 39] == []
    assert second.stderr.count("Stage 20: already done") == 2

    # stages 40-49: ONNX export, sherpa-onnx decodes (fp32 + int8), our chunk-wise decode at the export's left context
    third = run_recipe(tmp_path, "--stage", "40", "--stop-stage", "49", "--methods", "asr", "--quick", "true",
                       timeout=900)
    assert stages_run(third.stderr) == [40, 41, 49, 40, 41, 49]
    for model, tags in EXPORT_TAGS.items():
        exp = tmp_path / "exp" / f"{model}_seed0"
        rows = (exp / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]
        got = {(r.split("\t")[0], r.split("\t")[1]) for r in rows}
        assert {(s, t) for s in SETS for t in tags} <= got
        assert all((exp / "decode" / f"rtf-{s}-{t}.txt").is_file() for s in SETS for t in tags if t.startswith("sherpa"))
    # sherpa-onnx (its own fbank from the waveform) mostly gives our CTC greedy hypotheses. The 2-epoch model's
    # logits are near ties, so its slightly different features flip a few frames (seen: 15/18 and 18/18
    # identical); exact equality on the same features is tests/unit/test_export_onnx.py's job.
    ctc = tmp_path / "exp" / "asr_ctc_seed0" / "decode"
    pairs = [(a, b) for s in SETS for a, b in zip(read_recogs(ctc / f"recogs-{s}-ctc-greedy.txt"),
                                                  read_recogs(ctc / f"recogs-{s}-sherpa-ctc.txt"))]
    assert all(a[0] == b[0] for a, b in pairs)
    same = sum(a == b for a, b in pairs)
    assert 3 * same >= 2 * len(pairs), f"sherpa-onnx agrees with our decoder on {same}/{len(pairs)} utterances"
