"""Portable pruned RNN-T vs brute-force references (float64), plus k2/fast_rnnt/torchaudio when importable."""

import importlib.util
import math

import pytest
import torch

from speechkd.errors import SpeechkdError
from speechkd.losses import rnnt
from speechkd.losses import rnnt_portable as portable
from speechkd.testing import rnnt_reference as ref

RTOL = 1e-5
BLANK = 0
F64 = torch.float64

# (B, T, S, V, boundary rows [S_b, T_b] or None)
CASES = {
    "T1_S0": (1, 1, 0, 4, None),
    "T1_S2": (1, 1, 2, 5, None),
    "S0_T3": (2, 3, 0, 4, None),
    "even": (2, 4, 3, 6, None),
    "uneven": (3, 5, 3, 6, [[3, 5], [1, 2], [0, 3]]),
    "more_symbols_than_frames": (2, 2, 4, 5, [[4, 2], [2, 1]]),
}


def _boundary(rows):
    if rows is None:
        return None
    return torch.tensor([[0, 0, s, t] for s, t in rows], dtype=torch.int64)


def _inputs(case, seed):
    B, T, S, V, rows = CASES[case]
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, V, (B, S), generator=g)
    return B, T, S, V, symbols, _boundary(rows), g


def _close(a, b, rtol=RTOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-3) if b.numel() else 1.0
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= rtol * scale, f"max abs err {err:.3g} > {rtol} * {scale:.3g}"


def _grads(loss, inputs):
    return torch.autograd.grad(loss.sum(), inputs)


# --------------------------------------------------------------------------------------------------
# the reference itself
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T,S", [(1, 0), (1, 3), (4, 0), (3, 2), (4, 3)])
def test_reference_recursion_equals_enumeration(T, S):
    g = torch.Generator().manual_seed(T * 10 + S)
    blank_lp = -torch.rand(T, S + 1, generator=g, dtype=F64) * 3
    symbol_lp = -torch.rand(T, S, generator=g, dtype=F64) * 3
    got = float(ref.lattice_log_likelihood(blank_lp, symbol_lp))
    assert got == pytest.approx(ref.enumerate_log_likelihood(blank_lp, symbol_lp), rel=1e-12)


def test_reference_hand_case():
    # T=2, S=1: alignments (sym on frame 0) and (sym on frame 1); all arcs log(0.5) -> 2 paths of 3 arcs
    lp = torch.full((2, 2), 0.5, dtype=F64).log()
    got = ref.lattice_log_likelihood(lp, lp[:, :1])
    assert float(got) == pytest.approx(math.log(2 * 0.125), rel=1e-12)


# --------------------------------------------------------------------------------------------------
# portable losses vs reference: values and gradients
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_full_loss_matches_reference(case):
    B, T, S, V, symbols, boundary, g = _inputs(case, 1)
    logits = torch.randn(B, T, S + 1, V, generator=g, dtype=F64, requires_grad=True)
    got = rnnt.rnnt_loss(logits, symbols, BLANK, boundary, reduction="none", backend="portable")
    want = ref.reference_rnnt_loss(logits, symbols, BLANK, boundary)
    _close(got, want)
    _close(_grads(got, [logits])[0], _grads(want, [logits])[0])


@pytest.mark.parametrize("case", list(CASES))
def test_simple_loss_matches_reference(case):
    B, T, S, V, symbols, boundary, g = _inputs(case, 2)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64, requires_grad=True)
    am = torch.randn(B, T, V, generator=g, dtype=F64, requires_grad=True)
    got = rnnt.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none", backend="portable")
    want = ref.reference_rnnt_loss_simple(lm, am, symbols, BLANK, boundary)
    _close(got, want)
    for a, b in zip(_grads(got, [lm, am]), _grads(want, [lm, am])):
        _close(a, b)


@pytest.mark.parametrize("case", ["T1_S2", "uneven", "more_symbols_than_frames"])
@pytest.mark.parametrize("scales", [(0.1, 0.2), (0.0, 0.0), (0.25, 0.0)])
def test_smoothed_loss_matches_reference(case, scales):
    B, T, S, V, symbols, boundary, g = _inputs(case, 3)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64, requires_grad=True)
    am = torch.randn(B, T, V, generator=g, dtype=F64, requires_grad=True)
    got = rnnt.rnnt_loss_smoothed(lm, am, symbols, BLANK, *scales, boundary=boundary, reduction="none",
                                  backend="portable")
    want = ref.reference_rnnt_loss_smoothed(lm, am, symbols, BLANK, *scales, boundary=boundary)
    _close(got, want)
    for a, b in zip(_grads(got, [lm, am]), _grads(want, [lm, am])):
        _close(a, b)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions(reduction):
    B, T, S, V, symbols, boundary, g = _inputs("uneven", 4)
    logits = torch.randn(B, T, S + 1, V, generator=g, dtype=F64)
    per_utt = ref.reference_rnnt_loss(logits, symbols, BLANK, boundary)
    want = {"none": per_utt, "sum": per_utt.sum(), "mean": per_utt.sum() / B}[reduction]
    got = rnnt.rnnt_loss(logits, symbols, BLANK, boundary, reduction=reduction, backend="portable")
    _close(got, want)


def _px_py(lm, am, symbols, boundary):
    return portable.get_rnnt_logprobs(lm, am, symbols, BLANK, boundary)


@pytest.mark.parametrize("case", ["T1_S2", "uneven", "more_symbols_than_frames"])
def test_return_grad_is_occupation(case):
    B, T, S, V, symbols, boundary, g = _inputs(case, 5)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64)
    am = torch.randn(B, T, V, generator=g, dtype=F64)
    px, py = _px_py(lm, am, symbols, boundary)
    _, (px_grad, py_grad) = rnnt.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, return_grad=True, backend="portable")
    lengths = ref.lengths_from_boundary(boundary, B, S, T)
    for b, (S_b, T_b) in enumerate(lengths):
        pxb = px[b, :S_b, :T_b].clone().requires_grad_(True)
        pyb = py[b, : S_b + 1, :T_b].clone().requires_grad_(True)
        ll = ref.lattice_log_likelihood(pyb.T, pxb.T)
        want_px, want_py = torch.autograd.grad(ll, [pxb, pyb], allow_unused=True)
        want_px = torch.zeros_like(pxb) if want_px is None else want_px  # S_b = 0: px unused
        _close(px_grad[b, :S_b, :T_b], want_px)
        _close(py_grad[b, : S_b + 1, :T_b], want_py)
        # hand-checkable invariants: every frame has exactly one blank, every symbol is emitted once
        _close(py_grad[b, :, :T_b].sum(dim=0), torch.ones(T_b, dtype=F64))
        _close(px_grad[b, :S_b].sum(dim=1), torch.ones(S_b, dtype=F64))
        assert float(px_grad[b, :, T_b:].abs().sum()) == 0.0 and float(py_grad[b, S_b + 1 :].abs().sum()) == 0.0


def test_mutual_information_autograd_equals_return_grad():
    B, T, S, V, symbols, boundary, g = _inputs("uneven", 6)
    px, py = _px_py(torch.randn(B, S + 1, V, generator=g, dtype=F64), torch.randn(B, T, V, generator=g, dtype=F64),
                    symbols, boundary)
    px.requires_grad_(True)
    py.requires_grad_(True)
    scores, (px_occ, py_occ) = portable.mutual_information_recursion(px, py, boundary, return_grad=True)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    gx, gy = torch.autograd.grad((scores * weights).sum(), [px, py])
    _close(gx, px_occ * weights.view(B, 1, 1))
    _close(gy, py_occ * weights.view(B, 1, 1))
    s2 = portable.mutual_information_recursion(px.detach().requires_grad_(True), py.detach(), boundary)
    _close(s2, scores.detach())


# --------------------------------------------------------------------------------------------------
# pruning
# --------------------------------------------------------------------------------------------------
def _ranges_for(case, seed, s_range):
    B, T, S, V, symbols, boundary, g = _inputs(case, seed)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64)
    am = torch.randn(B, T, V, generator=g, dtype=F64)
    _, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.1, 0.1, boundary, return_grad=True,
                                                    backend="portable")
    return rnnt.get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range, backend="portable")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("s_range", [2, 3])
def test_prune_ranges_properties(seed, s_range):
    B, T, S = 3, 12, 7
    g = torch.Generator().manual_seed(seed)
    V = 6
    symbols = torch.randint(1, V, (B, S), generator=g)
    boundary = _boundary([[7, 12], [5, 6], [2, 9]])
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64) * 3
    am = torch.randn(B, T, V, generator=g, dtype=F64) * 3
    _, (pxg, pyg) = rnnt.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, return_grad=True, backend="portable")
    ranges = rnnt.get_rnnt_prune_ranges(pxg, pyg, boundary, s_range, backend="portable")
    assert ranges.shape == (B, T, s_range) and ranges.dtype == torch.int64
    assert int(ranges.min()) >= 0 and int(ranges.max()) <= S
    starts = ranges[:, :, 0]
    assert (starts[:, 0] == 0).all()
    steps = starts[:, 1:] - starts[:, :-1]
    assert (steps >= 0).all() and (steps < s_range).all()
    assert (ranges[:, :, 1:] - ranges[:, :, :-1] == 1).all()
    for b, (S_b, T_b) in enumerate(ref.lengths_from_boundary(boundary, B, S, T)):
        assert int(ranges[b, T_b - 1, -1]) >= S_b  # last frame's window reaches the final symbol
    # the pruned lattice keeps a path: finite loss
    logits = torch.randn(B, T, s_range, V, generator=g, dtype=F64)
    loss = rnnt.rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary, reduction="none", backend="portable")
    assert torch.isfinite(loss).all()


def test_adjust_lower_bound_hand_case():
    s_begin = torch.tensor([[3, 0, 5, 2, 9, 9, 4]])
    got = portable._adjust_pruning_lower_bound(s_begin, 3)
    # monotonic lower bound -> [0,0,2,2,4,4,4]; steps already < 3; starts at 0
    assert got.tolist() == [[0, 0, 2, 2, 4, 4, 4]]
    got = portable._adjust_pruning_lower_bound(torch.tensor([[0, 6, 6, 6]]), 3)
    # steps limited to s_range - 1 = 2 going backwards from 6: [0, 2, 4, 6]
    assert got.tolist() == [[0, 2, 4, 6]]


@pytest.mark.parametrize("case", ["uneven", "more_symbols_than_frames", "even"])
@pytest.mark.parametrize("s_range", [2, 3])
def test_pruned_loss_matches_reference(case, s_range):
    ranges = _ranges_for(case, 7, s_range)
    B, T, S, V, symbols, boundary, g = _inputs(case, 7)
    s_range = ranges.shape[2]
    logits = torch.randn(B, T, s_range, V, generator=g, dtype=F64, requires_grad=True)
    got = rnnt.rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary, reduction="none", backend="portable")
    want = ref.reference_rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary)
    _close(got, want)
    _close(_grads(got, [logits])[0], _grads(want, [logits])[0])


@pytest.mark.parametrize("case", ["uneven", "T1_S2", "S0_T3"])
def test_pruned_with_full_range_equals_full_loss(case):
    B, T, S, V, symbols, boundary, g = _inputs(case, 8)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64, requires_grad=True)
    am = torch.randn(B, T, V, generator=g, dtype=F64, requires_grad=True)
    _, (pxg, pyg) = rnnt.rnnt_loss_simple(lm.detach(), am.detach(), symbols, BLANK, boundary, return_grad=True,
                                          backend="portable")
    ranges = rnnt.get_rnnt_prune_ranges(pxg, pyg, boundary, S + 5, backend="portable")
    assert ranges.shape == (B, T, S + 1) and (ranges == torch.arange(S + 1)).all()
    am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges, backend="portable")
    pruned = rnnt.rnnt_loss_pruned(am_p + lm_p, symbols, ranges, BLANK, boundary, reduction="none", backend="portable")
    full = rnnt.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary, reduction="none",
                          backend="portable")
    assert torch.equal(pruned, full)
    for a, b in zip(_grads(pruned, [lm, am]), _grads(full, [lm, am])):
        _close(a, b, rtol=1e-12)


def test_do_rnnt_pruning_gathers_rows():
    B, T, S, C, s_range = 2, 4, 5, 3, 2
    am = torch.randn(B, T, C, dtype=F64)
    lm = torch.randn(B, S + 1, C, dtype=F64, requires_grad=True)
    ranges = torch.tensor([[0, 0, 1, 3], [0, 1, 2, 4]]).unsqueeze(2) + torch.arange(s_range)
    am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges, backend="portable")
    for b in range(B):
        for t in range(T):
            for k in range(s_range):
                assert torch.equal(lm_p[b, t, k], lm[b, ranges[b, t, k]].detach())
                assert torch.equal(am_p[b, t, k], am[b, t])
    (g,) = torch.autograd.grad(lm_p.sum(), [lm])
    counts = torch.stack([torch.bincount(ranges[b].flatten(), minlength=S + 1) for b in range(B)])
    _close(g, counts.to(F64).unsqueeze(2).expand(B, S + 1, C))


# --------------------------------------------------------------------------------------------------
# numerics, errors, backends
# --------------------------------------------------------------------------------------------------
def test_float32_close_to_float64():
    g = torch.Generator().manual_seed(9)
    B, T, S, V = 2, 40, 12, 20
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64)
    am = torch.randn(B, T, V, generator=g, dtype=F64)
    symbols = torch.randint(1, V, (B, S), generator=g)
    l64 = rnnt.rnnt_loss_simple(lm, am, symbols, BLANK, reduction="none", backend="portable")
    l32 = rnnt.rnnt_loss_simple(lm.float(), am.float(), symbols, BLANK, reduction="none", backend="portable")
    _close(l32.double(), l64, rtol=1e-5)


def test_py_with_hole_is_rejected():
    px = torch.zeros(1, 1, 4, dtype=F64)
    py = torch.zeros(1, 2, 3, dtype=F64)
    py[0, 1, 1] = float("-inf")  # row 1 finite on frames 0 and 2 only
    with pytest.raises(ValueError, match="py\\[0, 1"):
        portable.mutual_information_recursion(px, py)


def test_bad_backend_and_shapes():
    with pytest.raises(SpeechkdError, match="unknown RNN-T loss backend"):
        rnnt.resolve_backend("cuda-magic")
    if not rnnt.k2_available():
        assert rnnt.resolve_backend("auto") == "portable"
        with pytest.raises(SpeechkdError, match="k2"):
            rnnt.resolve_backend("k2")
    with pytest.raises(ValueError, match="symbols"):
        rnnt.rnnt_loss_simple(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), torch.zeros(1, 3, dtype=torch.int64), 0,
                              backend="portable")


# --------------------------------------------------------------------------------------------------
# peers, when importable
# --------------------------------------------------------------------------------------------------
PEERS = [name for name in ("k2", "fast_rnnt") if importlib.util.find_spec(name) is not None]


@pytest.mark.parametrize("peer", PEERS or [pytest.param("k2", marks=pytest.mark.skip("neither k2 nor fast_rnnt"))])
def test_portable_equals_k2_kernels(peer):
    g = torch.Generator().manual_seed(10)
    B, T, S, V, s_range = 3, 15, 6, 9, 3
    boundary = _boundary([[6, 15], [3, 7], [1, 4]])
    symbols = torch.randint(1, V, (B, S), generator=g)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64, requires_grad=True)
    am = torch.randn(B, T, V, generator=g, dtype=F64, requires_grad=True)
    out = {}
    for backend in ("portable", peer):
        loss, (pxg, pyg) = rnnt.rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.1, 0.05, boundary, reduction="sum",
                                                   return_grad=True, backend=backend)
        pxg, pyg = pxg.clone(), pyg.clone()  # k2 scales its saved grads in place on backward
        ranges = rnnt.get_rnnt_prune_ranges(pxg, pyg, boundary, s_range, backend=backend)
        am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges, backend=backend)
        logits = torch.tanh(am_p + lm_p) * 4
        pruned = rnnt.rnnt_loss_pruned(logits, symbols, ranges, BLANK, boundary, reduction="sum", backend=backend)
        full = rnnt.rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary, reduction="none",
                              backend=backend)
        grads = _grads(loss + pruned, [lm, am])
        out[backend] = (loss, pxg, pyg, ranges, pruned, full, *grads)
    mine, theirs = out["portable"], out[peer]
    assert torch.equal(mine[3], theirs[3]), "prune ranges differ"
    for a, b in zip(mine[:3] + mine[4:], theirs[:3] + theirs[4:]):
        _close(a.detach(), b.detach(), rtol=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("torchaudio") is None, reason="torchaudio not installed")
def test_full_loss_equals_torchaudio():
    import torchaudio.functional as taf

    B, T, S, V, symbols, boundary, g = _inputs("uneven", 11)
    logits = torch.randn(B, T, S + 1, V, generator=g, dtype=torch.float32)
    want = taf.rnnt_loss(logits, symbols.int(), boundary[:, 3].int(), boundary[:, 2].int(), blank=BLANK,
                         reduction="none")
    got = rnnt.rnnt_loss(logits, symbols, BLANK, boundary, reduction="none", backend="portable")
    _close(got, want, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_portable_cuda_equals_cpu():
    B, T, S, V, symbols, boundary, g = _inputs("uneven", 12)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=F64)
    am = torch.randn(B, T, V, generator=g, dtype=F64)
    out = {}
    for device in ("cpu", "cuda"):
        lm_d = lm.to(device).requires_grad_(True)
        am_d = am.to(device).requires_grad_(True)
        loss, (pxg, pyg) = rnnt.rnnt_loss_smoothed(lm_d, am_d, symbols.to(device), BLANK, 0.1, 0.1,
                                                   boundary.to(device), reduction="sum", return_grad=True,
                                                   backend="portable")
        ranges = rnnt.get_rnnt_prune_ranges(pxg, pyg, boundary.to(device), 2, backend="portable")
        am_p, lm_p = rnnt.do_rnnt_pruning(am_d, lm_d, ranges, backend="portable")
        pruned = rnnt.rnnt_loss_pruned(am_p + lm_p, symbols.to(device), ranges, BLANK, boundary.to(device),
                                       reduction="sum", backend="portable")
        grads = _grads(loss + pruned, [lm_d, am_d])
        out[device] = [t.detach().cpu() for t in (loss, pruned, ranges, *grads)]
    for a, b in zip(out["cpu"], out["cuda"]):
        _close(b.double(), a.double(), rtol=1e-9)


# --------------------------------------------------------------------------------------------------
# precision: the losses ignore the caller's autocast (issue 14, item 5)
# --------------------------------------------------------------------------------------------------
def test_smoothed_and_pruned_losses_under_bf16_autocast_equal_fp32():
    g = torch.Generator().manual_seed(5)
    B, T, S, C = 2, 30, 8, 40
    lm = torch.randn(B, S + 1, C, generator=g) * 3
    am = torch.randn(B, T, C, generator=g) * 3
    symbols = torch.randint(1, C, (B, S), generator=g)

    def losses():
        simple, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.1, 0.1, reduction="sum",
                                                             return_grad=True, backend="portable")
        ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, None, 4, backend="portable")
        am_p, lm_p = rnnt.do_rnnt_pruning(am, lm, ranges, backend="portable")
        logits = torch.nn.functional.linear(torch.tanh(am_p + lm_p), torch.eye(C))  # bf16 under autocast
        pruned = rnnt.rnnt_loss_pruned(logits, symbols, ranges, BLANK, reduction="sum", backend="portable")
        return simple, pruned, logits.dtype

    ref_simple, ref_pruned, ref_dtype = losses()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        simple, pruned, dtype = losses()
    assert ref_dtype == torch.float32 and dtype == torch.bfloat16  # autocast was really on for the joiner
    assert simple.dtype == torch.float32
    _close(simple, ref_simple, rtol=1e-6)
    # the pruned loss sees bf16 logits (rounded by the joiner), but computes in fp32 on them
    _close(pruned, ref_pruned, rtol=1e-2)
    logits_bf16 = torch.randn(B, T, 4, C, generator=g).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = rnnt.rnnt_loss_pruned(logits_bf16, symbols, ranges_of(B, T, S), BLANK, reduction="sum",
                                      backend="portable")
    plain = rnnt.rnnt_loss_pruned(logits_bf16.float(), symbols, ranges_of(B, T, S), BLANK, reduction="sum",
                                  backend="portable")
    _close(under, plain, rtol=1e-6)


def ranges_of(B, T, S, s_range=4):
    start = torch.clamp(torch.arange(T) * S // T, max=S + 1 - s_range)
    return (start[:, None] + torch.arange(s_range)).expand(B, T, s_range).contiguous()
