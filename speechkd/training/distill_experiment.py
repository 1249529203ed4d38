"""DistilHuBERT experiment: config, teacher/student building, training, export, target extraction.

``speechkd distill train|export|extract-targets`` are thin wrappers around :func:`train_distill`,
:func:`export_distill` and :func:`extract_targets`. The experiment YAML has five sections:

- ``teacher``: checkpoint directory or hub id (``path``), ``kind``, SSL ``batching``, weight ``dtype``;
- ``student``: :class:`~speechkd.models.distilhubert.DistilHubertConfig` (``pred_head_layers`` = the
  teacher layers to predict; the CNN follows the teacher's when it has one);
- ``loss``: :class:`~speechkd.tasks.distill.DistillLossConfig` (``mode: on_the_fly | stored``);
- ``data``: :class:`~speechkd.data.datamodule.DataConfig` with ``input: audio``;
- ``trainer``: :class:`~speechkd.training.trainer.TrainerConfig`.

Besides the trainer's files, the exp dir gets ``student.yaml`` (resolved student config and teacher
description) and ``student_backbone/config.json``, so the student can be rebuilt (export, evaluation)
without loading the teacher.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from speechkd.config import apply_overrides, from_dict, load_yaml, read_experiment_config, to_dict
from speechkd.data.datamodule import DataConfig
from speechkd.errors import SpeechkdError
from speechkd.models.distilhubert import DistilHubertConfig
from speechkd.tasks.distill import DistillLossConfig
from speechkd.training.trainer import TrainerConfig

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
STUDENT_FILE = "student.yaml"
BACKBONE_DIR = "student_backbone"
TEACHER_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class TeacherConfig:
    """Which teacher to load and how (``load_teacher`` never downloads for a local directory)."""

    path: str = "facebook/hubert-base-ls960"  # checkpoint directory or model-hub id
    kind: str = "auto"  # auto | ssl | whisper
    batching: str = "auto"  # SSL teachers: auto | per_utterance | pad (see speechkd.teachers.hf_ssl)
    dtype: str = "float32"  # teacher weights: float32 | float16 | bfloat16 (half precision on GPU only)

    def validate(self) -> None:
        if self.dtype not in TEACHER_DTYPES:
            raise SpeechkdError(f"teacher.dtype must be one of {TEACHER_DTYPES}, got {self.dtype!r}")
        if not self.path:
            raise SpeechkdError("teacher.path is empty: give a checkpoint directory or hub id")


@dataclass
class DistillExperimentConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: DistilHubertConfig = field(default_factory=DistilHubertConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(input="audio", drop_empty_text=False))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # Train (and extract targets) on the _sp<factor> speed-perturbed copies too. Off: DistilHuBERT and
    # SUPERB use the original audio only, and the copies would triple the audio and resample on the fly.
    use_speed_perturbed: bool = False

    def validate(self) -> None:
        if self.data.input != "audio":
            raise SpeechkdError(f"distillation trains on raw audio: set data.input=audio (got {self.data.input!r})")


def load_distill_config(path: Optional[PathLike], overrides: Sequence[str] = ()) -> DistillExperimentConfig:
    """Defaults <- YAML ``path`` <- ``overrides``."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    data.setdefault("data", {}).setdefault("input", "audio")
    return from_dict(DistillExperimentConfig, data)


def load_configured_teacher(cfg: TeacherConfig, device: Optional[Any] = None) -> Any:
    """Load ``cfg.path`` as a frozen :class:`~speechkd.teachers.Teacher`."""
    import torch

    from speechkd.teachers import load_teacher

    options = {} if cfg.batching == "auto" else {"batching": cfg.batching}
    dtype = None if cfg.dtype == "float32" else getattr(torch, cfg.dtype)
    return load_teacher(cfg.path, kind=cfg.kind, device=device, dtype=dtype, **options)


def save_student_description(student: Any, exp_dir: PathLike) -> None:
    """Write ``student.yaml`` and ``student_backbone/config.json`` into ``exp_dir``."""
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    desc = {
        "student_config": dataclasses.asdict(student.cfg),
        "teacher": dataclasses.asdict(student.teacher) if student.teacher is not None else None,
    }
    (exp_dir / STUDENT_FILE).write_text(yaml.safe_dump(desc, sort_keys=False))
    student.backbone.config.save_pretrained(exp_dir / BACKBONE_DIR)


def build_student_from_exp(exp_dir: PathLike) -> Any:
    """The (untrained) student described by ``exp_dir``, built without the teacher."""
    from transformers import AutoConfig

    from speechkd.models.distilhubert import DistilHubertStudent, TeacherInfo

    path = Path(exp_dir) / STUDENT_FILE
    if not path.is_file():
        raise SpeechkdError(f"{path} not found: is {exp_dir} a `speechkd distill train` experiment dir?")
    desc = yaml.safe_load(path.read_text())
    student_config = dict(desc["student_config"])
    student_config.setdefault("pred_head_type", "linear")  # exp dirs from before the s3prl MLP heads
    cfg = from_dict(DistilHubertConfig, student_config)
    teacher = TeacherInfo(**desc["teacher"]) if desc.get("teacher") else None
    backbone_config = AutoConfig.from_pretrained(Path(exp_dir) / BACKBONE_DIR)
    return DistilHubertStudent(cfg, teacher=teacher, backbone_config=backbone_config)


def load_trained_student(exp_dir: PathLike, checkpoint: Optional[PathLike] = None) -> tuple[Any, Path]:
    """``(student with trained weights, checkpoint path)``; default checkpoint: the newest in ``exp_dir``."""
    from speechkd.training.checkpoint import find_resume_checkpoint, load_checkpoint

    path = Path(checkpoint) if checkpoint else find_resume_checkpoint(exp_dir)
    if path is None or not path.is_file():
        raise SpeechkdError(f"no checkpoint {'at ' + str(path) if path else 'in ' + str(exp_dir)}: train first")
    student = build_student_from_exp(exp_dir)
    state = load_checkpoint(path)["model"]
    prefix = "student."
    if not all(k.startswith(prefix) for k in state):
        raise SpeechkdError(f"{path} is not a distillation checkpoint (expected '{prefix}*' parameter names)")
    old_names = {}  # linear heads of checkpoints from before PredictionHeads
    if student.cfg.pred_head_type == "linear" and f"{prefix}pred_head.weight" in state:
        old_names = {"pred_head.weight": "pred_head.proj.weight", "pred_head.bias": "pred_head.proj.bias"}
    student.load_state_dict({old_names.get(k[len(prefix):], k[len(prefix):]): v for k, v in state.items()})
    return student.eval(), path


def train_distill(
    config_path: Optional[PathLike],
    overrides: Sequence[str],
    exp_dir: PathLike,
    cuts_dir: PathLike,
    train_parts: Sequence[str],
    valid_parts: Sequence[str] = (),
    teacher_path: Optional[str] = None,
    targets_dir: Optional[PathLike] = None,
    resume: bool = True,
) -> None:
    """Distil the configured teacher into a DistilHuBERT student (on-the-fly or stored targets)."""
    from speechkd.data.datamodule import AsrDataModule
    from speechkd.models.distilhubert import DistilHubertStudent, count_parameters
    from speechkd.targets.hidden_states import check_targets_metadata
    from speechkd.tasks.distill import DistillModel, DistillTask
    from speechkd.training.asr_experiment import load_cuts
    from speechkd.training.dist import dist_info_from_env
    from speechkd.training.trainer import Trainer

    if teacher_path:
        overrides = [*overrides, f"teacher.path={teacher_path}"]
    from speechkd.training.checkpoint import seed_everything

    cfg = load_distill_config(config_path, overrides)
    teacher = load_configured_teacher(cfg.teacher)
    seed_everything(cfg.trainer.seed)  # the student's initial weights are fixed by trainer.seed
    student = DistilHubertStudent.from_teacher(teacher, cfg.student)
    layers = list(student.cfg.pred_head_layers)
    stored = cfg.loss.mode == "stored"
    if stored:
        if targets_dir is None:
            raise SpeechkdError("loss.mode=stored needs --targets-dir (made by `speechkd distill extract-targets`)")
        check_targets_metadata(targets_dir, teacher, layers, cfg.loss.field, parts=[*train_parts, *valid_parts])
        cuts_dir = targets_dir
    log.info(
        "teacher %s (%s, %d layers, %.1fM params) -> student %.2fM params (backbone %.2fM), heads for layers %s, "
        "targets %s", teacher.name, teacher.kind, teacher.num_layers, teacher.num_parameters() / 1e6,
        count_parameters(student) / 1e6, count_parameters(student.backbone) / 1e6, layers, cfg.loss.mode,
    )
    if dist_info_from_env().rank == 0:
        save_student_description(student, exp_dir)
    sp = cfg.use_speed_perturbed
    train_cuts = load_cuts(cuts_dir, train_parts, speed_perturbed=sp)
    valid_cuts = load_cuts(cuts_dir, valid_parts, speed_perturbed=sp) if valid_parts else None
    model = DistillModel(student, None if stored else teacher)
    task = DistillTask(cfg.loss, layers, teacher.frame_shift, cfg.data.sampling_rate)
    dm = AsrDataModule(cfg.data, tokenizer=None, target_fields=(cfg.loss.field,) if stored else ())
    run_config = to_dict(cfg)
    run_config["paths"] = {
        "cuts_dir": str(cuts_dir),
        "train_parts": list(train_parts),
        "valid_parts": list(valid_parts),
        "targets_dir": str(targets_dir) if targets_dir else None,
    }
    run_config["teacher_description"] = teacher.describe(layers)
    if stored:
        del teacher
    Trainer(cfg.trainer, model, task, dm, train_cuts, valid_cuts, exp_dir, run_config=run_config).fit(resume=resume)


def read_distill_experiment(exp_dir: PathLike) -> tuple[DistillExperimentConfig, dict[str, Any]]:
    """The resolved config and its ``paths`` section written by :func:`train_distill`."""
    return read_experiment_config(exp_dir, DistillExperimentConfig, "speechkd distill train",
                                  ignore=("teacher_description",))


def export_distill(exp_dir: PathLike, out_dir: PathLike, checkpoint: Optional[PathLike] = None) -> Path:
    """Export the trained student of ``exp_dir`` as a transformers checkpoint in ``out_dir`` (heads dropped)."""
    from speechkd.models.hf_export import export_student

    student, path = load_trained_student(exp_dir, checkpoint)
    log.info("exporting the student of %s", path)
    return export_student(student, out_dir, train_config=Path(exp_dir) / "config.yaml")


def extract_targets(
    config_path: Optional[PathLike],
    overrides: Sequence[str],
    cuts_dir: PathLike,
    parts: Sequence[str],
    output_dir: PathLike,
    teacher_path: Optional[str] = None,
    max_duration: float = 60.0,
    dtype: str = "float16",
    device: Optional[str] = None,
) -> list[Any]:
    """Pre-extract the configured teacher's ``student.pred_head_layers`` for ``parts`` into ``output_dir``."""
    from speechkd.models.distilhubert import validate_pred_head_layers
    from speechkd.targets.hidden_states import METADATA_FILE, check_targets_metadata, cuts_path, extract_hidden_states
    from speechkd.training.asr_experiment import load_cuts

    if teacher_path:
        overrides = [*overrides, f"teacher.path={teacher_path}"]
    cfg = load_distill_config(config_path, overrides)
    from speechkd.training.dist import resolve_device

    teacher = load_configured_teacher(cfg.teacher, device=resolve_device(device))
    layers = list(cfg.student.pred_head_layers)
    validate_pred_head_layers(layers, teacher.num_layers)
    done: dict[str, Any] = {}
    if (Path(output_dir) / METADATA_FILE).is_file():  # another teacher/layer set there is an error
        done = check_targets_metadata(output_dir, teacher, layers, cfg.loss.field).get("parts") or {}
    reports = []
    for part in parts:
        if part in done and cuts_path(output_dir, part).is_file():
            log.info("%s: targets already in %s, skipped (remove the part's files to redo)", part, output_dir)
            continue
        reports.append(
            extract_hidden_states(
                load_cuts(cuts_dir, [part], speed_perturbed=cfg.use_speed_perturbed), teacher, layers, output_dir, part, cfg.loss.field, max_duration, dtype
            )
        )
    return reports
