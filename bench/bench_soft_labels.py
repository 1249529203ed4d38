#!/usr/bin/env python3
"""Throughput of LM-to-CTC's soft-label producer: ``MaskedLmTeacher.soft_labels`` on a BERT-base-sized masked LM.

One masked copy of the transcript per LM token is run through the LM (Futami et al.), so the cost of a corpus is
its number of LM tokens, each one forward of a whole sequence. The model is ``BertForMaskedLM(BertConfig())``
with random weights (bert-base-uncased's sizes: 12 layers, 768 wide, 30,522 tokens; no download) and the
utterances are random ids with lengths drawn around ``--mean-tokens`` (LibriSpeech's 960 h training transcripts
average about 34 words, roughly 40 WordPiece tokens). Prints, per compute dtype and batch size, masked sequences
per second, utterances per second and the projected hours for ``--corpus-utts`` utterances (281,241: LibriSpeech 960 h
without speed perturbation), measured in one run after a warm-up call.

    .venv/bin/python bench/bench_soft_labels.py --device cpu --utts 8 --batch-sizes 64   # minutes on 2 cores
    python bench/bench_soft_labels.py --device cuda --utts 400 --batch-sizes 64 256 1024 --dtypes float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.teachers.masked_lm import MaskedLmTeacher  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--utts", type=int, default=400, help="utterances labelled per timed call")
    p.add_argument("--mean-tokens", type=int, default=40, help="mean LM tokens per utterance")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024], help="masked sequences per forward")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=("float32", "bfloat16", "float16"),
                   help="compute dtypes of the LM forward (the producer's --dtype)")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--temperature", type=float, default=3.0)
    p.add_argument("--corpus-utts", type=int, default=281241, help="utterances of the projected corpus")
    p.add_argument("--layers", type=int, default=12, help="BERT layers (12: bert-base)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def make_teacher(layers: int, device: str, batch_size: int, dtype: str) -> MaskedLmTeacher:
    """A random bert-base-sized masked LM and a tokenizer that knows the special tokens (ids 0-4)."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    model = BertForMaskedLM(BertConfig(num_hidden_layers=layers))
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(SPECIALS + [f"w{i}" for i in range(100)]) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    return MaskedLmTeacher(model, tokenizer, f"random bert ({layers} layers)", device, batch_size, dtype=dtype)


def random_utts(n: int, mean_tokens: int, vocab: int, gen: torch.Generator) -> list[list[int]]:
    """``n`` utterances of ids in [5, vocab), lengths uniform in [mean/2, 3*mean/2]."""
    lens = torch.randint(max(1, mean_tokens // 2), mean_tokens * 3 // 2 + 1, (n,), generator=gen)
    return [torch.randint(5, vocab, (int(L),), generator=gen).tolist() for L in lens]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"# torch {torch.__version__}; device {args.device} ({name}); {args.layers}-layer BERT; "
          f"{args.utts} utterances, mean {args.mean_tokens} tokens; k {args.k}")
    teacher = make_teacher(args.layers, args.device, args.batch_sizes[0], args.dtypes[0])
    utts = random_utts(args.utts, args.mean_tokens, teacher.vocab_size, gen)
    tokens = sum(len(u) for u in utts)
    print("dtype     batch  seconds  masked_seq_per_s  utts_per_s  corpus_hours  peak_MB")
    for dtype in args.dtypes:
        teacher.dtype = dtype
        for bs in args.batch_sizes:
            teacher.batch_size = bs
            teacher.soft_labels(utts[: max(1, bs // args.mean_tokens + 1)], args.k, args.temperature)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = teacher.soft_labels(utts, args.k, args.temperature)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            sec = time.perf_counter() - start
            assert len(out) == len(utts) and sum(len(o.tokens) for o in out) == tokens
            peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else float("nan")
            hours = args.corpus_utts / (len(utts) / sec) / 3600
            print(f"{dtype:8s}  {bs:5d}  {sec:7.2f}  {tokens / sec:16.1f}  {len(utts) / sec:10.2f}  {hours:12.2f}  "
                  f"{peak:7.0f}")
            print(json.dumps({"dtype": dtype, "batch": bs, "seconds": round(sec, 3),
                              "masked_seq_per_s": round(tokens / sec, 1), "utts_per_s": round(len(utts) / sec, 2),
                              "corpus_utts": args.corpus_utts, "corpus_hours": round(hours, 3), "device": name}),
                  file=sys.stderr)


if __name__ == "__main__":
    main()
