"""``speechkd asr train|average|decode``: the ASR backbone's recipe stages (stdlib imports only)."""

from __future__ import annotations

import argparse

TRAIN_EPILOG = """\
The config YAML has sections model / loss / data / trainer and a model_preset
(speechkd/models/presets/<name>.yaml). Any value can be overridden:
  --set trainer.num_epochs=5 --set loss.ctc_weight=0.3 --set model.encoder.causal=true
The resolved config, the exact command and library versions are written to EXP_DIR.
Training resumes from the newest checkpoint in EXP_DIR unless --no-resume is given (which moves the
earlier run's checkpoints to EXP_DIR/previous-run-N/, so a later resume or --avg never mixes the two runs).
Multi-GPU: torchrun --nproc_per_node N -m speechkd asr train ... (one code path)."""


def _train(args: argparse.Namespace) -> int:
    from speechkd.training.asr_experiment import train_asr

    train_asr(
        args.config,
        args.set,
        args.exp_dir,
        args.cuts_dir,
        args.train_parts,
        args.valid_parts,
        args.bpe_model,
        resume=not args.no_resume,
        codebook_dir=args.codebook_dir,
        untranscribed_parts=args.untranscribed_parts,
    )
    return 0


def _average(args: argparse.Namespace) -> int:
    from speechkd.training.asr_experiment import average_asr

    out = average_asr(args.exp_dir, args.avg, by=args.by, last=args.last, cap=args.cap, output=args.output)
    print(out)
    return 0


def _decode(args: argparse.Namespace) -> int:
    from speechkd.decoding.asr_decode import decode_asr

    results = decode_asr(
        args.exp_dir,
        args.parts,
        methods=args.methods,
        beam_size=args.beam_size,
        chunk_sizes=args.chunk_sizes,
        left_context=args.left_context,
        checkpoint=args.checkpoint,
        cuts_dir=args.cuts_dir,
        bpe_model=args.bpe_model,
        max_duration=args.max_duration,
        length_norm=not args.no_length_norm,
        ngram_lm=args.ngram_lm,
        lm_weight=args.lm_weight,
        insertion_bonus=args.insertion_bonus,
        device=args.device,
        out_dir=args.out_dir,
    )
    for (part, tag), stats in results.items():
        print(f"{part}\t{tag}\tWER {stats.wer:.2f}%")
    return 0


def _add_device(p) -> None:  # noqa: ANN001 - argparse parser
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (default: CUDA when available; cuda = cuda:$LOCAL_RANK under torchrun)")


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry (avoid import cycle)
    p = reg.command("asr", "train", help="train a CTC / pruned-transducer ASR model", func=_train)
    p.epilog = TRAIN_EPILOG
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--exp-dir", required=True, help="experiment directory (checkpoints, logs, config)")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz")
    p.add_argument("--train-parts", nargs="+", required=True, help="training parts, e.g. train-clean-100")
    p.add_argument("--valid-parts", nargs="*", default=[], help="validation parts, e.g. dev-clean")
    p.add_argument("--bpe-model", required=True, help="sentencepiece model (data/lang_bpe_N/bpe.model)")
    p.add_argument(
        "--no-resume", action="store_true",
        help="start over: the checkpoints of an earlier run in --exp-dir are moved to previous-run-N/ there",
    )
    p.add_argument("--codebook-dir", default=None,
                   help="MVQ-KD codebook indexes (speechkd distill extract-codebooks); needs loss.codebook_loss_scale > 0")
    p.add_argument("--untranscribed-parts", nargs="*", default=[],
                   help="more training audio whose text is never read (an unlabelled pool): MVQ-KD's codebook loss "
                   "only, so it needs loss.codebook_loss_scale > 0 and indexes for these parts in --codebook-dir")

    p = reg.command("asr", "average", help="average the last N checkpoints into EXP_DIR/averaged.pt", func=_average)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--avg", type=int, default=3, help="number of checkpoints to average")
    p.add_argument("--by", choices=("epoch", "step"), default="epoch", help="average epoch-* or checkpoint-* files")
    p.add_argument("--last", type=int, default=None, help="newest epoch/step to include (default: the newest)")
    p.add_argument("--cap", action="store_true", help="average fewer when fewer than --avg checkpoints exist")
    p.add_argument("--output", default=None,
                   help="file to write (default: EXP_DIR/averaged.pt); e.g. EXP_DIR/avg-epoch6-3.pt for a learning curve")

    p = reg.command("asr", "decode", help="decode test sets and score them (WER files in EXP_DIR/decode or --out-dir)", func=_decode)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--parts", nargs="+", required=True, help="test parts, e.g. test-clean test-other")
    p.add_argument(
        "--methods", nargs="+", choices=("ctc-greedy", "greedy", "beam", "ctc-beam"), default=["greedy"], help="decoding methods"
    )
    p.add_argument("--beam-size", type=int, default=4, help="beam for --methods beam (modified beam search)")
    p.add_argument(
        "--no-length-norm",
        action="store_true",
        help="beam search: pick the result by log-probability, not log-probability per token (tag beamN-nolennorm)",
    )
    p.add_argument(
        "--chunk-sizes",
        nargs="+",
        type=int,
        default=[-1],
        help="streaming chunk sizes in encoder frames (-1: full context); each is decoded",
    )
    p.add_argument("--left-context", type=int, default=-1, help="streaming left context in frames (-1: all)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: averaged.pt, else newest epoch)")
    p.add_argument("--cuts-dir", default=None, help="default: the one used for training")
    p.add_argument("--bpe-model", default=None, help="default: the one used for training")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per decoding batch")
    p.add_argument("--ngram-lm", default=None,
                   help="token n-gram LM over the same BPE (speechkd lm2ctc train-ngram) fused into ctc-beam and beam")
    p.add_argument("--lm-weight", type=float, default=0.5, help="shallow-fusion weight of --ngram-lm")
    p.add_argument("--insertion-bonus", type=float, default=0.0,
                   help="with --ngram-lm: score added per emitted token (ctc-beam, beam)")
    p.add_argument("--out-dir", default=None,
                   help="result files go here (default: EXP_DIR/decode); its decode-log.tsv names each call's checkpoint")
    _add_device(p)
