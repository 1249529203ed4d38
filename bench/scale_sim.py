"""Scale simulation: every O(N) manifest step of a LibriSpeech 960 h run, on generated manifests, with peak RSS
and wall time per step, at several fractions of the corpus size.

The manifests are written lazily, line by line, without audio (:mod:`speechkd.testing.fake_manifests`):
281,241 training cuts over train-clean-100/360/500 at 100%, each part followed by its 0.9/1.1 speed-perturbed
copies as the fbank stage writes them (843,723 lines), plus a pseudo-labelled copy of the original cuts.
Each step runs in a fresh Python process (so its peak RSS is its own) and reads the manifests lazily:

- ``shuffle``: ``speechkd data shuffle-cuts`` (the three parts -> train-all-shuf, bounded buckets);
- ``sampler_epoch``: one full epoch of the training sampler (DynamicBucketingSampler, max_duration 600,
  30 buckets, buffer 60,000 as in egs/librispeech/conf, duration/text filters, ResumableSampler), with the mean
  and largest size of the bucket lhotse copies and shuffles for each batch;
- ``cmvn_sample``: the global-CMVN sample (2,000 cuts drawn uniformly, one lazy pass);
- ``drop_sp``: the audio methods' view of the training set (speed-perturbed copies filtered out lazily);
- ``label_filter``: pseudo-label filters (``speechkd pseudo filter-labels``' loop: iter_filtered + writer);
- ``merge_chunks``: target-manifest merging (the chunk manifests of stored-target extraction concatenated);
- ``score_labels``: scoring of the pseudo-labels against the references (WER files).

    .venv/bin/python bench/scale_sim.py --fractions 0.1 0.5 1.0 --work-dir /tmp/scale_sim
    .venv/bin/python bench/scale_sim.py --fractions 0.01 --steps shuffle cmvn_sample     # quick look

Prints a markdown table (step, fraction, cuts, wall and CPU seconds, peak RSS MB) and appends JSON lines to
--output. CPU seconds (the step process's user + system time) are the figure to compare on a shared machine.
The baseline row ``imports`` is a process that only imports what the steps import: RSS above it is the
step's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STEPS = ("imports", "shuffle", "sampler_epoch", "cmvn_sample", "drop_sp", "label_filter", "merge_chunks", "score_labels")
SPEED_FACTORS = (0.9, 1.1)
CHUNK_LINES = 2000


def _paths(work: Path) -> dict:
    return {"parts": [work / f"librispeech_cuts_{p}.jsonl.gz" for p in _parts()],
            "shuf": work / "librispeech_cuts_train-all-shuf.jsonl.gz",
            "labels": work / "labels.jsonl.gz", "chunks": work / "chunks"}


def _parts() -> list[str]:
    from speechkd.testing.fake_manifests import LIBRISPEECH_TRAIN_CUTS

    return list(LIBRISPEECH_TRAIN_CUTS)


def generate(work: Path, fraction: float) -> int:
    """The manifests of ``fraction`` of LibriSpeech in ``work``; returns the number of original cuts."""
    from speechkd.testing.fake_manifests import LIBRISPEECH_TRAIN_CUTS, write_fake_cuts_manifest

    work.mkdir(parents=True, exist_ok=True)
    total, offset = 0, 0
    labels = []
    for i, (part, n) in enumerate(LIBRISPEECH_TRAIN_CUTS.items()):
        n = max(1, round(n * fraction))
        write_fake_cuts_manifest(work / f"librispeech_cuts_{part}.jsonl.gz", part, n, seed=i,
                                 speed_factors=SPEED_FACTORS, speaker_offset=offset)
        write_fake_cuts_manifest(work / f"labels_{part}.jsonl.gz", part, n, seed=i, speaker_offset=offset,
                                 pseudo_labels=True)
        labels.append(work / f"labels_{part}.jsonl.gz")
        offset += 10_000
        total += n
    _concat(labels, _paths(work)["labels"])
    for p in labels:
        p.unlink()
    return total


def _concat(inputs: list[Path], out: Path) -> None:
    from speechkd.targets.hidden_states import _concat_gz_lines

    _concat_gz_lines(inputs, out)


def _split_into_chunks(src: Path, chunk_dir: Path) -> list[Path]:
    import gzip

    shutil.rmtree(chunk_dir, ignore_errors=True)
    chunk_dir.mkdir(parents=True)
    paths, out, n = [], None, 0
    with gzip.open(src, "rt") as f:
        for line in f:
            if n % CHUNK_LINES == 0:
                if out:
                    out.close()
                paths.append(chunk_dir / f"train.{len(paths):05d}.jsonl.gz")
                out = gzip.open(paths[-1], "wt", compresslevel=1)
            out.write(line)
            n += 1
    if out:
        out.close()
    return paths


# ------------------------------------------------------------------------------------------ the steps
def step_imports(work: Path) -> int:
    import lhotse  # noqa: F401
    import lhotse.dataset  # noqa: F401

    import speechkd.data.cutsets  # noqa: F401
    import speechkd.data.datamodule  # noqa: F401
    import speechkd.targets.label_filters  # noqa: F401
    import speechkd.decoding.scoring  # noqa: F401
    import speechkd.targets.hidden_states  # noqa: F401
    import speechkd.targets.pseudo_label  # noqa: F401
    import speechkd.training.asr_experiment  # noqa: F401

    return 0


def step_shuffle(work: Path) -> int:
    from speechkd.data.cutsets import shuffle_manifests

    p = _paths(work)
    return shuffle_manifests(p["parts"], p["shuf"], seed=0)


def step_sampler_epoch(work: Path) -> dict:
    """One epoch; also the size of the bucket lhotse copies and shuffles for each batch (its per-batch cost)."""
    import lhotse.dataset.sampling.dynamic_bucketing as dynamic_bucketing
    from lhotse.dataset import DynamicBucketingSampler

    from speechkd.data.datamodule import CutFilter, ResumableSampler
    from speechkd.training.asr_experiment import load_cuts

    sampler = DynamicBucketingSampler(load_cuts(work, ["train-all-shuf"]), max_duration=600.0, num_buckets=30,
                                      buffer_size=60_000, shuffle=True, drop_last=True, seed=42, world_size=1, rank=0)
    cut_filter = CutFilter(1.0, 20.0, True)
    sampler.filter(cut_filter)
    rs = ResumableSampler(sampler, cut_filter)
    rs.set_epoch(1)
    sizes: list[int] = []
    pick = dynamic_bucketing.pick_at_random

    def recorded_pick(bucket, rng, out_indexes_used):
        sizes.append(bucket.qsize())
        return pick(bucket, rng=rng, out_indexes_used=out_indexes_used)

    dynamic_bucketing.pick_at_random = recorded_pick
    try:
        n = sum(len(cuts) for _, cuts in rs)
    finally:
        dynamic_bucketing.pick_at_random = pick
    return {"count": n, "batches": len(sizes), "mean_bucket_at_draw": round(sum(sizes) / max(len(sizes), 1), 1),
            "max_bucket_at_draw": max(sizes, default=0)}


def step_cmvn_sample(work: Path) -> int:
    from speechkd.data.cutsets import reservoir_sample
    from speechkd.training.asr_experiment import load_cuts

    return len(reservoir_sample(load_cuts(work, ["train-all-shuf"]), 2000, seed=42))


def step_drop_sp(work: Path) -> int:
    from speechkd.training.asr_experiment import load_cuts

    return sum(1 for _ in load_cuts(work, ["train-all-shuf"], speed_perturbed=False))


def step_label_filter(work: Path) -> int:
    from lhotse import CutSet, load_manifest_lazy

    from speechkd.targets.label_filters import FilterConfig, FilterReport, iter_filtered

    cfg = FilterConfig()
    report = FilterReport(cfg)
    n = 0
    with CutSet.open_writer(work / "labels_kept.jsonl.gz") as writer:
        for cut in iter_filtered(load_manifest_lazy(_paths(work)["labels"]), cfg, report):
            writer.write(cut)
            n += 1
    return n


def step_merge_chunks(work: Path) -> int:
    import gzip

    paths = sorted(_paths(work)["chunks"].glob("train.*.jsonl.gz"))
    _concat(paths, work / "merged.jsonl.gz")
    with gzip.open(work / "merged.jsonl.gz", "rt") as f:  # count (and check) the merged lines
        return sum(1 for _ in f)


def step_score_labels(work: Path) -> int:
    from speechkd.targets.pseudo_label import score_labels

    stats = score_labels(_paths(work)["labels"], work / "score", "train", tag="teacher")
    return stats.num_utts


def run_step(name: str, work: Path) -> dict:
    """Run one step in this process; returns its seconds, peak RSS (MB) and count."""
    step_imports(work)  # module imports are not the step's time
    t0, c0 = time.perf_counter(), time.process_time()
    result = globals()[f"step_{name}"](work)  # a count, or a dict with "count" and step-specific figures
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    extra = result if isinstance(result, dict) else {"count": result}
    return {"step": name, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1), **extra}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.5, 1.0])
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/speechkd_scale_sim"))
    p.add_argument("--output", type=Path, default=None, help="append one JSON line per (fraction, step)")
    p.add_argument("--keep", action="store_true", help="keep the generated manifests")
    p.add_argument("--run-step", nargs=2, metavar=("STEP", "WORK_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run_step:  # child process: one step
        print(json.dumps(run_step(args.run_step[0], Path(args.run_step[1]))))
        return 0
    rows = []
    for fraction in args.fractions:
        work = args.work_dir / f"f{fraction:g}"
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        n = generate(work, fraction)
        print(f"# fraction {fraction:g}: {n} cuts (+{len(SPEED_FACTORS)}x perturbed) generated in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        for name in args.steps:
            if name == "merge_chunks":
                src = _paths(work)["shuf"]
                if src.is_file():
                    _split_into_chunks(src, _paths(work)["chunks"])
            res = subprocess.run([sys.executable, __file__, "--run-step", name, str(work)], capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"step {name} failed at fraction {fraction}")
            row = {"fraction": fraction, "cuts": n, **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.output:
                with open(args.output, "a") as f:
                    f.write(json.dumps(row) + "\n")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n| step | fraction | training cuts | wall s | CPU s | peak RSS MB |\n|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (STEPS.index(r["step"]), r["fraction"])):
        print(f"| {r['step']} | {r['fraction']:g} | {r['cuts']} | {r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
