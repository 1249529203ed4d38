"""Training checkpoints: atomic writes, RNG capture, discovery of the one to resume from.

Files in an experiment dir:

- ``checkpoint-<step>.pt``: written every ``save_every_n`` batches (and when training stops at
  ``max_steps``); only the newest ``keep_last_n`` are kept.
- ``epoch-<e>.pt``: written at the end of epoch ``e`` (1-based); never pruned.

Each file is a dict with at least ``model`` (state dict), ``step`` (training batches consumed),
``epoch`` and ``batches_in_epoch`` (the position to continue from: epoch number, and batches of
that epoch already consumed), plus optimizer/scheduler/grad-scaler states and per-rank RNG states
(see :mod:`speechkd.training.trainer`).

``fingerprints`` (optional) names the files a checkpoint only makes sense with, e.g.
``{"bpe_model": {"path": ..., "sha256": ...}}``: token ids change meaning under another BPE model of
the same size, so resuming and decoding compare checksums (:func:`check_fingerprints`). Averaged models
carry the fingerprints of the checkpoints they average.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from speechkd.errors import SpeechkdError

STEP_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")
FORMAT_VERSION = 1
FINGERPRINTS_KEY = "fingerprints"

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


def save_checkpoint_atomic(obj: dict[str, Any], path: PathLike) -> Path:
    """``torch.save`` to a temp file in the same dir, then ``os.replace`` onto ``path``.

    A crash mid-write leaves the previous file (if any) intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: PathLike, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict on CPU (``weights_only=False``: it holds RNG states and configs)."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise SpeechkdError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(obj, dict):
        raise SpeechkdError(f"checkpoint {path} does not hold a dict (got {type(obj).__name__})")
    return obj


def check_fingerprints(
    checkpoint: Mapping[str, Any], expected: Mapping[str, Mapping[str, str]], path: PathLike, action: str
) -> None:
    """Refuse ``checkpoint`` when a file it was trained with differs from the one given now.

    Args:
        checkpoint: a loaded checkpoint dict (its ``fingerprints`` entry is compared).
        expected: name -> ``{"path", "sha256"}`` of the files used now (e.g. ``{"bpe_model": ...}``).
        path: the checkpoint's file, for messages.
        action: what is being done, for messages ("resume", "decode").

    Raises:
        SpeechkdError: a checksum differs; the message names both checksums and both paths.
    A checkpoint written before fingerprints existed is accepted with a warning.
    """
    found = checkpoint.get(FINGERPRINTS_KEY) or {}
    for name, now in expected.items():
        then = found.get(name)
        if then is None:
            log.warning(
                "%s has no %s checksum (written by an older speechkd): cannot check that %s is the %s it "
                "was trained with", path, name, now["path"], name,
            )
        elif then["sha256"] != now["sha256"]:
            raise SpeechkdError(
                f"cannot {action} with {path}: it was trained with {name} {then['path']} (sha256 {then['sha256']}), "
                f"but {now['path']} (sha256 {now['sha256']}) was given; token ids would change meaning. "
                f"Use the {name} it was trained with, or train a new model into a new exp dir."
            )


def step_checkpoints(exp_dir: PathLike) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of ``checkpoint-<step>.pt`` files, sorted by step."""
    return _numbered(exp_dir, STEP_RE)


def epoch_checkpoints(exp_dir: PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of ``epoch-<e>.pt`` files, sorted by epoch."""
    return _numbered(exp_dir, EPOCH_RE)


def _numbered(exp_dir: PathLike, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        return []
    out = []
    for p in exp_dir.iterdir():
        m = pattern.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def find_resume_checkpoint(exp_dir: PathLike) -> Optional[Path]:
    """The checkpoint with the highest ``step`` among the newest readable step file and the newest
    readable epoch file.

    A newer file that cannot be read (e.g. truncated by a full disk) is skipped with a warning that
    names it and the checkpoint used instead; training then writes it again when it gets there.

    Raises:
        SpeechkdError: checkpoints exist but none can be read (the message names them and the fix).
    """
    best: Optional[tuple[int, Path]] = None
    unreadable: list[tuple[Path, str]] = []
    for found in (step_checkpoints(exp_dir), epoch_checkpoints(exp_dir)):
        for _, p in reversed(found):
            try:
                step = int(load_checkpoint(p, mmap=True).get("step", -1))
            except SpeechkdError as e:
                unreadable.append((p, str(e)))
                continue
            if best is None or step > best[0]:
                best = (step, p)
            break
    for p, why in unreadable:
        if best is None:
            break
        log.warning("%s cannot be read (%s): resuming from %s, the newest readable checkpoint", p, why, best[1])
    if best is None and unreadable:
        raise SpeechkdError(
            f"no checkpoint in {exp_dir} can be read ({', '.join(p.name for p, _ in unreadable)}; first error: "
            f"{unreadable[0][1]}). Remove them to start over, or train with --no-resume (or into a new exp dir)."
        )
    return None if best is None else best[1]


def set_aside_checkpoints(exp_dir: PathLike) -> Optional[Path]:
    """Move the step/epoch checkpoints and ``averaged.pt`` of an earlier run into ``exp_dir/previous-run-<N>/``
    (the first free N) and return that folder (None when there were none).

    For a run started over in a used exp dir (``--no-resume``): left in place, an old ``checkpoint-2400.pt``
    would be the one a later resume picks, the pruning of step checkpoints would keep it over the new ones, and
    ``--avg`` would average old epochs with new ones. Call it on rank 0 only, before training saves anything.
    """
    exp_dir = Path(exp_dir)
    old = [p for _, p in step_checkpoints(exp_dir) + epoch_checkpoints(exp_dir)]
    if (exp_dir / "averaged.pt").is_file():
        old.append(exp_dir / "averaged.pt")
    if not old:
        return None
    n = 1
    while (exp_dir / f"previous-run-{n}").exists():
        n += 1
    dest = exp_dir / f"previous-run-{n}"
    dest.mkdir()
    for p in old:
        p.rename(dest / p.name)
    log.warning("starting over in %s: moved the %d checkpoint file(s) of the earlier run (%s) to %s", exp_dir,
                len(old), ", ".join(p.name for p in old), dest)
    return dest


TMP_GLOB = ".*.tmp-*"  # what save_checkpoint_atomic writes before its rename


def remove_stale_tmp_files(exp_dir: PathLike) -> list[Path]:
    """Delete the temporary files of saves that were interrupted (killed between write and rename).

    Call it only while no other process is saving into ``exp_dir`` (at the start of training, rank 0).
    """
    exp_dir = Path(exp_dir)
    stale = sorted(exp_dir.glob(TMP_GLOB)) if exp_dir.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted save", p)
    return stale


def prune_step_checkpoints(exp_dir: PathLike, keep_last_n: int) -> list[Path]:
    """Delete all but the newest ``keep_last_n`` step checkpoints (``<= 0`` keeps all)."""
    if keep_last_n <= 0:
        return []
    old = step_checkpoints(exp_dir)[:-keep_last_n]
    for _, p in old:
        p.unlink(missing_ok=True)
    return [p for _, p in old]


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python ``random``, numpy, torch CPU and (when present) all CUDA devices."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
