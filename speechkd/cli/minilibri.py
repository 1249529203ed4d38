"""``speechkd data make-minilibri``: the offline mini corpus.

Stdlib-only at import time; the builders are imported inside the command functions.
"""

from __future__ import annotations

import argparse
import os

from speechkd.cli import bool_arg


def _make_minilibri(args: argparse.Namespace) -> int:
    from speechkd.data.minilibri import MiniLibriConfig, make_minilibri

    cfg = MiniLibriConfig(
        train_minutes=args.train_minutes,
        dev_minutes=args.dev_minutes,
        test_clean_minutes=args.test_clean_minutes,
        test_other_minutes=args.test_other_minutes,
        seed=args.seed,
        text_source=args.text_source,
        voice_set=args.voice_set,
        tiny=args.tiny,
        num_jobs=args.num_jobs,
    )
    make_minilibri(args.output_dir, cfg)
    return 0


def register(reg) -> None:  # reg: speechkd.cli.CommandRegistry
    p = reg.command(
        "data",
        "make-minilibri",
        help="build the offline mini corpus (LibriSpeech layout: train, dev, test-clean, test-other)",
        description=(
            "Build MiniLibri: TTS voices (espeak-ng, flite, Festival, Piper; whatever is installed) reading\n"
            "book sentences (Jane Austen's novels, or the King James Bible) for train/dev/test-clean (test-clean: held-out voices and sentences),\n"
            "and real recorded speech (Asterisk prompts, LibriVox clips) for test-other. Resumable; a complete\n"
            "corpus with the same options is not rebuilt. See speechkd/data/minilibri.py."
        ),
        func=_make_minilibri,
    )
    p.add_argument("--output-dir", required=True, help="corpus directory, e.g. download/MiniLibri")
    p.add_argument("--train-minutes", type=float, default=60.0, help="planned train audio in minutes (default 60)")
    p.add_argument("--dev-minutes", type=float, default=5.0, help="planned dev audio in minutes (default 5)")
    p.add_argument("--test-clean-minutes", type=float, default=5.0, help="planned test-clean minutes (default 5)")
    p.add_argument(
        "--test-other-minutes", type=float, default=10.0, help="cap on real Asterisk prompts in test-other (default 10)"
    )
    p.add_argument(
        "--tiny",
        nargs="?",
        const=True,
        default=False,
        type=bool_arg,
        metavar="true|false",
        help="a few dozen utterances from the fastest voices (seconds); `--tiny` alone means true, as in run.sh's "
        "`--tiny true`",
    )
    p.add_argument("--num-jobs", type=int, default=min(4, os.cpu_count() or 1), help="parallel processes")
    p.add_argument("--seed", type=int, default=0, help="sentence shuffling seed (default 0)")
    p.add_argument("--text-source", default="austen", choices=("austen", "bible"),
                   help="text the voices read: Jane Austen's novels (default) or the King James Bible")
    p.add_argument("--voice-set", default="clear", choices=("clear", "all"),
                   help="clear: the voices Whisper tiny.en reads well (default); all: every catalogue voice")
