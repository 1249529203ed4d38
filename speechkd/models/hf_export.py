"""Export a DistilHuBERT student as a standard transformers checkpoint.

``export_student(student, out_dir)`` writes ``config.json`` (model_type of the student's backbone
family: hubert / wav2vec2 / wavlm), ``model.safetensors`` with the backbone only (prediction heads
dropped) and ``preprocessor_config.json`` (sample rate, normalisation), so ``transformers.AutoModel.from_pretrained(out_dir, output_hidden_states=True)`` gives the
student's hidden states, plus ``speechkd_student.yaml`` describing where the student came from (teacher,
target layers, student config, training config path, parameter count).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import yaml

from speechkd.errors import SpeechkdError

if TYPE_CHECKING:
    from speechkd.models.distilhubert import DistilHubertStudent

logger = logging.getLogger(__name__)

METADATA_FILE = "speechkd_student.yaml"
METADATA_FORMAT_VERSION = 1
_HF_FILES = ("config.json", "model.safetensors")


def export_student(
    student: "DistilHubertStudent",
    out_dir: Union[str, Path],
    train_config: Optional[Union[str, Path]] = None,
    do_normalize: bool = False,
) -> Path:
    """Write ``student`` (a :class:`~speechkd.models.distilhubert.DistilHubertStudent`) to ``out_dir``.

    ``train_config`` (path of the resolved training ``config.yaml``) is recorded, not copied.
    ``do_normalize``: whether the student was trained on per-utterance normalised waveforms (as the
    teacher's input); written to ``preprocessor_config.json`` (a ``Wav2Vec2FeatureExtractor`` with
    attention masks on, as the student used them) so transformers pipelines feed it the same input.
    Returns ``out_dir``.
    """
    from transformers import Wav2Vec2FeatureExtractor

    from speechkd import __version__
    from speechkd.models.distilhubert import count_parameters

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = student.backbone
    backbone.save_pretrained(out_dir, safe_serialization=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=student.cfg.sample_rate,
        padding_value=0.0,
        do_normalize=do_normalize,
        return_attention_mask=True,
    ).save_pretrained(out_dir)
    meta = {
        "format_version": METADATA_FORMAT_VERSION,
        "speechkd_version": __version__,
        "backbone": {
            "model_type": backbone.config.model_type,
            "architecture": type(backbone).__name__,
            "num_parameters": count_parameters(backbone),
            "frame_shift": student.frame_shift,
            "hidden_states": "index 0: CNN features after projection and positional conv; index i: layer i",
        },
        "teacher": dataclasses.asdict(student.teacher) if student.teacher is not None else None,
        "do_normalize": do_normalize,
        "pred_head_layers": list(student.cfg.pred_head_layers),
        "pred_heads": "dropped (training only)",
        "student_config": dataclasses.asdict(student.cfg),
        "train_config": str(train_config) if train_config is not None else None,
    }
    (out_dir / METADATA_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    logger.info(
        "exported %s student (%d parameters, heads dropped) to %s",
        backbone.config.model_type, meta["backbone"]["num_parameters"], out_dir,
    )
    return out_dir


def load_exported_student(out_dir: Union[str, Path], **from_pretrained_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Load an exported student: ``(transformers base model, metadata dict)``.

    Raises SpeechkdError naming the directory when files are missing or the metadata is of another
    format version.
    """
    from transformers import AutoModel

    out_dir = Path(out_dir)
    missing = [name for name in (*_HF_FILES, METADATA_FILE) if not (out_dir / name).is_file()]
    if missing:
        raise SpeechkdError(f"{out_dir} is not an exported speechkd student: missing {missing}")
    meta = yaml.safe_load((out_dir / METADATA_FILE).read_text())
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != METADATA_FORMAT_VERSION:
        raise SpeechkdError(
            f"{out_dir / METADATA_FILE}: format_version {version!r}, this speechkd reads {METADATA_FORMAT_VERSION}"
        )
    model = AutoModel.from_pretrained(out_dir, **from_pretrained_kwargs)
    return model, meta
