"""The task protocol: what the trainer calls to turn a batch into a loss.

A *task* (one per distillation method) knows how to run a model on a batch from
:class:`speechkd.data.datamodule.AsrDataModule` and combine the weighted loss terms. The trainer
only sees :class:`LossOutput`.

Rules for implementers:

- ``loss`` is a scalar tensor, already weighted and **summed** over the batch (not averaged);
  ``num_frames`` is the normaliser used for logging (``loss / num_frames`` is what gets printed).
- ``counts`` holds plain counts summed over the batch that are *not* divided by ``num_frames``
  (e.g. ``ctc_hyp_tokens`` and ``ref_tokens`` for the blank-plateau check of
  :mod:`speechkd.training.plateau`).
- ``info`` holds named components (already weighted, summed over the batch, as plain floats) for
  logging; the trainer divides them by ``num_frames`` too.
- Training is in ``float32`` unless AMP is on; with AMP the call runs under ``torch.autocast``.
- The trainer passes the plain module (it averages gradients across DDP ranks itself), so a task
  may call submodules directly; :func:`unwrap_model` is there for code that may also receive a
  ``DistributedDataParallel`` wrapper.
- A task with training-time state (e.g. :class:`speechkd.tasks.asr.AsrTask`'s step at which its
  CTC-only phase ended) may define ``state_dict()``/``load_state_dict(state)``; the trainer keeps it
  in every checkpoint so a resume continues where the run was.
- Return :meth:`LossOutput.skip` (``loss=None`` plus a reason) to skip a batch on purpose, e.g. when
  every utterance is infeasible for the loss. The trainer counts and logs it; under DDP one
  rank's skip makes every rank skip that step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch


@dataclass
class LossOutput:
    """Result of :meth:`Task.compute_loss`.

    Attributes:
        loss: scalar tensor to back-propagate (weighted, summed over the batch), or None to skip.
        num_frames: normaliser for logging (e.g. number of encoder output frames in the batch).
        info: named loss components (summed over the batch) for logging.
        skip_reason: why the batch was skipped (required when ``loss`` is None).
        counts: plain counts summed over the batch (not normalised by ``num_frames``).

    ``num_frames``, ``info`` and ``counts`` values may be floats or 0-d tensors on the model's device:
    the trainer sums tensors where they are and reads them once per log interval, so a task that
    returns tensors does not make every training step wait for the device (``float(t)``/``t.item()``
    on a CUDA tensor does).
    """

    loss: Optional["torch.Tensor"]
    num_frames: Union[float, "torch.Tensor"]
    info: dict[str, Union[float, "torch.Tensor"]] = field(default_factory=dict)
    skip_reason: Optional[str] = None
    counts: dict[str, Union[float, "torch.Tensor"]] = field(default_factory=dict)

    @classmethod
    def skip(cls, reason: str) -> "LossOutput":
        """A batch the task refuses on purpose (no optimizer step)."""
        return cls(loss=None, num_frames=0.0, info={}, skip_reason=reason)

    @property
    def skipped(self) -> bool:
        return self.loss is None


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a task.

    Optional: ``lr_scale(step: int) -> float``, a multiplier of the scheduler's lr that the trainer reads after
    each training step's loss (AsrTask: a lower lr during its CTC-only phase).
    """

    def compute_loss(self, model: "torch.nn.Module", batch: dict[str, Any], training: bool) -> LossOutput:
        """Run ``model`` on ``batch`` (a datamodule batch dict already on the model's device).

        ``training`` is False during validation (the trainer has already called ``model.eval()``
        and disabled autograd).
        """
        ...


def unwrap_model(model: "torch.nn.Module") -> "torch.nn.Module":
    """The underlying module of a ``DistributedDataParallel`` (or ``DataParallel``) wrapper."""
    return getattr(model, "module", model)
