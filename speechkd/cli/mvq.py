"""``speechkd distill train-quantizer|extract-codebooks|codebook-storage``: MVQ-KD target stages (stdlib imports only).

The student trains with ``speechkd asr train --codebook-dir DIR`` on the same experiment YAML (its ``mvq``
section and ``loss.codebook_loss_scale``)."""

from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="MVQ-KD experiment YAML (ASR sections + mvq section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--teacher", default=None, help="teacher checkpoint dir or hub id (overrides mvq.teacher.path)")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz (with recordings)")
    p.add_argument("--device", default=None, help="teacher device (default: cpu; extraction: cuda when present)")


def _train_quantizer(args: argparse.Namespace) -> int:
    from speechkd.training.mvq_experiment import train_quantizer_stage

    r = train_quantizer_stage(args.config, args.set, args.cuts_dir, args.parts, args.output,
                              teacher_path=args.teacher, device=args.device)
    print(f"quantizer {r.quantizer_id}\tdim {r.dim}\tcodebooks {r.num_codebooks}\tutterances {r.num_utterances}\t"
          f"train frames {r.train_frames}\theld-out frames {r.heldout_frames}\t"
          f"relative reconstruction error {r.rel_reconstruction_error:.4f}\t{r.seconds:.1f} s")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from speechkd.training.mvq_experiment import extract_codebooks_stage

    for r in extract_codebooks_stage(
        args.config, args.set, args.cuts_dir, args.parts, args.output_dir, args.quantizer, teacher_path=args.teacher,
        device=args.device, num_shards=args.num_shards, shard_id=args.shard_id,
    ):
        rate = r.audio_seconds / r.seconds if r.seconds > 0 else 0.0
        print(f"{r.part}\tshard {r.shard_id}/{r.num_shards}\tchunks written {r.chunks_done}, already done "
              f"{r.chunks_skipped}\t{r.num_cuts} cuts\t{r.num_frames} frames\t{rate:.1f} audio s/s\t"
              f"{'complete' if r.finalized else 'incomplete (other shards pending)'}")
    return 0


def _storage(args: argparse.Namespace) -> int:
    from speechkd.training.mvq_experiment import storage_report

    r = storage_report(args.config, args.set, args.codebook_dir, args.part, args.output_dir,
                       teacher_path=args.teacher, device=args.device)
    print(f"{r['part']}: {r['num_frames']} frames; bytes/frame codebooks {r['codebook_bytes_per_frame']:.2f}, "
          f"float16 {r['float16_bytes_per_frame']:.1f} ({r['float16_over_codebooks']:.1f}x), "
          f"float32 {r['float32_bytes_per_frame']:.1f} ({r['float32_over_codebooks']:.1f}x)")
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry (avoid an import cycle)
    p = reg.command("distill", "train-quantizer", func=_train_quantizer,
                    help="MVQ-KD: train a multi-codebook quantizer of one teacher layer (mvq section of the config)")
    _common(p)
    p.add_argument("--parts", nargs="+", required=True, help="parts the utterance sample is drawn from")
    p.add_argument("--output", required=True, help="quantizer file to write (e.g. <codebook-dir>/quantizer.pt)")

    p = reg.command("distill", "extract-codebooks", func=_extract,
                    help="MVQ-KD: sharded, resumable extraction of codebook indexes onto the cuts, with metadata.yaml")
    _common(p)
    p.add_argument("--parts", nargs="+", required=True, help="parts to extract")
    p.add_argument("--output-dir", required=True, help="codebook dir: chunks/, cut manifests, metadata.yaml")
    p.add_argument("--quantizer", required=True, help="quantizer file from train-quantizer")
    p.add_argument("--num-shards", type=int, default=None, help="shards (default: torchrun world size, else 1)")
    p.add_argument("--shard-id", type=int, default=None, help="this shard (default: torchrun rank, else 0)")

    p = reg.command("distill", "codebook-storage", func=_storage,
                    help="MVQ-KD: bytes per frame of the index files vs float16/float32 dumps of the same layer")
    _common(p)
    p.add_argument("--codebook-dir", required=True)
    p.add_argument("--part", required=True, help="part to measure (float dumps of all its cuts are written)")
    p.add_argument("--output-dir", required=True, help="where the float dumps and storage.yaml go")
