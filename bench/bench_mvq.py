#!/usr/bin/env python3
"""MVQ-KD benchmark: quantizer training time, extraction throughput and storage, on CPU (and CUDA when present).

The teacher is a random HuBERT-style model built from a config (no download): ``--hidden`` wide (default 1024,
HuBERT-large's width), ``--layers`` transformer layers, 20 ms frames. The audio is ``--cuts`` noise utterances of
``--seconds`` s. One run prints, per device:

* ``teacher_forward``: the teacher alone over every cut (the shared batching loop, layer kept, nothing written);
* ``quantizer_encode``: the quantizer's ``encode`` alone on those frames (``--refine-iters``);
* ``extraction``: ``extract_codebooks`` end to end (teacher + quantizer encoding + HDF5 writes + manifests);
  audio seconds per second and its time relative to the teacher forward (ratio >= 1; the excess is the
  quantizer and the writes);
* ``quantizer_training``: ``train_quantizer`` with ``--iters`` + ``--iters`` steps of ``--batch-frames`` frames
  (the teacher's share measured separately and subtracted) and the relative reconstruction error on held-out frames;
* storage: bytes per frame of the written index files (raw uint8 backend) against float16/float32 dumps of the
  same layer and cuts written by ``extract_hidden_states`` (lhotse ``NumpyHdf5Writer``), from the file sizes.

    .venv/bin/python bench/bench_mvq.py [--hidden 1024] [--codebooks 16] [--cuts 12] [--seconds 8] [--iters 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.targets.codebooks import extract_codebooks, train_quantizer  # noqa: E402
from speechkd.targets.hidden_states import (  # noqa: E402
    ExtractionReport,
    extract_hidden_states,
    storage_path,
    teacher_layer_frames,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024, help="teacher width (the quantized dim)")
    p.add_argument("--layers", type=int, default=2, help="teacher transformer layers (the last one is quantized)")
    p.add_argument("--codebooks", type=int, default=16, help="codebooks = bytes per frame")
    p.add_argument("--cuts", type=int, default=12)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--iters", type=int, default=100, help="quantizer steps per phase")
    p.add_argument("--batch-frames", type=int, default=600)
    p.add_argument("--max-duration", type=float, default=32.0, help="seconds of audio per teacher batch")
    p.add_argument("--refine-iters", type=int, default=5, help="quantizer refinement iterations (mvq.refine_iters)")
    p.add_argument("--teacher", default=None, help="a real teacher checkpoint dir instead of the random one")
    p.add_argument("--layer", type=int, default=None, help="teacher layer to quantize (default: the last)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    p.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda when present")
    return p.parse_args()


def make_teacher(root: Path, hidden: int, layers: int, device: str):
    from transformers import HubertConfig, HubertModel

    from speechkd.teachers import load_teacher

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                       intermediate_size=4 * hidden, conv_dim=(64,) * 4, conv_kernel=(10, 3, 3, 3),
                       conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4)
    path = root / "teacher"
    HubertModel(cfg).save_pretrained(path)
    return load_teacher(str(path), device=device)


def make_cuts(root: Path, n: int, seconds: float):
    from speechkd.testing.toy import make_toy_cuts

    return make_toy_cuts(root / "audio", num_cuts=n, min_duration=seconds, max_duration=seconds).to_eager()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bytes_per_frame(files, frames: int) -> float:
    return sum(Path(f).stat().st_size for f in files) / frames


def run(device: str, args: argparse.Namespace, root: Path) -> None:
    root = root / device.replace(":", "")
    root.mkdir()
    if args.teacher:
        from speechkd.teachers import load_teacher

        teacher = load_teacher(args.teacher, device=device)
    else:
        teacher = make_teacher(root, args.hidden, args.layers, device)
    layer = teacher.num_layers if args.layer is None else args.layer
    cuts = make_cuts(root, args.cuts, args.seconds)
    audio = sum(c.duration for c in cuts)

    sync(device)
    t0 = time.perf_counter()
    report = ExtractionReport(part="bench", cuts_path=root / "-")
    arrays = [a[:, 0] for _, a in teacher_layer_frames(cuts, teacher, [layer], args.max_duration, report)]
    sync(device)
    t_teacher = time.perf_counter() - t0
    frames = sum(a.shape[0] for a in arrays)

    qrep = train_quantizer(cuts, teacher, layer, root / "quantizer.pt", num_codebooks=args.codebooks,
                           num_utterances=args.cuts, heldout_fraction=0.2, batch_frames=args.batch_frames,
                           phase_one_iters=args.iters, phase_two_iters=args.iters, max_duration=args.max_duration)
    t_quant = qrep.seconds - t_teacher  # train_quantizer's time includes one teacher pass over the sample

    from speechkd.targets.codebooks import load_quantizer

    quantizer = load_quantizer(root / "quantizer.pt")[0].to(device)
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for a in arrays:
            quantizer.encode(torch.from_numpy(a).to(device), refine_indexes_iters=args.refine_iters)
    sync(device)
    t_encode = time.perf_counter() - t0

    sync(device)
    t0 = time.perf_counter()
    ext = extract_codebooks(cuts, teacher, root / "quantizer.pt", root / "codebooks", "bench",
                            chunk_cuts=max(1, args.cuts // 3), max_duration=args.max_duration,
                            refine_iters=args.refine_iters)
    sync(device)
    t_extract = time.perf_counter() - t0
    assert ext.finalized and ext.num_frames == frames, (ext.num_frames, frames)

    idx_files = sorted((root / "codebooks" / "chunks" / "bench").glob("*.u8a"))
    sizes = {"codebooks": bytes_per_frame(idx_files, frames)}
    for dtype in ("float16", "float32"):
        r = extract_hidden_states(cuts, teacher, [layer], root / dtype, "bench", max_duration=args.max_duration,
                                  dtype=dtype)
        sizes[dtype] = bytes_per_frame([storage_path(root / dtype, "bench")], r.num_frames)

    name = args.teacher or f"HuBERT-style random d={teacher.hidden_size}"
    print(f"\n== {device}: teacher {name}, {teacher.num_layers} layers (layer {layer} quantized), "
          f"{args.cuts} x {args.seconds:g} s = {audio:g} s audio, {frames} frames, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'what':<20}{'seconds':>10}{'audio_s/s':>12}{'vs_teacher':>12}")
    print(f"{'teacher_forward':<20}{t_teacher:>10.2f}{audio / t_teacher:>12.1f}{1.0:>12.2f}")
    print(f"{'quantizer_encode':<20}{t_encode:>10.2f}{audio / t_encode:>12.1f}{t_encode / t_teacher:>12.2f}"
          f"   (refine_iters {args.refine_iters})")
    print(f"{'extraction':<20}{t_extract:>10.2f}{audio / t_extract:>12.1f}{t_extract / t_teacher:>12.2f}")
    print(f"quantizer_training  {t_quant:.2f} s for {args.iters}+{args.iters} steps of {args.batch_frames} frames "
          f"(dim {teacher.hidden_size}, {args.codebooks} codebooks); relative reconstruction error on "
          f"{qrep.heldout_frames} held-out frames {qrep.rel_reconstruction_error:.4f}")
    print(f"{'storage':<20}{'bytes/frame':>12}{'x codebooks':>12}")
    for k in ("codebooks", "float16", "float32"):
        print(f"{k:<20}{sizes[k]:>12.2f}{sizes[k] / sizes['codebooks']:>12.1f}")
    print(f"(raw index bytes per frame: {args.codebooks}; float32 raw: {4 * teacher.hidden_size}, i.e. "
          f"{4 * teacher.hidden_size / args.codebooks:.0f}x before file overhead)")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    with tempfile.TemporaryDirectory() as tmp:
        for device in devices:
            run(device, args, Path(tmp))


if __name__ == "__main__":
    main()
