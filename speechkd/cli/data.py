"""``speechkd data ...``: download, manifests, fbank, BPE, summary (recipe stages 0-9).

Stdlib-only at import time; each command imports its library module when it runs. Every command
records its resolved options, the exact command line and library versions in its output directory
(:func:`speechkd.utils.runinfo.write_run_info`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MANIFEST_DIR = "data/manifests"
DEFAULT_FBANK_DIR = "data/fbank"
DEFAULT_DOWNLOAD_DIR = "download"
DEFAULT_SPEED_FACTORS = (0.9, 1.1)
MODEL_TYPES = ("unigram", "bpe", "char", "word")


def _plain(value: Any) -> Any:
    """Paths -> str, tuples -> lists, recursively (safe for ``yaml.safe_dump``)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _config(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as a YAML-friendly dict (without the dispatch function)."""
    return {k: _plain(v) for k, v in vars(args).items() if k not in ("func", "group", "command")}


def _write_run_info(out_dir: Path, args: argparse.Namespace, name: str) -> None:
    from speechkd.utils.runinfo import write_run_info

    write_run_info(out_dir, _config(args), name=name)


# --------------------------------------------------------------------------------------------------
# commands


def cmd_download(args: argparse.Namespace) -> int:
    from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, download_librispeech

    from speechkd.errors import SpeechkdError

    valid = {"librispeech", "mini_librispeech", *LIBRISPEECH, *MINI_LIBRISPEECH}
    bad = [p for p in args.parts if p not in valid]
    if bad:
        raise SpeechkdError(f"unknown LibriSpeech part(s) {' '.join(bad)}; choose from {' '.join(sorted(valid))}")
    parts = (
        args.parts[0] if len(args.parts) == 1 and args.parts[0] in ("librispeech", "mini_librispeech") else args.parts
    )
    corpus_dir = download_librispeech(
        target_dir=args.target_dir, dataset_parts=parts, force_download=args.force_download, base_url=args.base_url
    )
    _write_run_info(args.target_dir, args, "download-librispeech")
    log.info("LibriSpeech is in %s (use it as --corpus-dir)", corpus_dir)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from speechkd.data.prepare import prepare_librispeech

    reports = prepare_librispeech(
        args.corpus_dir,
        args.output_dir,
        parts=args.parts,
        num_jobs=args.num_jobs,
        sampling_rate=args.sampling_rate,
        overwrite=args.overwrite,
    )
    _write_run_info(args.output_dir, args, "prepare-librispeech")
    for r in reports.values():
        state = "reused" if r.reused else f"{len(r.skipped)} skipped {r.skipped_by_reason or ''}".rstrip()
        if r.case_normalised:
            state += f", {r.case_normalised} transcripts upper-cased"
        print(f"{r.part}: {r.num_utterances} utterances, {r.num_speakers} speakers, {r.hours:.3f} h ({state})")
    return 0


def _print_fbank_reports(reports: dict[str, Any]) -> None:
    """One line per written (or reused) part: its cuts manifest and what became of its cuts."""
    for r in reports.values():
        failed = f"{len(r.failed_cut_ids)} failed, listed in {r.report_path}"
        state = "reused" if r.reused else f"{r.num_cuts} cuts, {failed}"
        print(f"{r.part}: {r.cuts_path} ({state})")


def cmd_fbank(args: argparse.Namespace) -> int:
    from speechkd.data.features import compute_fbank

    reports = compute_fbank(
        args.manifest_dir,
        args.output_dir,
        parts=args.parts,
        num_jobs=args.num_jobs,
        speed_perturb_parts=args.speed_perturb_parts,
        num_mel_bins=args.num_mel_bins,
        overwrite=args.overwrite,
        speed_factors=args.speed_factors,
    )
    _write_run_info(args.output_dir, args, "fbank")
    _print_fbank_reports(reports)
    return 0


def cmd_narrowband(args: argparse.Namespace) -> int:
    from speechkd.data.features import compute_narrowband

    out_dir = args.output_dir or args.cuts_dir
    reports = compute_narrowband(
        args.cuts_dir,
        args.parts,
        rate=args.rate,
        output_dir=out_dir,
        num_jobs=args.num_jobs,
        num_mel_bins=args.num_mel_bins,
        overwrite=args.overwrite,
    )
    # the copies share their directory with the fbank stage's parts: append the command and leave that stage's
    # config.yaml alone (each copy's settings and input are in its <copy>.source.yaml)
    from speechkd.utils.runinfo import write_run_info

    write_run_info(out_dir, None, name="narrowband")
    _print_fbank_reports(reports)
    return 0


def cmd_bpe(args: argparse.Namespace) -> int:
    from speechkd.text.tokenizer import MODEL_NAME, texts_from_manifests, train_bpe

    model = args.output_dir / MODEL_NAME
    if model.is_file() and not args.overwrite:
        log.info("%s exists - skipping (use --overwrite to retrain)", model)
        return 0
    train_bpe(
        texts_from_manifests(args.cuts),
        args.output_dir,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        character_coverage=args.character_coverage,
    )
    _write_run_info(args.output_dir, args, "bpe")
    print(model)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from speechkd.data.summary import format_table, summarize_manifests, write_summary_tsv

    output = args.output or args.manifest_dir / "summary.tsv"
    rows = summarize_manifests(args.manifest_dir, args.parts)
    write_summary_tsv(rows, output)
    from speechkd.utils.runinfo import write_run_info

    # Only the command is recorded: config.yaml in this directory belongs to the producing stage.
    write_run_info(Path(output).parent, None, name="summary")
    print(format_table(rows))
    log.info("Wrote %s", output)
    return 0


def cmd_shuffle_cuts(args: argparse.Namespace) -> int:
    from speechkd.data.cutsets import shuffle_manifests
    from speechkd.data.features import cuts_path

    output = cuts_path(args.cuts_dir, args.name)
    n = shuffle_manifests([cuts_path(args.cuts_dir, p) for p in args.parts], output, seed=args.seed,
                          lines_per_bucket=args.lines_per_bucket, max_cuts=args.max_cuts, skip_cuts=args.skip_cuts)
    subset = ""
    if args.skip_cuts:
        subset = f", {n} kept after the first {args.skip_cuts}"
    elif args.max_cuts:
        subset = f", the first {n} kept"
    print(f"{output}: {n} cuts of {' '.join(args.parts)} in random order (seed {args.seed}{subset})")
    return 0


# --------------------------------------------------------------------------------------------------
# registration


def _add_parts(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--parts", nargs="+", default=None, metavar="PART", help=f"{what} (default: all found)")


def _add_num_jobs(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--num-jobs", type=int, default=1, metavar="N", help=f"{what} (default: %(default)s)")


def add_download_command(reg: Any) -> None:
    """Register ``data download-librispeech``.

    """
    p = reg.command(
        "data",
        "download-librispeech",
        help="download and unpack LibriSpeech from openslr.org (needs internet; lhotse's downloader)",
        description=(
            "Download and unpack LibriSpeech parts into TARGET_DIR/LibriSpeech (resumable: unpacked parts\n"
            "are skipped). Needs internet access; all other data commands work offline.\n"
            "Example: speechkd data download-librispeech --target-dir download --parts mini_librispeech"
        ),
        func=cmd_download,
    )
    p.add_argument(
        "--target-dir", type=Path, default=Path(DEFAULT_DOWNLOAD_DIR), help="where to download (default: %(default)s)"
    )
    p.add_argument(
        "--parts",
        nargs="+",
        required=True,
        metavar="PART",
        help="split names (dev-clean, train-clean-100, ...) or one of 'librispeech' (all 960 h + dev/test) "
        "and 'mini_librispeech' (train-clean-5, dev-clean-2)",
    )
    p.add_argument("--force-download", action="store_true", help="download archives even if present")
    p.add_argument("--base-url", default="http://www.openslr.org/resources", help="mirror (default: %(default)s)")


def register(reg: Any) -> None:
    add_download_command(reg)
    p = reg.command(
        "data",
        "prepare-librispeech",
        help="LibriSpeech-layout corpus -> lhotse recording/supervision manifests",
        description=(
            "Write OUTPUT_DIR/librispeech_{recordings,supervisions}_<part>.jsonl.gz for each part of a\n"
            "LibriSpeech-layout corpus (<part>/<spk>/<chapter>/<utt>.flac + <spk>-<chapter>.trans.txt).\n"
            "Bad inputs (transcript without audio, audio without transcript, corrupt audio, empty\n"
            "transcript, wrong sampling rate, a transcript line that is not UTF-8) are skipped, logged and\n"
            "listed in prepare-report-<part>.tsv; a part with no usable utterance is an error. Lower-case\n"
            "transcripts are upper-cased (LibriSpeech style) and counted. Parts already prepared are skipped."
        ),
        func=cmd_prepare,
    )
    p.add_argument("--corpus-dir", type=Path, required=True, help="directory holding the part directories")
    p.add_argument(
        "--output-dir", type=Path, default=Path(DEFAULT_MANIFEST_DIR), help="manifest directory (default: %(default)s)"
    )
    _add_parts(p, "part directories to prepare")
    _add_num_jobs(p, "threads reading audio headers")
    p.add_argument(
        "--sampling-rate",
        type=int,
        default=16000,
        help="required sampling rate; other files are skipped (default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="rebuild parts whose manifests exist")

    p = reg.command(
        "data",
        "fbank",
        help="compute and store log-mel fbank features (lhotse Fbank, lilcom) -> cuts manifests",
        description=(
            "Write OUTPUT_DIR/librispeech_cuts_<part>.jsonl.gz with features stored under\n"
            "OUTPUT_DIR/librispeech_feats_<part>/. Cut ids are the utterance ids; speed-perturbed copies\n"
            "are <id>_sp<factor>. Parts whose cuts manifest exists are skipped. No torchaudio needed."
        ),
        func=cmd_fbank,
    )
    p.add_argument(
        "--manifest-dir", type=Path, default=Path(DEFAULT_MANIFEST_DIR), help="input manifests (default: %(default)s)"
    )
    p.add_argument(
        "--output-dir", type=Path, default=Path(DEFAULT_FBANK_DIR), help="cuts and features (default: %(default)s)"
    )
    _add_parts(p, "parts to process")
    _add_num_jobs(p, "worker processes")
    p.add_argument(
        "--speed-perturb-parts",
        nargs="*",
        default=[],
        metavar="PART",
        help="parts that also get speed-perturbed copies",
    )
    p.add_argument(
        "--speed-factors",
        nargs="+",
        type=float,
        default=list(DEFAULT_SPEED_FACTORS),
        metavar="F",
        help="speed perturbation factors (default: %(default)s)",
    )
    p.add_argument("--num-mel-bins", type=int, default=80, help="feature dimension (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="recompute parts whose cuts manifest exists")

    p = reg.command(
        "data",
        "narrowband",
        help="band-limited (telephone-band) copies of parts, with fbank: <part>-nb<rate>",
        description=(
            "For each part, read CUTS_DIR/librispeech_cuts_<part>.jsonl.gz (cuts with recordings), resample\n"
            "every cut's audio to --rate and back (lhotse's resampler: the band above rate/2 is removed, as\n"
            "in 8 kHz telephone audio), and write OUTPUT_DIR/librispeech_cuts_<part>-nb<rate>.jsonl.gz with\n"
            "fbank features. Texts and custom fields are kept; cut ids get the suffix _rs<rate>. A copy is\n"
            "skipped while its <copy>.source.yaml matches the input manifest (sha256) and settings, and made\n"
            "again when the input changed. Train on both, e.g. --train-parts train train-nb8000.\n"
            "Example: speechkd data narrowband --cuts-dir data/fbank --parts train --rate 8000"
        ),
        func=cmd_narrowband,
    )
    p.add_argument("--cuts-dir", type=Path, default=Path(DEFAULT_FBANK_DIR), help="(default: %(default)s)")
    p.add_argument("--parts", nargs="+", required=True, metavar="PART", help="parts to copy")
    p.add_argument("--rate", type=int, default=8000, help="intermediate sampling rate in Hz (default: %(default)s)")
    p.add_argument("--output-dir", type=Path, default=None, help="where the copies go (default: --cuts-dir)")
    _add_num_jobs(p, "worker processes")
    p.add_argument("--num-mel-bins", type=int, default=80, help="feature dimension (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="recompute copies even when their input is unchanged")

    p = reg.command(
        "data",
        "bpe",
        help="train a sentencepiece tokenizer (ids 0=<blk>, 1=<sos/eos>, 2=<unk>) on manifest texts",
        description=(
            "Train OUTPUT_DIR/bpe.model (+ tokens.txt, metadata.yaml) on the supervision texts of cuts or\n"
            "supervisions manifests (speed-perturbed copies are left out). Skipped if bpe.model exists.\n"
            "Example: speechkd data bpe --cuts data/fbank/librispeech_cuts_train-clean-100.jsonl.gz \\\n"
            "           --output-dir data/lang_bpe_500 --vocab-size 500"
        ),
        func=cmd_bpe,
    )
    p.add_argument(
        "--cuts",
        "--manifests",
        dest="cuts",
        nargs="+",
        type=Path,
        required=True,
        metavar="MANIFEST",
        help="lhotse cuts or supervisions manifests whose texts train the model",
    )
    p.add_argument("--output-dir", type=Path, required=True, help="e.g. data/lang_bpe_500")
    p.add_argument("--vocab-size", type=int, required=True, help="number of tokens including the 3 special ones")
    p.add_argument(
        "--model-type", choices=MODEL_TYPES, default="unigram", help="sentencepiece model type (default: %(default)s)"
    )
    p.add_argument("--character-coverage", type=float, default=1.0, help="(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="retrain even if bpe.model exists")

    p = reg.command(
        "data",
        "shuffle-cuts",
        help="several cuts manifests -> one manifest in random order (the training set, icefall's train-all-shuf)",
        description=(
            "Write CUTS_DIR/librispeech_cuts_<NAME>.jsonl.gz holding every cut of the parts (speed-perturbed\n"
            "copies included) in a uniformly random order, so that training batches mix the parts from the\n"
            "first step. Memory is bounded (--lines-per-bucket cuts at a time), whatever the corpus size.\n"
            "Example: speechkd data shuffle-cuts --cuts-dir data/fbank \\\n"
            "           --parts train-clean-100 train-clean-360 train-other-500 --name train-all-shuf"
        ),
        func=cmd_shuffle_cuts,
    )
    p.add_argument("--cuts-dir", type=Path, default=Path(DEFAULT_FBANK_DIR), help="(default: %(default)s)")
    p.add_argument("--parts", nargs="+", required=True, metavar="PART", help="parts to shuffle together")
    p.add_argument("--name", default="train-all-shuf", help="name of the shuffled part (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--lines-per-bucket", type=int, default=50_000, help="cuts in memory at once (default: %(default)s)")
    p.add_argument("--max-cuts", type=int, default=None,
                   help="keep only the first N cuts of the random order: a uniform random subset (default: all)")
    p.add_argument("--skip-cuts", type=int, default=0,
                   help="leave out the first N cuts of the random order: with the same --seed, a slice disjoint from "
                        "an earlier --max-cuts N subset (a pool labelled slice by slice; default: %(default)s)")

    p = reg.command(
        "data",
        "summary",
        help="hours / utterances / speakers per part, as a TSV and a printed table",
        func=cmd_summary,
    )
    p.add_argument("--manifest-dir", type=Path, default=Path(DEFAULT_MANIFEST_DIR), help="(default: %(default)s)")
    _add_parts(p, "parts to summarize")
    p.add_argument("--output", type=Path, default=None, help="TSV to write (default: MANIFEST_DIR/summary.tsv)")
