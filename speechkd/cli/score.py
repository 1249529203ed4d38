"""``speechkd score wer``: WER/CER of decoding results (stdlib-only at import time).

Inputs are icefall-style ``recogs-<set>[-<tag>].txt`` files (one test set each) or a pair of
sclite trn files. Outputs (recogs, errs, trn, ``wer-summary.tsv``) are described in
:mod:`speechkd.decoding.scoring`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

RECOGS_PREFIX, RECOGS_SUFFIX = "recogs-", ".txt"
HYP_TRN_PREFIX, TRN_SUFFIX = "hyp-", ".trn"


def register(reg) -> None:
    p = reg.command(
        "score",
        "wer",
        help="score recogs files (or ref/hyp trn files): errs, trn, recogs and wer-summary.tsv",
        description=(
            "Score decoding results and write recogs-/errs-<set>[-<tag>].txt, ref-/hyp-<set>[-<tag>].trn\n"
            "and a row of wer-summary.tsv in --out-dir.\n\n"
            "  speechkd score wer --recogs exp/dec/recogs-test-clean-greedy.txt --tag greedy --out-dir exp/dec\n"
            "  speechkd score wer --ref ref.trn --hyp hyp.trn --test-set test-clean --out-dir exp/dec"
        ),
        func=run_wer,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--recogs", nargs="+", type=Path, metavar="FILE",
                     help="recogs-<set>[-<tag>].txt files, one test set each")
    src.add_argument("--ref", type=Path, metavar="TRN", help="reference trn file (needs --hyp)")
    p.add_argument("--hyp", type=Path, metavar="TRN", help="hypothesis trn file (with --ref)")
    p.add_argument("--out-dir", type=Path, required=True, help="where the result files go")
    p.add_argument("--test-set", default=None,
                   help="test set name (default: from the file name: recogs-<set>[-<tag>].txt / hyp-<set>.trn)")
    p.add_argument("--tag", default="", help="tag of the decoding method, e.g. greedy_search (default: none)")
    p.add_argument("--normalize", action="store_true",
                   help="pass refs and hyps through normalize_librispeech before scoring (default: off)")
    register_table(reg)


def register_table(reg) -> None:
    p = reg.command(
        "score",
        "table",
        help="print (and optionally write) a markdown WER table from wer-summary.tsv files",
        func=run_table,
    )
    p.add_argument("--summary", nargs="+", type=Path, required=True, metavar="TSV", help="wer-summary.tsv file(s)")
    p.add_argument("--sets", nargs="*", default=None, help="column order of test sets (default: as found)")
    p.add_argument("--title", nargs="*", default=None, help="row-name prefix per summary file (e.g. ctc transducer)")
    p.add_argument("--output", type=Path, default=None, help="also write the table to this file")


def run_table(args: argparse.Namespace) -> int:
    from speechkd.decoding.scoring import read_summary, summary_markdown
    from speechkd.errors import SpeechkdError

    if args.title and len(args.title) != len(args.summary):
        raise SpeechkdError(f"--title needs one name per --summary file ({len(args.summary)})")
    rows = []
    for i, path in enumerate(args.summary):
        if not path.is_file():
            raise SpeechkdError(f"WER summary not found: {path}")
        for r in read_summary(path):
            if args.title:
                r = {**r, "tag": f"{args.title[i]} {r['tag']}".strip()}
            rows.append(r)
    table = summary_markdown(rows, args.sets)
    print(table, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table, encoding="utf-8")
    return 0


def infer_test_set(path: Path, prefix: str, suffix: str, tag: str) -> Optional[str]:
    """``recogs-test-clean-greedy.txt`` with tag ``greedy`` -> ``test-clean``; None if the name does not fit."""
    name = path.name
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    stem = name[len(prefix) : len(name) - len(suffix)]
    if tag and stem.endswith(f"-{tag}"):
        stem = stem[: -len(tag) - 1]
    return stem or None


def _inputs(args: argparse.Namespace) -> list[tuple[Path, str, list]]:
    """[(input file, test set, results)] from the command-line arguments."""
    from speechkd.decoding.scoring import pair_trn, read_recogs
    from speechkd.errors import SpeechkdError

    if args.ref is not None:
        if args.hyp is None:
            raise SpeechkdError("--ref needs --hyp")
        test_set = args.test_set or infer_test_set(args.hyp, HYP_TRN_PREFIX, TRN_SUFFIX, args.tag)
        if not test_set:
            raise SpeechkdError(f"cannot tell the test set from {args.hyp.name}: pass --test-set")
        return [(args.hyp, test_set, pair_trn(args.ref, args.hyp))]
    if args.hyp is not None:
        raise SpeechkdError("--hyp goes with --ref, not with --recogs")
    if args.test_set and len(args.recogs) > 1:
        raise SpeechkdError("--test-set works with a single --recogs file")
    out = []
    for path in args.recogs:
        test_set = args.test_set or infer_test_set(path, RECOGS_PREFIX, RECOGS_SUFFIX, args.tag)
        if not test_set:
            raise SpeechkdError(f"cannot tell the test set from {path.name}: pass --test-set")
        out.append((path, test_set, read_recogs(path)))
    return out


def run_wer(args: argparse.Namespace) -> int:
    from speechkd.decoding.scoring import result_suffix, write_results
    from speechkd.errors import SpeechkdError

    for path, test_set, results in _inputs(args):
        target = args.out_dir / f"{RECOGS_PREFIX}{result_suffix(test_set, args.tag)}{RECOGS_SUFFIX}"
        if args.normalize and target.resolve() == path.resolve():
            raise SpeechkdError(
                f"--normalize would overwrite the input {path} with normalised text: choose another --out-dir or --tag"
            )
        stats = write_results(results, args.out_dir, test_set, tag=args.tag, normalize=args.normalize)
        print(f"{test_set}\t{args.tag}\tWER {stats.wer:.2f}\tCER {stats.cer:.2f}\t"
              f"({stats.errors}/{stats.ref_words}, {stats.num_utts} utts)")
    return 0
