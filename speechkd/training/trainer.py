"""The training loop: one code path for a single CPU/GPU process and ``torchrun`` DDP.

``Trainer(cfg, model, task, datamodule, train_cuts, valid_cuts, exp_dir).fit(resume=True)``

- **Steps.** ``step`` counts training batches consumed (a skipped batch still counts); the lr
  schedule, ``log_every_n``, ``valid_every_n``, ``save_every_n`` and ``max_steps`` are in these
  steps. Epochs are 1-based.
- **DDP.** Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), the trainer
  initialises the process group (gloo on CPU, nccl on GPU), copies rank 0's weights to every rank,
  and after each backward averages the gradients over ranks in flat buckets
  (:func:`speechkd.training.dist.average_gradients`); the lhotse samplers give each rank its share
  of batches. Why not the ``DistributedDataParallel`` wrapper: its forward runs collectives of its
  own (bucket rebuild, buffer broadcast), so a task that skips a batch before calling the model on
  one rank deadlocks every rank (seen here with gloo), and tasks could not call submodules
  directly. Here the only collectives are the trainer's own, at points every rank reaches. The
  price is no overlap of gradient communication with the backward pass. Buffers (e.g. BatchNorm
  statistics) stay per rank; rank 0's are saved. Every rank logs to
  ``exp_dir/log/train.log.rank{R}``; only rank 0 writes checkpoints, TensorBoard and run info.
- **Checkpoints** (:mod:`speechkd.training.checkpoint`): ``checkpoint-<step>.pt`` every
  ``save_every_n`` steps and when ``max_steps`` stops training, ``epoch-<e>.pt`` after each epoch,
  written atomically. They hold the model, optimizer, scheduler, grad scaler, the position
  (``epoch``, ``batches_in_epoch``), the step count, counters and the RNG states of every rank.
  ``fit(resume=True)`` restores the newest one and fast-forwards the data to the same position,
  so an interrupted run ends with the same parameters as an uninterrupted one.
- **Bad batches.** A non-finite loss (or gradient norm) on any rank skips the optimizer step on
  all ranks; the cut ids are logged and counted, and more than ``max_consecutive_bad_batches``
  in a row stops training with an error. A task may also skip a batch on purpose
  (``LossOutput.skip(reason)``); those are counted by reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from speechkd.config import to_dict
from speechkd.data.collate import move_batch
from speechkd.data.datamodule import set_loader_epoch
from speechkd.errors import SpeechkdError
from speechkd.tasks.base import LossOutput, Task, unwrap_model
from speechkd.training import dist as sdist
from speechkd.training.checkpoint import (
    FINGERPRINTS_KEY,
    FORMAT_VERSION,
    capture_rng_state,
    check_fingerprints,
    find_resume_checkpoint,
    load_checkpoint,
    prune_step_checkpoints,
    remove_stale_tmp_files,
    restore_rng_state,
    save_checkpoint_atomic,
    seed_everything,
    set_aside_checkpoints,
)
from speechkd.training.plateau import PlateauConfig, PlateauMonitor, emission_ratio
from speechkd.training.scheduler import LrScheduler, SchedulerConfig

log = logging.getLogger(__name__)

# run_config["paths"] entries that must not change when a run resumes (the data it trains on)
RESUME_DATA_KEYS = ("train_parts", "untranscribed_parts")

AMP_KINDS = ("none", "fp16", "bf16")
LR_SCALING_RULES = ("none", "linear", "sqrt")
LOG_FORMAT = "%(asctime)s %(levelname)s [rank{rank}] [%(filename)s:%(lineno)d] %(message)s"


@dataclass
class OptimizerConfig:
    """AdamW."""

    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 1e-2
    eps: float = 1e-8
    # lr multipliers by parameter-name prefix (a module path of the model, e.g. {encoder: 0.05}); the longest
    # matching prefix wins, 0 freezes the parameters (requires_grad off, left out of the optimizer). Fine-tuning a
    # teacher-initialised encoder at a fraction of the heads' lr keeps what it knows. Nested mappings are read as
    # dotted prefixes, so the override trainer.optimizer.lr_scales.encoder.layers=0 means prefix encoder.layers.
    lr_scales: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.lr <= 0 or len(self.betas) != 2:
            raise SpeechkdError(f"optimizer: lr must be > 0 and betas two numbers (got {self.lr}, {self.betas})")
        for prefix, scale in flat_lr_scales(self.lr_scales).items():
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale < 0:
                raise SpeechkdError(f"trainer.optimizer.lr_scales.{prefix} must be a number >= 0, got {scale!r}")


def flat_lr_scales(scales: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"encoder": {"layers": 0}, "joiner": 2}`` -> ``{"encoder.layers": 0, "joiner": 2}``."""
    out: dict[str, Any] = {}
    for key, value in scales.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_lr_scales(value, name + "."))
        else:
            out[name] = value
    return out


def lr_param_groups(model: torch.nn.Module, lr: float, scales: Mapping[str, Any]) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``model``: one per distinct lr multiplier of ``scales`` (see
    ``OptimizerConfig.lr_scales``), each ``{"params": [...], "lr": lr * scale, "name": prefix}``. Parameters whose
    multiplier is 0 get ``requires_grad = False`` and no group. A prefix that names no parameter is an error
    (a typo would otherwise train the whole model at full lr)."""
    flat = {k: float(v) for k, v in flat_lr_scales(scales).items()}
    names = [n for n, _ in model.named_parameters()]
    for prefix in flat:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise SpeechkdError(f"trainer.optimizer.lr_scales.{prefix}: no parameter of the model is under "
                                f"{prefix!r} (top-level modules: {', '.join(tops)})")
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [p for p in flat if name == p or name.startswith(p + ".")]
        key = max(matches, key=len) if matches else ""
        scale = flat.get(key, 1.0)
        if scale == 0.0:
            param.requires_grad_(False)
            continue
        groups.setdefault(key, {"params": [], "lr": lr * scale, "name": key or "(rest)"})["params"].append(param)
    if not groups:
        raise SpeechkdError("trainer.optimizer.lr_scales freezes every parameter: nothing left to train")
    return list(groups.values())


@dataclass
class TrainerConfig:
    num_epochs: int = 10
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip: float = 5.0  # max total grad norm; <= 0 disables clipping
    amp: str = "none"  # none | fp16 | bf16 (CUDA only; ignored with a warning on CPU)
    seed: int = 42
    log_every_n: int = 50
    valid_every_n: int = 3000  # 0: validate only at the end of each epoch
    save_every_n: int = 2000  # 0: no step checkpoints (epoch checkpoints are always written)
    keep_last_n: int = 5  # step checkpoints kept; <= 0 keeps all
    tensorboard: bool = True
    progress_bar: bool = True
    max_steps: Optional[int] = None  # stop after this many training batches (smoke tests)
    max_consecutive_bad_batches: int = 20
    ddp_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo
    ddp_bucket_numel: int = 25_000_000  # gradient elements per all-reduce call
    plateau: PlateauConfig = field(default_factory=PlateauConfig)  # blank-plateau check (training/plateau.py)
    # Multi-GPU rule (scale_for_world_size): lr, warm-up and Eden's lr_steps are written for
    # reference_world_size processes of data.max_duration seconds each. With W processes the batch holds
    # W / reference_world_size times more audio: the lr is multiplied by that ratio (linear), its square
    # root (sqrt) or left alone (none); with scale_steps_with_world_size the step counts of the schedule
    # are divided by it, so warm-up and decay follow the audio seen (icefall's adjusted batch count).
    reference_world_size: int = 1
    scale_lr_with_world_size: str = "none"  # none | linear | sqrt
    scale_steps_with_world_size: bool = False  # off by default: configs opt in (egs/librispeech/conf)

    def validate(self) -> None:
        if self.scale_lr_with_world_size not in LR_SCALING_RULES:
            raise SpeechkdError(
                f"trainer.scale_lr_with_world_size must be one of {LR_SCALING_RULES}, got {self.scale_lr_with_world_size!r}"
            )
        if self.reference_world_size < 1:
            raise SpeechkdError(f"trainer.reference_world_size must be >= 1, got {self.reference_world_size}")
        if self.amp not in AMP_KINDS:
            raise SpeechkdError(f"trainer.amp must be one of {AMP_KINDS}, got {self.amp!r}")
        if self.num_epochs < 1:
            raise SpeechkdError(f"trainer.num_epochs must be >= 1, got {self.num_epochs}")
        if self.log_every_n < 1:
            raise SpeechkdError(f"trainer.log_every_n must be >= 1, got {self.log_every_n}")
        if self.max_steps is not None and self.max_steps < 0:
            raise SpeechkdError(f"trainer.max_steps must be >= 0, got {self.max_steps}")
        self.optimizer.validate()
        self.scheduler.validate()
        self.plateau.validate()


def scale_for_world_size(cfg: TrainerConfig, world_size: int) -> tuple[OptimizerConfig, SchedulerConfig]:
    """Copies of ``cfg.optimizer`` / ``cfg.scheduler`` for ``world_size`` processes (see the rule at
    :class:`TrainerConfig`); unchanged when ``world_size == cfg.reference_world_size``."""
    ratio = world_size / cfg.reference_world_size
    lr_factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.scale_lr_with_world_size]
    opt = dataclasses.replace(cfg.optimizer, lr=cfg.optimizer.lr * lr_factor)
    sched = cfg.scheduler
    if cfg.scale_steps_with_world_size and ratio != 1.0:
        sched = dataclasses.replace(sched, warmup_steps=max(1 if sched.warmup_steps else 0,
                                                            round(sched.warmup_steps / ratio)),
                                    lr_steps=sched.lr_steps / ratio)
    return opt, sched


@dataclass
class TrainState:
    """Counters saved in checkpoints. ``epoch``/``batches_in_epoch``: where training continues."""

    step: int = 0
    epoch: int = 1
    batches_in_epoch: int = 0
    num_bad_batches: int = 0
    consecutive_bad_batches: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    last_valid_loss: Optional[float] = None


Number = Union[float, torch.Tensor]  # a logged value: a float, or a 0-d tensor on the training device


class _Meter:
    """Running sums of loss, frames, named components and audio seconds over a log interval.

    Values may be floats or 0-d tensors on the training device. Tensors are summed where they are, so
    a training step does not wait for the device to report its numbers; they are read (one device sync)
    only when the interval is logged: :meth:`per_frame` and :attr:`counts`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss: Number = 0.0
        self.frames: Number = 0.0
        self.audio_s = 0.0
        self.info: dict[str, Number] = {}
        self._counts: dict[str, Number] = {}
        self.t0 = time.monotonic()

    def add(self, out: LossOutput, loss: Number, audio_s: float) -> None:
        self.loss = self.loss + _detached(loss)
        self.frames = self.frames + _detached(out.num_frames)
        self.audio_s += audio_s
        for k, v in out.info.items():
            self.info[k] = self.info.get(k, 0.0) + _detached(v)
        for k, v in out.counts.items():
            self._counts[k] = self._counts.get(k, 0.0) + _detached(v)

    @property
    def has_counts(self) -> bool:
        return bool(self._counts)

    @property
    def counts(self) -> dict[str, float]:
        """The interval's plain counts as floats (reads them from the device)."""
        return _as_floats(self._counts)

    def per_frame(self) -> dict[str, float]:
        """Loss and components per frame, as floats (reads them from the device)."""
        sums = _as_floats({"loss": self.loss, "__frames": self.frames, **self.info})
        denom = max(sums.pop("__frames"), 1.0)
        return {k: v / denom for k, v in sums.items()}

    def audio_per_second(self) -> float:
        return self.audio_s / max(time.monotonic() - self.t0, 1e-9)


def _detached(v: Number) -> Number:
    return v.detach() if isinstance(v, torch.Tensor) else v


def _as_floats(values: dict[str, Number]) -> dict[str, float]:
    """``values`` as floats, with one device-to-host copy for all of its tensors."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if keys:
        stacked = torch.stack([values[k].reshape(()).to(torch.float64) for k in keys]).tolist()
        out.update(zip(keys, stacked))
    return {k: out[k] for k in values}


Hook = Callable[["Trainer"], None]


class Trainer:
    """Trains ``model`` with ``task`` on batches from ``datamodule``.

    Args:
        cfg: trainer options.
        model: the module to train (moved to the device; wrapped in DDP when distributed).
        task: object with ``compute_loss(model, batch, training) -> LossOutput``.
        datamodule: an :class:`~speechkd.data.datamodule.AsrDataModule`-like object.
        train_cuts, valid_cuts: lhotse CutSets (``valid_cuts`` may be None).
        exp_dir: output directory.
        run_config: resolved configuration dumped to ``exp_dir/config.yaml`` (default: the trainer
            and data configs).
        on_step_end: callables run after every training batch (e.g. tests interrupting training).
        fingerprints: name -> ``{"path", "sha256"}`` of files the model only makes sense with (the BPE
            model); stored in every checkpoint and compared before resuming, before ``config.yaml``
            is rewritten (:func:`~speechkd.training.checkpoint.check_fingerprints`).
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        model: nn.Module,
        task: Task,
        datamodule: Any,
        train_cuts: Any,
        valid_cuts: Any = None,
        exp_dir: Union[str, Path] = "exp",
        run_config: Optional[Mapping[str, Any]] = None,
        on_step_end: Sequence[Hook] = (),
        fingerprints: Optional[Mapping[str, Mapping[str, str]]] = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.model = model
        self.task = task
        self.datamodule = datamodule
        self.train_cuts = train_cuts
        self.valid_cuts = valid_cuts
        self.exp_dir = Path(exp_dir)
        self.run_config = run_config
        self.on_step_end = list(on_step_end)
        self.fingerprints = {k: dict(v) for k, v in (fingerprints or {}).items()}
        self.state = TrainState()
        self.dist = sdist.DistInfo()
        self.device = torch.device("cpu")
        self._last_valid_step: Optional[int] = None

    # ================================================================ set-up
    def fit(self, resume: bool = True) -> TrainState:
        """Train until ``num_epochs`` (or ``max_steps``) are done; returns the final counters."""
        self.dist, owns_group = sdist.init_distributed(self.cfg.ddp_backend)
        handler = self._attach_log_file()
        self._tb = None
        try:
            if self.dist.is_main:
                remove_stale_tmp_files(self.exp_dir)
                if not resume:
                    set_aside_checkpoints(self.exp_dir)
            resume_path = find_resume_checkpoint(self.exp_dir) if resume else None
            self._check_resume_fingerprints(resume_path)
            self._check_resume_data(resume_path)
            self._setup()
            if resume:
                self._maybe_resume(resume_path)
            self._train_loop()
            self._close_plateau()
        finally:
            if self._tb is not None:
                self._tb.close()
            logging.getLogger().removeHandler(handler)
            handler.close()
            if owns_group:
                sdist.cleanup_distributed()
        return self.state

    def _attach_log_file(self) -> logging.Handler:
        path = self.exp_dir / "log" / f"train.log.rank{self.dist.rank}"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(LOG_FORMAT.format(rank=self.dist.rank)))
        logging.getLogger().addHandler(handler)
        pkg = logging.getLogger("speechkd")
        if pkg.getEffectiveLevel() > logging.INFO:
            pkg.setLevel(logging.INFO)
        return handler

    def _setup(self) -> None:
        cfg = self.cfg
        self.device = sdist.device_for(self.dist)
        seed_everything(cfg.seed + self.dist.rank)
        self.amp_dtype = self._amp_dtype()
        self.model.to(self.device)
        self.module = self.model
        if self.dist.distributed:
            sdist.broadcast_module_state(self.model)
        oc, sc = scale_for_world_size(cfg, self.dist.world_size)
        if self.dist.world_size != cfg.reference_world_size:
            log.info("%d processes (config written for %d): lr %.3g -> %.3g (%s), warm-up %d -> %d steps",
                     self.dist.world_size, cfg.reference_world_size, cfg.optimizer.lr, oc.lr,
                     cfg.scale_lr_with_world_size, cfg.scheduler.warmup_steps, sc.warmup_steps)
        groups = lr_param_groups(self.model, oc.lr, oc.lr_scales)
        if oc.lr_scales:
            log.info("lr groups: %s", ", ".join(
                f"{g['name']} x{g['lr'] / oc.lr:g} ({sum(p.numel() for p in g['params']):,} params)" for g in groups))
        self.optimizer = torch.optim.AdamW(
            groups, lr=oc.lr, betas=tuple(oc.betas), weight_decay=oc.weight_decay, eps=oc.eps
        )
        self.scheduler = LrScheduler(self.optimizer, sc)
        self.plateau = PlateauMonitor(cfg.plateau, self.exp_dir, write=self.dist.is_main)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.train_dl = self.datamodule.train_dataloader(self.train_cuts)
        self.valid_dl = self.datamodule.eval_dataloader(self.valid_cuts) if self.valid_cuts is not None else None
        if self.dist.is_main:
            self._write_run_info()
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.exp_dir / "tensorboard"))
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            "training on %s, rank %d of %d, %d parameters, amp=%s, exp dir %s",
            self.device, self.dist.rank, self.dist.world_size, n_params, cfg.amp, self.exp_dir,
        )

    def _amp_dtype(self) -> Optional[torch.dtype]:
        if self.cfg.amp == "none":
            return None
        if self.device.type != "cuda":
            log.warning("trainer.amp=%s needs CUDA; training in float32 on %s", self.cfg.amp, self.device)
            return None
        return torch.float16 if self.cfg.amp == "fp16" else torch.bfloat16

    def _write_run_info(self) -> None:
        from speechkd.utils.runinfo import write_run_info

        config = dict(self.run_config) if self.run_config is not None else {
            "trainer": to_dict(self.cfg),
            "data": to_dict(getattr(self.datamodule, "cfg", {})),
        }
        write_run_info(self.exp_dir, config, name="train")

    # ================================================================ checkpoints
    def _checkpoint_payload(self) -> dict[str, Any]:
        rng = sdist.all_gather_object(capture_rng_state())  # collective: every rank calls it
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batches_in_epoch": self.state.batches_in_epoch,
            "train_state": asdict(self.state),
            "rng": rng,
            "world_size": self.dist.world_size,
            "trainer_config": to_dict(self.cfg),
            "plateau": self.plateau.state_dict(),
            "task": self.task.state_dict() if hasattr(self.task, "state_dict") else {},
            FINGERPRINTS_KEY: self.fingerprints,
        }

    def save(self, name: str) -> Optional[Path]:
        """Write ``exp_dir/name`` on rank 0 (all ranks must call it: RNG states are gathered)."""
        payload = self._checkpoint_payload()
        path = None
        if self.dist.is_main:
            path = save_checkpoint_atomic(payload, self.exp_dir / name)
            if name.startswith("checkpoint-"):
                prune_step_checkpoints(self.exp_dir, self.cfg.keep_last_n)
            log.info("saved %s (step %d, epoch %d, batch %d of the epoch)", path, self.state.step,
                     self.state.epoch, self.state.batches_in_epoch)
        sdist.barrier()
        return path

    def _check_resume_fingerprints(self, path: Optional[Path]) -> None:
        if path is not None and self.fingerprints:
            check_fingerprints(load_checkpoint(path, mmap=True), self.fingerprints, path, "resume")

    def _check_resume_data(self, path: Optional[Path]) -> None:
        """Refuse to resume a run on other training data than it was started on.

        The parts a run trains on are in its ``config.yaml`` (``paths``). Resuming with other parts (say the same
        recipe rerun with a new option that adds parts) would go on training the old model on the new data, or, for
        a finished run, train nothing and leave the old model to be decoded as the new one. To continue a model on
        other data on purpose, copy its checkpoint into a new exp dir: that dir has no config.yaml to compare.
        """
        if path is None or self.run_config is None:
            return
        old_cfg = self.exp_dir / "config.yaml"
        if not old_cfg.is_file():
            return
        import yaml

        old_paths = (yaml.safe_load(old_cfg.read_text()) or {}).get("paths") or {}
        new_paths = self.run_config.get("paths") or {}
        for key in RESUME_DATA_KEYS:
            if key in old_paths and key in new_paths and list(old_paths[key]) != list(new_paths[key]):
                raise SpeechkdError(
                    f"cannot resume from {path}: {self.exp_dir} was trained with {key} {list(old_paths[key])} "
                    f"({old_cfg}), this run names {list(new_paths[key])}. Resuming would continue the old model "
                    "on other data (a finished run would not train at all). Train into a new --exp-dir (copy "
                    "the checkpoint there to continue from it on the new data), or pass --no-resume to start over."
                )

    def _check_optimizer_groups(self, path: Path, saved: Mapping[str, Any]) -> None:
        """Refuse a checkpoint whose optimizer groups (``trainer.optimizer.lr_scales``: names, parameter counts,
        lr ratios between groups) differ from this config's: torch would fail on the counts, or silently keep
        the checkpoint's multipliers. The base lr may differ (it is the checkpoint's that continues)."""

        def describe(groups: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, float]]:
            base = float(groups[0].get("initial_lr", groups[0]["lr"])) if groups else 1.0
            return [(str(g.get("name", "(rest)")), len(g["params"]),
                     float(g.get("initial_lr", g["lr"])) / base if base else 0.0) for g in groups]

        old, new = describe(saved.get("param_groups", [])), describe(self.optimizer.param_groups)
        same = len(old) == len(new) and all(
            a[:2] == b[:2] and math.isclose(a[2], b[2], rel_tol=1e-6) for a, b in zip(old, new))
        if not same:
            fmt = lambda gs: ", ".join(f"{n} ({c} tensors, x{r:.3g})" for n, c, r in gs)  # noqa: E731
            raise SpeechkdError(
                f"cannot resume from {path}: its optimizer groups are [{fmt(old)}], this config's are [{fmt(new)}] "
                "(lr ratios relative to the first group). trainer.optimizer.lr_scales changed since it was written? "
                f"Keep the old lr_scales, train into a new --exp-dir, or pass --no-resume to start over in {self.exp_dir}."
            )

    def _maybe_resume(self, path: Optional[Path]) -> None:
        if path is None:
            log.info("no checkpoint in %s: starting from scratch", self.exp_dir)
            return
        ckpt = load_checkpoint(path)
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise SpeechkdError(
                f"cannot resume from {path}: it holds a different model (changed config or vocabulary?). "
                f"Train into a new --exp-dir, or pass --no-resume to start over in {self.exp_dir}.\n{e}"
            ) from e
        self._check_optimizer_groups(path, ckpt["optimizer"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.state = TrainState(**ckpt["train_state"])
        self.plateau.load_state_dict(ckpt.get("plateau", {}))
        if hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(ckpt.get("task", {}))
        rngs = ckpt["rng"]
        if ckpt.get("world_size", 1) != self.dist.world_size:
            log.warning(
                "%s was written with world size %s, now %d: the data order after resuming is not exact",
                path, ckpt.get("world_size"), self.dist.world_size,
            )
        restore_rng_state(rngs[self.dist.rank % len(rngs)])
        log.info("resumed from %s: step %d, epoch %d, %d batches into the epoch", path, self.state.step,
                 self.state.epoch, self.state.batches_in_epoch)

    # ================================================================ loop
    def _reached_max_steps(self) -> bool:
        return self.cfg.max_steps is not None and self.state.step >= self.cfg.max_steps

    def _train_loop(self) -> None:
        cfg, st = self.cfg, self.state
        self._meter = _Meter()
        while st.epoch <= cfg.num_epochs:
            if self._reached_max_steps():
                break
            self.scheduler.set_epoch(st.epoch)
            set_loader_epoch(self.train_dl, st.epoch, st.batches_in_epoch)
            if self._run_epoch_batches():
                return
            if st.batches_in_epoch == 0:
                raise SpeechkdError(
                    f"epoch {st.epoch} produced no training batch: every bucket was smaller than "
                    f"max_duration and dropped (data.drop_last=true), or every cut was filtered out; "
                    f"lower data.num_buckets, set data.drop_last=false, or check the training cuts"
                )
            self._log_skips()
            self.validate()
            st.epoch += 1
            st.batches_in_epoch = 0
            self.save(f"epoch-{st.epoch - 1}.pt")

    def _run_epoch_batches(self) -> bool:
        """Consume the rest of the current epoch; True when ``max_steps`` stopped training."""
        cfg, st = self.cfg, self.state
        bar = self._progress_bar()
        try:
            for batch in self.train_dl:
                if self._reached_max_steps():
                    return True
                self._train_step(batch)
                st.step += 1
                st.batches_in_epoch += 1
                bar.update(1)
                for hook in self.on_step_end:
                    hook(self)
                if st.step % cfg.log_every_n == 0:
                    self._log_train(bar)
                if cfg.valid_every_n > 0 and st.step % cfg.valid_every_n == 0:
                    self.validate()
                saved = cfg.save_every_n > 0 and st.step % cfg.save_every_n == 0
                if saved:
                    self.save(f"checkpoint-{st.step}.pt")
                if self._reached_max_steps():
                    if not saved:
                        self.save(f"checkpoint-{st.step}.pt")
                    log.info("reached max_steps=%d", cfg.max_steps)
                    return True
        finally:
            bar.close()
        return False

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(
            desc=f"epoch {self.state.epoch}",
            initial=self.state.batches_in_epoch,
            unit="batch",
            disable=not (self.dist.is_main and self.cfg.progress_bar),
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch: dict[str, Any]) -> bool:
        """Forward/backward/update on one batch; False when the batch was skipped."""
        st = self.state
        self.module.train()
        self.scheduler.step_batch(st.step)
        dev_batch = move_batch(batch, self.device)
        with self._autocast():
            out = self.task.compute_loss(self.module, dev_batch, True)
        task_lr_scale = getattr(self.task, "lr_scale", None)
        if task_lr_scale is not None:  # after the loss: the task's phase for this step is decided
            self.scheduler.set_scale(task_lr_scale(st.step))
        local_skip = out.loss is None
        local_bad = not local_skip and not bool(torch.isfinite(out.loss.detach()).all())
        flags = sdist.all_reduce_sum(torch.tensor([float(local_skip), float(local_bad)], device=self.device))
        any_skip, any_bad = bool(flags[0] > 0), bool(flags[1] > 0)
        if any_bad:
            self._bad_batch(batch["cut_ids"], "non-finite loss" if local_bad else "non-finite loss on another rank")
            return False
        if any_skip:
            reason = (out.skip_reason or "skipped by the task") if local_skip else "skipped on another rank"
            st.skipped[reason] = st.skipped.get(reason, 0) + 1
            log.debug("step %d: batch skipped (%s): %s", st.step, reason, batch["cut_ids"])
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.scaler.scale(out.loss).backward()
        sdist.average_gradients(list(self.model.parameters()), self.cfg.ddp_bucket_numel)
        if not self._clip_and_check_grads():
            self._bad_batch(batch["cut_ids"], "non-finite gradient norm")
            return False
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        st.consecutive_bad_batches = 0
        self._meter.add(out, out.loss.detach(), self.datamodule.batch_duration(batch))
        return True

    def _clip_and_check_grads(self) -> bool:
        """Unscale and clip gradients; False when the total norm is not finite (fp32/bf16 only:
        with fp16 the grad scaler skips such steps itself and lowers its scale)."""
        if self.cfg.grad_clip <= 0:
            return True
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        return self.scaler.is_enabled() or bool(torch.isfinite(norm))

    def _bad_batch(self, cut_ids: list[str], what: str) -> None:
        st = self.state
        self.optimizer.zero_grad(set_to_none=True)
        st.num_bad_batches += 1
        st.consecutive_bad_batches += 1
        log.warning(
            "step %d: %s; batch skipped (%d bad batches so far, %d in a row); cuts: %s",
            st.step, what, st.num_bad_batches, st.consecutive_bad_batches, " ".join(cut_ids),
        )
        if st.consecutive_bad_batches > self.cfg.max_consecutive_bad_batches:
            raise SpeechkdError(
                f"{st.consecutive_bad_batches} consecutive bad batches (limit trainer.max_consecutive_bad_batches="
                f"{self.cfg.max_consecutive_bad_batches}); last cuts: {' '.join(cut_ids)}. Check the data and lr."
            )

    # ================================================================ logging / validation
    def _lr(self) -> float:
        """The lr logged: that of the parameters without an ``lr_scales`` multiplier (the base lr), else the
        largest of the groups (every group is scaled)."""
        lrs = self.scheduler.get_last_lr()
        names = [g.get("name") for g in self.optimizer.param_groups]
        return lrs[names.index("(rest)")] if "(rest)" in names else max(lrs)

    def _log_train(self, bar: Any) -> None:
        m, st = self._meter, self.state
        stats = m.per_frame()
        speed = m.audio_per_second()
        comps = ", ".join(f"{k}={v:.4g}" for k, v in stats.items() if k != "loss")
        counts = m.counts
        ratio = emission_ratio(counts, self.cfg.plateau)
        if ratio is not None:
            comps += f", emission_ratio={ratio:.3f}"
        if counts.get("untranscribed_utts"):  # utterances of untranscribed parts (transcript-free losses only)
            comps += f", untranscribed_utts={int(counts['untranscribed_utts'])}"
        log.info(
            "epoch %d step %d: loss/frame=%.4g%s, lr=%.3g, %.1f s audio/s, bad=%d",
            st.epoch, st.step, stats["loss"], f" ({comps})" if comps else "", self._lr(), speed, st.num_bad_batches,
        )
        bar.set_postfix(loss=f"{stats['loss']:.4g}", lr=f"{self._lr():.2e}", audio_s_per_s=f"{speed:.1f}")
        if self._tb is not None:
            for k, v in stats.items():
                self._tb.add_scalar(f"train/{k}", v, st.step)
            self._tb.add_scalar("train/lr", self._lr(), st.step)
            self._tb.add_scalar("train/audio_seconds_per_second", speed, st.step)
        self.plateau.observe(st.step, counts)
        m.reset()

    def _close_plateau(self) -> None:
        """Judge the steps after the last log interval, so every run leaves a ``plateau.yaml``.

        A run shorter than ``log_every_n`` steps (or one whose last interval is partial) would
        otherwise end without a verdict file, and its seed table could not tell why.
        """
        if self._meter.has_counts:  # set by _train_loop, which always runs first
            self.plateau.observe(self.state.step, self._meter.counts)
            self._meter.reset()
        else:
            self.plateau.flush()

    def _log_skips(self) -> None:
        st = self.state
        if st.skipped or st.num_bad_batches:
            log.info("after epoch %d: %d bad batches, skipped by reason: %s", st.epoch, st.num_bad_batches, st.skipped)

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        """Per-frame validation loss summed over ranks (None without validation cuts)."""
        if self.valid_dl is None:
            return None
        if self._last_valid_step == self.state.step:
            return self.state.last_valid_loss
        self._last_valid_step = self.state.step
        model = unwrap_model(self.module)
        model.eval()
        pcfg = self.cfg.plateau
        # loss, frames, and the plateau check's validation counts (training/plateau.py): emitted, reference tokens
        totals = torch.zeros(4, dtype=torch.float64)
        info: dict[str, float] = {}
        num_dropped = 0
        for batch in self.valid_dl:
            with self._autocast():
                out = self.task.compute_loss(model, move_batch(batch, self.device), False)
            if out.loss is None or not torch.isfinite(out.loss).all():
                num_dropped += 1
                log.warning("validation: batch left out (%s); cuts: %s",
                            out.skip_reason or "non-finite loss", " ".join(batch["cut_ids"]))
                continue
            hyp = float(out.counts.get(pcfg.valid_hyp_key, 0.0)) if pcfg.valid_hyp_key else 0.0
            ref = float(out.counts.get(pcfg.ref_key, 0.0)) if pcfg.valid_hyp_key in out.counts else 0.0
            totals += torch.tensor([float(out.loss), float(out.num_frames), hyp, ref], dtype=torch.float64)
            for k, v in out.info.items():
                info[k] = info.get(k, 0.0) + float(v)
        model.train()
        totals = sdist.all_reduce_sum(totals.to(self.device)).cpu()
        # judged on every rank, as the training check; no reference tokens (nothing reported): nothing judged
        self.plateau.observe_validation(self.state.step, {pcfg.valid_hyp_key: float(totals[2]),
                                                          pcfg.ref_key: float(totals[3])})
        loss = float(totals[0] / totals[1]) if totals[1] > 0 else math.nan
        self.state.last_valid_loss = loss
        comps = ", ".join(f"{k}={v / max(float(totals[1]), 1.0):.4g}" for k, v in info.items())
        log.info("validation at step %d: loss/frame=%.4g%s, %d batches left out on this rank", self.state.step, loss,
                 f" ({comps}, this rank)" if comps else "", num_dropped)
        if self._tb is not None:
            self._tb.add_scalar("valid/loss", loss, self.state.step)
        return loss
