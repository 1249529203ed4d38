"""Checkpoint averaging (the usual last-N-epochs / last-N-steps model average before decoding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from speechkd.errors import SpeechkdError
from speechkd.training.checkpoint import FINGERPRINTS_KEY, epoch_checkpoints, load_checkpoint, step_checkpoints

PathLike = Union[str, Path]


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors (int buffers such as
    ``num_batches_tracked``) and non-tensors are taken from the **last** state dict.

    All state dicts must have the same keys and shapes. Averaging is done in float64 and cast back
    to each tensor's dtype.
    """
    if not state_dicts:
        raise SpeechkdError("average_state_dicts: no state dicts given")
    last = state_dicts[-1]
    keys = list(last.keys())
    for i, sd in enumerate(state_dicts):
        if set(sd.keys()) != set(keys):
            diff = sorted(set(sd.keys()) ^ set(keys))
            raise SpeechkdError(f"state dict #{i} has different keys from the last one: {diff[:5]}")
    out: dict[str, torch.Tensor] = {}
    n = len(state_dicts)
    for k in keys:
        v = last[k]
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            acc = torch.zeros(v.shape, dtype=torch.float64)
            for i, sd in enumerate(state_dicts):
                if sd[k].shape != v.shape:
                    raise SpeechkdError(
                        f"state dict #{i}: '{k}' has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
                    )
                acc += sd[k].to(torch.float64)
            out[k] = (acc / n).to(v.dtype)
        else:
            out[k] = v.clone() if isinstance(v, torch.Tensor) else v
    return out


def _model_state(obj: dict[str, Any], path: Path) -> Mapping[str, torch.Tensor]:
    """A training checkpoint's ``model`` entry, or the dict itself when it is a bare state dict."""
    if "model" in obj and isinstance(obj["model"], Mapping):
        return obj["model"]
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise SpeechkdError(f"{path} holds neither a 'model' state dict nor a bare state dict")


def average_checkpoints(paths: Sequence[PathLike]) -> dict[str, torch.Tensor]:
    """Average the model weights of checkpoint files (see :func:`average_state_dicts`).

    Files may be training checkpoints (dicts with a ``model`` entry) or bare state dicts.
    """
    if not paths:
        raise SpeechkdError("average_checkpoints: no checkpoint paths given")
    sds = [_model_state(load_checkpoint(p), Path(p)) for p in paths]
    return average_state_dicts(sds)


def common_fingerprints(paths: Sequence[PathLike]) -> dict[str, dict[str, str]]:
    """The ``fingerprints`` the checkpoints at ``paths`` share (for the averaged model).

    Raises:
        SpeechkdError: two checkpoints were trained with different files under one name (e.g. a BPE
            model swapped between epochs); the message names both checkpoints and checksums.
    """
    out: dict[str, dict[str, str]] = {}
    first: dict[str, Path] = {}
    for p in map(Path, paths):
        for name, fp in (load_checkpoint(p, mmap=True).get(FINGERPRINTS_KEY) or {}).items():
            if name not in out:
                out[name], first[name] = dict(fp), p
            elif out[name]["sha256"] != fp["sha256"]:
                raise SpeechkdError(
                    f"cannot average {first[name]} ({name} sha256 {out[name]['sha256']}) with {p} "
                    f"({name} sha256 {fp['sha256']}): they were trained with different {name} files"
                )
    return out


def select_checkpoints(
    exp_dir: PathLike, num: int, by: str = "epoch", last: Optional[int] = None
) -> list[Path]:
    """The ``num`` checkpoints ending at number ``last`` (default: the newest), oldest first.

    Args:
        exp_dir: experiment dir holding ``epoch-<e>.pt`` / ``checkpoint-<step>.pt``.
        num: how many to average.
        by: ``"epoch"`` (``epoch-<e>.pt``) or ``"step"`` (``checkpoint-<step>.pt``).
        last: the epoch / step number of the newest checkpoint to include.
    """
    if by not in ("epoch", "step"):
        raise SpeechkdError(f"select_checkpoints: by must be 'epoch' or 'step', got {by!r}")
    if num < 1:
        raise SpeechkdError(f"select_checkpoints: num must be >= 1, got {num}")
    found = epoch_checkpoints(exp_dir) if by == "epoch" else step_checkpoints(exp_dir)
    if last is not None:
        if last not in {n for n, _ in found}:
            raise SpeechkdError(f"no {by} checkpoint numbered {last} in {exp_dir}")
        found = [(n, p) for n, p in found if n <= last]
    if len(found) < num:
        raise SpeechkdError(
            f"asked to average {num} {by} checkpoints in {exp_dir}, found only {len(found)}"
            f" ({', '.join(p.name for _, p in found) or 'none'})"
        )
    return [p for _, p in found[-num:]]
