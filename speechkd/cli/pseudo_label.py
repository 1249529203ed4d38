"""``speechkd pseudo pseudo-label``: label a CutSet with a Whisper teacher (stdlib-only at import time)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

GROUP = "pseudo"
BACKENDS = ("transformers", "faster-whisper")  # mirrors speechkd.teachers.whisper_asr.BACKENDS
ENV_LOCAL_RANK = "LOCAL_RANK"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("func", "group", "command")}


def _device(device: str) -> str:
    """``auto``: CUDA when available; ``cuda`` under torchrun means this process's GPU (``cuda:$LOCAL_RANK``)."""
    if device == "cuda" and ENV_LOCAL_RANK in os.environ:
        return f"cuda:{int(os.environ[ENV_LOCAL_RANK])}"
    if device == "auto":
        from speechkd.training.dist import resolve_device

        return resolve_device(device)
    return device


def _teacher_options(args: argparse.Namespace) -> dict[str, Any]:
    common: dict[str, Any] = {"beam_size": args.beam_size, "language": args.language, "task": args.task,
                              "name": args.teacher_name}
    device = _device(args.device)
    if args.backend == "transformers":
        return {**common, "device": device, "dtype": args.dtype, "max_new_tokens": args.max_new_tokens}
    if device.startswith("cuda:"):
        device, index = "cuda", int(device.split(":", 1)[1])
    else:
        index = 0
    return {**common, "device": device, "device_index": index, "compute_type": args.compute_type,
            "batch_size": args.batch_size, "cpu_threads": args.num_threads or 0, "max_new_tokens": args.max_new_tokens}


def cmd_pseudo_label(args: argparse.Namespace) -> Optional[int]:
    from speechkd.targets.pseudo_label import pseudo_label
    from speechkd.teachers.whisper_asr import load_whisper_teacher
    from speechkd.utils.runinfo import write_run_info

    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    teacher = load_whisper_teacher(args.teacher, backend=args.backend, **_teacher_options(args))
    write_run_info(args.output_dir, _options(args), name="pseudo-label")
    result = pseudo_label(
        args.cuts,
        args.output_dir,
        teacher,
        batch_size=args.batch_size,
        num_shards=args.num_shards,
        shard_id=args.shard_id,
        max_duration=args.max_duration,
        merge=not args.no_merge,
        progress=not args.no_progress,
    )
    log.info(
        "labelled shards %s, already done %s, merged: %s",
        result.shards_labelled, result.shards_already_done, result.merged or "not yet",
    )
    return 0


def register(reg: Any) -> None:
    register_score_labels(reg)
    p = reg.command(
        GROUP,
        "pseudo-label",
        help="transcribe a CutSet with a Whisper teacher (sharded, resumable); write pseudo-labelled cuts",
        description=(
            "Label every cut of --cuts with a Whisper teacher and write --output-dir/cuts.jsonl.gz: one\n"
            "supervision per cut whose text is the normalised transcript (LibriSpeech style) and whose custom\n"
            "fields hold reference (the original text), teacher, avg_logprob, compression_ratio and\n"
            "no_speech_prob. Work is split into --num-shards contiguous shards, each written atomically as\n"
            "shard-K-of-N.jsonl.gz + .done; a re-run skips finished shards. Under torchrun each rank takes\n"
            "the shards K with K % WORLD_SIZE == RANK. Cuts over --max-duration (30 s) and unreadable audio\n"
            "are skipped, counted and listed in skipped.tsv. See speechkd/targets/pseudo_label.py.\n\n"
            "  speechkd teachers convert-ct2-whisper CT2_DIR exp/whisper_hf   # for the transformers backend\n"
            "  speechkd pseudo pseudo-label --cuts data/fbank/librispeech_cuts_train.jsonl.gz \\\n"
            "      --output-dir data/pseudo/train --teacher exp/whisper_hf --backend transformers --num-shards 8"
        ),
        func=cmd_pseudo_label,
    )
    p.add_argument("--cuts", type=Path, required=True, help="input lhotse CutSet (labelled or not)")
    p.add_argument("--output-dir", type=Path, required=True, help="shards, merged cuts.jsonl.gz, metadata.yaml")
    p.add_argument("--teacher", required=True,
                   help="Whisper checkpoint: a transformers directory or hub id (--backend transformers), "
                        "a CTranslate2 directory or faster-whisper model name (--backend faster-whisper)")
    p.add_argument("--backend", choices=BACKENDS, default="transformers", help="inference backend (default: transformers)")
    p.add_argument("--teacher-name", default=None, help="name stored in custom['teacher'] (default: --teacher)")
    p.add_argument("--beam-size", type=int, default=1, help="1 = greedy search (default), >1 = beam search")
    p.add_argument("--batch-size", type=int, default=8, help="clips per teacher call (default 8)")
    p.add_argument("--num-shards", type=int, default=None, help="number of shards (default: shards of at most 2000 cuts, a multiple of WORLD_SIZE)")
    p.add_argument("--shard-id", type=int, default=None, help="label only this shard (default: all, or this rank's)")
    p.add_argument("--max-duration", type=float, default=30.0, help="skip (and count) longer cuts; at most 30 s")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda (= cuda:$LOCAL_RANK under torchrun), cuda:N or auto (default: CUDA when available)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="transformers backend: weights dtype (auto = float16 on CUDA, float32 on CPU)")
    p.add_argument("--compute-type", default="default",
                   help="faster-whisper backend: CTranslate2 compute type (default, int8, float16, float32, ...)")
    p.add_argument("--language", default=None, help="language code for multilingual models (default: detect)")
    p.add_argument("--task", default="transcribe", choices=("transcribe", "translate"), help="multilingual models only")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap on generated tokens per clip (default: the model's 448); bounds the cost of repetition loops")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads (torch / CTranslate2); default: library default")
    p.add_argument("--no-merge", action="store_true", help="do not merge the shards into cuts.jsonl.gz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_score_labels(args: argparse.Namespace) -> int:
    from speechkd.targets.pseudo_label import score_labels

    stats = score_labels(args.cuts, args.out_dir, args.test_set, tag=args.tag)
    print(f"{args.test_set}\t{args.tag}\tWER {stats.wer:.2f}%")
    return 0


def register_score_labels(reg: Any) -> None:
    p = reg.command(
        GROUP,
        "score-labels",
        help="WER of pseudo-labels against the references kept in custom['reference'] (the teacher's WER)",
        func=cmd_score_labels,
    )
    p.add_argument("--cuts", type=Path, required=True, help="pseudo-labelled cuts (output of pseudo-label)")
    p.add_argument("--out-dir", type=Path, required=True, help="where recogs/errs/trn and wer-summary.tsv go")
    p.add_argument("--test-set", required=True, help="name of the set in the result files")
    p.add_argument("--tag", default="teacher", help="row name in wer-summary.tsv (default: teacher)")
