"""Start a student from its teacher's weights: the Whisper-layer encoder (``model.encoder_type: whisper``).

:func:`init_whisper_encoder` reads the encoder half of a Whisper teacher and copies its conv front-end, position
table, final layer norm and the layers listed in ``model.whisper.layers`` into a
:class:`~speechkd.models.whisper_encoder.WhisperStudentEncoder` (distil-whisper's initialisation). The teacher is
a transformers Whisper checkpoint (directory, or hub id when online), a CTranslate2 Whisper directory (read
directly, no conversion on disk) or ``packaged:tiny.en`` / ``packaged:base``. Sizes that differ from the config
fail here, naming both values, before any step is trained.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from speechkd.errors import SpeechkdError
from speechkd.models.whisper_encoder import WhisperStudentEncoder, teacher_layer_map

log = logging.getLogger(__name__)

ENCODER_PREFIX = "model.encoder."


def _is_ct2(source: str) -> bool:
    return source.startswith("packaged:") or (Path(source) / "model.bin").is_file()


def whisper_teacher_encoder(source: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The teacher's encoder state dict (transformers names without ``model.encoder.``) and its sizes
    (``d_model``, ``encoder_attention_heads``, ``encoder_ffn_dim``, ``num_mel_bins``, ``max_source_positions``,
    ``encoder_layers``)."""
    if _is_ct2(source):
        from speechkd.teachers.ct2_convert import ct2_whisper_state_dict, read_ct2_model_bin, resolve_ct2_dir

        sd, dims = ct2_whisper_state_dict(read_ct2_model_bin(resolve_ct2_dir(source) / "model.bin"))
        enc = {k[len(ENCODER_PREFIX):]: v.float() for k, v in sd.items() if k.startswith(ENCODER_PREFIX)}
        return enc, dims
    from transformers import WhisperModel

    from speechkd.teachers.base import resolve_checkpoint

    path, local_only = resolve_checkpoint(source)
    model = WhisperModel.from_pretrained(path, local_files_only=local_only)
    c = model.config
    dims = {"d_model": c.d_model, "encoder_attention_heads": c.encoder_attention_heads,
            "encoder_ffn_dim": c.encoder_ffn_dim, "num_mel_bins": c.num_mel_bins,
            "max_source_positions": c.max_source_positions, "encoder_layers": c.encoder_layers}
    return {k: v.float() for k, v in model.get_encoder().state_dict().items()}, dims


def check_teacher_sizes(encoder: WhisperStudentEncoder, dims: dict[str, int], source: str) -> None:
    """SpeechkdError naming both values where the config's sizes are not the teacher's."""
    cfg = encoder.cfg
    pairs = {"d_model": ("d_model", cfg.d_model), "num_heads": ("encoder_attention_heads", cfg.num_heads),
             "ff_dim": ("encoder_ffn_dim", cfg.ff_dim), "num_mel_bins": ("num_mel_bins", cfg.num_mel_bins),
             "max_source_positions": ("max_source_positions", cfg.max_source_positions)}
    bad = [f"model.whisper.{ours}={value} but the teacher has {theirs}={dims[theirs]}"
           for ours, (theirs, value) in pairs.items() if int(dims[theirs]) != value]
    if max(cfg.layers) >= dims["encoder_layers"]:
        bad.append(f"model.whisper.layers={cfg.layers} but the teacher has {dims['encoder_layers']} encoder layers")
    if bad:
        raise SpeechkdError(f"teacher {source}: " + "; ".join(bad))


def init_whisper_encoder(encoder: WhisperStudentEncoder, source: str) -> dict[str, Any]:
    """Copy the teacher's weights into ``encoder`` (every tensor: a student tensor left out is an error).

    Returns what the run records (``config.yaml`` ``paths.teacher_init``): the source, the teacher layers kept
    and a sha256 of the initial encoder weights.
    """
    from speechkd.teachers.base import weights_digest

    teacher, dims = whisper_teacher_encoder(source)
    check_teacher_sizes(encoder, dims, source)
    renames = teacher_layer_map(encoder.cfg.layers)
    state = {}
    for name in encoder.state_dict():
        src = name
        for ours, theirs in renames.items():
            if name.startswith(ours):
                src = theirs + name[len(ours):]
                break
        if src not in teacher:
            raise SpeechkdError(f"teacher {source}: no encoder tensor {src!r} for the student's {name!r}")
        state[name] = teacher[src]
    encoder.load_state_dict(state, strict=True)
    info = {"source": source, "teacher_layers": list(encoder.cfg.layers), "teacher_encoder_layers": dims["encoder_layers"],
            "init_weights_sha256": weights_digest(encoder)}
    log.info("encoder initialised from %s: layers %s of %d, %.2fM values", source, encoder.cfg.layers,
             dims["encoder_layers"], sum(v.numel() for v in state.values()) / 1e6)
    return info
