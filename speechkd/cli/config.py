"""``speechkd config show``: a YAML config with its ``_base_`` files merged in (stdlib-only imports)."""

from __future__ import annotations

import argparse
from typing import Any, Optional


def _lookup(data: Any, key: str) -> Any:
    """``data[a][b][c]`` for ``key`` = ``a.b.c``; None where a part is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _show(args: argparse.Namespace) -> Optional[int]:
    import yaml

    from speechkd.config import apply_overrides, config_files, load_yaml

    if args.files:
        for path in config_files(args.config):
            print(path)
        return 0
    data = apply_overrides(load_yaml(args.config), args.set)
    if args.key:
        value = _lookup(data, args.key)
        if isinstance(value, bool):
            print("true" if value else "false")  # as YAML (and the recipes' options) write it, not Python's True
        elif value is not None:
            print(value if not isinstance(value, (dict, list)) else yaml.safe_dump(value, sort_keys=False).rstrip())
        return 0
    print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry, kept untyped to avoid an import cycle
    p = reg.command(
        "config",
        "show",
        help="print a config with its _base_ files merged in and --set overrides applied (YAML, or one --key)",
        func=_show,
        description=(
            "Print the mapping a YAML config file stands for: its _base_ files (recursively) with the file's\n"
            "own keys merged over them, then the --set overrides. Defaults of keys the files leave out are\n"
            "not filled in: the experiment dir's config.yaml has those. Recipes checksum this output, so\n"
            "editing a base file reruns the stages of every config built on it.\n\n"
            "  speechkd config show egs/minilibri/conf/asr_transducer_4h.yaml\n"
            "  speechkd config show egs/minilibri/conf/distilhubert_whisper_tiny.yaml --key loss.mode\n"
            "  speechkd config show egs/minilibri/conf/mvq_kd_whisper_tiny.yaml --files"
        ),
    )
    p.add_argument("config", help="YAML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override (repeatable), as the training commands take them")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--key", default=None, metavar="A.B.C",
                      help="print only this key's value (nothing when the files do not set it)")
    what.add_argument("--files", action="store_true", help="list the files the config is made of, bases first")
