"""``speechkd data extract-game-speech``: real recorded speech from two Debian game packages (unlabelled part).

Stdlib-only at import time; :mod:`speechkd.data.game_speech` is imported when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from speechkd.cli import bool_arg

log = logging.getLogger(__name__)

GAMES = ("queen", "sky")


def _extract(args: argparse.Namespace) -> int:
    from speechkd.data.game_speech import GameDataUnavailable, GameSpeechConfig, extract_game_speech
    from speechkd.utils.runinfo import write_run_info

    cfg = GameSpeechConfig(
        games=tuple(args.games),
        part=args.part,
        sampling_rate=args.sampling_rate,
        queen_rate=args.queen_rate,
        sky_rate=args.sky_rate,
        min_duration=args.min_duration,
        num_jobs=args.num_jobs,
        transcripts=args.transcripts,
        dev_part=args.dev_part,
        dev_speakers=tuple(args.dev_speakers),
        test_part=args.test_part,
        test_speakers=tuple(args.test_speakers),
    )
    try:
        report = extract_game_speech(args.cache_dir, args.audio_dir, args.manifest_dir, cfg, download=args.download)
    except GameDataUnavailable as e:
        if not args.skip_unavailable:
            raise
        print(f"SKIPPED: the game packages cannot be had here ({e}); part {args.part} was not written")
        return 0
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("func",)}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    write_run_info(args.manifest_dir, config, name=f"extract-game-speech-{args.part}")
    for game in cfg.games:
        skipped = report.skipped_by_reason(game)
        print(
            f"{game}: {report.clips[game]} clips, {report.seconds[game] / 3600:.3f} h, "
            f"{len(report.speakers[game])} speaker labels, {report.reused[game]} reused, skipped {skipped or 'none'}"
        )
    for part, (clips, seconds) in report.parts.items():
        what = "text empty" if part == args.part else "with transcripts"
        print(f"{part}: {clips} recordings, {seconds / 3600:.3f} h ({what})")
    return 0


def register(reg) -> None:  # reg: speechkd.cli.CommandRegistry
    p = reg.command(
        "data",
        "extract-game-speech",
        help="real recorded English speech from Debian game packages -> unlabelled manifests (e.g. train-real)",
        description=(
            "Fetch flight-of-the-amazon-queen and beneath-a-steel-sky (installed, a cached .deb, or\n"
            "`apt-get download`, then `dpkg-deb -x`; the engine is not installed), extract every speech clip\n"
            "as 16 kHz mono 16-bit FLAC under AUDIO_DIR/<game>/, and write\n"
            "MANIFEST_DIR/librispeech_{recordings,supervisions}_<part>.jsonl.gz (text empty, speaker labels from\n"
            "clip names), game-speech-report-<part>.tsv (clips skipped, by reason) and game-speech-<part>.yaml.\n"
            "With --transcripts true, the held-out Queen characters' clips with a dialogue-file transcript form\n"
            "labelled parts (dev-real, test-real; characters disjoint from the pool).\n"
            "Finished clips are not redone. See speechkd/data/game_speech.py."
        ),
        func=_extract,
    )
    p.add_argument("--cache-dir", type=Path, default=Path("download/game-debs"),
                   help="where .deb files are downloaded and unpacked (default: %(default)s)")
    p.add_argument("--audio-dir", type=Path, default=Path("download/GameSpeech"),
                   help="where the FLAC clips go (default: %(default)s)")
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"), help="(default: %(default)s)")
    p.add_argument("--part", default="train-real", help="part name of the manifests (default: %(default)s)")
    p.add_argument("--games", nargs="+", choices=GAMES, default=list(GAMES), help="(default: both)")
    p.add_argument("--sampling-rate", type=int, default=16000, help="output rate (default: %(default)s)")
    p.add_argument("--queen-rate", type=int, default=11840,
                   help="true rate of Queen's MP3 clips; their headers say 11025 but ScummVM plays them at 11840 "
                        "(default: %(default)s)")
    p.add_argument("--sky-rate", type=int, default=11025, help="rate of Sky's 8-bit PCM (default: %(default)s)")
    p.add_argument("--min-duration", type=float, default=0.2, help="skip shorter clips, seconds (default: %(default)s)")
    p.add_argument("--num-jobs", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--transcripts", type=bool_arg, default=True, metavar="true|false",
                   help="write labelled parts from the Queen dialogue files (default: true)")
    p.add_argument("--dev-part", default="dev-real", help="labelled part of --dev-speakers (default: %(default)s)")
    p.add_argument("--dev-speakers", nargs="+", default=["JIM", "HENRY"], metavar="CHARACTER",
                   help="Queen characters held out of the pool for the dev part (default: %(default)s)")
    p.add_argument("--test-part", default="test-real", help="labelled part of --test-speakers (default: %(default)s)")
    p.add_argument("--test-speakers", nargs="+", default=["SPARKY", "TAM", "WITCH", "FAYE"], metavar="CHARACTER",
                   help="Queen characters held out of the pool for the test part (default: %(default)s)")
    p.add_argument("--download", type=bool_arg, default=True, metavar="true|false",
                   help="run `apt-get download` when the package is neither installed nor cached (default: true)")
    p.add_argument("--skip-unavailable", action="store_true",
                   help="exit 0 with a SKIPPED message when a package cannot be had (recipes use this)")
