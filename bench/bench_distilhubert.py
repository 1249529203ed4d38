#!/usr/bin/env python3
"""Forward-time benchmark: HuBERT-base teacher vs DistilHuBERT student vs transformers' HubertModel.

All models have random weights built from configs (no download). One run measures, on the same batch
(default 4 x 8 s of 16 kHz noise, all full length), on CPU and on CUDA when present:

* ``teacher``: ``HubertModel(HubertConfig())`` (HuBERT-base: CNN + 12 layers),
* ``student``: ``DistilHubertStudent`` (default config, training form: backbone + prediction heads),
* ``student_backbone``: the student's backbone alone (what ``export_student`` writes),
* ``reference``: a fresh ``transformers.HubertModel`` with the student's 2-layer config.

Every model gets the same attention mask. Models are timed round-robin (one forward each per round, order
rotated every round) under ``torch.inference_mode`` after warm-up rounds (on CPU with a short batch, to
save time). The minimum over rounds (least disturbed by other load on a shared machine) and the median are
printed; the teacher/student and student/reference ratios and the verdict use the minimum.

    .venv/bin/python bench/bench_distilhubert.py [--batch 4] [--seconds 8] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.models.distilhubert import DistilHubertConfig, DistilHubertStudent, count_parameters  # noqa: E402

SAMPLE_RATE = 16000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per utterance")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (min and median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds")
    p.add_argument("--warmup-seconds", type=float, default=1.0,
                   help="utterance length of the CPU warm-up batch (CUDA warms up on the full batch)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", action="append", default=None,
                   help="cpu and/or cuda (repeatable); default: cpu, plus cuda when available")
    p.add_argument("--slack", type=float, default=0.05,
                   help="student counts as 'no slower' than the reference within this relative margin")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return p.parse_args()


def build_models() -> dict[str, torch.nn.Module]:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    teacher = HubertModel(HubertConfig()).eval()
    student = DistilHubertStudent.from_teacher(teacher, DistilHubertConfig()).eval()
    reference = HubertModel(student.backbone.config).eval()
    return {"teacher": teacher, "student": student, "student_backbone": student.backbone, "reference": reference}


def make_callers(
    models: dict[str, torch.nn.Module], wavs: torch.Tensor, lens: torch.Tensor
) -> dict[str, Callable[[], object]]:
    mask = (torch.arange(wavs.shape[1], device=wavs.device)[None, :] < lens[:, None]).long()
    callers: dict[str, Callable[[], object]] = {}
    for name, model in models.items():
        if name == "student":
            callers[name] = lambda m=model: m(wavs, lens)
        else:
            callers[name] = lambda m=model: m(wavs, attention_mask=mask, output_hidden_states=True)
    return callers


def make_batch(batch: int, seconds: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, S)`` noise and ``(N,)`` full lengths."""
    n_samples = int(seconds * SAMPLE_RATE)
    torch.manual_seed(1)
    return torch.randn(batch, n_samples, device=device), torch.full((batch,), n_samples, device=device)


def time_round_robin(
    callers: dict[str, Callable[[], object]], device: torch.device, rounds: int
) -> dict[str, list[float]]:
    """Seconds per forward of each caller, ``rounds`` times; each round runs every caller once, the
    order rotated by one per round so no model always runs first (or right after the same one)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    names = list(callers)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                sync()
                start = time.perf_counter()
                callers[name]()
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    models = build_models()
    params = {name: count_parameters(m) for name, m in models.items()}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} x {args.seconds} s, "
          f"rounds {args.rounds} (+{args.warmup} warm-up), seconds per forward")
    print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in params.items()))
    results: dict[str, dict[str, object]] = {}
    for dev_name in devices:
        device = torch.device(dev_name)
        for m in models.values():
            m.to(device)
        warm_secs = args.seconds if device.type == "cuda" else min(args.seconds, args.warmup_seconds)
        if args.warmup > 0:
            time_round_robin(make_callers(models, *make_batch(args.batch, warm_secs, device)), device, args.warmup)
        callers = make_callers(models, *make_batch(args.batch, args.seconds, device))
        times = time_round_robin(callers, device, args.rounds)
        secs = {name: min(ts) for name, ts in times.items()}
        medians = {name: statistics.median(ts) for name, ts in times.items()}
        if device.type == "cuda":
            label = torch.cuda.get_device_name(device)
        else:
            label = f"cpu ({torch.get_num_threads()} threads)"
        ratio_ts = secs["teacher"] / secs["student"]
        ratio_sr = secs["student"] / secs["reference"]
        ratio_br = secs["student_backbone"] / secs["reference"]
        print(f"[{label}] min:    " + ", ".join(f"{k} {v:.4f} s" for k, v in secs.items()))
        print(f"[{label}] median: " + ", ".join(f"{k} {v:.4f} s" for k, v in medians.items()))
        print(f"[{label}] (ratios of min times) teacher/student {ratio_ts:.2f}x, teacher/student_backbone "
              f"{secs['teacher'] / secs['student_backbone']:.2f}x, student/reference {ratio_sr:.3f}, "
              f"student_backbone/reference {ratio_br:.3f} -> student "
              f"{'no slower than' if ratio_br <= 1 + args.slack else 'SLOWER than'} the reference "
              f"(slack {args.slack:.0%})")
        results[dev_name] = {"min": secs, "median": medians, "all": times, "teacher_over_student": ratio_ts,
                             "student_over_reference": ratio_sr, "student_backbone_over_reference": ratio_br}
    if args.json:
        report = {"params": params, "seconds": results, "args": vars(args)}
        args.json.write_text(json.dumps(report, default=str, indent=2))


if __name__ == "__main__":
    main()
