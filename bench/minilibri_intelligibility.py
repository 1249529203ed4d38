#!/usr/bin/env python
"""How well does a strong ASR read each MiniLibri voice, per text source?

Synthesises ``--sentences-per-voice`` sentences of each text source with every installed catalogue
voice (the same synthesis code as the corpus builder), transcribes them with Whisper tiny.en
(faster-whisper, the packaged model) and prints WER/CER per (text source, voice), with the
LibriSpeech normalisation applied to the hypotheses. Sentences are dealt round-robin, so each voice
reads different sentences of the same source.

    .venv/bin/python bench/minilibri_intelligibility.py --sentences-per-voice 15 --output intel.tsv
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import soundfile as sf

from speechkd.data.minilibri import (
    MiniLibriConfig,
    assign_sentences,
    available_voices,
    load_sentences,
    run_jobs,
    unique_sentences,
)
from speechkd.decoding.scoring import compute_wer
from speechkd.teachers.whisper_asr import load_whisper_teacher
from speechkd.text.normalize import normalize_librispeech


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-sources", nargs="+", default=["austen", "bible"])
    ap.add_argument("--sentences-per-voice", type=int, default=15)
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/minilibri-intelligibility"))
    ap.add_argument("--beam-size", type=int, default=1, help="Whisper beam (1 = greedy)")
    ap.add_argument("--num-jobs", type=int, default=2, help="synthesis processes")
    ap.add_argument("--threads", type=int, default=2, help="CTranslate2 threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speakers", type=int, nargs="*", default=None, help="only these catalogue speaker ids")
    ap.add_argument("--output", type=Path, default=None, help="also write the rows as TSV")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    teacher = load_whisper_teacher("packaged:tiny.en", backend="faster-whisper", beam_size=args.beam_size,
                                   batch_size=8, cpu_threads=args.threads, compute_type="int8")
    rows = []
    for source in args.text_sources:
        cfg = MiniLibriConfig(text_source=source, seed=args.seed)
        voices = [v for v in available_voices(cfg) if args.speakers is None or v.speaker_id in args.speakers]
        sentences = unique_sentences(load_sentences(cfg), args.seed, Counter())
        utts = assign_sentences(sentences, voices, "dev", max_utts=args.sentences_per_voice * len(voices))
        out_dir = args.work_dir / source
        t0 = time.time()
        results = {r.utt_id: r for r in run_jobs(utts, out_dir, cfg.sample_rate, args.num_jobs)}
        synth_s = time.time() - t0
        by_voice: dict[int, list] = {}
        for u in utts:
            if results[u.utt_id].ok:
                by_voice.setdefault(u.speaker_id, []).append(u)
        t0 = time.time()
        for v in voices:
            vu = by_voice.get(v.speaker_id, [])
            audios = [sf.read(str(out_dir / u.relpath()), dtype="float32")[0] for u in vu]
            hyps = [normalize_librispeech(t.text_raw) for t in teacher.transcribe(audios)] if audios else []
            st = compute_wer([u.transcript for u in vu], hyps)
            secs = sum(results[u.utt_id].seconds for u in vu)
            rows.append((source, v.speaker_id, v.label, v.role, len(vu), st.ref_words,
                         round(st.wer, 2), round(st.cer, 2), round(secs, 1)))
        print(f"# {source}: synthesis {synth_s:.0f} s, transcription {time.time() - t0:.0f} s", file=sys.stderr)
    header = ("text", "speaker", "voice", "role", "utts", "words", "WER", "CER", "audio_s")
    lines = ["\t".join(header)] + ["\t".join(map(str, r)) for r in rows]
    # per source, all voices together
    for source in args.text_sources:
        sr = [r for r in rows if r[0] == source]
        words = sum(r[5] for r in sr)
        wer = sum(r[6] * r[5] for r in sr) / max(words, 1)
        lines.append(f"{source}\tall\tall voices\t-\t{sum(r[4] for r in sr)}\t{words}\t{wer:.2f}\t-\t-")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
