"""Command-line entry point: ``speechkd <group> <command> [options]``.

Every command module under ``speechkd/cli/`` imports only the standard library at module level;
heavy imports (torch, lhotse, transformers) happen inside the function that runs the command.
That keeps ``speechkd --help`` well under a second.

A command module exposes ``register(sub: CommandRegistry) -> None`` and adds its commands with
``sub.command(group, name, help=..., func=...)``; ``func(args: argparse.Namespace) -> int | None``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Callable, Optional, Sequence

from speechkd.errors import SpeechkdError

BOOLEAN_WORDS = {"true": True, "false": False}


def bool_arg(value: str) -> bool:
    """argparse ``type`` for ``true``/``false`` (as recipes pass booleans)."""
    try:
        return BOOLEAN_WORDS[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"use true or false, not {value!r}") from None


# Command modules, imported at start-up (they must be stdlib-only at import time).
COMMAND_MODULES = (
    "speechkd.cli.data",
    "speechkd.cli.minilibri",
    "speechkd.cli.game_speech",
    "speechkd.cli.asr",
    "speechkd.cli.score",
    "speechkd.cli.teachers",
    "speechkd.cli.distill",
    "speechkd.cli.mvq",
    "speechkd.cli.pseudo",
    "speechkd.cli.pseudo_label",
    "speechkd.cli.export",
    "speechkd.cli.lm2ctc",
    "speechkd.cli.config",
)

GROUP_HELP = {
    "data": "corpus preparation: manifests, features, BPE, summaries, the mini corpus",
    "asr": "ASR student backbone: train, average, decode (CTC / transducer)",
    "score": "WER/CER scoring of decoding results",
    "teachers": "teacher models: conversion and inspection",
    "distill": "layer-wise distillation of SSL encoders (DistilHuBERT); MVQ-KD quantizer and codebook indexes",
    "pseudo": "Whisper pseudo-labelling and label filtering",
    "export": "deployable students: ONNX export in sherpa-onnx's contracts, sherpa-onnx decoding",
    "lm2ctc": "LM-to-CTC distillation: stand-in masked LM, top-k soft labels",
    "config": "YAML configs: show one with its _base_ files merged in",
}


class CommandRegistry:
    """Builds the argparse tree lazily, group by group."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._top = parser.add_subparsers(dest="group", metavar="<group>")
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def group(self, name: str) -> argparse._SubParsersAction:
        if name not in self._groups:
            p = self._top.add_parser(
                name,
                help=GROUP_HELP.get(name, ""),
                description=GROUP_HELP.get(name, ""),
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            self._groups[name] = p.add_subparsers(dest="command", metavar="<command>")
        return self._groups[name]

    def command(
        self,
        group: str,
        name: str,
        help: str,
        func: Callable[[argparse.Namespace], Optional[int]],
        description: Optional[str] = None,
    ) -> argparse.ArgumentParser:
        p = self.group(group).add_parser(
            name,
            help=help,
            description=description or help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func, _command_parser=p)
        return p


def build_parser() -> argparse.ArgumentParser:
    from speechkd import __version__

    parser = argparse.ArgumentParser(
        prog="speechkd",
        description=(
            "speechkd: speech knowledge-distillation recipes.\n"
            "Each recipe stage (egs/<corpus>/run.sh) is one `speechkd <group> <command>` call."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"speechkd {__version__}")
    reg = CommandRegistry(parser)
    for group in GROUP_HELP:  # list every group in --help, in a fixed order
        reg.group(group)
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:  # a command module not written yet
            if e.name == mod_name:
                continue
            raise
        mod.register(reg)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command_parser = vars(args).pop("_command_parser", None)
    if unknown:  # reported with the usage of the command that got them, not the top-level usage
        (command_parser or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    func = getattr(args, "func", None)
    if func is None:
        # `speechkd` or `speechkd <group>` alone: print the relevant help.
        if getattr(args, "group", None):
            parser.parse_args([args.group, "--help"])
        parser.print_help()
        return 2
    from speechkd.utils.logging import setup_logging

    setup_logging(getattr(args, "log_level", "INFO"))
    try:
        rc = func(args)
    except SpeechkdError as e:
        import logging

        logging.getLogger("speechkd").error("%s", e)
        return 1
    return int(rc or 0)
