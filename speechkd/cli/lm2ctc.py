"""``speechkd lm2ctc train-lm|soft-labels``: LM-to-CTC distillation's LM stages (stdlib imports only)."""

from __future__ import annotations

import argparse
from pathlib import Path

GROUP = "lm2ctc"


def _texts(cuts_paths: list[str]) -> list[str]:
    from speechkd.targets.pseudo_label import open_cuts
    from speechkd.data.collate import cut_text

    return [cut_text(c) for p in cuts_paths for c in open_cuts(p)]


def _read_text_files(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        out.extend(line.strip() for line in Path(p).read_text(encoding="utf-8").splitlines() if line.strip())
    return out


def _train_lm(args: argparse.Namespace) -> int:
    import logging

    from speechkd.config import load_config
    from speechkd.errors import SpeechkdError
    from speechkd.training.mlm import MlmConfig, drop_excluded, train_mlm
    from speechkd.utils.runinfo import write_run_info

    if not args.cuts and not args.text_files:
        raise SpeechkdError("train-lm: give --cuts and/or --text-files (the LM text)")
    cfg = load_config(MlmConfig, args.config, args.set)
    write_run_info(args.out_dir, {k: v for k, v in vars(args).items() if k not in ("func", "_command_parser")},
                   name="train-lm")
    texts, removed = drop_excluded(_texts(args.cuts) + _read_text_files(args.text_files), _texts(args.exclude_cuts),
                                   cfg.lowercase)
    logging.getLogger(__name__).info("LM text: %d sentences (%d equal to an --exclude-cuts transcript removed)",
                                     len(texts), removed)
    source = {"train_cuts": [str(Path(p).resolve()) for p in args.cuts],
              "text_files": [str(Path(p).resolve()) for p in args.text_files],
              "excluded_cuts": [str(Path(p).resolve()) for p in args.exclude_cuts], "excluded_sentences": removed,
              "eval_cuts": [str(Path(p).resolve()) for p in args.eval_cuts]}
    meta = train_mlm(texts, args.out_dir, cfg, eval_texts=_texts(args.eval_cuts) if args.eval_cuts else None,
                     source=source)
    for name, s in meta["scores"].items():
        print(f"{name}\tmasked-token accuracy {s['masked_accuracy']:.4f}\tperplexity {s['perplexity']:.2f}")
    return 0


def _lm_text(args: argparse.Namespace) -> int:
    from speechkd.data.minilibri import MiniLibriConfig, load_sentences
    from speechkd.text.normalize import normalize_librispeech

    cfg = MiniLibriConfig(text_source=args.text_source, min_words=args.min_words, max_words=args.max_words)
    seen: dict[str, None] = {}
    for s in load_sentences(cfg):
        t = normalize_librispeech(s)
        if t:
            seen.setdefault(t)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(t + "\n" for t in seen), encoding="utf-8")
    print(f"{args.out}\t{len(seen)} sentences of {args.text_source}")
    return 0


def _soft_labels(args: argparse.Namespace) -> int:
    from speechkd.targets.lm_soft_labels import make_soft_labels
    from speechkd.teachers.masked_lm import MaskedLmTeacher

    if args.num_threads:
        import torch

        torch.set_num_threads(args.num_threads)
    teacher = MaskedLmTeacher.load(args.lm, device=args.device, batch_size=args.batch_size, dtype=args.dtype)
    for part in args.parts:
        src = Path(args.cuts_dir) / f"librispeech_cuts_{part}.jsonl.gz"
        out = make_soft_labels(src, args.out_dir, part, teacher, k=args.k, temperature=args.temperature,
                               max_tokens=args.max_tokens, num_shards=args.num_shards, shard_id=args.shard_id)
        print(f"{part}\t{out or 'shards still to do'}")
    return 0


def _train_ngram(args: argparse.Namespace) -> int:
    from speechkd.decoding.ngram import TokenNgramLm
    from speechkd.text.tokenizer import Tokenizer

    from speechkd.training.mlm import drop_excluded

    tok = Tokenizer(args.bpe_model)
    texts, removed = drop_excluded([t for t in _texts(args.cuts) + _read_text_files(args.text_files) if t.strip()],
                                   _texts(args.exclude_cuts))
    lm = TokenNgramLm.train(tok.encode(texts), args.order, tok.vocab_size, bpe_model_sha256=tok.sha256,
                            train_cuts=[str(Path(p).resolve()) for p in args.cuts],
                            text_files=[str(Path(p).resolve()) for p in args.text_files],
                            excluded_cuts=[str(Path(p).resolve()) for p in args.exclude_cuts], excluded_sentences=removed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    lm.save(args.out)
    print(f"{args.out}\t{args.order}-gram over {tok.vocab_size} BPE tokens, {lm.meta['num_sentences']} sentences")
    return 0


def _rtf(args: argparse.Namespace) -> int:
    import torch

    from speechkd.decoding.rtf import format_rtf_table, measure_rtf
    from speechkd.errors import SpeechkdError
    from speechkd.training.asr_experiment import load_cuts

    if len(args.names) != len(args.exp_dirs):
        raise SpeechkdError(f"--names has {len(args.names)} entries for {len(args.exp_dirs)} --exp-dirs")
    torch.set_num_threads(args.num_threads)
    fusion = None
    if args.ngram_lm:
        from speechkd.decoding.asr_decode import FusionLm
        from speechkd.decoding.ngram import TokenNgramLm

        fusion = FusionLm(TokenNgramLm.load(args.ngram_lm), args.lm_weight)
    rows = measure_rtf(list(zip(args.names, args.exp_dirs)), load_cuts(args.cuts_dir, [args.part]), args.methods,
                       repeats=args.repeats, beam_size=args.beam_size, fusion=fusion)
    table = format_rtf_table(rows, args.num_threads)
    print(table)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(f"part {args.part}\n\n{table}", encoding="utf-8")
    return 0


def register(reg) -> None:  # noqa: ANN001 - CommandRegistry (avoid import cycle)
    p = reg.command(GROUP, "train-lm", func=_train_lm,
                    help="train the stand-in masked LM (WordPiece + BertForMaskedLM from scratch) on training transcripts")
    p.add_argument("--cuts", nargs="*", default=[], help="cut manifests whose transcripts are LM text (train only)")
    p.add_argument("--text-files", nargs="*", default=[], help="more LM text, one sentence per line")
    p.add_argument("--exclude-cuts", nargs="*", default=[],
                   help="cut manifests (dev/test) whose transcripts are removed from the LM text")
    p.add_argument("--eval-cuts", nargs="*", default=[], help="cut manifests to report held-out accuracy on (e.g. dev)")
    p.add_argument("--out-dir", required=True, help="output: save_pretrained model + tokenizer, metadata.yaml")
    p.add_argument("--config", default=None, help="YAML of speechkd.training.mlm.MlmConfig")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")

    p = reg.command(GROUP, "lm-text", func=_lm_text,
                    help="MiniLibri's LM text: every sentence of its text source, normalised as its transcripts")
    p.add_argument("--text-source", default="austen", help="austen | bible (MiniLibri text sources)")
    p.add_argument("--min-words", type=int, default=5)
    p.add_argument("--max-words", type=int, default=25)
    p.add_argument("--out", required=True, help="output text file, one sentence per line")

    p = reg.command(GROUP, "train-ngram", func=_train_ngram,
                    help="token n-gram LM over the CTC's BPE (shallow-fusion baseline of asr decode --methods ctc-beam)")
    p.add_argument("--cuts", nargs="*", default=[], help="cut manifests whose transcripts are LM text (train only)")
    p.add_argument("--text-files", nargs="*", default=[], help="more LM text, one sentence per line")
    p.add_argument("--exclude-cuts", nargs="*", default=[], help="cut manifests whose transcripts are removed")
    p.add_argument("--bpe-model", required=True)
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--out", required=True, help="output file (torch.save)")

    p = reg.command(GROUP, "rtf", func=_rtf,
                    help="decoding real-time factor of several experiments measured in one run (decoding models)")
    p.add_argument("--exp-dirs", nargs="+", required=True)
    p.add_argument("--names", nargs="+", required=True, help="one name per --exp-dirs entry")
    p.add_argument("--cuts-dir", required=True)
    p.add_argument("--part", default="dev")
    p.add_argument("--methods", nargs="+", default=["ctc-greedy"], choices=("ctc-greedy", "ctc-beam"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--beam-size", type=int, default=8)
    p.add_argument("--ngram-lm", default=None, help="token n-gram fused into ctc-beam")
    p.add_argument("--lm-weight", type=float, default=0.5)
    p.add_argument("--num-threads", type=int, default=1)
    p.add_argument("--output", default=None, help="write the table here too (markdown)")

    p = reg.command(GROUP, "soft-labels", func=_soft_labels,
                    help="top-k masked-LM soft labels of every transcript, stored on the cuts (sharded, resumable)")
    p.add_argument("--lm", required=True, help="masked LM: directory or hub id (e.g. bert-base-uncased)")
    p.add_argument("--cuts-dir", required=True, help="dir with librispeech_cuts_<part>.jsonl.gz")
    p.add_argument("--parts", nargs="+", required=True)
    p.add_argument("--out-dir", required=True, help="output dir: librispeech_cuts_<part>.jsonl.gz + metadata.yaml")
    p.add_argument("--k", type=int, default=8, help="top-k kept per position")
    p.add_argument("--temperature", type=float, default=3.0)
    p.add_argument("--max-tokens", type=int, default=None, help="longer transcripts are skipped, counted (default: LM limit)")
    p.add_argument("--batch-size", type=int, default=64, help="masked sequences per LM forward")
    p.add_argument("--num-shards", type=int, default=None, help="default: WORLD_SIZE under torchrun, else 1")
    p.add_argument("--shard-id", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="the LM forward's compute dtype (autocast; bfloat16 for speed on a GPU); "
                   "recorded in metadata.yaml")
    p.add_argument("--num-threads", type=int, default=0)
