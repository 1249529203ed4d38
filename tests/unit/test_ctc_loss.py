"""CTC loss wrapper: feasibility on hand cases, loss vs a brute-force sum over all alignments."""

import itertools
import math

import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.losses.ctc import ctc_feasible, ctc_loss, ctc_min_frames

BLANK = 0


def _collapse(path):
    out, prev = [], None
    for tok in path:
        if tok != prev and tok != BLANK:
            out.append(tok)
        prev = tok
    return out


def _brute_force_nll(log_probs, target):
    """-log sum over every frame labelling (V**T of them) that collapses to ``target``."""
    T, V = log_probs.shape
    scores = [sum(float(log_probs[t, k]) for t, k in enumerate(path))
              for path in itertools.product(range(V), repeat=T) if _collapse(path) == target]
    if not scores:
        return math.inf
    peak = max(scores)
    return -(peak + math.log(sum(math.exp(s - peak) for s in scores)))


def test_feasibility_hand_cases():
    targets = [[1, 1], [1, 1], [1, 2], [], [2, 2, 2], [3]]
    lens = torch.tensor([3, 2, 2, 0, 4, 1])
    assert ctc_min_frames(targets).tolist() == [3, 3, 2, 0, 5, 1]
    assert ctc_feasible(lens, targets).tolist() == [True, False, True, True, False, True]


def test_loss_equals_brute_force_sum_over_alignments():
    g = torch.Generator().manual_seed(0)
    N, T, V = 4, 5, 3
    log_probs = torch.randn(N, T, V, generator=g, dtype=torch.float64).log_softmax(-1)
    lens = torch.tensor([5, 4, 3, 5])
    targets = [[1, 2], [1, 1], [2], [2, 1, 2]]
    got = ctc_loss(log_probs, lens, targets, blank=BLANK, reduction="none")
    want = [_brute_force_nll(log_probs[n, : lens[n]], targets[n]) for n in range(N)]
    assert got.tolist() == pytest.approx(want, rel=1e-10)
    assert float(ctc_loss(log_probs, lens, targets)) == pytest.approx(sum(want), rel=1e-10)
    assert float(ctc_loss(log_probs, lens, targets, reduction="mean")) == pytest.approx(sum(want) / N, rel=1e-10)


def test_infeasible_is_inf_or_zeroed():
    log_probs = torch.randn(2, 2, 3, dtype=torch.float64).log_softmax(-1)
    lens = torch.tensor([2, 2])
    targets = [[1, 1], [1]]
    assert ctc_feasible(lens, targets).tolist() == [False, True]
    assert math.isinf(float(ctc_loss(log_probs, lens, targets, reduction="none")[0]))
    zeroed = ctc_loss(log_probs, lens, targets, reduction="none", zero_infinity=True)
    assert float(zeroed[0]) == 0.0 and math.isfinite(float(zeroed[1]))


def test_bad_targets_rejected():
    log_probs = torch.zeros(1, 3, 4).log_softmax(-1)
    with pytest.raises(SpeechkdError, match="blank"):
        ctc_loss(log_probs, torch.tensor([3]), [[1, 0]])
    with pytest.raises(SpeechkdError, match="outside"):
        ctc_loss(log_probs, torch.tensor([3]), [[7]])
    with pytest.raises(ValueError, match="T = 3"):
        ctc_loss(log_probs, torch.tensor([4]), [[1]])
