"""MVQ-KD: quantizer training, sharded resumable extraction, metadata checks, codebook head and loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechkd.errors import SpeechkdError

pytest.importorskip("multi_quantization")

# 20 ms frames (stride 5*4*4*4 = 320 samples) like HuBERT and Whisper; 64 wide so a 4-byte quantizer trains fast
TINY_TEACHER = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16, 16, 16), conv_kernel=(10, 3, 3, 3), conv_stride=(5, 4, 4, 4),
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)
LAYER = 1
NUM_CODEBOOKS = 4
QUANT_OPTS = dict(num_codebooks=NUM_CODEBOOKS, num_utterances=6, heldout_fraction=0.34, batch_frames=200,
                  phase_one_iters=30, phase_two_iters=30, seed=0)


def save_tiny_hubert(out: Path, seed: int) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    HubertModel(HubertConfig(**TINY_TEACHER)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny random HuBERT teacher, 6 noise cuts and a quantizer of its layer 1."""
    from speechkd.targets.codebooks import train_quantizer
    from speechkd.teachers import load_teacher
    from speechkd.testing.toy import make_toy_cuts

    root = tmp_path_factory.mktemp("mvq")
    teacher = load_teacher(str(save_tiny_hubert(root / "teacher", 0)))
    cuts = make_toy_cuts(root / "audio", num_cuts=6, min_duration=1.0, max_duration=2.0).to_eager()
    report = train_quantizer(cuts, teacher, LAYER, root / "quantizer.pt", **QUANT_OPTS)
    return dict(root=root, teacher=teacher, cuts=cuts, quantizer=root / "quantizer.pt", report=report)


def test_quantizer_file_describes_itself_and_reconstructs(setup):
    from speechkd.targets.codebooks import load_quantizer

    q, info = load_quantizer(setup["quantizer"])
    assert info["layer"] == LAYER and info["num_codebooks"] == NUM_CODEBOOKS and info["dim"] == 64
    assert info["teacher_fingerprint"] == setup["teacher"].config_fingerprint([LAYER])
    assert info["quantizer_id"] == q.get_id() == setup["report"].quantizer_id
    # trained codebooks reconstruct held-out frames better than their mean does (error < 1)
    assert 0.0 < setup["report"].rel_reconstruction_error < 0.9


def test_quantizer_of_another_teacher_or_layer_is_refused(setup, tmp_path):
    from speechkd.targets.codebooks import extract_codebooks
    from speechkd.teachers import load_teacher

    other = load_teacher(str(save_tiny_hubert(tmp_path / "other", 7)))
    with pytest.raises(SpeechkdError, match="teacher fingerprint: quantizer"):
        extract_codebooks(setup["cuts"], other, setup["quantizer"], tmp_path / "cb", "train")
    with pytest.raises(SpeechkdError, match=f"layer: quantizer {LAYER}, configured 2"):
        extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "cb", "train", layer=2)


def _indexes(codebook_dir: Path, part: str, field: str = "codebook_indexes") -> dict[str, np.ndarray]:
    from lhotse import CutSet

    from speechkd.targets.codebooks import cuts_path

    return {c.id: c.load_custom(field) for c in CutSet.from_file(cuts_path(codebook_dir, part))}


def test_killed_extraction_resumes_to_identical_indexes(setup, tmp_path):
    from speechkd.targets.codebooks import extract_codebooks, read_codebooks_metadata

    kw = dict(chunk_cuts=2, max_duration=3.0)
    full = extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "a", "train", **kw)
    assert full.finalized and full.chunks_done == 3
    ref = _indexes(tmp_path / "a", "train")
    assert len(ref) == 6 and all(a.dtype == np.uint8 and a.shape[1] == NUM_CODEBOOKS for a in ref.values())

    # "killed" after one chunk: nothing final is written
    first = extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "b", "train",
                              stop_after_chunks=1, **kw)
    assert first.chunks_done == 1 and not first.finalized
    assert "train" not in read_codebooks_metadata(tmp_path / "b")["parts"]
    # a chunk killed mid-write (index file, no manifest) is redone
    (tmp_path / "b" / "chunks" / "train" / "000001.u8a").write_bytes(b"garbage")
    again = extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "b", "train", **kw)
    assert (again.chunks_skipped, again.chunks_done, again.finalized) == (1, 2, True)
    got = _indexes(tmp_path / "b", "train")
    assert list(got) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


def test_two_shards_give_the_single_run_indexes(setup, tmp_path):
    from speechkd.targets.codebooks import extract_codebooks, read_codebooks_metadata

    kw = dict(chunk_cuts=2, max_duration=3.0)
    extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "one", "train", **kw)
    r0 = extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "two", "train",
                           num_shards=2, shard_id=0, **kw)
    assert not r0.finalized and r0.chunks_done == 2
    r1 = extract_codebooks(setup["cuts"], setup["teacher"], setup["quantizer"], tmp_path / "two", "train",
                           num_shards=2, shard_id=1, **kw)
    assert r1.finalized and r1.chunks_done == 1
    a, b = _indexes(tmp_path / "one", "train"), _indexes(tmp_path / "two", "train")
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    meta = read_codebooks_metadata(tmp_path / "two")
    assert meta["parts"]["train"]["num_cuts"] == 6
    assert meta["num_codebooks"] == NUM_CODEBOOKS and meta["layer"] == LAYER and meta["frame_shift"] == 0.02


# ------------------------------------------------------------------------------------------ student
def test_stacked_teacher_frames_and_loss_ignore_padding():
    from speechkd.losses.codebook import IGNORE_INDEX, codebook_loss, stack_teacher_frames

    t = torch.arange(2 * 5 * 3).reshape(2, 5, 3)  # (N, T_t=5, C=3)
    t[1, 3:] = IGNORE_INDEX
    s = stack_teacher_frames(t, 2, 3)  # (N, 3, 6)
    assert s.shape == (2, 3, 6)
    assert s[0, 1].tolist() == t[0, 2].tolist() + t[0, 3].tolist()
    assert (s[0, 2, 3:] == IGNORE_INDEX).all() and (s[1, 1, 3:] == IGNORE_INDEX).all()
    logits = torch.randn(2, 3, 6, 40)
    targets = s.clamp_min(0) % 40
    targets[s == IGNORE_INDEX] = IGNORE_INDEX
    lens = torch.tensor([3, 1])
    got = codebook_loss(logits, targets, lens)
    ce = torch.nn.functional.cross_entropy
    want = sum(ce(logits[n, i, k][None], targets[n, i, k][None]) for n in range(2) for i in range(int(lens[n]))
               for k in range(6) if targets[n, i, k] != IGNORE_INDEX)
    assert torch.allclose(got, want)


TINY_MODEL = {"encoder": {"d_model": 32, "num_layers": 2, "num_heads": 2, "ff_dim": 64, "subsampling_channels": 8,
                          "dropout": 0.0, "global_cmvn": False},
              "decoder_dim": 16, "joiner_dim": 16}


@pytest.fixture(scope="module")
def student_setup(setup, tmp_path_factory):
    """Fbank cuts dir (train/dev), BPE model, indexes of both parts, an MVQ experiment YAML."""
    import yaml

    from speechkd.data.collate import cut_text
    from speechkd.targets.codebooks import extract_codebooks
    from speechkd.text.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("mvq_student")
    cuts_dir = root / "cuts"
    cuts_dir.mkdir()
    cuts = setup["cuts"]
    parts = {"train": cuts.subset(first=4), "dev": cuts.subset(last=2)}
    for part, cs in parts.items():
        cs.to_file(cuts_dir / f"librispeech_cuts_{part}.jsonl.gz")
    bpe = train_bpe([cut_text(c) for c in cuts] * 3, root / "lang", vocab_size=14)
    cb_dir = root / "codebooks"
    for part, cs in parts.items():
        extract_codebooks(cs, setup["teacher"], setup["quantizer"], cb_dir, part, chunk_cuts=2)
    import shutil

    shutil.copy(setup["quantizer"], cb_dir / "quantizer.pt")
    conf = root / "mvq.yaml"
    conf.write_text(yaml.safe_dump({
        "model_preset": "mini", "model": TINY_MODEL,
        "loss": {"ctc_weight": 0.3, "codebook_loss_scale": 0.1, "warmup_steps": 2},
        "data": {"features": "on_the_fly", "max_duration": 10.0, "max_cut_duration": 5.0, "num_buckets": 2,
                 "num_workers": 0, "drop_last": False},
        "trainer": {"num_epochs": 1, "max_steps": 2, "tensorboard": False, "progress_bar": False,
                    "valid_every_n": 0, "log_every_n": 1},
        "mvq": {"teacher": {"path": str(setup["root"] / "teacher")}, "teacher_layer": LAYER,
                "num_codebooks": NUM_CODEBOOKS, "student_layer": 1},
    }))
    return dict(root=root, cuts_dir=cuts_dir, bpe=bpe, cb_dir=cb_dir, conf=conf)


def _train(s, exp, overrides=(), codebook_dir="default", train_parts=("train",)):
    from speechkd.training.asr_experiment import train_asr

    train_asr(s["conf"], list(overrides), exp, s["cuts_dir"], list(train_parts), ["dev"], s["bpe"],
              codebook_dir=s["cb_dir"] if codebook_dir == "default" else codebook_dir)


def test_student_trains_with_the_codebook_head_and_decodes_without_it(student_setup, tmp_path, caplog):
    from speechkd.decoding.asr_decode import load_model_for_decoding
    from speechkd.training.asr_experiment import average_asr
    from speechkd.training.checkpoint import epoch_checkpoints, load_checkpoint

    exp = tmp_path / "exp"
    with caplog.at_level("INFO"):
        _train(student_setup, exp)
    state = load_checkpoint(epoch_checkpoints(exp)[-1][1])["model"]
    head = [k for k in state if k.startswith("training_heads.codebook.")]
    # 2 teacher frames (20 ms) per encoder frame (40 ms) x 4 codebooks x 256 entries
    assert state["training_heads.codebook.proj.weight"].shape == (2 * NUM_CODEBOOKS * 256, 32) and head
    assert "codebook" in caplog.text
    avg = load_checkpoint(average_asr(exp, 1))["model"]
    assert not [k for k in avg if k.startswith("training_heads")]
    assert set(avg) == set(state) - set(head)
    model, _, _ = load_model_for_decoding(exp, None)
    assert len(model.training_heads) == 0 and not [n for n, _ in model.named_parameters() if "codebook" in n]


def test_mismatched_metadata_fails_at_start_naming_both_values(student_setup, tmp_path):
    with pytest.raises(SpeechkdError, match=f"num_codebooks: stored {NUM_CODEBOOKS}, configured 8"):
        _train(student_setup, tmp_path / "a", ["mvq.num_codebooks=8"])
    with pytest.raises(SpeechkdError, match=f"layer: stored {LAYER}, configured 2"):
        _train(student_setup, tmp_path / "b", ["mvq.teacher_layer=2"])
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("*.pt"))
    other = save_tiny_hubert(tmp_path / "other_teacher", 7)
    with pytest.raises(SpeechkdError, match="teacher_fingerprint: stored 'ssl-[0-9a-f]+', configured 'ssl-[0-9a-f]+'"):
        _train(student_setup, tmp_path / "c", [f"mvq.teacher.path={other}"])


def test_indexes_of_another_quantizer_fail_at_start(setup, student_setup, tmp_path):
    import shutil

    from speechkd.targets.codebooks import read_codebooks_metadata, train_quantizer

    cb = tmp_path / "cb"
    shutil.copytree(student_setup["cb_dir"], cb)
    opts = dict(QUANT_OPTS, seed=1, phase_one_iters=2, phase_two_iters=2)  # only its id matters
    rep = train_quantizer(setup["cuts"], setup["teacher"], LAYER, cb / "quantizer.pt", **opts)
    stored = read_codebooks_metadata(cb)["quantizer_id"]
    with pytest.raises(SpeechkdError, match=f"quantizer_id: stored '{stored}', configured '{rep.quantizer_id}'"):
        _train(student_setup, tmp_path / "exp", codebook_dir=cb)


def test_missing_indexes_and_frame_mismatch_fail_at_start(student_setup, tmp_path):
    import yaml

    from speechkd.targets.codebooks import METADATA_FILE

    # training on train + dev, but only dev's ids... use a cut set whose ids the indexes do not have
    bad = tmp_path / "cuts"
    bad.mkdir()
    from lhotse import CutSet

    cs = CutSet.from_file(student_setup["cuts_dir"] / "librispeech_cuts_train.jsonl.gz")
    cs.modify_ids(lambda i: i if i.endswith("0") else i + "-renamed").to_file(bad / "librispeech_cuts_train.jsonl.gz")
    for p in ("dev",):
        (bad / f"librispeech_cuts_{p}.jsonl.gz").write_bytes(
            (student_setup["cuts_dir"] / f"librispeech_cuts_{p}.jsonl.gz").read_bytes())
    s = dict(student_setup, cuts_dir=bad)
    with pytest.raises(SpeechkdError, match=r"3 of 4 training cut\(s\) have no codebook indexes"):
        _train(s, tmp_path / "exp")
    with pytest.raises(SpeechkdError, match="needs the codebook indexes: give --codebook-dir"):
        _train(student_setup, tmp_path / "exp2", codebook_dir=None)
    # indexes whose frame shift says 10 ms: every cut has half the expected frames
    cb = tmp_path / "cb"
    import shutil

    shutil.copytree(student_setup["cb_dir"], cb)
    meta = yaml.safe_load((cb / METADATA_FILE).read_text())
    meta["frame_shift"] = 0.01
    (cb / METADATA_FILE).write_text(yaml.safe_dump(meta))
    from speechkd.targets.codebooks import attach_codebooks

    with pytest.raises(SpeechkdError, match=r"frames of codebook indexes but \d+ expected"):
        attach_codebooks(cs, cb, ["train"], "codebook_indexes", 2)


def test_an_untranscribed_pool_trains_on_the_codebook_loss_alone(setup, student_setup, tmp_path, caplog):
    """``untranscribed_parts``: a pool without text (its indexes extracted like any part) joins training, its
    batches count untranscribed utterances; without the codebook loss, or overlapping a transcribed part, the
    run fails before anything trains."""
    import logging
    import re
    import shutil

    from lhotse import CutSet, fastcopy

    from speechkd.targets.codebooks import extract_codebooks

    cuts_dir, cb = tmp_path / "cuts", tmp_path / "cb"
    shutil.copytree(student_setup["cuts_dir"], cuts_dir)
    shutil.copytree(student_setup["cb_dir"], cb)
    dev = CutSet.from_file(cuts_dir / "librispeech_cuts_dev.jsonl.gz")
    pool = CutSet.from_cuts(
        fastcopy(c, id=f"pool-{c.id}", supervisions=[fastcopy(x, id=f"pool-{x.id}", text=None) for x in c.supervisions])
        for c in dev
    )
    pool.to_file(cuts_dir / "librispeech_cuts_pool.jsonl.gz")
    extract_codebooks(pool, setup["teacher"], setup["quantizer"], cb, "pool", chunk_cuts=2)
    s = dict(student_setup, cuts_dir=cuts_dir, cb_dir=cb)
    from speechkd.training.asr_experiment import train_asr

    def run(exp, overrides=(), untranscribed=("pool",), train_parts=("train",)):
        train_asr(s["conf"], ["trainer.max_steps=4", "data.max_duration=4.5", "data.max_cut_duration=2.5", *overrides], exp, cuts_dir,
                  list(train_parts), ["dev"], s["bpe"], codebook_dir=cb, untranscribed_parts=list(untranscribed))

    with caplog.at_level(logging.INFO):
        run(tmp_path / "exp")
    # the pool's 2 cuts were trained (not removed as empty text) and counted in the logged intervals
    assert "removed 0 of 6 cuts" in caplog.text
    assert sum(int(n) for n in re.findall(r"untranscribed_utts=(\d+)", caplog.text)) == 2
    import yaml

    assert yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())["paths"]["untranscribed_parts"] == ["pool"]
    with pytest.raises(SpeechkdError, match=r"untranscribed parts \['pool'\] need .*codebook_loss_scale > 0"):
        run(tmp_path / "a", ["loss.codebook_loss_scale=0"])
    with pytest.raises(SpeechkdError, match=r"parts \['train'\] are given both as untranscribed and as transcribed"):
        run(tmp_path / "b", untranscribed=("train",))
    assert not list((tmp_path / "a").glob("*.pt")) and not list((tmp_path / "b").glob("*.pt"))


def test_time_warping_is_refused_when_distilling(student_setup, tmp_path):
    with pytest.raises(SpeechkdError, match="time_warp_factor=80 with loss.codebook_loss_scale"):
        _train(student_setup, tmp_path / "exp", ["data.spec_augment.enabled=true"])


@pytest.mark.parametrize("corpus, mvq_conf, baseline", [
    ("minilibri", "mvq_kd_whisper_tiny.yaml", "asr_transducer.yaml"),
    ("librispeech", "mvq_kd_hubert_xlarge.yaml", "asr_transducer_small.yaml"),
])
def test_recipe_configs_are_their_baseline_plus_the_codebook_loss(corpus, mvq_conf, baseline):
    import yaml

    from speechkd.config import load_yaml
    from speechkd.training.asr_experiment import load_experiment_config

    conf = Path(__file__).resolve().parents[2] / "egs" / corpus / "conf"
    own = yaml.safe_load((conf / mvq_conf).read_text())  # what the file itself says, before its base
    assert own.pop("_base_") == baseline
    assert own.pop("loss") == {"codebook_loss_scale": 0.1} and own.pop("mvq")["num_codebooks"] in (8, 16)
    # the only other difference allowed: no time warping on top of SpecAugment's masks
    data = own.pop("data", None)
    if data is not None:
        assert data == {"spec_augment": {"enabled": True, "time_warp_factor": 0}}
    assert own == {}
    mvq, base = load_yaml(conf / mvq_conf), load_yaml(conf / baseline)
    assert {k: v for k, v in mvq.items() if k not in ("loss", "data", "mvq")} == \
        {k: v for k, v in base.items() if k not in ("loss", "data")}
    cfg = load_experiment_config(conf / mvq_conf)  # validates (student layer inside the encoder, no time warp)
    assert 1 <= cfg.mvq.student_layer <= cfg.model.encoder.num_layers
    base_cfg = load_experiment_config(conf / baseline)
    assert cfg.loss.ctc_only_until_emission_ratio == base_cfg.loss.ctc_only_until_emission_ratio
    assert cfg.trainer == base_cfg.trainer and cfg.model == base_cfg.model


def test_the_yardstick_transducer_is_the_default_with_three_changes():
    from speechkd.training.asr_experiment import load_experiment_config

    conf = Path(__file__).resolve().parents[2] / "egs" / "minilibri" / "conf"
    base, ys = load_experiment_config(conf / "asr_transducer.yaml"), load_experiment_config(conf / "asr_transducer_4h.yaml")
    assert (base.model.encoder.dropout, ys.model.encoder.dropout) == (0.1, 0.0)
    assert (ys.trainer.num_epochs, ys.trainer.scheduler.lr_epochs) == (8, 2)
    ys.model.encoder.dropout, ys.trainer.num_epochs = base.model.encoder.dropout, base.trainer.num_epochs
    ys.trainer.scheduler.lr_epochs = base.trainer.scheduler.lr_epochs
    assert ys == base


def test_the_yardstick_mvq_student_is_the_yardstick_transducer_plus_the_codebook_head():
    """conf/mvq_kd_whisper_tiny_4h.yaml differs from its baseline conf/asr_transducer_4h.yaml by the codebook loss and
    the mvq section alone, and those are the 1 h MVQ student's: the order of its two bases matters."""
    from speechkd.config import load_yaml

    conf = Path(__file__).resolve().parents[2] / "egs" / "minilibri" / "conf"
    mvq_ys, ys, mvq = (load_yaml(conf / f) for f in ("mvq_kd_whisper_tiny_4h.yaml", "asr_transducer_4h.yaml",
                                                       "mvq_kd_whisper_tiny.yaml"))
    assert mvq_ys["mvq"] == mvq["mvq"]
    assert mvq_ys["loss"].pop("codebook_loss_scale") == mvq["loss"]["codebook_loss_scale"] > 0
    del mvq_ys["mvq"]
    assert mvq_ys == ys


def test_uint8_storage_has_no_per_cut_overhead_and_reads_slices(tmp_path):
    from lhotse.features.io import NumpyHdf5Writer, get_reader

    from speechkd.data.uint8_storage import NAME, Uint8ChunkyWriter

    rng = np.random.default_rng(0)
    lens = [37, 250, 615, 1]
    idx = [rng.integers(0, 256, (t, 16), dtype=np.uint8) for t in lens]
    with Uint8ChunkyWriter(tmp_path / "cb", mode="wb") as w:
        keys = [w.write(f"c{i}", a) for i, a in enumerate(idx)]
        path = w.storage_path
    assert Path(path).stat().st_size == 16 * sum(lens)  # 16 bytes per frame, nothing else
    reader = get_reader(NAME)(path)
    for key, a in zip(keys, idx):
        np.testing.assert_array_equal(reader.read(key), a)
        np.testing.assert_array_equal(reader.read(key, 3, 20), a[3:20])
    with pytest.raises(SpeechkdError, match="must be"):
        with Uint8ChunkyWriter(tmp_path / "bad") as w:
            w.write("x", idx[0].astype(np.int64))
    # the done-when check, measured from written files: a 1024-dim float32 layer vs 16 codebooks
    with NumpyHdf5Writer(tmp_path / "f32.h5") as w:
        for i, t in enumerate(lens):
            w.write(f"c{i}", rng.standard_normal((t, 1024)).astype(np.float32))
    assert (tmp_path / "f32.h5").stat().st_size / Path(path).stat().st_size >= 256


def test_speed_perturbed_cuts_get_indexes_of_the_perturbed_audio(setup, tmp_path):
    from lhotse import CutSet

    from speechkd.targets.codebooks import attach_codebooks, extract_codebooks, read_codebooks_metadata

    base = setup["cuts"].subset(first=2)
    fast = CutSet.from_cuts([c.perturb_speed(1.1) for c in base])
    both = base + fast
    r = extract_codebooks(both, setup["teacher"], setup["quantizer"], tmp_path / "cb", "train", chunk_cuts=4)
    assert r.finalized and r.num_cuts == 4
    assert read_codebooks_metadata(tmp_path / "cb")["parts"]["train"]["num_speed_perturbed"] == 2
    idx = _indexes(tmp_path / "cb", "train")
    for c in fast:  # frame counts follow the perturbed duration (within the join's tolerance)
        n = idx[c.id].shape[0]
        assert abs(n - c.duration / 0.02) <= 2 and n < idx[c.id.split("_sp")[0]].shape[0]
    assert len(attach_codebooks(both, tmp_path / "cb", ["train"], "codebook_indexes", 2)) == 4
