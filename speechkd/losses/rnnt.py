"""Pruned RNN-T losses with k2's names and semantics, on k2 when it is installed and in plain PyTorch otherwise.

Shapes (as in k2): ``lm (B, S+1, C)`` prediction-network part, ``am (B, T, C)`` encoder part,
``symbols (B, S)`` int64, ``boundary (B, 4)`` int64 rows ``[0, 0, S_b, T_b]`` for uneven lengths (None:
every row is ``[0, 0, S, T]``), ``termination_symbol`` = the blank id. Regular RNN-T topology: any number
of symbols per frame, one blank moves to the next frame. ``reduction``: ``"mean"`` (over utterances, as
in k2), ``"sum"`` or ``"none"`` (per-utterance losses ``(B,)``).

Typical use (icefall's pruned transducer)::

    simple, (px_grad, py_grad) = rnnt_loss_smoothed(lm_proj, am_proj, symbols, blank, lm_scale, am_scale,
                                                     boundary, reduction="sum", return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_pruned, lm_pruned = do_rnnt_pruning(am, lm, ranges)
    logits = joiner(am_pruned, lm_pruned)                       # (B, T, s_range, V)
    pruned = rnnt_loss_pruned(logits, symbols, ranges, blank, boundary, reduction="sum")

Backends, chosen per call by ``backend``:

- ``"auto"`` (default): ``"k2"`` when ``import k2`` works, else ``"portable"``.
- ``"k2"``: k2's C++/CUDA kernels (``k2.rnnt_loss_*``); raises :class:`SpeechkdError` if k2 is missing.
- ``"fast_rnnt"``: the same kernels packaged as ``fast_rnnt`` (k2's RNN-T split out; optional, used for
  equality tests and benchmarks; not picked by ``"auto"``).
- ``"portable"``: :mod:`speechkd.losses.rnnt_portable`, plain PyTorch on any device, proven equal to a
  brute-force reference and (when importable) to k2/fast_rnnt by the unit tests.

Memory: the recursion state is ``(B, S+1, T+1)`` floats in every backend (the portable one keeps
forward and backward log-probabilities, ``alpha`` and ``beta``, both of that size, k2 keeps one plus
its gradient). The simple/smoothed losses need ``O(B*(T+S+1)*C)`` besides; the pruned loss takes
``(B, T, s_range, V)`` logits and allocates one gradient of that size, never ``(B, T, S+1, V)``; the full
:func:`rnnt_loss` takes and allocates ``(B, T, S+1, V)``. See :mod:`speechkd.losses.rnnt_portable`.

Precision: every loss here runs in float32 with autocast disabled, whatever the caller's autocast
context (icefall disables autocast around its k2 calls the same way). Half/bfloat16 inputs are cast to
float32 first; the smoothed loss' ``tiny`` guard and the normaliser matmuls would otherwise underflow or
lose precision in fp16/bf16. Gradients flow back to the low-precision inputs through the cast.

k2 options not exposed here: ``rnnt_type`` other than "regular", ``delay_penalty``, ``use_hat_loss``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from types import ModuleType
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from speechkd.errors import SpeechkdError
from speechkd.utils.precision import autocast_off

BACKENDS = ("auto", "k2", "fast_rnnt", "portable")
LossOut = Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]


@functools.lru_cache(maxsize=None)
def _try_import(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken k2 install (ABI mismatch) raises OSError etc.
        return None


def k2_available() -> bool:
    """Whether ``import k2`` works (what ``backend="auto"`` checks)."""
    return _try_import("k2") is not None


def resolve_backend(backend: str = "auto") -> str:
    """``"auto"`` -> ``"k2"`` or ``"portable"``; checks that a named backend is importable."""
    if backend not in BACKENDS:
        raise SpeechkdError(f"unknown RNN-T loss backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "k2" if k2_available() else "portable"
    if backend in ("k2", "fast_rnnt") and _try_import(backend) is None:
        raise SpeechkdError(
            f"RNN-T loss backend {backend!r} requested but `import {backend}` fails; "
            "install it or use backend='portable'"
        )
    return backend


def _module(backend: str) -> ModuleType:
    name = resolve_backend(backend)
    if name == "portable":
        from speechkd.losses import rnnt_portable

        return rnnt_portable
    module = _try_import(name)
    assert module is not None  # checked by resolve_backend
    return module


def _full_precision(value):
    """Float16/bfloat16 tensors -> float32 (differentiable); everything else unchanged."""
    if isinstance(value, Tensor) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


def _call(backend: str, fn_name: str, **kwargs):
    """Call ``fn_name`` of the backend in float32 with autocast off; for k2/fast_rnnt ask for the regular
    topology explicitly."""
    module = _module(backend)
    fn = getattr(module, fn_name)
    if module.__name__ != "speechkd.losses.rnnt_portable":
        params = inspect.signature(fn).parameters
        if "rnnt_type" in params:
            kwargs["rnnt_type"] = "regular"
        elif "modified" in params:  # older k2
            kwargs["modified"] = False
    kwargs = {k: _full_precision(v) for k, v in kwargs.items()}
    with autocast_off(v for v in kwargs.values() if isinstance(v, Tensor)):
        return fn(**kwargs)


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    return_grad: bool = False,
    backend: str = "auto",
) -> LossOut:
    """RNN-T loss with an additive joiner (logits ``lm[b, s] + am[b, t]``), normalised over ``C``.

    Args:
        lm: ``(B, S+1, C)``. am: ``(B, T, C)``. symbols: ``(B, S)`` int64. boundary: ``(B, 4)`` or None.
        return_grad: also return ``(px_grad (B, S, T+1), py_grad (B, S+1, T))``, the occupation
            probabilities of symbol/blank arcs, input to :func:`get_rnnt_prune_ranges`.
    Returns:
        loss (scalar, or ``(B,)`` for ``reduction="none"``), or ``(loss, (px_grad, py_grad))``.
    """
    return _call(backend, "rnnt_loss_simple", lm=lm, am=am, symbols=symbols, termination_symbol=termination_symbol,
                 boundary=boundary, reduction=reduction, return_grad=return_grad)


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    return_grad: bool = False,
    backend: str = "auto",
) -> LossOut:
    """:func:`rnnt_loss_simple` with arc scores interpolated (in log space) with LM-only and AM-only ones.

    Arc score = ``(1 - lm_only_scale - am_only_scale) * log_softmax(lm + am)
    + lm_only_scale * log_softmax(lm) + am_only_scale * log(softmax(am) * unigram / Z)``, where
    ``unigram (C,)`` averages ``softmax(lm)`` over the batch and positions. Shapes/returns as
    :func:`rnnt_loss_simple`.
    """
    return _call(backend, "rnnt_loss_smoothed", lm=lm, am=am, symbols=symbols, termination_symbol=termination_symbol,
                 lm_only_scale=lm_only_scale, am_only_scale=am_only_scale, boundary=boundary, reduction=reduction,
                 return_grad=return_grad)


def get_rnnt_prune_ranges(
    px_grad: Tensor, py_grad: Tensor, boundary: Optional[Tensor], s_range: int, backend: str = "auto"
) -> Tensor:
    """Symbol windows to keep per frame, ``(B, T, s_range)`` int64, from the simple loss' occupation grads.

    Window starts are non-decreasing in ``t``, 0 on the first frame, never skip a symbol, and every
    index lies in ``[0, S]``; ``s_range`` is capped at ``S + 1``.
    """
    if boundary is None:
        from speechkd.losses.rnnt_portable import default_boundary

        B, S, T1 = px_grad.shape
        boundary = default_boundary(B, S, T1 - 1, px_grad.device)
    return _call(backend, "get_rnnt_prune_ranges", px_grad=px_grad, py_grad=py_grad, boundary=boundary,
                 s_range=s_range)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor, backend: str = "auto") -> Tuple[Tensor, Tensor]:
    """``am (B, T, C)``, ``lm (B, S+1, C)``, ``ranges (B, T, s_range)`` -> ``(am_pruned, lm_pruned)``,
    both ``(B, T, s_range, C)``, ready for the joiner."""
    module = _module(backend)
    return module.do_rnnt_pruning(am=am, lm=lm, ranges=ranges)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """RNN-T loss on pruned joiner logits ``(B, T, s_range, V)``; arcs outside ``ranges`` have probability 0.

    With ``s_range >= S + 1`` (and ``ranges`` covering ``[0, S]``) it equals :func:`rnnt_loss`.
    """
    return _call(backend, "rnnt_loss_pruned", logits=logits, symbols=symbols, ranges=ranges,
                 termination_symbol=termination_symbol, boundary=boundary, reduction=reduction)


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Optional[Tensor] = None,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Full RNN-T loss on joiner logits ``(B, T, S+1, V)`` (memory ``O(B*T*(S+1)*V)``)."""
    return _call(backend, "rnnt_loss", logits=logits, symbols=symbols, termination_symbol=termination_symbol,
                 boundary=boundary, reduction=reduction)


def mutual_information_recursion(
    px: Tensor, py: Tensor, boundary: Optional[Tensor] = None, return_grad: bool = False, backend: str = "auto"
) -> Union[Tensor, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
    """The recursion under every loss here: scores ``(B,)`` from ``px (B, S, T+1)``, ``py (B, S+1, T)``."""
    module = _module(backend)
    return module.mutual_information_recursion(px=px, py=py, boundary=boundary, return_grad=return_grad)
