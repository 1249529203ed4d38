"""Decoding speed of several ASR experiments measured in one run (same process, data and threads).

``measure_rtf(systems, cuts, ...)`` loads each experiment's *decoding* model (training-only heads such as
LM-KD attention decoders dropped, :func:`speechkd.decoding.asr_decode.load_model_for_decoding`), loads the
test batches once into memory (feature I/O is not timed), then for ``repeats`` rounds times every
(system, method) on all batches in turn (interleaved, so a load change on the machine hits every system
alike). Reported per (system, method): parameters of the decoding model, audio seconds, the median and
minimum seconds over rounds, and RTF = median seconds / audio seconds.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


@dataclass
class RtfRow:
    system: str
    method: str
    num_params: int
    audio_seconds: float
    median_seconds: float
    min_seconds: float

    @property
    def rtf(self) -> float:
        return self.median_seconds / max(self.audio_seconds, 1e-9)


def measure_rtf(systems: Sequence[tuple[str, PathLike]], cuts: Any, methods: Sequence[str] = ("ctc-greedy",),
                repeats: int = 5, beam_size: int = 8, fusion: Optional[Any] = None,
                max_duration: float = 200.0) -> list[RtfRow]:
    """``systems``: (name, exp_dir) pairs; ``cuts``: the test CutSet. Returns one row per (system, method)."""
    import torch

    from speechkd.data.datamodule import AsrDataModule
    from speechkd.decoding.asr_decode import decode_batch, load_model_for_decoding

    models = []
    for name, exp in systems:
        model, cfg, _ = load_model_for_decoding(exp, None)
        models.append((name, model, cfg))
    data_cfg = models[0][2].data
    data_cfg.max_duration = max_duration
    dm = AsrDataModule(data_cfg, tokenizer=None)
    batches = list(dm.eval_dataloader(cuts))
    audio = sum(dm.batch_duration(b) for b in batches)
    times: dict[tuple[str, str], list[float]] = {(n, m): [] for n, _, _ in models for m in methods}
    with torch.inference_mode():
        for r in range(repeats + 1):  # round 0 warms up (not counted)
            for name, model, _ in models:
                for method in methods:
                    t0 = time.perf_counter()
                    for b in batches:
                        decode_batch(model, b, method, beam_size, -1, -1, True, fusion if method == "ctc-beam" else None)
                    if r > 0:
                        times[(name, method)].append(time.perf_counter() - t0)
    rows = []
    for name, model, _ in models:
        for method in methods:
            t = times[(name, method)]
            rows.append(RtfRow(name, method, model.num_params(), audio, statistics.median(t), min(t)))
    return rows


def format_rtf_table(rows: Sequence[RtfRow], threads: int) -> str:
    """Markdown table of ``rows`` (one run)."""
    out = [f"Decoding speed, one run, {threads} torch thread(s), median of rounds:", "",
           "| system | method | decoding params | audio s | median s | min s | RTF |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.system} | {r.method} | {r.num_params} | {r.audio_seconds:.1f} | {r.median_seconds:.3f} | "
                   f"{r.min_seconds:.3f} | {r.rtf:.4f} |")
    return "\n".join(out) + "\n"
