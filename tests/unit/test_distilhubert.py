"""DistilHuBERT student: construction from a teacher, forward, heads, frame-rate alignment."""

import math

import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.models.distilhubert import (
    DistilHubertConfig,
    DistilHubertStudent,
    align_frame_rates,
    conv_output_lengths,
    describe_teacher,
    stack_target_layers,
)

TINY_TEACHER = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 3, 3),
    conv_stride=(5, 4, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def tiny_student_cfg(**kw) -> DistilHubertConfig:
    base = dict(hidden_size=32, num_heads=2, ffn_dim=64, pred_head_layers=[2, 4])
    base.update(kw)
    return DistilHubertConfig(**base)


def tiny_teacher(family: str = "hubert", **kw):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(family, **{**TINY_TEACHER, **kw})
    return AutoModel.from_config(cfg).eval()


def test_from_teacher_copies_cnn_and_first_layers():
    teacher = tiny_teacher()
    student = DistilHubertStudent.from_teacher(teacher, tiny_student_cfg())
    t_state, s_state = teacher.state_dict(), student.backbone.state_dict()
    # same width: every backbone tensor comes from the teacher (layers 0 and 1 = teacher's first two)
    assert set(student.copied_from_teacher) == set(s_state)
    for name in s_state:
        assert torch.equal(s_state[name], t_state[name]), name
    assert any(n.startswith("encoder.layers.1.") for n in s_state)
    assert not any(n.startswith("encoder.layers.2.") for n in s_state)
    # heads predict teacher-width vectors for 2 target layers
    assert (student.pred_head.num_heads, student.pred_head.dim) == (2, 32)


def test_from_teacher_wider_student_copies_only_matching_shapes():
    teacher = tiny_teacher()
    student = DistilHubertStudent.from_teacher(teacher, tiny_student_cfg(hidden_size=48, num_heads=4))
    copied = set(student.copied_from_teacher)
    cnn = {n for n in student.backbone.state_dict() if n.startswith("feature_extractor.")}
    assert cnn and cnn <= copied
    # no layer is half-copied (the FFN biases alone would match: 64 == 64)
    assert not any(n.startswith("encoder.layers.") for n in copied)
    assert "feature_projection.layer_norm.weight" in copied  # normalises the 16-dim CNN output
    assert "feature_projection.projection.weight" not in copied  # 16 -> 48 vs 16 -> 32
    s_w = student.backbone.feature_extractor.conv_layers[1].conv.weight
    assert torch.equal(s_w, teacher.feature_extractor.conv_layers[1].conv.weight)
    assert student.cfg.pred_head_dim == 32  # teacher width, not student width


def test_wrapped_teacher_model_and_frame_shift():
    class Wrapper:  # shape of a speechkd teacher: .model is the transformers model
        frame_shift = 0.02

        def __init__(self, model):
            self.model = model

    teacher = tiny_teacher()
    info = describe_teacher(Wrapper(teacher))
    assert (info.num_layers, info.hidden_size, info.frame_shift) == (4, 32, 0.02)
    assert describe_teacher(teacher).frame_shift == pytest.approx(40 / 16000)
    student = DistilHubertStudent.from_teacher(Wrapper(teacher), tiny_student_cfg())
    assert torch.equal(student.backbone.encoder.layers[0].attention.q_proj.weight,
                       teacher.encoder.layers[0].attention.q_proj.weight)
    with pytest.raises(SpeechkdError, match="neither a transformers"):
        describe_teacher(object())


def test_front_end_follows_teacher_config():
    from transformers import HubertConfig

    teacher_cfg = HubertConfig(**TINY_TEACHER)
    student = DistilHubertStudent.from_teacher(teacher_cfg, tiny_student_cfg())
    assert student.cfg.conv_dim == [16, 16, 16]
    assert student.cfg.conv_stride == [5, 4, 2]
    assert student.frame_shift == pytest.approx(40 / 16000)
    assert student.copied_from_teacher == []  # a config carries no weights


@pytest.mark.parametrize("bad", [[2, 5], [-1, 4]])
def test_bad_head_index_names_index_and_depth(bad):
    from transformers import HubertConfig

    with pytest.raises(SpeechkdError, match=rf"layer {bad[0] if bad[0] < 0 else bad[1]}.*4 layers"):
        DistilHubertStudent.from_teacher(HubertConfig(**TINY_TEACHER), tiny_student_cfg(pred_head_layers=bad))


def test_whisper_teacher_depth_width_and_own_frontend():
    from transformers import WhisperConfig

    wcfg = WhisperConfig(encoder_layers=3, d_model=24, encoder_attention_heads=2, encoder_ffn_dim=48)
    info = describe_teacher(wcfg)
    assert (info.num_layers, info.hidden_size, info.model_type) == (3, 24, "whisper")
    own_cnn = dict(conv_dim=[8, 8], conv_kernel=[10, 8], conv_stride=[5, 4])
    student = DistilHubertStudent.from_teacher(wcfg, tiny_student_cfg(pred_head_layers=[3], **own_cnn))
    assert student.family == "hubert" and student.cfg.conv_dim == [8, 8]
    assert student.cfg.pred_head_dim == 24
    with pytest.raises(SpeechkdError, match="layer 4.*3 layers"):
        DistilHubertStudent.from_teacher(wcfg, tiny_student_cfg(pred_head_layers=[4]))
    with pytest.raises(SpeechkdError, match="pred_head_dim=32 differs .* 24"):
        DistilHubertStudent.from_teacher(wcfg, tiny_student_cfg(pred_head_layers=[3], pred_head_dim=32))


def test_forward_shapes_lens_and_head_split():
    student = DistilHubertStudent.from_teacher(tiny_teacher(), tiny_student_cfg()).eval()
    wav_lens = torch.tensor([4000, 2500])
    wavs = torch.randn(2, 4000)
    with torch.no_grad():
        out = student(wavs, wav_lens)
    expected = student.backbone._get_feat_extract_output_lengths(wav_lens)
    assert out.lens.tolist() == expected.tolist() == conv_output_lengths(wav_lens, [10, 3, 3], [5, 4, 2]).tolist()
    t = int(out.lens.max())
    assert out.head_outputs.shape == (2, 2, t, 32)
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (2, t, 32)
    torch.testing.assert_close(out.head_outputs, student.pred_head(out.hidden_states[-1]))  # heads on the last layer
    linear = DistilHubertStudent.from_teacher(tiny_teacher(), tiny_student_cfg(pred_head_type="linear")).eval()
    with torch.no_grad():
        out = linear(wavs, wav_lens)
    full = out.hidden_states[-1] @ linear.pred_head.proj.weight.T + linear.pred_head.proj.bias  # (N, T, 2*32)
    for h in range(2):
        torch.testing.assert_close(out.head_outputs[:, h], full[..., h * 32 : (h + 1) * 32])


def test_padding_is_ignored_with_layer_norm_cnn():
    """With a per-frame-normalised CNN, a padded utterance's valid frames equal those of the same
    utterance run alone, whatever garbage sits in the padding."""
    teacher = tiny_teacher(feat_extract_norm="layer", conv_bias=True)
    student = DistilHubertStudent.from_teacher(teacher, tiny_student_cfg()).eval()
    short = torch.randn(1, 2500)
    padded = torch.randn(2, 4000) * 10
    padded[1, :2500] = short[0]
    with torch.no_grad():
        alone = student(short, torch.tensor([2500]))
        batch = student(padded, torch.tensor([4000, 2500]))
    t = int(alone.lens[0])
    assert int(batch.lens[1]) == t
    for a, b in zip(alone.hidden_states, batch.hidden_states):
        torch.testing.assert_close(b[1, :t], a[0, :t], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.head_outputs[1, :, :t], alone.head_outputs[0, :, :t], atol=1e-5, rtol=1e-5)


def test_cnn_grad_mult_scales_only_cnn_gradients():
    teacher = tiny_teacher()
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(0)  # same prediction-head init for both students
        student = DistilHubertStudent.from_teacher(teacher, tiny_student_cfg(cnn_grad_mult=mult)).eval()
        torch.manual_seed(1)
        out = student(torch.randn(2, 3000), torch.tensor([3000, 3000]))
        out.head_outputs.square().sum().backward()
        grads[mult] = (
            student.backbone.feature_extractor.conv_layers[0].conv.weight.grad.clone(),
            student.backbone.feature_projection.projection.weight.grad.clone(),
        )
    torch.testing.assert_close(grads[0.1][0], 0.1 * grads[1.0][0], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])


def test_too_short_utterance_is_an_error():
    student = DistilHubertStudent(tiny_student_cfg())
    with pytest.raises(SpeechkdError, match="utterance 1 .* 9 samples"):
        student(torch.randn(2, 4000), torch.tensor([4000, 9]))


def test_stack_target_layers_picks_indices():
    hs = [torch.full((2, 3, 4), float(i)) for i in range(5)]
    stacked = stack_target_layers(hs, [4, 1])
    assert stacked.shape == (2, 2, 3, 4)
    assert stacked[:, 0].unique().tolist() == [4.0] and stacked[:, 1].unique().tolist() == [1.0]
    with pytest.raises(SpeechkdError, match="layer 5"):
        stack_target_layers(hs, [5])


# ---------------------------------------------------------------- frame-rate alignment


def _ramp(n: int, t: int, d: int = 2) -> torch.Tensor:
    """(n, t, d) with value = frame index (+ 100 * utterance)."""
    values = torch.arange(t, dtype=torch.float)[None, :, None] + 100 * torch.arange(n)[:, None, None]
    return values.expand(n, t, d).clone()


def test_align_same_rate_truncates_rounding_difference():
    # Whisper-like: teacher 400 frames at 20 ms, student CNN 399 frames
    s, t = _ramp(2, 399), _ramp(2, 400) + 0.5
    s_out, t_out, lens = align_frame_rates(s, torch.tensor([399, 300]), 0.02, t, torch.tensor([400, 301]), 0.02)
    assert lens.tolist() == [399, 300]
    assert s_out.shape == t_out.shape == (2, 399, 2)
    assert torch.equal(s_out, s) and torch.equal(t_out, t[:, :399])


def test_align_length_mismatch_beyond_tolerance_is_an_error():
    s, t = _ramp(2, 50), _ramp(2, 50)
    with pytest.raises(SpeechkdError, match="utterance 1.*40 vs 45"):
        align_frame_rates(s, torch.tensor([50, 40]), 0.02, t, torch.tensor([50, 45]), 0.02, max_len_diff=2)


def test_align_slower_teacher_pools_student():
    # teacher at 25 Hz (40 ms), student at 50 Hz: student frames averaged in pairs
    s, t = _ramp(2, 9), _ramp(2, 5)
    s_out, t_out, lens = align_frame_rates(s, torch.tensor([9, 7]), 0.02, t, torch.tensor([5, 3]), 0.04)
    assert lens.tolist() == [4, 3]
    assert s_out[0, :, 0].tolist() == [0.5, 2.5, 4.5, 6.5]  # mean of (0,1), (2,3), ...
    assert s_out[1, :3, 0].tolist() == [100.5, 102.5, 104.5]
    assert torch.equal(t_out, t[:, :4])


def test_align_faster_teacher_pools_teacher_on_time_dim_2():
    # (N, H, T, D) layout; teacher at 100 Hz (10 ms) vs student at 50 Hz
    t = _ramp(1, 8).unsqueeze(1).expand(1, 3, 8, 2)
    s = torch.zeros(1, 3, 4, 2)
    s_out, t_out, lens = align_frame_rates(s, torch.tensor([4]), 0.02, t, torch.tensor([8]), 0.01, time_dim=2)
    assert lens.tolist() == [4]
    assert t_out.shape == (1, 3, 4, 2)
    assert t_out[0, 2, :, 1].tolist() == [0.5, 2.5, 4.5, 6.5]


def test_align_non_integer_ratio_interpolates_teacher():
    # teacher every 30 ms, student every 20 ms; teacher value = its time in ms -> exact after interpolation
    t = _ramp(1, 11) * 30.0  # times 0..300 ms
    s = torch.zeros(1, 16, 2)
    s_out, t_out, lens = align_frame_rates(s, torch.tensor([16]), 0.02, t, torch.tensor([11]), 0.03)
    # teacher covers 0..300 ms -> student frames at 0, 20, ..., 300 ms: 16 frames
    assert lens.tolist() == [16]
    expected = [20.0 * j for j in range(16)]
    assert t_out[0, :, 0].tolist() == pytest.approx(expected, abs=1e-4)
    assert math.isclose(float(t_out[0, 15, 1]), 300.0, abs_tol=1e-4)
    assert s_out.shape == (1, 16, 2)


def test_whisper_encoder_teacher_end_to_end_alignment():
    """50 Hz Whisper encoder (from 100 Hz mel) vs the 20 ms CNN student: same rate, lengths off by one."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from speechkd.losses.layerwise import layerwise_distill_loss

    torch.manual_seed(0)
    wcfg = WhisperConfig(encoder_layers=2, d_model=24, encoder_attention_heads=2, encoder_ffn_dim=48,
                         num_mel_bins=8, max_source_positions=50)
    encoder = WhisperEncoder(wcfg).eval()
    student = DistilHubertStudent.from_teacher(wcfg, tiny_student_cfg(pred_head_layers=[1, 2])).eval()
    wav_lens = torch.tensor([16000, 11200])  # 1.0 s and 0.7 s
    mel_lens = wav_lens // 160  # 10 ms hop
    with torch.no_grad():
        t_hidden = encoder(torch.randn(2, 8, 100), output_hidden_states=True).hidden_states
        out = student(torch.randn(2, 16000), wav_lens)
    targets = stack_target_layers(t_hidden, [1, 2])  # (2, 2, 50, 24)
    teacher_lens = mel_lens // 2  # stride-2 conv: [50, 35]
    assert out.lens.tolist() == [49, 34]
    s, t, lens = align_frame_rates(out.head_outputs, out.lens, student.frame_shift, targets, teacher_lens, 0.02,
                                   time_dim=2)
    assert lens.tolist() == [49, 34] and s.shape == t.shape == (2, 2, 49, 24)
    assert torch.equal(t, targets[:, :, :49])
    loss, info = layerwise_distill_loss(s, t, lens)
    assert torch.isfinite(loss) and info["l1"].shape == (2,)


def test_prediction_heads_are_s3prl_mlps_one_per_teacher_layer():
    from speechkd.models.distilhubert import PredictionHeads

    torch.manual_seed(0)
    heads = PredictionHeads(hidden=8, num_heads=3, dim=5, kind="mlp", inter=6)
    x = torch.randn(2, 4, 8)
    out = heads(x)
    assert out.shape == (2, 3, 4, 5)
    h = torch.nn.functional.gelu(heads.proj(x)).view(2, 4, 3, 6)
    for k in range(3):  # head k: its own slice of the GELU layer, its own output linear
        ref = h[:, :, k] @ heads.weight[k] + heads.bias[k]
        torch.testing.assert_close(out[:, k], ref)
    assert sum(p.numel() for p in heads.parameters()) == 8 * 18 + 18 + 3 * (6 * 5 + 5)
    linear = PredictionHeads(hidden=8, num_heads=3, dim=5, kind="linear")
    assert linear(x).shape == (2, 3, 4, 5) and not hasattr(linear, "weight")
    assert tiny_student_cfg().pred_head_type == "mlp"  # s3prl's head by default
    with pytest.raises(SpeechkdError, match="pred_head_type"):
        tiny_student_cfg(pred_head_type="conv")
