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
    register_bootstrap(reg)


def register_table(reg) -> None:
    p = reg.command(
        "score",
        "table",
        help="print (and optionally write) a markdown WER table from wer-summary.tsv files; mean ± std over seeds",
        description=(
            "A markdown WER table from <exp>/decode/wer-summary.tsv files.\n\n"
            "Summaries that share a --title are seeds of one system: the table then gives mean ± sample std\n"
            "over the seeds (also with --aggregate). A run whose training ended on the blank plateau\n"
            "(<exp>/plateau.yaml) or whose decoding is mostly deletions is never tabulated as a result.\n\n"
            "  speechkd score table --summary exp/asr_ctc_seed{0,1,2}/decode/wer-summary.tsv --title ctc ctc ctc\n"
            "  speechkd score table --summary a/decode/wer-summary.tsv b/decode/wer-summary.tsv --title base kd \\\n"
            "      --baseline base --aggregate"
        ),
        func=run_table,
    )
    p.add_argument("--summary", nargs="+", type=Path, required=True, metavar="TSV", help="wer-summary.tsv file(s)")
    p.add_argument("--sets", nargs="*", default=None, help="column order of test sets (default: as found)")
    p.add_argument("--title", nargs="*", default=None,
                   help="system name per summary file (e.g. ctc transducer); repeated names are seeds of one system")
    p.add_argument("--aggregate", action="store_true",
                   help="seed table (mean ± std, seeds column) even when no title repeats")
    p.add_argument("--baseline", default=None,
                   help="system (a --title) the others are compared with: † marks differences beyond the seed spread")
    p.add_argument("--output", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--output-tsv", type=Path, default=None,
                   help="with a seed table: also write n, mean, std and the per-seed values to this TSV")


def run_table(args: argparse.Namespace) -> int:
    from speechkd.decoding.scoring import summary_markdown
    from speechkd.decoding.seed_table import load_run, seed_table, seed_tsv
    from speechkd.errors import SpeechkdError

    if args.title and len(args.title) != len(args.summary):
        raise SpeechkdError(f"--title needs one name per --summary file ({len(args.summary)})")
    runs = [load_run(path) for path in args.summary]
    titles = args.title or [str(path.parent.parent) for path in args.summary]
    if args.aggregate or args.baseline or len(set(titles)) < len(titles):
        systems: dict[str, list] = {}
        for title, run in zip(titles, runs):
            systems.setdefault(title, []).append(run)
        table = seed_table(list(systems.items()), args.sets, args.baseline)
        if args.output_tsv:
            sets = args.sets or list(dict.fromkeys(r["test_set"] for run in runs for r in run.rows))
            args.output_tsv.parent.mkdir(parents=True, exist_ok=True)
            args.output_tsv.write_text(seed_tsv(list(systems.items()), sets), encoding="utf-8")
    else:
        rows, notes = [], []
        for i, run in enumerate(runs):
            for r in run.rows:
                reason = run.flag(r["tag"], r["test_set"])
                if reason:
                    notes.append(f"- {run.name} {r['tag'] or '-'} {r['test_set']}: {reason}")
                    r = {**r, "WER": "plateau"}
                if args.title:
                    r = {**r, "tag": f"{args.title[i]} {r['tag']}".strip()}
                rows.append(r)
        table = summary_markdown(rows, args.sets)
        if notes:
            table += "\nNot results (see speechkd/training/plateau.py):\n" + "\n".join(notes) + "\n"
    _emit(table, args.output)
    return 0


def register_bootstrap(reg) -> None:
    p = reg.command(
        "score",
        "bootstrap",
        help="paired bootstrap over test utterances of the WER difference of two systems (seeds averaged)",
        description=(
            "Paired bootstrap (Bisani and Ney 2004; Kaldi's compute-wer-bootci) of WER(b) - WER(a) over the\n"
            "test utterances, each system's errors averaged over its seeds (one decode dir per seed, with\n"
            "ref-/hyp-<set>-<tag>.trn). Prints the interval, P(b better) and how much the choice of\n"
            "utterances alone moves one run's WER; read it beside the seed table (score table).\n\n"
            "  speechkd score bootstrap --a exp/asr_ctc_seed{0,1,2}/decode --b exp/kd_seed{0,1}/decode \\\n"
            "      --names ctc kd --sets dev test-clean --tag ctc-greedy --output exp/kd/bootstrap.md"
        ),
        func=run_bootstrap,
    )
    p.add_argument("--a", nargs="+", type=Path, required=True, metavar="DIR", help="decode dirs of system a (seeds)")
    p.add_argument("--b", nargs="+", type=Path, required=True, metavar="DIR", help="decode dirs of system b (seeds)")
    p.add_argument("--names", nargs=2, default=("a", "b"), metavar=("A", "B"), help="system names in the table")
    p.add_argument("--sets", nargs="+", required=True, help="test sets, e.g. dev test-clean")
    p.add_argument("--tag", default="", help="decoding tag of the trn files, e.g. ctc-greedy")
    p.add_argument("--samples", type=int, default=10_000, help="bootstrap samples")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    p.add_argument("--output", type=Path, default=None, help="also write the table to this file")


def run_bootstrap(args: argparse.Namespace) -> int:
    from speechkd.decoding.bootstrap import NoRunLeft, bootstrap_markdown, load_system, paired_bootstrap

    name_a, name_b = args.names
    results, not_compared = [], []
    for test_set in args.sets:
        try:
            a = load_system(name_a, args.a, test_set, args.tag)
            b = load_system(name_b, args.b, test_set, args.tag)
        except NoRunLeft as e:  # every seed on the plateau: named under the table, not a failed recipe stage
            not_compared.append(str(e))
            continue
        results.append((paired_bootstrap(a, b, args.samples, args.level, args.seed), a, b))
    table = bootstrap_markdown(name_a, name_b, results, args.tag, not_compared)
    _emit(table, args.output)
    return 0


def _emit(table: str, output: Optional[Path]) -> None:
    """Print a table, and write it to ``output`` when given."""
    print(table, end="")
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table, encoding="utf-8")


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
