"""MVQ-KD experiment pieces: the ``mvq`` config section and the quantizer / extraction / training-side stages.

An MVQ-KD experiment is an ASR experiment (``speechkd asr train``) whose YAML also has an ``mvq`` section
(:class:`MvqConfig`: teacher, teacher layer, codebooks, quantizer training, extraction, student layer) and a
``loss.codebook_loss_scale > 0``. ``speechkd distill train-quantizer`` and ``speechkd distill
extract-codebooks`` read the same YAML, so the three stages cannot disagree about teacher, layer or
codebooks; ``speechkd asr train --codebook-dir`` checks the indexes' ``metadata.yaml`` against it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from speechkd.errors import SpeechkdError
from speechkd.training.distill_experiment import TeacherConfig

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
QUANTIZER_NAME = "quantizer.pt"


@dataclass
class QuantizerTrainingConfig:
    """``multi_quantization.QuantizerTrainer`` options and the utterance sample it trains on."""

    num_utterances: int = 1000  # seeded random sample of the training cuts
    heldout_fraction: float = 0.05  # utterances of the sample kept for the reconstruction-error report
    batch_frames: int = 600  # frames per quantizer training step (the library's tuning batch)
    phase_one_iters: int = 10000  # 16-entry codebooks
    phase_two_iters: int = 10000  # after merging pairs into 256-entry codebooks
    lr: float = 0.005
    seed: int = 0

    def validate(self) -> None:
        if self.num_utterances < 2 or self.batch_frames < 1 or self.phase_one_iters < 1 or self.phase_two_iters < 1:
            raise SpeechkdError("mvq.quantizer: num_utterances >= 2, batch_frames and phase_*_iters >= 1 required")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise SpeechkdError(f"mvq.quantizer.heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclass
class MvqConfig:
    """The teacher side of MVQ-KD and where the student predicts it."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    teacher_layer: int = 6  # hidden-state index 0..num_layers of the teacher (0 = input embedding)
    num_codebooks: int = 8  # bytes per teacher frame (256-entry codebooks)
    student_layer: int = 6  # encoder block (1-based) whose output feeds the codebook head
    target_field: str = "codebook_indexes"  # custom field of the cuts
    frame_tolerance: int = 2  # teacher frames an utterance's index count may differ from duration / frame shift
    max_duration: float = 60.0  # seconds of audio per teacher batch (quantizer sample and extraction)
    chunk_cuts: int = 200  # cuts per extraction chunk: the unit of sharding and resumption
    refine_iters: int = 5  # index-refinement iterations of the quantizer's encoder (library default; most of its time)
    check_teacher: bool = True  # training loads the teacher once to compare its fingerprint with the indexes'
    quantizer: QuantizerTrainingConfig = field(default_factory=QuantizerTrainingConfig)

    def validate(self) -> None:
        if self.num_codebooks not in (1, 2, 4, 8, 16, 32):
            raise SpeechkdError(f"mvq.num_codebooks must be one of 1, 2, 4, 8, 16, 32, got {self.num_codebooks}")
        if self.refine_iters < 0:
            raise SpeechkdError(f"mvq.refine_iters must be >= 0, got {self.refine_iters}")
        if self.student_layer < 1 or self.teacher_layer < 0 or self.frame_tolerance < 0 or self.chunk_cuts < 1:
            raise SpeechkdError(
                f"mvq: student_layer >= 1, teacher_layer >= 0, frame_tolerance >= 0 and chunk_cuts >= 1 required "
                f"(got {self.student_layer}, {self.teacher_layer}, {self.frame_tolerance}, {self.chunk_cuts})"
            )


def check_mvq_experiment(cfg: Any) -> None:
    """Refusals of an ASR experiment config with ``loss.codebook_loss_scale > 0`` (an AsrExperimentConfig)."""
    if cfg.loss.codebook_loss_scale <= 0:
        return
    sa = cfg.data.spec_augment
    if sa.enabled and sa.time_warp_factor > 0:
        raise SpeechkdError(
            f"data.spec_augment.time_warp_factor={sa.time_warp_factor} with loss.codebook_loss_scale="
            f"{cfg.loss.codebook_loss_scale}: time warping moves frames away from their codebook targets; "
            "set data.spec_augment.time_warp_factor=0 (masks are fine)"
        )
    n = cfg.model.encoder.num_layers
    if not 1 <= cfg.mvq.student_layer <= n:
        raise SpeechkdError(f"mvq.student_layer={cfg.mvq.student_layer} outside the encoder's blocks 1..{n}")


def _load_teacher(mvq: MvqConfig, teacher_path: Optional[str], device: Optional[str]) -> Any:
    import dataclasses

    from speechkd.training.distill_experiment import load_configured_teacher

    tcfg = dataclasses.replace(mvq.teacher, path=teacher_path) if teacher_path else mvq.teacher
    return load_configured_teacher(tcfg, device=device)


def _experiment(config_path: Optional[PathLike], overrides: Sequence[str]) -> Any:
    from speechkd.training.asr_experiment import load_experiment_config

    return load_experiment_config(config_path, overrides)


def train_quantizer_stage(
    config_path: Optional[PathLike], overrides: Sequence[str], cuts_dir: PathLike, parts: Sequence[str],
    out_path: PathLike, teacher_path: Optional[str] = None, device: Optional[str] = None,
) -> Any:
    """Train the quantizer of ``mvq.teacher_layer`` on a sample of ``parts`` (``speechkd distill train-quantizer``)."""
    from speechkd.targets.codebooks import train_quantizer
    from speechkd.training.asr_experiment import load_cuts

    mvq = _experiment(config_path, overrides).mvq
    teacher = _load_teacher(mvq, teacher_path, device)
    q = mvq.quantizer
    return train_quantizer(
        load_cuts(cuts_dir, parts), teacher, mvq.teacher_layer, out_path, num_codebooks=mvq.num_codebooks,
        num_utterances=q.num_utterances, heldout_fraction=q.heldout_fraction, batch_frames=q.batch_frames,
        phase_one_iters=q.phase_one_iters, phase_two_iters=q.phase_two_iters, lr=q.lr, seed=q.seed,
        max_duration=mvq.max_duration,
    )


def extract_codebooks_stage(
    config_path: Optional[PathLike], overrides: Sequence[str], cuts_dir: PathLike, parts: Sequence[str],
    output_dir: PathLike, quantizer_path: PathLike, teacher_path: Optional[str] = None, device: Optional[str] = None,
    num_shards: Optional[int] = None, shard_id: Optional[int] = None,
) -> list[Any]:
    """Indexes of every part into ``output_dir`` (``speechkd distill extract-codebooks``)."""
    from speechkd.targets.codebooks import extract_codebooks
    from speechkd.training.asr_experiment import load_cuts

    mvq = _experiment(config_path, overrides).mvq
    if device is None:
        import torch

        from speechkd.training.dist import dist_info_from_env

        if torch.cuda.is_available():
            device = f"cuda:{dist_info_from_env().local_rank}"  # one GPU per torchrun rank
    teacher = _load_teacher(mvq, teacher_path, device)
    return [
        extract_codebooks(
            load_cuts(cuts_dir, [part]), teacher, quantizer_path, output_dir, part, layer=mvq.teacher_layer,
            num_shards=num_shards, shard_id=shard_id, chunk_cuts=mvq.chunk_cuts, max_duration=mvq.max_duration,
            field_name=mvq.target_field, refine_iters=mvq.refine_iters,
        )
        for part in parts
    ]


def student_frame_shift(cfg: Any, train_cuts: Any, subsampling_factor: int) -> float:
    """Seconds per encoder output frame: the fbank frame shift times the subsampling factor."""
    if cfg.data.input != "fbank":
        raise SpeechkdError(f"MVQ-KD needs fbank input (data.input={cfg.data.input!r})")
    first = next(iter(train_cuts))
    if cfg.data.features == "precomputed" and first.has_features:
        shift = first.frame_shift
    else:
        from speechkd.data.features import make_fbank_extractor

        shift = make_fbank_extractor(cfg.data.num_mel_bins, cfg.data.sampling_rate).frame_shift
    return float(shift) * subsampling_factor


def setup_codebook_training(
    cfg: Any, model: Any, codebook_dir: Optional[PathLike], train_cuts: Any, train_parts: Sequence[str],
    valid_cuts: Any, valid_parts: Sequence[str],
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Check the indexes in ``codebook_dir`` against ``cfg`` (an AsrExperimentConfig), join them to the cuts
    and give ``model`` its codebook head.

    Returns ``(train_cuts, valid_cuts, CodebookTerm, metadata)``. Every check runs here, before training.
    """
    from speechkd.models.codebook_head import CodebookHead
    from speechkd.targets.codebooks import (
        CODEBOOK_SIZE, attach_codebooks, check_codebooks_metadata, file_sha256, read_codebooks_metadata,
        read_quantizer_info,
    )
    from speechkd.tasks.asr import CodebookTerm

    mvq: MvqConfig = cfg.mvq
    if codebook_dir is None:
        raise SpeechkdError(
            f"loss.codebook_loss_scale={cfg.loss.codebook_loss_scale} needs the codebook indexes: give --codebook-dir "
            "(made by `speechkd distill extract-codebooks`)"
        )
    meta = read_codebooks_metadata(codebook_dir)
    expected: dict[str, Any] = {"layer": mvq.teacher_layer, "num_codebooks": mvq.num_codebooks,
                                "codebook_size": CODEBOOK_SIZE, "field": mvq.target_field,
                                "refine_iters": mvq.refine_iters}
    qpath = Path(codebook_dir) / QUANTIZER_NAME
    if qpath.is_file():
        qinfo = read_quantizer_info(qpath)
        expected.update(quantizer_id=qinfo["quantizer_id"], quantizer_sha256=file_sha256(qpath))
    if mvq.check_teacher:
        teacher = _load_teacher(mvq, None, None)
        expected["teacher_fingerprint"] = teacher.config_fingerprint([mvq.teacher_layer])
        del teacher
    check_codebooks_metadata(meta, expected, codebook_dir)
    shift = student_frame_shift(cfg, train_cuts, model.encoder.subsampling_factor)
    ratio = shift / float(meta["frame_shift"])
    factor = int(round(ratio))
    if factor < 1 or abs(ratio - factor) > 1e-6:
        raise SpeechkdError(
            f"student frame shift {shift} s is not a whole multiple of the teacher's {meta['frame_shift']} s "
            f"({codebook_dir}); MVQ-KD stacks whole teacher frames per student frame"
        )
    train_cuts = attach_codebooks(train_cuts, codebook_dir, train_parts, mvq.target_field, mvq.frame_tolerance,
                                  "training")
    if valid_cuts is not None:
        valid_cuts = attach_codebooks(valid_cuts, codebook_dir, valid_parts, mvq.target_field, mvq.frame_tolerance,
                                      "validation")
    model.training_heads["codebook"] = CodebookHead(model.encoder.output_dim, factor * mvq.num_codebooks, CODEBOOK_SIZE)
    log.info("MVQ-KD: %d codebooks x %d teacher frames per encoder frame predicted from encoder block %d "
             "(quantizer %s, teacher %s layer %d), loss scale %g", mvq.num_codebooks, factor, mvq.student_layer,
             meta["quantizer_id"], meta["teacher"], meta["layer"], cfg.loss.codebook_loss_scale)
    return train_cuts, valid_cuts, CodebookTerm(mvq.student_layer, mvq.target_field, factor), meta


def _bytes_per_frame(files: Sequence[Path], num_frames: int) -> float:
    return sum(p.stat().st_size for p in files) / max(num_frames, 1)


def storage_report(
    config_path: Optional[PathLike], overrides: Sequence[str], codebook_dir: PathLike, part: str,
    out_dir: PathLike, teacher_path: Optional[str] = None, device: Optional[str] = None,
) -> dict[str, Any]:
    """Bytes per frame of the written index files of ``part`` against float16/float32 dumps of the same layer
    and cuts (written with the same lhotse writer into ``out_dir``), measured from the file sizes.

    Writes ``out_dir/storage.yaml`` and returns its content.
    """
    import yaml
    from lhotse import CutSet

    from speechkd.targets.codebooks import INDEX_SUFFIX, chunk_dir, cuts_path, read_codebooks_metadata
    from speechkd.targets.hidden_states import extract_hidden_states, storage_path

    mvq = _experiment(config_path, overrides).mvq
    meta = read_codebooks_metadata(codebook_dir)
    pinfo = (meta.get("parts") or {}).get(part)
    if pinfo is None:
        raise SpeechkdError(f"{codebook_dir}: no codebook indexes for part {part!r}")
    cuts = CutSet.from_file(cuts_path(codebook_dir, part))  # the cuts that have indexes
    teacher = _load_teacher(mvq, teacher_path, device)
    out_dir = Path(out_dir)
    report: dict[str, Any] = {
        "part": part, "teacher": meta["teacher"], "layer": meta["layer"], "hidden_size": teacher.hidden_size,
        "num_codebooks": meta["num_codebooks"], "num_cuts": pinfo["num_cuts"], "num_frames": pinfo["num_frames"],
        "codebook_bytes_per_frame": _bytes_per_frame(sorted(chunk_dir(codebook_dir, part).glob(f"*{INDEX_SUFFIX}")),
                                                     pinfo["num_frames"]),
    }
    for dtype in ("float16", "float32"):
        r = extract_hidden_states(cuts, teacher, [meta["layer"]], out_dir / dtype, part,
                                  max_duration=mvq.max_duration, dtype=dtype)
        report[f"{dtype}_bytes_per_frame"] = _bytes_per_frame([storage_path(out_dir / dtype, part)], r.num_frames)
        report[f"{dtype}_num_frames"] = r.num_frames
    for dtype in ("float16", "float32"):
        report[f"{dtype}_over_codebooks"] = report[f"{dtype}_bytes_per_frame"] / report["codebook_bytes_per_frame"]
    (out_dir / "storage.yaml").write_text(yaml.safe_dump(report, sort_keys=False))
    return report
