#!/usr/bin/env python
"""Benchmark the RNN-T losses: time and peak memory of forward+backward, portable vs k2 kernels.

Not a test. Rows (each fwd+bwd, float32, random inputs):

- ``pruned``: the whole pruned recipe, i.e. ``rnnt_loss_smoothed(return_grad=True)`` on ``(B,T,V)``/
  ``(B,S+1,V)`` projections, ``get_rnnt_prune_ranges``, ``do_rnnt_pruning``, joiner = ``tanh(am + lm)``
  on ``(B,T,s_range,V)``, ``rnnt_loss_pruned``, backward of the sum.
- ``simple``: ``rnnt_loss_simple`` only (the number DESIGN.md quotes).
- ``full``: ``rnnt_loss`` on full ``(B,T,S+1,V)`` logits (skipped above ``--max-full-gb``).

Seconds are the minimum over ``--repeats`` runs after one warm-up (on a shared machine the minimum is
the least disturbed). Backends: ``portable`` always; ``k2`` and ``fast_rnnt`` (k2's kernels) and ``torchaudio`` (full loss only)
when importable. Peak memory is measured from the start of the call: on CUDA with
``torch.cuda.max_memory_allocated``; on CPU by replaying the raw allocation/free records that
``torch.profiler`` keeps with ``profile_memory=True`` (temporaries inside ops included). Ratios are against the k2-kernel row of the same variant
when there is one, else against the portable row, all measured in this run.

    .venv/bin/python bench/bench_rnnt_loss.py                 # CPU (and CUDA when present)
    .venv/bin/python bench/bench_rnnt_loss.py --vocab 500 --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from speechkd.losses import rnnt  # noqa: E402

BLANK = 0
MB = 2**20


@dataclass
class Row:
    device: str
    vocab: int
    variant: str
    backend: str
    seconds: float
    peak_mb: float
    loss: float


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], float], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)  # least disturbed by other load on a shared machine


def _peak_mb(fn: Callable[[], float], device: torch.device) -> float:
    """Peak bytes allocated during ``fn`` above what was allocated before it, in MB."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / MB
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # raw allocator records (+bytes on malloc, -bytes on free), including temporaries inside ops
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(records, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak / MB


class Inputs:
    """Random projections and symbols for one (device, vocab) setting."""

    def __init__(self, args: argparse.Namespace, vocab: int, device: torch.device):
        g = torch.Generator().manual_seed(args.seed)
        B, T, S = args.batch, args.frames, args.symbols
        self.lm = torch.randn(B, S + 1, vocab, generator=g).to(device).requires_grad_(True)
        self.am = torch.randn(B, T, vocab, generator=g).to(device).requires_grad_(True)
        self.symbols = torch.randint(1, vocab, (B, S), generator=g).to(device)
        lens_t = torch.randint(T * 3 // 4, T + 1, (B,), generator=g)
        lens_s = torch.randint(S * 3 // 4, S + 1, (B,), generator=g)
        lens_t[0], lens_s[0] = T, S
        self.boundary = torch.stack([torch.zeros_like(lens_t), torch.zeros_like(lens_t), lens_s, lens_t], 1).to(device)

    def clear(self) -> None:
        self.lm.grad = None
        self.am.grad = None


def _pruned(x: Inputs, backend: str, s_range: int) -> float:
    simple, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        x.lm, x.am, x.symbols, BLANK, 0.1, 0.1, x.boundary, reduction="sum", return_grad=True, backend=backend
    )
    ranges = rnnt.get_rnnt_prune_ranges(px_grad, py_grad, x.boundary, s_range, backend=backend)
    am_p, lm_p = rnnt.do_rnnt_pruning(x.am, x.lm, ranges, backend=backend)
    logits = torch.tanh(am_p + lm_p)
    pruned = rnnt.rnnt_loss_pruned(logits, x.symbols, ranges, BLANK, x.boundary, reduction="sum", backend=backend)
    total = simple + pruned
    total.backward()
    x.clear()
    return float(total.detach())


def _simple(x: Inputs, backend: str) -> float:
    loss = rnnt.rnnt_loss_simple(x.lm, x.am, x.symbols, BLANK, x.boundary, reduction="sum", backend=backend)
    loss.backward()
    x.clear()
    return float(loss.detach())


def _full(x: Inputs, backend: str) -> float:
    logits = x.am.unsqueeze(2) + x.lm.unsqueeze(1)
    if backend == "torchaudio":
        import torchaudio.functional as taf

        loss = taf.rnnt_loss(logits, x.symbols.int(), x.boundary[:, 3].int(), x.boundary[:, 2].int(),
                             blank=BLANK, reduction="sum")
    else:
        loss = rnnt.rnnt_loss(logits, x.symbols, BLANK, x.boundary, reduction="sum", backend=backend)
    loss.backward()
    x.clear()
    return float(loss.detach())


def _backends() -> List[str]:
    found = [name for name in ("k2", "fast_rnnt") if importlib.util.find_spec(name) is not None]
    return ["portable"] + found


def run(args: argparse.Namespace) -> List[Row]:
    rows: List[Row] = []
    devices = [torch.device(d) for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    for device in devices:
        for vocab in args.vocab:
            x = Inputs(args, vocab, device)
            full_gb = 4 * args.batch * args.frames * (args.symbols + 1) * vocab / 2**30
            jobs = []
            for backend in _backends():
                jobs.append(("pruned", backend, lambda b=backend: _pruned(x, b, args.s_range)))
                jobs.append(("simple", backend, lambda b=backend: _simple(x, b)))
            full_backends = _backends() + (["torchaudio"] if importlib.util.find_spec("torchaudio") else [])
            if full_gb <= args.max_full_gb:
                jobs += [("full", b, lambda b=b: _full(x, b)) for b in full_backends]
            else:
                print(f"# {device} V={vocab}: full loss skipped, logits alone would take {full_gb:.1f} GB "
                      f"(> --max-full-gb {args.max_full_gb})")
            for variant, backend, fn in jobs:
                seconds = _time(fn, device, args.repeats)
                peak = _peak_mb(fn, device)
                rows.append(Row(str(device), vocab, variant, backend, seconds, peak, fn()))
                print(f"# done {device} V={vocab} {variant} {backend}: {seconds:.4f} s", file=sys.stderr)
    return rows


def print_table(rows: List[Row]) -> None:
    def baseline(row: Row) -> Optional[Row]:
        same = [r for r in rows if (r.device, r.vocab, r.variant) == (row.device, row.vocab, row.variant)]
        for name in ("k2", "fast_rnnt", "portable"):
            for r in same:
                if r.backend == name:
                    return r
        return None

    print(f"{'device':6} {'V':>5} {'variant':7} {'backend':10} {'seconds':>8} {'peak_MB':>8} "
          f"{'t_ratio':>7} {'mem_ratio':>9} {'loss':>12}  (ratios vs k2-kernel row of the same variant)")
    for r in rows:
        base = baseline(r)
        t_ratio = r.seconds / base.seconds if base else float("nan")
        m_ratio = r.peak_mb / base.peak_mb if base and base.peak_mb > 0 else float("nan")
        print(f"{r.device:6} {r.vocab:5d} {r.variant:7} {r.backend:10} {r.seconds:8.4f} {r.peak_mb:8.1f} "
              f"{t_ratio:7.2f} {m_ratio:9.2f} {r.loss:12.2f}")


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--symbols", type=int, default=60)
    p.add_argument("--vocab", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--s-range", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], choices=["cpu", "cuda"])
    p.add_argument("--max-full-gb", type=float, default=4.0, help="skip the full loss when its logits exceed this")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}; CPU: {_cpu_name()}; torch threads: {torch.get_num_threads()}; "
          f"logical CPUs: {__import__('os').cpu_count()}")
    if torch.cuda.is_available():
        print(f"# CUDA: {torch.cuda.get_device_name(0)}")
    print(f"# B={args.batch} T={args.frames} S={args.symbols} s_range={args.s_range} float32, "
          f"min of {args.repeats} after 1 warm-up; backends: {', '.join(_backends())}")
    print_table(run(args))


if __name__ == "__main__":
    main()
