#!/usr/bin/env python3
"""Deployment speed and size: PyTorch vs sherpa-onnx fp32 vs sherpa-onnx int8, measured in one run.

Model: ``--exp-dir`` (a trained ``speechkd asr train`` experiment, its averaged/newest checkpoint and BPE
model: rows get a WER against the clip transcripts) or ``--preset`` (random weights, causal encoder:
speed and size only). Clips: the real recorded speech of ``bench_pseudo_label.load_clips``.

Systems, each over all clips one utterance at a time after one untimed warm-up clip, 1 thread each:

* ``pytorch offline``: fbank (lhotse), full-context encoder, our transducer greedy search;
* ``pytorch streaming``: fbank, :func:`speechkd.decoding.streaming.streaming_greedy_search` at
  ``--chunk-size`` / ``--left-context``;
* ``sherpa offline`` / ``sherpa streaming`` (fp32 and int8): the exports of ``speechkd export onnx``,
  decoded by sherpa-onnx from the waveform (its own fbank), streaming fed in 0.1 s pieces.

RTF = decoding wall seconds / audio seconds (model loading and export excluded). Sizes are bytes on disk of
the ONNX files of each export and of the PyTorch parameters that inference uses (float32).

    .venv/bin/python bench/bench_export.py [--preset mini] [--exp-dir EXP] [--num-clips 8]
        [--chunk-size 16] [--left-context 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pseudo_label import SAMPLE_RATE, load_clips, machine_info  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="random-weight model preset (ignored with --exp-dir)")
    p.add_argument("--exp-dir", default=None, help="trained experiment (checkpoint + BPE model from its config)")
    p.add_argument("--num-clips", type=int, default=8)
    p.add_argument("--chunk-size", type=int, default=16, help="streaming chunk in encoder frames (40 ms)")
    p.add_argument("--left-context", type=int, default=64, help="streaming left context in encoder frames")
    return p.parse_args()


def load_model(args: argparse.Namespace, work: Path):
    """(model, tokens.txt path, decode ids -> text or None)."""
    import torch

    from speechkd.models.asr import AsrModel, load_preset

    if args.exp_dir:
        from speechkd.decoding.asr_decode import load_model_for_decoding
        from speechkd.text.tokenizer import Tokenizer, write_tokens

        model, _, paths = load_model_for_decoding(args.exp_dir, None)
        tok = Tokenizer(paths["bpe_model"])
        write_tokens(tok, work / "tokens.txt")
        return model, work / "tokens.txt", tok.decode
    torch.manual_seed(0)
    model = AsrModel(load_preset(args.preset, ["encoder.causal=true"])).eval()
    norm = model.encoder.input_norm
    if norm is not None:  # plausible statistics so the random model sees normalised input
        norm.set_stats(torch.full((80,), -8.0), torch.full((80,), 4.0), 1)
    symbols = ["<blk>", "<sos/eos>", "<unk>"] + [f"\u2581t{i}" for i in range(model.vocab_size - 3)]
    (work / "tokens.txt").write_text("".join(f"{s} {i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return model, work / "tokens.txt", None


def pytorch_runner(model, streaming: bool, chunk: int, left: int) -> Callable[[np.ndarray], list[int]]:
    import torch

    from speechkd.data.features import make_fbank_extractor
    from speechkd.decoding.streaming import streaming_greedy_search
    from speechkd.decoding.transducer import greedy_search

    fbank = make_fbank_extractor()

    def run(wav: np.ndarray) -> list[int]:
        x = torch.from_numpy(fbank.extract(wav, SAMPLE_RATE))[None]
        lens = torch.tensor([x.size(1)])
        with torch.inference_mode():
            if streaming:
                return streaming_greedy_search(model, x, lens, chunk, left)[0]
            enc = model.encode(x, lens)
            return greedy_search(model, enc.out, enc.out_lens)[0]

    return run


def sherpa_runner(export_dir: Path, int8: bool) -> Callable[[np.ndarray], list[str]]:
    from speechkd.export.metadata import STREAMING_TRANSDUCER, validate_export_dir
    from speechkd.export.sherpa_decode import decode_offline_waveforms, decode_online_waveform, make_recognizer

    info = validate_export_dir(export_dir, int8=int8)
    rec = make_recognizer(info, num_threads=1)
    if info.kind == STREAMING_TRANSDUCER:
        frames = int(info.manifest["chunk_size"]) * 4
        return lambda wav: decode_online_waveform(rec, wav, SAMPLE_RATE, frames, 0.1, 0.0)[0]
    return lambda wav: decode_offline_waveforms(rec, [wav], SAMPLE_RATE)[0][0]


def time_it(run: Callable[[np.ndarray], object], wavs: list[np.ndarray]) -> tuple[float, list[object]]:
    run(wavs[0])
    outs = []
    start = time.perf_counter()
    for w in wavs:
        outs.append(run(w))
    return time.perf_counter() - start, outs


def onnx_bytes(d: Path, int8: bool) -> int:
    files = d.glob("*.int8.onnx") if int8 else (p for p in d.glob("*.onnx") if not p.name.endswith(".int8.onnx"))
    return sum(p.stat().st_size for p in files)


def main() -> None:
    import torch

    from speechkd.decoding.scoring import compute_wer
    from speechkd.export.onnx import export_onnx
    from speechkd.text.normalize import normalize_librispeech

    args = parse_args()
    torch.set_num_threads(1)
    ids, wavs, refs = load_clips(args.num_clips)
    audio = sum(w.size for w in wavs) / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, tokens, decode = load_model(args, work)
        dirs = {}
        for kind in ("offline-transducer", "streaming-transducer"):
            dirs[kind] = export_onnx(model, tokens, work / kind, kind, args.chunk_size, args.left_context, int8=True)
        inference_params = sum(p.numel() for n, p in model.named_parameters()
                               if not n.startswith(("ctc_output", "simple_am_proj", "simple_lm_proj")))
        print(f"machine: {machine_info(1)}")
        print(f"model: {'exp ' + args.exp_dir if args.exp_dir else 'preset ' + args.preset + ' (random weights)'}, "
              f"{inference_params / 1e6:.2f}M inference parameters; {len(wavs)} clips, {audio:.1f} s of audio")
        rows: list[tuple[str, float, Optional[float], int]] = []
        systems = [
            ("pytorch offline", pytorch_runner(model, False, args.chunk_size, args.left_context), None, False),
            ("pytorch streaming", pytorch_runner(model, True, args.chunk_size, args.left_context), None, False),
        ]
        for kind, label in (("offline-transducer", "offline"), ("streaming-transducer", "streaming")):
            for int8 in (False, True):
                name = f"sherpa {label} {'int8' if int8 else 'fp32'}"
                systems.append((name, sherpa_runner(dirs[kind], int8), dirs[kind], int8))
        for name, run, d, int8 in systems:
            wall, outs = time_it(run, wavs)
            wer = None
            if decode is not None:
                hyps = decode(outs) if name.startswith("pytorch") else [str(o) for o in outs]
                wer = compute_wer([normalize_librispeech(r) for r in refs], [normalize_librispeech(h) for h in hyps]).wer
            size = inference_params * 4 if d is None else onnx_bytes(d, int8)
            rows.append((name, wall / audio, wer, size))
        print(f"\n| system | RTF | WER | size MB |\n|---|---|---|---|")
        for name, rtf, wer, size in rows:
            print(f"| {name} | {rtf:.4f} | {'-' if wer is None else f'{wer:.2f}'} | {size / 2**20:.2f} |")
        print(f"\nstreaming: chunk {args.chunk_size} frames ({args.chunk_size * 40} ms), left context {args.left_context}")


if __name__ == "__main__":
    main()
