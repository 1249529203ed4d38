"""DistilHuBERT task: on-the-fly vs stored targets, metadata checks, crops, training, export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from speechkd.errors import SpeechkdError

LAYERS = [2, 4]
TINY_TEACHER = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 2),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
TINY_STUDENT = dict(hidden_size=32, num_heads=2, ffn_dim=64, pred_head_layers=LAYERS, hidden_dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0)


def save_tiny_hubert(out: Path, seed: int = 0) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    HubertModel(HubertConfig(**TINY_TEACHER)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random HuBERT teacher on disk, its student, and a few noise cuts in a cuts dir."""
    from speechkd.models.distilhubert import DistilHubertConfig, DistilHubertStudent
    from speechkd.teachers import load_teacher
    from speechkd.testing.toy import make_toy_cuts

    root = tmp_path_factory.mktemp("distill")
    teacher_dir = save_tiny_hubert(root / "teacher")
    teacher = load_teacher(str(teacher_dir))
    cuts = make_toy_cuts(root / "audio", num_cuts=4, min_duration=1.0, max_duration=2.0)
    cuts_dir = root / "cuts"
    cuts_dir.mkdir()
    cuts.to_file(cuts_dir / "librispeech_cuts_train.jsonl.gz")
    torch.manual_seed(1)
    student = DistilHubertStudent.from_teacher(teacher.model, DistilHubertConfig(**TINY_STUDENT))
    return dict(root=root, teacher_dir=teacher_dir, teacher=teacher, cuts=cuts, cuts_dir=cuts_dir, student=student)


def _batch(cuts, target_fields=()):
    from speechkd.data.datamodule import AsrDataModule, DataConfig

    dm = AsrDataModule(DataConfig(input="audio", max_duration=100.0, num_workers=0, shuffle=False),
                       target_fields=target_fields)
    return next(iter(dm.eval_dataloader(cuts)))


def test_stored_targets_give_the_on_the_fly_loss(setup, tmp_path):
    from lhotse import CutSet

    from speechkd.targets.hidden_states import extract_hidden_states, read_targets_metadata
    from speechkd.tasks.distill import DistillLossConfig, DistillModel, DistillTask

    teacher, student = setup["teacher"], setup["student"].eval()
    losses = {}
    for dtype in ("float32", "float16"):
        rep = extract_hidden_states(setup["cuts"], teacher, LAYERS, tmp_path / dtype, "train", dtype=dtype,
                                    max_duration=3.0)  # several teacher batches
        assert rep.num_cuts == 4 and not rep.skipped
        meta = read_targets_metadata(tmp_path / dtype)
        assert meta["layers"] == LAYERS and meta["dtype"] == dtype and meta["parts"]["train"]["num_cuts"] == 4
        stored_cuts = CutSet.from_file(rep.cuts_path)
        batch = _batch(stored_cuts, ("teacher_hidden",))
        task = DistillTask(DistillLossConfig(mode="stored"), LAYERS, teacher.frame_shift)
        losses[dtype] = task.compute_loss(DistillModel(student), batch, False)
    fly_task = DistillTask(DistillLossConfig(mode="on_the_fly"), LAYERS, teacher.frame_shift)
    fly = fly_task.compute_loss(DistillModel(student, teacher), _batch(setup["cuts"]), False)
    assert losses["float32"].num_frames == fly.num_frames > 0
    torch.testing.assert_close(losses["float32"].loss, fly.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses["float16"].loss, fly.loss, rtol=2e-3, atol=0.0)
    for key, value in fly.info.items():
        assert float(losses["float32"].info[key]) == pytest.approx(float(value), rel=1e-4)
    # per-head cosine stats are frame sums of values in [-1, 1]
    assert set(fly.info) == {"l1_L2", "cos_L2", "l1_L4", "cos_L4"}
    assert abs(fly.info["cos_L2"]) <= fly.num_frames


def test_metadata_mismatch_is_an_error(setup, tmp_path):
    from speechkd.targets.hidden_states import check_targets_metadata, extract_hidden_states
    from speechkd.teachers import load_teacher

    teacher = setup["teacher"]
    extract_hidden_states(setup["cuts"], teacher, LAYERS, tmp_path, "train")
    assert check_targets_metadata(tmp_path, teacher, LAYERS, parts=["train"])["fingerprint"]
    with pytest.raises(SpeechkdError, match=r"layers.*\[2, 4\].*\[1, 4\]"):
        check_targets_metadata(tmp_path, teacher, [1, 4])
    other = load_teacher(str(save_tiny_hubert(tmp_path / "other", seed=5)))
    with pytest.raises(SpeechkdError, match="fingerprint"):
        check_targets_metadata(tmp_path, other, LAYERS)
    with pytest.raises(SpeechkdError, match="no targets extracted for part"):
        check_targets_metadata(tmp_path, teacher, LAYERS, parts=["dev"])
    # a second extraction with another layer set into the same directory is refused
    with pytest.raises(SpeechkdError, match="describes other targets"):
        extract_hidden_states(setup["cuts"], teacher, [1, 3], tmp_path, "dev")
    with pytest.raises(SpeechkdError, match="out of range"):
        extract_hidden_states(setup["cuts"], teacher, [2, 9], tmp_path / "bad", "train")


def test_stored_mode_without_the_field_is_an_error(setup):
    from speechkd.tasks.distill import DistillLossConfig, DistillModel, DistillTask

    task = DistillTask(DistillLossConfig(mode="stored"), LAYERS, 0.02)
    with pytest.raises(SpeechkdError, match="no target field 'teacher_hidden'"):
        task.compute_loss(DistillModel(setup["student"]), _batch(setup["cuts"]), False)


def test_crops_cut_audio_and_frames_at_the_same_place():
    from speechkd.tasks.distill import crop_audio, crop_frames, crop_starts

    hop, max_samples = 4, 12
    wav_lens = torch.tensor([30, 10, 13])
    wavs = torch.arange(3 * 30, dtype=torch.float32).view(3, 30)
    starts = crop_starts(wav_lens, max_samples, hop, generator=torch.Generator().manual_seed(0))
    assert starts[1] == 0 and starts[2] in (0,)  # 13 - 12 = 1 sample of room: less than a hop
    assert starts[0] % hop == 0 and 0 <= starts[0] <= 30 - max_samples
    out, lens = crop_audio(wavs, wav_lens, starts, max_samples)
    assert lens.tolist() == [12, 10, 12]
    s0 = int(starts[0])
    assert torch.equal(out[0], wavs[0, s0 : s0 + 12])
    assert torch.equal(out[1, :10], wavs[1, :10]) and torch.all(out[1, 10:] == 0)
    # frames (N, H, T, D) with value = frame index
    frames = torch.arange(8, dtype=torch.float32).view(1, 1, 8, 1).expand(3, 2, 8, 1).clone()
    got, f_lens = crop_frames(frames, torch.tensor([8, 3, 4]), starts // hop, torch.full((3,), 3))
    assert f_lens.tolist() == [3, 3, 3]
    assert got[0, 1, :, 0].tolist() == [s0 // hop + i for i in range(3)]
    # the random starts cover every allowed position
    seen = {int(crop_starts(torch.tensor([30]), max_samples, hop)[0]) for _ in range(200)}
    assert seen == {0, 4, 8, 12, 16}


def _write_config(path: Path, teacher_dir: Path, **trainer) -> Path:
    cfg = {
        "teacher": {"path": str(teacher_dir)},
        "student": TINY_STUDENT,
        "loss": {"mode": "on_the_fly", "max_crop_seconds": 1.0},
        "data": {"input": "audio", "max_duration": 10.0, "max_cut_duration": 5.0, "num_buckets": 2,
                 "num_workers": 0, "drop_last": False, "shuffle": False},
        "trainer": {"num_epochs": 100, "log_every_n": 5, "valid_every_n": 0, "save_every_n": 0,
                    "tensorboard": False, "progress_bar": False,
                    "optimizer": {"lr": 3e-3, "weight_decay": 0.0},
                    "scheduler": {"kind": "constant", "warmup_steps": 0}, **trainer},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_lowers_the_loss_and_exports(setup, tmp_path):
    from transformers import AutoModel

    from speechkd.training.distill_experiment import export_distill, load_trained_student, train_distill

    config = _write_config(tmp_path / "conf.yaml", setup["teacher_dir"], max_steps=20)
    exp = tmp_path / "exp"
    train_distill(config, [], exp, setup["cuts_dir"], ["train"], [])
    logged = [float(x) for x in re.findall(r"loss/frame=([0-9.e+-]+)", (exp / "log" / "train.log.rank0").read_text())]
    assert len(logged) == 4  # steps 5, 10, 15, 20
    assert logged[-1] < 0.8 * logged[0], logged
    student, ckpt = load_trained_student(exp)
    assert ckpt.name == "checkpoint-20.pt"
    out = export_distill(exp, tmp_path / "hf")
    hf = AutoModel.from_pretrained(out).eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        ref = student(wav, torch.tensor([16000])).hidden_states[-1]
        got = hf(wav, attention_mask=torch.ones(1, 16000, dtype=torch.long)).last_hidden_state
    torch.testing.assert_close(got, ref)


def test_stored_mode_training_checks_metadata(setup, tmp_path):
    from speechkd.targets.hidden_states import extract_hidden_states
    from speechkd.training.distill_experiment import train_distill

    extract_hidden_states(setup["cuts"], setup["teacher"], [1, 4], tmp_path / "targets", "train")
    config = _write_config(tmp_path / "conf.yaml", setup["teacher_dir"], max_steps=1)
    with pytest.raises(SpeechkdError, match="do not match this run"):
        train_distill(config, ["loss.mode=stored"], tmp_path / "exp", setup["cuts_dir"], ["train"],
                      targets_dir=tmp_path / "targets")
    with pytest.raises(SpeechkdError, match="teacher layer 7"):
        train_distill(config, ["student.pred_head_layers=[2,7]"], tmp_path / "exp2", setup["cuts_dir"], ["train"])


def test_a_checkpoint_that_is_not_a_speech_encoder_is_refused(setup, tmp_path):
    from transformers import BertConfig, BertModel

    from speechkd.training.distill_experiment import train_distill

    bert = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(bert)
    config = _write_config(tmp_path / "conf.yaml", bert, max_steps=1)
    with pytest.raises(SpeechkdError, match="not a speech encoder"):
        train_distill(config, [], tmp_path / "exp", setup["cuts_dir"], ["train"])


def test_initial_student_is_fixed_by_the_trainer_seed_and_perturbed_cuts_are_left_out(setup, tmp_path, monkeypatch):
    import speechkd.training.trainer as trainer_mod
    from speechkd.training.distill_experiment import train_distill

    cuts = setup["cuts"]
    (cuts + cuts.perturb_speed(0.9)).to_file(tmp_path / "librispeech_cuts_trainsp.jsonl.gz")
    seen = []

    class Capture:
        def __init__(self, cfg, model, task, dm, train_cuts, valid_cuts, exp_dir, **kw):
            seen.append(({k: v.clone() for k, v in model.student.state_dict().items()}, [c.id for c in train_cuts]))

        def fit(self, resume=True):
            pass

    monkeypatch.setattr(trainer_mod, "Trainer", Capture)
    config = _write_config(tmp_path / "conf.yaml", setup["teacher_dir"], max_steps=1)
    for i, extra in enumerate(([], [], ["use_speed_perturbed=true"])):
        torch.manual_seed(100 + i)  # the global RNG state before the call must not matter
        train_distill(config, extra, tmp_path / f"exp{i}", tmp_path, ["trainsp"], [])
    (w0, ids0), (w1, _), (_, ids_sp) = seen
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert sorted(ids0) == sorted(c.id for c in cuts)  # originals only (DistilHuBERT / SUPERB)
    assert len(ids_sp) == 2 * len(cuts)  # unless the config asks for the copies


def test_target_extraction_resumes_chunk_by_chunk_after_a_crash(setup, tmp_path, monkeypatch):
    from lhotse import CutSet

    import speechkd.targets.hidden_states as hs

    teacher, cuts = setup["teacher"], setup["cuts"]
    clean = hs.extract_hidden_states(cuts, teacher, LAYERS, tmp_path / "clean", "train", chunk_cuts=1)
    calls = []
    real = hs.teacher_targets

    def crashing(teacher, wavs, lens, layers):
        calls.append(len(wavs))
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(teacher, wavs, lens, layers)

    out = tmp_path / "crashed"
    monkeypatch.setattr(hs, "teacher_targets", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        hs.extract_hidden_states(cuts, teacher, LAYERS, out, "train", chunk_cuts=1)
    assert [hs.chunk_paths(out, "train", k)[1].is_file() for k in range(4)] == [True, True, False, False]
    assert not hs.cuts_path(out, "train").exists()  # the part's manifest only when every chunk is done
    calls.clear()
    rep = hs.extract_hidden_states(cuts, teacher, LAYERS, out, "train", chunk_cuts=1)
    assert len(calls) == 2  # chunks 0 and 1 are not recomputed
    assert rep.num_cuts == clean.num_cuts == 4 and rep.num_frames == clean.num_frames
    a, b = CutSet.from_file(clean.cuts_path), CutSet.from_file(rep.cuts_path)
    assert [c.id for c in a] == [c.id for c in b] == [c.id for c in cuts]
    for x, y in zip(a, b):
        assert np.array_equal(x.load_custom("teacher_hidden"), y.load_custom("teacher_hidden"))
    # the same chunk files for other input cuts are refused, not mixed
    with pytest.raises(SpeechkdError, match="other input cuts"):
        hs.extract_hidden_states(cuts.subset(last=3), teacher, LAYERS, out, "train", chunk_cuts=1)


def test_on_the_fly_teacher_runs_in_full_precision_under_autocast(setup):
    from speechkd.tasks.distill import DistillLossConfig, DistillModel, DistillTask

    task = DistillTask(DistillLossConfig(mode="on_the_fly"), LAYERS, setup["teacher"].frame_shift)
    model = DistillModel(setup["student"], setup["teacher"])
    wavs, lens = torch.randn(2, 8000), torch.tensor([8000, 6000])
    ref, ref_lens = task.teacher_targets(model, wavs, lens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_lens = task.teacher_targets(model, wavs, lens)
    assert got.dtype == torch.float32 and torch.equal(got_lens, ref_lens)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)  # bf16 matmuls would be ~1e-2 off
