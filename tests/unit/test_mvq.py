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
    # a chunk killed mid-write (HDF5 file, no manifest) is redone
    (tmp_path / "b" / "chunks" / "train" / "000001.h5").write_bytes(b"garbage")
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
