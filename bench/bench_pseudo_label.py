#!/usr/bin/env python3
"""Pseudo-labelling throughput: Whisper teachers (both backends) vs the student, measured in one run.

Clips: the 5 LibriVox clips of pocketsphinx-testdata plus the first Asterisk prompts (8 kHz, resampled
to 16 kHz) up to ``--num-clips`` (default 16; real recorded speech with transcripts). Systems:

* ``transformers``: :class:`speechkd.teachers.whisper_asr.TransformersWhisper` on the packaged Whisper
  tiny.en converted with ``speechkd.teachers.ct2_convert`` (into a temporary dir unless ``--hf-dir``);
* ``faster-whisper``: :class:`speechkd.teachers.whisper_asr.FasterWhisper` on the packaged CTranslate2
  model (``--compute-type``, default int8);
* ``student``: the ``--student-preset`` AsrModel (random weights: speed only, no WER) -- fbank, full-context
  encoder and batched transducer greedy search, i.e. what decoding a trained student costs.

Each system runs over all clips at every ``--batch-sizes`` entry (default 1 and 8) after one untimed
warm-up batch; throughput = audio seconds / wall seconds of the labelling calls (model loading excluded),
RTF = its inverse. Teacher rows also give the WER of their labels against the clip transcripts
(normalised). The machine, thread count and load average are printed with the table: on a shared machine
the load average says how much the numbers can be trusted.

    .venv/bin/python bench/bench_pseudo_label.py [--num-clips 16] [--batch-sizes 1 8] [--num-threads 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.decoding.scoring import compute_wer  # noqa: E402
from speechkd.text.normalize import normalize_librispeech  # noqa: E402

SAMPLE_RATE = 16000
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
MAX_ASTERISK_SECONDS = 8.0  # keep the clip set short and speech-only


@dataclass
class Row:
    system: str
    batch_size: int
    audio_seconds: float
    wall_seconds: float
    throughput: float  # audio seconds per second
    rtf: float
    wer: Optional[float]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-clips", type=int, default=16, help="clips in the set (LibriVox first, then Asterisk)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes to measure")
    p.add_argument("--beam-size", type=int, default=1, help="teacher beam size (1 = greedy)")
    p.add_argument("--compute-type", default="int8", help="faster-whisper compute type")
    p.add_argument("--hf-dir", type=Path, default=None, help="converted transformers tiny.en (default: convert to a temp dir)")
    p.add_argument("--student-preset", default="small", help="speechkd.models preset of the student")
    p.add_argument("--num-threads", type=int, default=None, help="CPU threads for torch and CTranslate2")
    p.add_argument("--systems", nargs="+", default=["transformers", "faster-whisper", "student"])
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return p.parse_args()


# ----------------------------------------------------------------------------------------- clips
def _librivox() -> list[tuple[str, Path, str]]:
    lines = (LIBRIVOX_DIR / "transcription").read_text().splitlines()
    out = []
    for line in lines:
        text, _, utt = line.rpartition("(")
        utt = utt.rstrip(")").strip()
        out.append((utt, LIBRIVOX_DIR / f"{utt}.wav", text.replace("<s>", "").replace("</s>", "").strip()))
    return out


def _asterisk() -> list[tuple[str, Path, str]]:
    out = []
    with gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8") as f:
        for line in f:
            name, sep, text = line.partition(":")
            wav = ASTERISK_DIR / f"{name.strip()}.wav"
            if not sep or line.startswith(";") or "[" in text or not wav.is_file():
                continue
            out.append((name.strip(), wav, text.strip()))
    return sorted(out)


def load_clips(num_clips: int) -> tuple[list[str], list[np.ndarray], list[str]]:
    """``(ids, waveforms (S,) at 16 kHz, transcripts)`` of real recorded speech."""
    from lhotse import Recording

    ids, wavs, refs = [], [], []
    for utt, path, text in _librivox() + _asterisk():
        if len(ids) == num_clips:
            break
        rec = Recording.from_file(path)
        if rec.duration > MAX_ASTERISK_SECONDS and not str(path).startswith(str(LIBRIVOX_DIR)):
            continue
        if rec.sampling_rate != SAMPLE_RATE:
            rec = rec.resample(SAMPLE_RATE)
        ids.append(utt)
        wavs.append(rec.load_audio().reshape(-1).astype(np.float32))
        refs.append(text)
    if len(ids) < num_clips:
        raise SystemExit(f"only {len(ids)} clips found (install pocketsphinx-testdata and asterisk-core-sounds-en-wav)")
    return ids, wavs, refs


# ----------------------------------------------------------------------------------------- timing
def _time_system(
    name: str, run: Callable[[list[np.ndarray]], Optional[list[str]]], wavs: list[np.ndarray],
    refs: Sequence[str], batch_size: int,
) -> Row:
    run(wavs[:batch_size])  # warm-up
    hyps: list[str] = []
    start = time.perf_counter()
    for i in range(0, len(wavs), batch_size):
        out = run(wavs[i : i + batch_size])
        if out is not None:
            hyps += out
    wall = time.perf_counter() - start
    audio = sum(w.size for w in wavs) / SAMPLE_RATE
    wer = None
    if hyps:
        wer = compute_wer([normalize_librispeech(r) for r in refs], [normalize_librispeech(h) for h in hyps]).wer
    row = Row(name, batch_size, round(audio, 2), round(wall, 2), round(audio / wall, 2), round(wall / audio, 4),
              None if wer is None else round(wer, 2))
    print(f"  {name:15s} batch {batch_size:2d}: {row.throughput:7.2f} audio-s/s  RTF {row.rtf:.4f}  WER {row.wer}", flush=True)
    return row


def student_runner(preset: str) -> Callable[[list[np.ndarray]], None]:
    import torch

    from speechkd.data.features import make_fbank_extractor
    from speechkd.decoding.transducer import greedy_search
    from speechkd.models.asr import AsrModel

    torch.manual_seed(0)
    model = AsrModel.from_preset(preset).eval()
    fbank = make_fbank_extractor()

    def run(wavs: list[np.ndarray]) -> None:
        feats = [torch.from_numpy(fbank.extract(w, SAMPLE_RATE)) for w in wavs]  # (T_i, 80)
        lens = torch.tensor([f.shape[0] for f in feats])
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)  # (N, T, 80)
        with torch.inference_mode():
            enc = model.encode(x, lens)
            greedy_search(model, enc.out, enc.out_lens)
        return None

    print(f"student: preset {preset}, {model.num_params() / 1e6:.1f}M parameters (random weights)")
    return run


def machine_info(threads: Optional[int]) -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from speechkd.teachers.ct2_convert import convert_ct2_whisper, packaged_whisper_tiny_en
    from speechkd.teachers.whisper_asr import FasterWhisper, TransformersWhisper

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    info = machine_info(args.num_threads)
    print("machine:", json.dumps(info))
    ids, wavs, refs = load_clips(args.num_clips)
    print(f"{len(ids)} clips, {sum(w.size for w in wavs) / SAMPLE_RATE:.1f} s of audio")
    ct2_dir = packaged_whisper_tiny_en()
    tmp = None
    rows: list[Row] = []
    try:
        for system in args.systems:
            if system == "transformers":
                hf_dir = args.hf_dir
                if hf_dir is None:
                    tmp = Path(tempfile.mkdtemp(prefix="bench_whisper_hf_"))
                    hf_dir = convert_ct2_whisper(ct2_dir, tmp / "tiny_en")
                teacher = TransformersWhisper(str(hf_dir), beam_size=args.beam_size)
                run = lambda w, t=teacher: [x.text_raw for x in t.transcribe(w)]  # noqa: E731
            elif system == "faster-whisper":
                teacher = FasterWhisper(str(ct2_dir), compute_type=args.compute_type, beam_size=args.beam_size,
                                        batch_size=max(args.batch_sizes), cpu_threads=args.num_threads or 0)
                run = lambda w, t=teacher: [x.text_raw for x in t.transcribe(w)]  # noqa: E731
            elif system == "student":
                run = student_runner(args.student_preset)
            else:
                raise SystemExit(f"unknown system {system!r}")
            label = system if system != "faster-whisper" else f"faster-whisper-{args.compute_type}"
            for bs in args.batch_sizes:
                rows.append(_time_system(label, run, wavs, refs, bs))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch {info['torch']}, "
          f"load average {info['load_average']} -> {info['load_average_end']}")
    print(f"clips: {len(ids)} real recordings, {rows[0].audio_seconds if rows else 0} s; teacher beam {args.beam_size}")
    print("| system | batch | audio s | wall s | audio s / s | RTF | WER % |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.system} | {r.batch_size} | {r.audio_seconds} | {r.wall_seconds} | {r.throughput} | {r.rtf} | "
              f"{'-' if r.wer is None else r.wer} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
