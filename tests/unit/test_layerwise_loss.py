"""Layer-wise (DistilHuBERT) loss against a hand-written loop."""

import math

import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.losses.layerwise import layerwise_distill_loss


def loop_loss(s, t, lens, cos_weight, l1_weight):
    """Plain-Python reference: per head, average over all valid (n, t) frames; mean over heads."""
    n_utt, n_heads, _, dim = s.shape
    head_losses, l1s, coss = [], [], []
    frames = sum(int(x) for x in lens)
    for h in range(n_heads):
        l1_sum = cos_sum = logsig_sum = 0.0
        for n in range(n_utt):
            for k in range(int(lens[n])):
                a, b = s[n, h, k].tolist(), t[n, h, k].tolist()
                l1_sum += sum(abs(x - y) for x, y in zip(a, b)) / dim
                cos = sum(x * y for x, y in zip(a, b)) / (
                    math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
                )
                cos_sum += cos
                logsig_sum += -math.log(1.0 / (1.0 + math.exp(-cos)))
        l1s.append(l1_sum / frames)
        coss.append(cos_sum / frames)
        head_losses.append(l1_weight * l1_sum / frames + cos_weight * logsig_sum / frames)
    return sum(head_losses) / n_heads, l1s, coss


def random_batch(seed=0, n=3, h=2, t=6, d=5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, h, t, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, h, t, d, generator=g, dtype=torch.float64)
    lens = torch.tensor([6, 2, 4])
    return s, y, lens


@pytest.mark.parametrize("cos_weight,l1_weight", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_matches_hand_loop(cos_weight, l1_weight):
    s, y, lens = random_batch()
    loss, info = layerwise_distill_loss(s, y, lens, cos_weight=cos_weight, l1_weight=l1_weight)
    ref, l1s, coss = loop_loss(s, y, lens, cos_weight, l1_weight)
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    assert info["l1"].tolist() == pytest.approx(l1s, rel=1e-5)
    assert info["cos"].tolist() == pytest.approx(coss, rel=1e-5)
    assert float(info["num_frames"]) == 12


def test_padding_values_do_not_matter_and_get_no_gradient():
    s, y, lens = random_batch()
    s2, y2 = s.clone(), y.clone()
    s2[1, :, 2:] = 1e6
    y2[2, :, 4:] = -3e5
    s2.requires_grad_(True)
    loss_a, _ = layerwise_distill_loss(s, y, lens)
    loss_b, _ = layerwise_distill_loss(s2, y2, lens)
    assert float(loss_b.detach()) == pytest.approx(float(loss_a), rel=1e-6)
    loss_b.backward()
    assert s2.grad[1, :, 2:].abs().max() == 0 and s2.grad[2, :, 4:].abs().max() == 0
    assert s2.grad[1, :, :2].abs().max() > 0


def test_perfect_prediction_value():
    _, y, lens = random_batch()
    loss, info = layerwise_distill_loss(y.clone(), y, lens)
    # l1 = 0, cos = 1: loss = -log sigmoid(1) = log(1 + e^-1)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert info["l1"].abs().max() == 0
    assert info["cos"].tolist() == pytest.approx([1.0, 1.0])


def test_teacher_is_detached_and_half_inputs_give_float32():
    s, y, lens = random_batch()
    s = s.half().requires_grad_(True)
    y = y.half().requires_grad_(True)
    loss, _ = layerwise_distill_loss(s, y, lens)
    assert loss.dtype == torch.float32
    loss.backward()
    assert y.grad is None and s.grad is not None


def test_bad_inputs_are_errors():
    s, y, lens = random_batch()
    with pytest.raises(SpeechkdError, match="same .N, H, T, D. shape"):
        layerwise_distill_loss(s, y[:, :1], lens)
    with pytest.raises(SpeechkdError, match="outside"):
        layerwise_distill_loss(s, y, torch.tensor([7, 1, 1]))
    with pytest.raises(SpeechkdError, match="without any valid frame"):
        layerwise_distill_loss(s, y, torch.tensor([0, 0, 0]))
