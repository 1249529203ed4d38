"""Training throughput of an ASR preset: audio seconds trained per wall-clock second.

One step = host batch -> device, AsrTask loss (CTC + pruned transducer, as configured by the preset and the
default loss), backward, gradient clipping, AdamW step: what ``Trainer`` does per batch, without data loading.
Inputs are random fbank frames (100 per second of audio) with random token sequences (3 per second).

    .venv/bin/python bench/bench_train_step.py --preset mini --threads 1 --steps 5        # CPU
    .venv/bin/python bench/bench_train_step.py --preset small --device cuda --amp bf16 --batch 32 --seconds 15

``--set KEY=VALUE`` (repeatable) overrides the experiment config of both models (e.g.
``model.encoder.causal=true``); ``--variant KEY=VALUE`` (repeatable) builds a second model with these overrides on
top, and the two are timed in alternating steps in one process (so a busy machine slows both alike), with the
ratio printed: e.g. ``--variant model.encoder.dropout=0.0`` for what dropout costs a CPU step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.data.collate import move_batch  # noqa: E402
from speechkd.tasks.asr import AsrTask  # noqa: E402
from speechkd.training.asr_experiment import build_asr_model, load_experiment_config  # noqa: E402
from speechkd.training.dist import resolve_device  # noqa: E402

FRAMES_PER_SECOND = 100
TOKENS_PER_SECOND = 3


def make_batch(n: int, seconds: float, vocab: int, seed: int) -> dict:
    """A host batch of ``n`` utterances of 0.7-1.0 x ``seconds`` (uneven lengths, as after bucketing)."""
    g = torch.Generator().manual_seed(seed)
    frames = (torch.rand(n, generator=g) * 0.3 + 0.7) * seconds * FRAMES_PER_SECOND
    lens = frames.long().sort(descending=True).values
    inputs = torch.randn(n, int(lens[0]), 80, generator=g)
    tokens = [torch.randint(3, vocab, (max(1, int(ln) * TOKENS_PER_SECOND // FRAMES_PER_SECOND),), generator=g).tolist()
              for ln in lens]
    return {"inputs": inputs, "input_lens": lens, "tokens": tokens, "texts": [""] * n,
            "cut_ids": [f"u{i}" for i in range(n)], "targets": {}}


class Setup:
    """One model, its task and optimizer, and a timed ``step``."""

    def __init__(self, args: argparse.Namespace, device: torch.device, overrides: list[str]) -> None:
        base = [f"model_preset={args.preset}", f"trainer.seed={args.seed}"]
        self.cfg = load_experiment_config(None, base + overrides, vocab_size=args.vocab)
        torch.manual_seed(args.seed)
        self.model = build_asr_model(self.cfg).to(device).train()
        if self.model.encoder.input_norm is not None:
            self.model.encoder.input_norm.set_stats(torch.zeros(80), torch.ones(80), 1)
        # the config's loss (so --set loss.* applies), past its warm-up: the steady-state step is what is timed
        self.task = AsrTask(dataclasses.replace(self.cfg.loss, warmup_steps=0))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.device = device
        self.dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
        self.elapsed = 0.0

    def step(self, batch: dict, timed: bool) -> float:
        """One training step on ``batch``; returns its audio seconds (and adds its time when ``timed``)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = move_batch(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            out = self.task.compute_loss(self.model, batch, True)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.elapsed += time.perf_counter() - t0
        return float(batch["input_lens"].sum()) / FRAMES_PER_SECOND


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    setups = {"base": Setup(args, device, list(args.set))}
    if args.variant:
        setups["variant"] = Setup(args, device, list(args.set) + list(args.variant))
    batches = [make_batch(args.batch, args.seconds, args.vocab, args.seed + i) for i in range(2)]
    for i in range(args.warmup):
        for s in setups.values():
            s.step(batches[i % 2], timed=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    audio = 0.0
    for i in range(args.steps):  # alternating: a load change on a shared machine hits both alike
        for s in setups.values():
            seconds = s.step(batches[i % 2], timed=True)
        audio += seconds
    base = setups["base"]
    res = {
        "preset": args.preset, "device": str(device), "amp": args.amp, "batch": args.batch, "seconds": args.seconds,
        "steps": args.steps, "threads": args.threads, "set": list(args.set),
        "params_M": round(sum(p.numel() for p in base.model.parameters()) / 1e6, 2),
        "sec_per_step": round(base.elapsed / args.steps, 4), "audio_s_per_s": round(audio / base.elapsed, 2),
    }
    if args.variant:
        var = setups["variant"]
        res.update({
            "variant": list(args.variant), "variant_sec_per_step": round(var.elapsed / args.steps, 4),
            "variant_audio_s_per_s": round(audio / var.elapsed, 2),
            "speedup_variant_over_base": round(base.elapsed / var.elapsed, 3),
        })
    if device.type == "cuda":
        res["peak_MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="model preset (speechkd/models/presets): mini | small")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--batch", type=int, default=8, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=6.0, help="longest utterance, seconds")
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="experiment config override for both models, e.g. model.encoder.causal=true (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE",
                   help="override of a second model timed against the first, e.g. model.encoder.dropout=0.0")
    p.add_argument("--output", type=Path, default=None, help="append the result as one JSON line")
    args = p.parse_args()
    res = run(args)
    line = json.dumps(res)
    print(line)
    if args.output:
        with open(args.output, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
