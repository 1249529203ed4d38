"""What an exported directory must hold, and the check run before sherpa-onnx ever sees it.

sherpa-onnx reads integer settings from each ONNX file's ``metadata_props`` and **terminates the
process** (exit 255, no exception) when a required key is missing, so :func:`validate_export_dir`
checks every requirement itself and raises :class:`SpeechkdError` naming the file and the key.

An export directory (written by :func:`speechkd.export.onnx.export_onnx`) holds ``export.yaml``
(kind, file names, sizes of the contract), ``tokens.txt`` (``symbol id`` per line, blank ``<blk>`` = 0)
and the ONNX files of its kind; ``*.int8.onnx`` files when quantised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from speechkd.errors import SpeechkdError

PathLike = Union[str, Path]

EXPORT_FILE = "export.yaml"
TOKENS_FILE = "tokens.txt"
BLANK_SYMBOLS = ("<blk>", "<eps>", "<blank>")  # sherpa-onnx's CTC blank names, in its lookup order

OFFLINE_TRANSDUCER = "offline-transducer"
STREAMING_TRANSDUCER = "streaming-transducer"
CTC = "ctc"
KINDS = (OFFLINE_TRANSDUCER, STREAMING_TRANSDUCER, CTC)

# Keys every file carries (ours), and the keys sherpa-onnx reads per (kind, component).
SPEECHKD_KEYS = ("speechkd_kind", "speechkd_component", "speechkd_version", "vocab_size", "blank_id")
STREAMING_ENCODER_KEYS = (
    "model_type", "num_encoder_layers", "T", "decode_chunk_len", "left_context", "encoder_dim", "pad_length",
    "cnn_module_kernel",
)
DECODER_KEYS = ("vocab_size", "context_size")
INT_KEYS = frozenset(STREAMING_ENCODER_KEYS + DECODER_KEYS + ("blank_id",)) - {"model_type"}


@dataclass(frozen=True)
class Component:
    """One ONNX file of a contract: its role, the metadata sherpa-onnx needs, and its arity."""

    name: str
    num_inputs: int
    num_outputs: int
    required: tuple[str, ...] = ()


COMPONENTS: dict[str, tuple[Component, ...]] = {
    OFFLINE_TRANSDUCER: (
        Component("encoder", 2, 2),
        Component("decoder", 1, 1, DECODER_KEYS),
        Component("joiner", 2, 1),
    ),
    STREAMING_TRANSDUCER: (
        Component("encoder", 4, 3, STREAMING_ENCODER_KEYS),
        Component("decoder", 1, 1, DECODER_KEYS),
        Component("joiner", 2, 1),
    ),
    CTC: (Component("model", 2, 2),),
}


@dataclass
class ExportInfo:
    """A validated export directory: kind, ``export.yaml`` contents, component -> ONNX path."""

    directory: Path
    kind: str
    manifest: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    tokens: dict[int, str] = field(default_factory=dict)


def onnx_file_name(component: str, int8: bool = False) -> str:
    return f"{component}.int8.onnx" if int8 else f"{component}.onnx"


def _load(path: PathLike) -> Any:
    """The ONNX ModelProto at ``path`` (external weight files are not read)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file
        raise SpeechkdError(f"cannot read ONNX file {path}: {e}") from e


def read_metadata(path: PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict."""
    return {p.key: p.value for p in _load(path).metadata_props}


def read_tokens(path: PathLike) -> dict[int, str]:
    """``tokens.txt`` (``symbol id`` per line) -> {id: symbol}; ids must be 0..V-1, each once."""
    path = Path(path)
    if not path.is_file():
        raise SpeechkdError(f"tokens file not found: {path}")
    tokens: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise SpeechkdError(f"{path}:{n}: expected 'symbol id', got {line!r}")
        idx = int(parts[1])
        if idx in tokens:
            raise SpeechkdError(f"{path}:{n}: id {idx} appears twice")
        tokens[idx] = parts[0]
    if sorted(tokens) != list(range(len(tokens))):
        raise SpeechkdError(f"{path}: ids are not 0..{len(tokens) - 1} without gaps")
    return tokens


def _check_streaming(path: Path, meta: dict[str, str], manifest: dict[str, Any]) -> None:
    """The contract's sizes agree with the chunk size / left context in export.yaml."""
    chunk_frames = 4 * int(manifest.get("chunk_size", -1))
    if not int(meta["T"]) == int(meta["decode_chunk_len"]) == chunk_frames:
        raise SpeechkdError(
            f"{path}: T={meta['T']} / decode_chunk_len={meta['decode_chunk_len']} do not match "
            f"chunk_size={manifest.get('chunk_size')} (x4 frames) in {EXPORT_FILE}"
        )
    if int(meta["left_context"]) < 2 * int(manifest.get("left_context", 0)):
        raise SpeechkdError(f"{path}: left_context={meta['left_context']} cache rows cannot hold "
                            f"left_context={manifest.get('left_context')} frames of keys and values")


def _check_component(path: Path, comp: Component, kind: str, vocab_size: int, manifest: dict[str, Any]) -> None:
    model = _load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    for key in SPEECHKD_KEYS + comp.required:
        if key not in meta:
            raise SpeechkdError(
                f"{path}: metadata key {key!r} is missing (sherpa-onnx would abort the process); re-export the model"
            )
        if key in INT_KEYS and not meta[key].lstrip("-").isdigit():
            raise SpeechkdError(f"{path}: metadata {key}={meta[key]!r} is not an integer")
    if meta["speechkd_kind"] != kind or meta["speechkd_component"] != comp.name:
        raise SpeechkdError(
            f"{path}: is a {meta['speechkd_kind']} {meta['speechkd_component']}, expected a {kind} {comp.name}"
        )
    if int(meta["vocab_size"]) != vocab_size:
        raise SpeechkdError(f"{path}: vocab_size={meta['vocab_size']} but tokens.txt has {vocab_size} tokens")
    if int(meta["blank_id"]) != 0:
        raise SpeechkdError(f"{path}: blank_id={meta['blank_id']}; sherpa-onnx requires blank id 0")
    if kind == STREAMING_TRANSDUCER and comp.name == "encoder":
        _check_streaming(path, meta, manifest)
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != comp.num_inputs or len(graph.output) != comp.num_outputs:
        raise SpeechkdError(
            f"{path}: {len(inputs)} inputs / {len(graph.output)} outputs, the {kind} {comp.name} contract has "
            f"{comp.num_inputs} / {comp.num_outputs}"
        )
    if kind == CTC:
        dims = graph.output[0].type.tensor_type.shape.dim
        if len(dims) != 3 or dims[2].dim_value != vocab_size:
            raise SpeechkdError(f"{path}: log_probs must be (N, T, {vocab_size}) with a static vocabulary dimension")


def validate_export_dir(directory: PathLike, int8: bool = False) -> ExportInfo:
    """Check an export directory against its contract (fp32 files, or the int8 ones with ``int8``).

    Raises SpeechkdError naming the file and the key/value at fault. Returns the :class:`ExportInfo`.
    """
    import yaml

    directory = Path(directory)
    manifest_path = directory / EXPORT_FILE
    if not manifest_path.is_file():
        raise SpeechkdError(f"{manifest_path} not found: not a speechkd export directory (run `speechkd export onnx`)")
    manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8")) or {}
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise SpeechkdError(f"{manifest_path}: kind={kind!r}, expected one of {', '.join(KINDS)}")
    if int8 and not manifest.get("int8"):
        raise SpeechkdError(f"{directory} has no int8 models (export with --int8)")
    tokens = read_tokens(directory / TOKENS_FILE)
    if kind == CTC and not any(tokens.get(0) == s for s in BLANK_SYMBOLS):
        raise SpeechkdError(f"{directory / TOKENS_FILE}: id 0 must be the blank {BLANK_SYMBOLS[0]}, got {tokens.get(0)!r}")
    info = ExportInfo(directory, kind, manifest, tokens=tokens)
    for comp in COMPONENTS[kind]:
        path = directory / onnx_file_name(comp.name, int8)
        _check_component(path, comp, kind, len(tokens), manifest)
        info.files[comp.name] = path
    return info
