"""``speechkd pseudo ...``: Whisper pseudo-labelling and label filtering (stdlib-only at import time).

Each command has its own ``_register_<name>(reg)`` function listed in :data:`COMMANDS`; adding a
command is one more such function and one more entry there.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

GROUP = "pseudo"


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as a YAML-friendly dict (without the dispatch function)."""
    skip = ("func", "group", "command")
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, metavar="YAML", help="config file (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set max_wer=5 (null disables a rule); repeatable")


# --------------------------------------------------------------------------------------------------
# filter-labels


def _register_filter_labels(reg: Any) -> None:
    p = reg.command(
        GROUP,
        "filter-labels",
        help="drop hallucinated pseudo-labels; write the kept cuts, filter-report.tsv and dropped.jsonl",
        description=(
            "Apply the pseudo-label filters (empty, no_speech, script, ngram_loop, compression_ratio,\n"
            "chars_per_sec, avg_logprob, wer; see speechkd.targets.label_filters) to every cut and write the\n"
            "cuts that pass to --output-cuts. --report-dir receives filter-report.tsv (per rule: applicable,\n"
            "failed, dropped, kept, examples), dropped.jsonl (every dropped cut with its rules) and the run info.\n\n"
            "  speechkd pseudo filter-labels --cuts data/pseudo/cuts_train.jsonl.gz \\\n"
            "      --output-cuts data/pseudo/cuts_train_filtered.jsonl.gz --report-dir data/pseudo/filter \\\n"
            "      --set max_wer=5 --set min_avg_logprob=null"
        ),
        func=cmd_filter_labels,
    )
    p.add_argument("--cuts", type=Path, required=True, help="input CutSet manifest with pseudo-labels")
    p.add_argument("--output-cuts", type=Path, required=True, help="output CutSet manifest of the kept cuts")
    p.add_argument("--report-dir", type=Path, required=True, help="where the report and run info go")
    p.add_argument("--text-field", default="text",
                   help="'text' (the supervision text, default) or a custom field holding the pseudo-label")
    p.add_argument("--reference-field", default="reference",
                   help="custom field holding the ground-truth transcript, when there is one (default: reference)")
    _add_config_flags(p)


def _open_cuts(path: Path) -> Any:
    """A lazy CutSet from ``path``; SpeechkdError when it is missing, not a CutSet, or empty."""
    from lhotse import CutSet
    from lhotse.serialization import load_manifest_lazy

    from speechkd.errors import SpeechkdError

    if not path.is_file():
        raise SpeechkdError(f"cuts manifest not found: {path}")
    try:
        cuts = load_manifest_lazy(path)
    except Exception as e:  # noqa: BLE001 - lhotse raises many kinds on a malformed manifest
        raise SpeechkdError(f"cannot read cuts manifest {path}: {e}") from e
    if not isinstance(cuts, CutSet):
        raise SpeechkdError(f"{path} is not a CutSet manifest (got {type(cuts).__name__})")
    if next(iter(cuts), None) is None:
        raise SpeechkdError(f"cuts manifest {path} holds no cuts")
    return cuts


def cmd_filter_labels(args: argparse.Namespace) -> int:
    from lhotse import CutSet

    from speechkd.config import load_config, to_dict
    from speechkd.errors import SpeechkdError
    from speechkd.targets.label_filters import FilterConfig, FilterReport, iter_filtered
    from speechkd.utils.runinfo import write_run_info

    cfg = load_config(FilterConfig, args.config, args.overrides)
    if args.output_cuts.resolve() == args.cuts.resolve():
        raise SpeechkdError(f"--output-cuts must differ from --cuts ({args.cuts})")
    cuts = _open_cuts(args.cuts)
    report = FilterReport(cfg)
    args.output_cuts.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output_cuts.with_name(f".tmp-{os.getpid()}-{args.output_cuts.name}")  # same suffixes: same format
    try:
        with CutSet.open_writer(tmp) as writer:
            for cut in iter_filtered(cuts, cfg, report, args.text_field, args.reference_field):
                writer.write(cut)
        tmp.replace(args.output_cuts)
    finally:
        tmp.unlink(missing_ok=True)
    report.write(args.report_dir)
    write_run_info(args.report_dir, {"filter": to_dict(cfg), "options": _options(args)}, name="filter-labels")
    print(f"kept {report.num_kept} of {report.num_cuts} cuts ({report.num_dropped} dropped) -> {args.output_cuts}; "
          f"report: {args.report_dir}")
    return 0


# --------------------------------------------------------------------------------------------------
# registration

COMMANDS: tuple[Callable[[Any], None], ...] = (_register_filter_labels,)


def register(reg: Any) -> None:
    for add_command in COMMANDS:
        add_command(reg)
