"""Export of the DistilHuBERT student as a transformers checkpoint; paper parameter counts."""

import logging

import pytest
import torch
import yaml

from speechkd.errors import SpeechkdError
from speechkd.models.distilhubert import DistilHubertConfig, DistilHubertStudent, count_parameters
from speechkd.models.hf_export import METADATA_FILE, export_student, load_exported_student

log = logging.getLogger(__name__)

PAPER_TEACHER_PARAMS = 94.68e6  # HuBERT-base, DistilHuBERT paper table 1
PAPER_STUDENT_PARAMS = 23.49e6  # DistilHuBERT
REL_TOL = 0.01

TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16),
    conv_kernel=(10, 4),
    conv_stride=(5, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


@pytest.fixture(scope="module")
def base_export(tmp_path_factory):
    """HuBERT-base-shaped teacher (random weights, from its config) -> default student -> export."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    teacher = HubertModel(HubertConfig())
    student = DistilHubertStudent.from_teacher(teacher, DistilHubertConfig()).eval()
    out = export_student(student, tmp_path_factory.mktemp("distilhubert"), train_config="exp/x/config.yaml")
    return teacher, student, out


def test_paper_parameter_counts(base_export):
    from transformers import AutoModel

    teacher, student, out = base_export
    n_teacher = count_parameters(teacher)
    exported = AutoModel.from_pretrained(out)
    n_student = count_parameters(exported)
    n_heads = count_parameters(student.pred_head)
    log.info("teacher %d, exported student %d, prediction heads %d", n_teacher, n_student, n_heads)
    assert abs(n_teacher - PAPER_TEACHER_PARAMS) <= REL_TOL * PAPER_TEACHER_PARAMS
    assert abs(n_student - PAPER_STUDENT_PARAMS) <= REL_TOL * PAPER_STUDENT_PARAMS
    # the paper's figure is the student without its prediction heads: s3prl's heads are a 2-layer MLP per
    # predicted layer (768 -> 768 -> GELU -> 768), 3 heads = 3.54M
    assert n_heads == 3 * 2 * (768 * 768 + 768)
    assert abs(n_student + n_heads - PAPER_STUDENT_PARAMS) > REL_TOL * PAPER_STUDENT_PARAMS


def test_export_files_and_metadata(base_export):
    from safetensors import safe_open

    _, student, out = base_export
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any("pred_head" in k for k in keys)
    assert sum(k.startswith("encoder.layers.") and k.endswith("final_layer_norm.weight") for k in keys) == 2
    config = yaml.safe_load((out / "config.json").read_text())
    assert config["model_type"] == "hubert" and config["num_hidden_layers"] == 2
    meta = yaml.safe_load((out / METADATA_FILE).read_text())
    assert meta["teacher"]["num_layers"] == 12 and meta["teacher"]["hidden_size"] == 768
    assert meta["pred_head_layers"] == [4, 8, 12]
    assert meta["train_config"] == "exp/x/config.yaml"
    assert meta["backbone"]["num_parameters"] == count_parameters(student.backbone)
    from transformers import AutoFeatureExtractor

    fe = AutoFeatureExtractor.from_pretrained(out)
    assert fe.sampling_rate == 16000 and fe.return_attention_mask and not fe.do_normalize


def _assert_roundtrip(student, out_dir, wavs, wav_lens):
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(out_dir, output_hidden_states=True).eval()
    mask = torch.arange(wavs.shape[1])[None, :] < wav_lens[:, None]
    with torch.no_grad():
        ref = student(wavs, wav_lens)
        got = exported(wavs.masked_fill(~mask, 0.0), attention_mask=mask.long())
    assert len(got.hidden_states) == len(ref.hidden_states) == student.cfg.num_layers + 1
    for a, b in zip(ref.hidden_states, got.hidden_states):
        assert a.shape == b.shape
        assert (a - b).abs().max() < 1e-5


def test_roundtrip_base_student_padded_batch(base_export):
    _, student, out = base_export
    torch.manual_seed(2)
    wav_lens = torch.tensor([8000, 5000])
    _assert_roundtrip(student, out, torch.randn(2, 8000), wav_lens)


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_roundtrip_follows_teacher_family(family, tmp_path):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    teacher = AutoModel.from_config(AutoConfig.for_model(family, **TINY))
    cfg = DistilHubertConfig(hidden_size=32, num_heads=2, ffn_dim=64, pred_head_layers=[2, 4])
    student = DistilHubertStudent.from_teacher(teacher, cfg).eval()
    assert student.family == family
    export_student(student, tmp_path)
    model, meta = load_exported_student(tmp_path)
    assert model.config.model_type == family and meta["teacher"]["model_type"] == family
    # weights came from the teacher's first two layers and survive the round trip
    assert torch.equal(model.encoder.layers[1].feed_forward.output_dense.weight,
                       teacher.encoder.layers[1].feed_forward.output_dense.weight)
    _assert_roundtrip(student, tmp_path, torch.randn(3, 3000), torch.tensor([3000, 2000, 1234]))


def test_load_rejects_incomplete_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SpeechkdError, match="missing .*model.safetensors"):
        load_exported_student(tmp_path)
