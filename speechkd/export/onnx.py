"""Export an ASR student to ONNX in sherpa-onnx's model contracts (``speechkd export onnx``).

Kinds (see :mod:`speechkd.export.metadata` for the files and keys of each):

* ``offline-transducer``: ``encoder.onnx`` (global CMVN + encoder + joiner encoder projection),
  ``decoder.onnx`` (stateless decoder + projection), ``joiner.onnx``; for ``OfflineRecognizer.from_transducer``.
* ``streaming-transducer``: the same decoder/joiner and a chunk encoder in the online "conformer"
  contract (:class:`~speechkd.export.modules.StreamingConformerEncoder`), for a fixed chunk size and
  left context; for ``OnlineRecognizer.from_transducer``.
* ``ctc``: ``model.onnx`` with log-probabilities (static vocabulary dimension); for
  ``OfflineRecognizer.from_zipformer_ctc``.

Training-only heads (auxiliary CTC in a transducer export, simple-loss projections) are left out.
``int8=True`` adds ``*.int8.onnx`` files made by onnxruntime's dynamic quantiser (int8 weights).
Tracing uses ``torch.onnx.export(..., dynamo=False)``.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from speechkd.errors import SpeechkdError
from speechkd.export.metadata import (
    COMPONENTS,
    CTC,
    EXPORT_FILE,
    KINDS,
    OFFLINE_TRANSDUCER,
    STREAMING_TRANSDUCER,
    TOKENS_FILE,
    onnx_file_name,
    read_tokens,
    validate_export_dir,
)
from speechkd.export.modules import CtcModel, Decoder, JoinerHead, OfflineEncoder, StreamingConformerEncoder
from speechkd.models.asr import AsrModel

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

OPSET = 17
SAMPLE_RATE = 16000
EXAMPLE_FRAMES = 100  # feature frames of the tracing example (the time axis stays dynamic)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    # Python-side shape checks in the model are traced as constants on purpose; silence their warnings.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=OPSET, dynamo=False,
        )


def add_metadata(path: PathLike, meta: dict[str, Any]) -> None:
    """Set (add or replace) string ``metadata_props`` of an ONNX file in place."""
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    onnx.save(model, str(path))


def _features(model: AsrModel, n: int = 2, t: int = EXAMPLE_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, t, model.cfg.encoder.input_dim)
    return x, torch.tensor([t, t - 9][:n], dtype=torch.int64)


def _export_decoder_joiner(model: AsrModel, out_dir: Path) -> dict[str, dict[str, Any]]:
    j = model.cfg.joiner_dim
    y = torch.zeros(2, model.context_size, dtype=torch.int64)
    _export(Decoder(model), (y,), out_dir / "decoder.onnx", ["y"], ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}})
    enc, dec = torch.randn(2, j), torch.randn(2, j)
    _export(
        JoinerHead(model), (enc, dec), out_dir / "joiner.onnx", ["encoder_out", "decoder_out"], ["logit"],
        {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}},
    )
    return {
        "decoder": {"context_size": model.context_size, "joiner_dim": j},
        "joiner": {"joiner_dim": j},
    }


def _export_offline_encoder(model: AsrModel, out_dir: Path) -> dict[str, dict[str, Any]]:
    _export(
        OfflineEncoder(model), _features(model), out_dir / "encoder.onnx", ["x", "x_lens"],
        ["encoder_out", "encoder_out_lens"],
        {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"}, "encoder_out_lens": {0: "N"}},
    )
    return {"encoder": {"encoder_dim": model.cfg.encoder.d_model}}


def _export_streaming_encoder(model: AsrModel, out_dir: Path, chunk_size: int, left_context: int) -> dict:
    enc = StreamingConformerEncoder(model, chunk_size, left_context).eval()
    x = torch.randn(2, enc.chunk_frames, enc.input_dim)
    attn, conv = enc.init_caches(2)
    processed = torch.tensor([0, enc.chunk_frames], dtype=torch.int64)
    _export(
        enc, (x, attn, conv, processed), out_dir / "encoder.onnx", ["x", "attn_cache", "conv_cache", "processed_frames"],
        ["encoder_out", "next_attn_cache", "next_conv_cache"],
        {"x": {0: "N"}, "attn_cache": {2: "N"}, "conv_cache": {2: "N"}, "processed_frames": {0: "N"},
         "encoder_out": {0: "N"}, "next_attn_cache": {2: "N"}, "next_conv_cache": {2: "N"}},
    )
    cfg = model.cfg.encoder
    return {
        "encoder": {
            "model_type": "conformer",
            "num_encoder_layers": cfg.num_layers,
            "T": enc.chunk_frames,
            "decode_chunk_len": enc.chunk_frames,
            "left_context": enc.cache_rows,  # rows of the attention-cache tensor (see StreamingConformerEncoder)
            "encoder_dim": cfg.d_model,
            "pad_length": 0,
            "cnn_module_kernel": cfg.conv_kernel,
            "speechkd_chunk_size": chunk_size,
            "speechkd_left_context": left_context,
            "speechkd_raw_history_rows": enc.raw_rows,
        }
    }


def _export_ctc(model: AsrModel, out_dir: Path) -> dict[str, dict[str, Any]]:
    _export(
        CtcModel(model), _features(model), out_dir / "model.onnx", ["x", "x_lens"], ["log_probs", "log_probs_len"],
        {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "log_probs": {0: "N", 1: "T_out"}, "log_probs_len": {0: "N"}},
    )
    return {"model": {"subsampling_factor": model.encoder.subsampling_factor}}


def quantize_int8(src: PathLike, dst: PathLike) -> None:
    """Dynamic int8 quantisation of the weights (onnxruntime), keeping the metadata."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from speechkd.export.metadata import read_metadata

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns on the root logger for every non-float tensor
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    add_metadata(dst, read_metadata(src))


def _check_model(model: AsrModel, kind: str, tokens: dict[int, str]) -> None:
    if kind not in KINDS:
        raise SpeechkdError(f"unknown export kind {kind!r}; choose from {', '.join(KINDS)}")
    if model.cfg.encoder_type != "conformer":
        raise SpeechkdError(
            f"model.encoder_type={model.cfg.encoder_type!r} reads raw audio through Whisper's log-mel, but the "
            "sherpa-onnx runtime feeds the encoder Kaldi fbank frames: only conformer students export"
        )
    if model.blank_id != 0:
        raise SpeechkdError(f"sherpa-onnx hard-codes blank id 0; this model has blank_id={model.blank_id}")
    if len(tokens) != model.vocab_size:
        raise SpeechkdError(f"tokens.txt has {len(tokens)} tokens but the model's vocab_size is {model.vocab_size}")
    if kind != CTC:
        model.require_transducer()


def export_onnx(
    model: AsrModel,
    tokens_path: PathLike,
    out_dir: PathLike,
    kind: str,
    chunk_size: int = 16,
    left_context: int = 64,
    int8: bool = False,
    source: Optional[dict[str, Any]] = None,
) -> Path:
    """Export ``model`` (eval mode is set here) as ``kind`` into ``out_dir`` and validate the result.

    ``chunk_size`` / ``left_context`` (encoder frames of 40 ms) apply to ``streaming-transducer`` only.
    ``source`` (e.g. checkpoint path) is recorded in ``export.yaml``. Returns ``out_dir``.
    """
    import yaml

    from speechkd import __version__

    tokens = read_tokens(tokens_path)
    _check_model(model, kind, tokens)
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if Path(tokens_path).resolve() != (out_dir / TOKENS_FILE).resolve():
        shutil.copyfile(tokens_path, out_dir / TOKENS_FILE)
    if kind == OFFLINE_TRANSDUCER:
        extra = {**_export_offline_encoder(model, out_dir), **_export_decoder_joiner(model, out_dir)}
    elif kind == STREAMING_TRANSDUCER:
        extra = {**_export_streaming_encoder(model, out_dir, chunk_size, left_context), **_export_decoder_joiner(model, out_dir)}
    else:
        extra = _export_ctc(model, out_dir)
    common = {"vocab_size": model.vocab_size, "blank_id": model.blank_id, "speechkd_version": __version__,
              "speechkd_kind": kind}
    files = {}
    for comp in COMPONENTS[kind]:
        path = out_dir / onnx_file_name(comp.name)
        add_metadata(path, {**common, "speechkd_component": comp.name, **extra.get(comp.name, {})})
        files[comp.name] = path.name
        if int8:
            quantize_int8(path, out_dir / onnx_file_name(comp.name, int8=True))
    manifest = {
        "kind": kind,
        "files": files,
        "int8": int8,
        "vocab_size": model.vocab_size,
        "sample_rate": SAMPLE_RATE,
        "feature_dim": model.cfg.encoder.input_dim,
        "global_cmvn_in_encoder": model.encoder.input_norm is not None,
        "speechkd_version": __version__,
        "source": source or {},
    }
    if kind == STREAMING_TRANSDUCER:
        manifest.update(chunk_size=chunk_size, left_context=left_context)
    (out_dir / EXPORT_FILE).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    validate_export_dir(out_dir)
    if int8:
        validate_export_dir(out_dir, int8=True)
    log.info("exported %s to %s", kind, out_dir)
    return out_dir


def export_experiment(
    exp_dir: PathLike,
    out_dir: PathLike,
    kind: str,
    checkpoint: Optional[PathLike] = None,
    bpe_model: Optional[PathLike] = None,
    chunk_size: int = 16,
    left_context: int = 64,
    int8: bool = False,
) -> Path:
    """Export the checkpoint of a ``speechkd asr train`` experiment (default: ``averaged.pt``)."""
    from speechkd.decoding.asr_decode import load_model_for_decoding
    from speechkd.text.tokenizer import Tokenizer, write_tokens
    from speechkd.training.asr_experiment import read_experiment

    _, paths = read_experiment(exp_dir)
    bpe_model = bpe_model or paths.get("bpe_model")
    if not bpe_model:
        raise SpeechkdError("pass --bpe-model (not recorded in the experiment's config.yaml)")
    tokenizer = Tokenizer(bpe_model)
    model, _, _ = load_model_for_decoding(exp_dir, checkpoint, tokenizer)  # refuses another BPE model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokens_path = out_dir / TOKENS_FILE
    write_tokens(tokenizer, tokens_path)
    source = {"exp_dir": str(exp_dir), "checkpoint": str(checkpoint or "averaged.pt"), "bpe_model": str(bpe_model),
              "bpe_model_sha256": tokenizer.sha256}
    return export_onnx(model, tokens_path, out_dir, kind, chunk_size, left_context, int8, source)
