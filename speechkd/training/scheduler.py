"""Learning-rate schedules with warm-up, stepped once per training batch.

``lr = base_lr * lr_factor(cfg, step, epoch)`` where ``step`` counts training batches seen so far
(0 for the first batch) and ``epoch`` counts *completed* epochs (0 during the first epoch).

- ``constant``: ``w(step)`` (the linear warm-up below, then 1).
- ``noam``: ``min(s / W, sqrt(W / s))`` with ``s = step + 1`` and ``W = warmup_steps``: linear rise
  to 1 at ``s = W``, then inverse square-root decay (Vaswani et al. 2017, normalised to peak at 1).
- ``eden`` (icefall's Eden):
  ``((step^2 + B^2) / B^2)^(-1/4) * ((epoch^2 + E^2) / E^2)^(-1/4) * w(step)``
  with ``B = lr_steps``, ``E = lr_epochs``, and warm-up
  ``w(step) = warmup_start + (1 - warmup_start) * step / warmup_steps`` for ``step < warmup_steps``,
  else 1. The lr stays near ``base_lr`` until ``step ~ B`` / ``epoch ~ E`` and then decays like
  ``step^(-1/2)`` and ``epoch^(-1/2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from speechkd.errors import SpeechkdError

SCHEDULER_KINDS = ("constant", "noam", "eden")
# Eden decays with the 4th root of the normalised squared distance (icefall's choice).
EDEN_POWER = -0.25


@dataclass
class SchedulerConfig:
    kind: str = "eden"
    warmup_steps: int = 500
    warmup_start: float = 0.5  # warm-up starts at warmup_start * base_lr (constant/eden)
    lr_steps: float = 5000.0  # Eden's B
    lr_epochs: float = 6.0  # Eden's E

    def validate(self) -> None:
        if self.kind not in SCHEDULER_KINDS:
            raise SpeechkdError(f"scheduler.kind must be one of {SCHEDULER_KINDS}, got {self.kind!r}")
        if self.warmup_steps < 0:
            raise SpeechkdError(f"scheduler.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.kind == "noam" and self.warmup_steps == 0:
            raise SpeechkdError("scheduler.kind=noam needs scheduler.warmup_steps > 0")
        if not 0.0 <= self.warmup_start <= 1.0:
            raise SpeechkdError(f"scheduler.warmup_start must be in [0, 1], got {self.warmup_start}")
        if self.lr_steps <= 0 or self.lr_epochs <= 0:
            raise SpeechkdError("scheduler.lr_steps and scheduler.lr_epochs must be > 0")


def _linear_warmup(cfg: SchedulerConfig, step: int) -> float:
    if step >= cfg.warmup_steps:
        return 1.0
    return cfg.warmup_start + (1.0 - cfg.warmup_start) * step / cfg.warmup_steps


def lr_factor(cfg: SchedulerConfig, step: int, epoch: int) -> float:
    """Multiplier of the base learning rate at batch ``step`` in completed-epoch count ``epoch``."""
    if cfg.kind == "constant":
        return _linear_warmup(cfg, step)
    if cfg.kind == "noam":
        s = step + 1
        return min(s / cfg.warmup_steps, math.sqrt(cfg.warmup_steps / s))
    if cfg.kind == "eden":
        b, e = cfg.lr_steps, cfg.lr_epochs
        step_f = ((step**2 + b**2) / b**2) ** EDEN_POWER
        epoch_f = ((epoch**2 + e**2) / e**2) ** EDEN_POWER
        return step_f * epoch_f * _linear_warmup(cfg, step)
    raise SpeechkdError(f"unknown scheduler kind {cfg.kind!r}")


class LrScheduler:
    """Sets every param group's lr to ``base_lr * lr_factor(cfg, step, epoch)``.

    Call :meth:`set_epoch` at the start of each epoch (1-based epoch number) and :meth:`step_batch`
    before each optimizer step with the 0-based global batch index.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.step = 0
        self.completed_epochs = 0
        self.scale = 1.0  # the task's multiplier (set_scale); recomputed by the task every step, not saved
        self._apply()

    def _apply(self) -> None:
        f = lr_factor(self.cfg, self.step, self.completed_epochs) * self.scale
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f

    def set_epoch(self, epoch: int) -> None:
        self.completed_epochs = max(0, epoch - 1)
        self._apply()

    def step_batch(self, step: int) -> None:
        self.step = step
        self._apply()

    def set_scale(self, scale: float) -> None:
        """Multiply the schedule by ``scale`` from now on (a task's phase, e.g. AsrTask.lr_scale)."""
        if scale != self.scale:
            self.scale = scale
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "step": self.step, "completed_epochs": self.completed_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.step = int(state["step"])
        self.completed_epochs = int(state["completed_epochs"])
        self._apply()
