"""YAML configs loaded into dataclasses, with dotted ``key=value`` overrides.

Usage::

    @dataclass
    class OptimConfig:
        lr: float = 1e-3

    @dataclass
    class TrainConfig:
        optim: OptimConfig = field(default_factory=OptimConfig)
        num_epochs: int = 10

    cfg = load_config(TrainConfig, "conf/train.yaml", ["optim.lr=5e-4", "num_epochs=3"])
    save_config(cfg, exp_dir / "config.yaml")

Unknown keys and values of the wrong type are errors that name the key: a typo in a config must
not be silently ignored.

A YAML file may start from other files: ``_base_: asr_transducer.yaml`` (or a list of files, merged in
order) names configs, relative to the file that names them, whose mappings the file's own keys are merged
over, section by section; a list or a scalar in the file replaces the base's value. So a recipe variant is
the few keys it changes::

    # conf/asr_transducer_4h.yaml
    _base_: asr_transducer.yaml
    model: {encoder: {dropout: 0.0}}
    trainer: {num_epochs: 8}

The experiment dir's ``config.yaml`` is always the resolved config, with no ``_base_``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Type, TypeVar, Union

import yaml

from speechkd.errors import SpeechkdError

T = TypeVar("T")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` (int->float allowed)."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise SpeechkdError(f"config key '{key}' may not be null")
    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            raise SpeechkdError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpeechkdError(f"config key '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SpeechkdError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SpeechkdError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise SpeechkdError(f"config key '{key}' must be int, got {value!r}")
    return value


def from_dict(cls: Type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpeechkdError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise SpeechkdError(f"incomplete config for {prefix or cls.__name__}: {e}") from e
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict (tuples become lists), ready for YAML."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a nested dict; values are parsed as YAML scalars/lists."""
    for ov in overrides:
        if "=" not in ov:
            raise SpeechkdError(f"override '{ov}' is not of the form key=value")
        key, raw = ov.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpeechkdError(f"override '{ov}': '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


BASE_KEY = "_base_"


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: mappings merge key by key, any other value of ``over`` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpeechkdError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise SpeechkdError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise SpeechkdError(f"config file {path} must hold a mapping at top level")
    return data


def _base_paths(path: Path, value: Any) -> list[Path]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise SpeechkdError(f"config file {path}: {BASE_KEY} must be a file name or a list of them, got {value!r}")
    return [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], list[Path]]:
    """(mapping of ``path`` merged over its bases, every file read: bases first, each once)."""
    here = path.resolve()
    if here in chain:
        loop = " -> ".join(str(p) for p in (*chain[chain.index(here) :], here))
        raise SpeechkdError(f"config files name each other as {BASE_KEY} in a loop: {loop}")
    data = _read_yaml_mapping(path)
    if BASE_KEY not in data:
        return data, [path]
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for base in _base_paths(path, data.pop(BASE_KEY)):
        if not base.is_file():
            raise SpeechkdError(f"config file {path}: {BASE_KEY} file not found: {base}")
        base_data, base_files = _read_with_bases(base, (*chain, here))
        merged = deep_merge(merged, base_data)
        files += [f for f in base_files if f not in files]
    return deep_merge(merged, data), files + [path]


def load_yaml(path: Union[str, Path]) -> dict[str, Any]:
    """The mapping in YAML file ``path``, merged over its ``_base_`` files (recursively).

    Raises:
        SpeechkdError: the file or a base is missing, not YAML, not a mapping, or the bases name each other
            in a loop.
    """
    return _read_with_bases(Path(path), ())[0]


def config_files(path: Union[str, Path]) -> list[Path]:
    """Every file the config ``path`` is made of: its bases first (each once), ``path`` last."""
    return _read_with_bases(Path(path), ())[1]


def load_config(
    cls: Type[T], path: Optional[Union[str, Path]] = None, overrides: Iterable[str] = ()
) -> T:
    """Defaults of ``cls`` <- YAML file ``path`` <- ``overrides`` (``key.sub=value``)."""
    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def read_experiment_config(
    exp_dir: Union[str, Path], cls: Type[T], command: str, ignore: Iterable[str] = ()
) -> tuple[T, dict[str, Any]]:
    """``(cls config, its "paths" section)`` from the ``config.yaml`` that ``command`` resolved into ``exp_dir``.

    ``ignore``: other descriptive top-level keys the run wrote next to the config (not fields of ``cls``).
    """
    path = Path(exp_dir) / "config.yaml"
    if not path.is_file():
        raise SpeechkdError(f"{path} not found: is {exp_dir} a `{command}` experiment dir?")
    data = load_yaml(path)
    paths = data.pop("paths", {}) or {}
    for key in ignore:
        data.pop(key, None)
    return from_dict(cls, data), paths


def save_config(cfg: Any, path: Union[str, Path]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
