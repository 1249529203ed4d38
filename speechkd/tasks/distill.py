"""Layer-wise distillation task (DistilHuBERT): raw audio -> teacher layers -> student heads -> loss.

Per batch (``batch["inputs"] (N, S)`` raw audio, ``batch["input_lens"] (N,)``):

1. training only: each utterance longer than ``max_crop_seconds`` is replaced by a random crop of that
   length whose start is a multiple of the teacher's frame shift (so stored target frames can be cut
   at the same place); the crop positions come from torch's global RNG (seeded and checkpointed by the
   trainer);
2. targets ``(N, H, T, D)``: the frozen teacher run on the (cropped) audio under ``no_grad``
   (``mode="on_the_fly"``), or the stored fp16 hidden states ``batch["targets"][field] (N, T, H, D)``
   from :mod:`speechkd.targets.hidden_states`, cropped to the same span (``mode="stored"``);
3. the student's prediction heads ``(N, H, T', D)`` are put on the teacher's time grid with
   :func:`~speechkd.models.distilhubert.align_frame_rates`;
4. :func:`~speechkd.losses.layerwise.layerwise_distill_loss` (L1 + ``cos_weight`` * -log sigmoid(cos)).

Both modes compute the same loss on the same batch (up to the fp16 rounding of stored targets) when no
crop is taken. The :class:`LossOutput` carries the loss summed over frames and, per head ``L<layer>``,
``l1_L<layer>`` and ``cos_L<layer>`` summed over frames (the trainer divides by ``num_frames``).

Everything the step computes runs inside ``DistillModel.forward`` (``model(fn)`` calls ``fn(model)``),
so a DDP wrapper sees the whole step. The teacher is held by the model but is *not* a registered
submodule: it is not trained, not in the optimizer and not in checkpoints; it follows the student's
device lazily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

import torch
from torch import Tensor, nn

from speechkd.errors import SpeechkdError
from speechkd.tasks.base import LossOutput

T = TypeVar("T")
TARGET_MODES = ("on_the_fly", "stored")


@dataclass
class DistillLossConfig:
    """Task knobs: where targets come from, loss weights, crops and frame-alignment tolerance."""

    mode: str = "on_the_fly"  # on_the_fly (teacher runs every step) | stored (pre-extracted targets)
    field: str = "teacher_hidden"  # custom cut field holding stored targets (mode=stored)
    l1_weight: float = 1.0
    cos_weight: float = 1.0  # lambda of the -log sigmoid(cos) term (paper: 1)
    max_crop_seconds: float = 0.0  # training crops of longer utterances; <= 0: no cropping
    max_len_diff: int = 2  # student/teacher frame-count tolerance per utterance after alignment

    def validate(self) -> None:
        if self.mode not in TARGET_MODES:
            raise SpeechkdError(f"loss.mode must be one of {TARGET_MODES}, got {self.mode!r}")
        if self.l1_weight < 0 or self.cos_weight < 0 or self.l1_weight + self.cos_weight <= 0:
            raise SpeechkdError(
                f"loss.l1_weight={self.l1_weight} and loss.cos_weight={self.cos_weight} must be >= 0, not both 0"
            )
        if self.max_len_diff < 0:
            raise SpeechkdError(f"loss.max_len_diff must be >= 0, got {self.max_len_diff}")


class DistillModel(nn.Module):
    """The trainable student plus a reference to the frozen teacher (see module docstring).

    Args:
        student: a :class:`~speechkd.models.distilhubert.DistilHubertStudent`.
        teacher: a :class:`~speechkd.teachers.Teacher`, or None when targets are stored.
    """

    def __init__(self, student: nn.Module, teacher: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.student = student
        object.__setattr__(self, "_teacher", teacher)  # deliberately not a submodule

    @property
    def teacher(self) -> Optional[nn.Module]:
        return self._teacher

    def teacher_on(self, device: torch.device) -> nn.Module:
        """The teacher, moved to ``device`` if needed; SpeechkdError when there is none."""
        teacher = self._teacher
        if teacher is None:
            raise SpeechkdError("loss.mode=on_the_fly needs a teacher, but the model was built without one")
        if teacher.device != device:
            teacher.to(device)
        return teacher

    def forward(self, fn: Callable[["DistillModel"], T]) -> T:
        """Run ``fn(self)`` so that the whole training step happens inside ``forward``."""
        return fn(self)


def crop_starts(
    wav_lens: Tensor, max_samples: int, hop: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Random crop starts ``(N,)`` in samples: 0 for utterances of at most ``max_samples``, else a
    multiple of ``hop`` with the crop ``[start, start + max_samples)`` inside the utterance."""
    room = torch.div((wav_lens.cpu() - max_samples).clamp(min=0), hop, rounding_mode="floor")  # (N,) hops
    u = torch.rand(room.shape, generator=generator)
    starts = torch.minimum((u * (room + 1).to(u.dtype)).floor().long(), room)
    return (starts * hop).to(wav_lens.device)


def crop_audio(wavs: Tensor, wav_lens: Tensor, starts: Tensor, max_samples: int) -> tuple[Tensor, Tensor]:
    """Cut ``[starts[i], starts[i] + max_samples)`` out of each row: ``(N, S)`` -> ``(N, S')``."""
    new_lens = torch.minimum(wav_lens - starts, torch.full_like(wav_lens, max_samples))
    width = int(new_lens.max())
    idx = starts[:, None] + torch.arange(width, device=wavs.device)[None, :]  # (N, S')
    idx = idx.clamp(max=wavs.shape[1] - 1)
    out = torch.gather(wavs, 1, idx)
    mask = torch.arange(width, device=wavs.device)[None, :] < new_lens[:, None]
    return out.masked_fill(~mask, 0.0), new_lens


def crop_frames(targets: Tensor, lens: Tensor, start_frames: Tensor, num_frames: Tensor) -> tuple[Tensor, Tensor]:
    """Cut frames ``[start_frames[i], start_frames[i] + num_frames[i])`` out of ``targets (N, H, T, D)``."""
    new_lens = torch.minimum(lens - start_frames, num_frames).clamp(min=0)
    width = max(int(new_lens.max()), 1)
    idx = (start_frames[:, None] + torch.arange(width, device=targets.device)[None, :]).clamp(max=targets.shape[2] - 1)
    n, h, _, d = targets.shape
    gathered = torch.gather(targets, 2, idx[:, None, :, None].expand(n, h, width, d))
    mask = (torch.arange(width, device=targets.device)[None, :] < new_lens[:, None])[:, None, :, None]
    return gathered.masked_fill(~mask, 0.0), new_lens


class DistillTask:
    """Layer-wise distillation of :class:`DistillModel` (see module docstring).

    Args:
        cfg: loss/target options.
        layers: teacher hidden-state indices predicted by the heads (the student's ``pred_head_layers``).
        teacher_frame_shift: seconds per teacher frame (from the teacher or the targets' metadata).
        sample_rate: audio rate of the batches.
    """

    def __init__(self, cfg: DistillLossConfig, layers: list[int], teacher_frame_shift: float, sample_rate: int = 16000) -> None:
        cfg.validate()
        self.cfg = cfg
        self.layers = [int(i) for i in layers]
        self.teacher_frame_shift = float(teacher_frame_shift)
        self.sample_rate = sample_rate
        self.hop = int(round(teacher_frame_shift * sample_rate))
        if self.hop < 1:
            raise SpeechkdError(f"teacher frame shift {teacher_frame_shift} s is below one sample at {sample_rate} Hz")

    # ------------------------------------------------------------------ pieces
    def max_crop_samples(self) -> int:
        """Crop length in samples, a whole number of teacher frames (0: no cropping)."""
        if self.cfg.max_crop_seconds <= 0:
            return 0
        return max(1, int(self.cfg.max_crop_seconds * self.sample_rate) // self.hop) * self.hop

    def stored_targets(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``batch["targets"][field] (N, T, H, D)`` -> ``((N, H, T, D), lens (N,))`` after checks."""
        targets = batch.get("targets") or {}
        name = self.cfg.field
        if name not in targets:
            raise SpeechkdError(
                f"loss.mode=stored but the batch has no target field '{name}' (cuts: {batch['cut_ids'][:3]}...): "
                "train on the cuts written by `speechkd distill extract-targets`"
            )
        x = targets[name]
        if x.dim() != 4 or x.shape[2] != len(self.layers):
            raise SpeechkdError(
                f"stored targets '{name}' have shape {tuple(x.shape)}; expected (N, T, H={len(self.layers)}, D)"
            )
        return x.transpose(1, 2).float(), targets[name + "_lens"]

    def teacher_targets(self, model: DistillModel, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Run the teacher on the fly: ``((N, H, T, D), lens (N,))``."""
        from speechkd.targets.hidden_states import teacher_targets

        from speechkd.utils.precision import autocast_off

        teacher = model.teacher_on(wavs.device)
        with torch.no_grad(), autocast_off([wavs]):  # s3prl: the teacher runs in full precision
            return teacher_targets(teacher, wavs, wav_lens, self.layers)

    def targets_and_audio(
        self, model: DistillModel, batch: dict[str, Any], training: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(wavs (N, S'), wav_lens, targets (N, H, T, D), target_lens)`` after cropping."""
        wavs, wav_lens = batch["inputs"], batch["input_lens"]
        if wavs.dim() != 2:
            raise SpeechkdError(f"distillation needs raw audio batches (N, S) (data.input=audio), got {tuple(wavs.shape)}")
        crop = self.max_crop_samples() if training else 0
        starts = None
        if crop and int(wav_lens.max()) > crop:
            starts = crop_starts(wav_lens, crop, self.hop)
            wavs, wav_lens = crop_audio(wavs, wav_lens, starts, crop)
        if self.cfg.mode == "on_the_fly":
            targets, t_lens = self.teacher_targets(model, wavs, wav_lens)
        else:
            targets, t_lens = self.stored_targets(batch)
            if starts is not None:
                frames = torch.full_like(t_lens, int(math.ceil(crop / self.hop)))
                targets, t_lens = crop_frames(targets, t_lens, torch.div(starts, self.hop, rounding_mode="floor"), frames)
        return wavs, wav_lens, targets, t_lens

    # ------------------------------------------------------------------ protocol
    def compute_loss(self, model: nn.Module, batch: dict[str, Any], training: bool) -> LossOutput:
        return model(lambda m: self._loss(m, batch, training))

    def _loss(self, model: DistillModel, batch: dict[str, Any], training: bool) -> LossOutput:
        from speechkd.losses.layerwise import layerwise_distill_loss
        from speechkd.models.distilhubert import align_frame_rates

        wavs, wav_lens, targets, t_lens = self.targets_and_audio(model, batch, training)
        out = model.student(wavs, wav_lens)
        heads, targets, lens = align_frame_rates(
            out.head_outputs, out.lens, model.student.frame_shift,
            targets.to(out.head_outputs.dtype), t_lens.to(out.lens.device), self.teacher_frame_shift,
            time_dim=2, max_len_diff=self.cfg.max_len_diff,
        )
        loss, info = layerwise_distill_loss(
            heads, targets, lens, cos_weight=self.cfg.cos_weight, l1_weight=self.cfg.l1_weight
        )
        frames = info["num_frames"].to(loss.dtype)  # 0-d; every logged value stays on the device
        stats: dict[str, torch.Tensor] = {}
        for h, layer in enumerate(self.layers):
            stats[f"l1_L{layer}"] = info["l1"][h] * frames
            stats[f"cos_L{layer}"] = info["cos"][h] * frames
        return LossOutput(loss=loss * frames, num_frames=frames, info=stats)
