"""``speechkd teachers ...``: convert a CTranslate2 Whisper model, inspect a teacher (stdlib-only imports)."""

from __future__ import annotations

import argparse
import json
from typing import Optional

TEACHER_KINDS = ("auto", "ssl", "whisper")  # mirrors speechkd.teachers.TEACHER_KINDS (kept torch-free here)


def _convert_ct2_whisper(args: argparse.Namespace) -> Optional[int]:
    from speechkd.teachers.ct2_convert import convert_ct2_whisper, resolve_ct2_dir

    out = convert_ct2_whisper(resolve_ct2_dir(args.ct2_dir), args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
    print(out)
    return 0


def _info(args: argparse.Namespace) -> Optional[int]:
    from speechkd.teachers import load_teacher

    teacher = load_teacher(args.path, kind=args.kind)
    info = teacher.describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry, kept untyped to avoid an import cycle
    p = reg.command(
        "teachers",
        "convert-ct2-whisper",
        help="convert a CTranslate2 Whisper model dir into a transformers Whisper checkpoint",
        func=_convert_ct2_whisper,
        description=(
            "Convert a CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json, vocabulary.txt)\n"
            "into a transformers WhisperForConditionalGeneration checkpoint with tokenizer and feature\n"
            "extractor files, usable offline by WhisperProcessor and `speechkd teachers info`."
        ),
    )
    p.add_argument("ct2_dir", metavar="CT2_DIR", help="CTranslate2 Whisper model directory, or packaged:tiny.en for the pip-packaged Whisper tiny.en")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output checkpoint directory (created)")
    p.add_argument(
        "--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="stored weight dtype"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")

    p = reg.command(
        "teachers",
        "info",
        help="print a teacher's kind, layers, hidden size, frame shift, parameters and fingerprint",
        func=_info,
    )
    p.add_argument("path", metavar="PATH", help="checkpoint directory or model-hub id")
    p.add_argument("--kind", default="auto", choices=TEACHER_KINDS, help="teacher kind (default: from config)")
    p.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
