"""Check the game-speech transcript mapping with Whisper tiny.en (packaged, faster-whisper, CPU).

    python tools/check_game_transcripts.py MANIFEST_DIR [--parts train-real test-real] [--n 200] [--seed 0]

Takes a seeded random sample of the clips whose supervision carries ``custom["text_raw"]`` (the line the
game files give), transcribes it, and prints the WER of Whisper against the mapped lines, against the same
lines shuffled by one position (a wrong mapping: must be far worse), per clip source (dialogue / Joe's
descriptions), and against the clips re-timed to the 11,025 Hz their MP3 headers declare (the extraction
assumes the 11,840 Hz ScummVM plays them at). No ground truth reaches any training through this script.
"""

from __future__ import annotations

import argparse
import random

import soundfile as sf
from lhotse import load_manifest

from speechkd.data.game_speech import normalize_text, resample
from speechkd.data.prepare import manifest_paths
from speechkd.decoding.scoring import compute_wer
from speechkd.teachers.whisper_asr import load_whisper_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest_dir")
    ap.add_argument("--parts", nargs="+", default=["train-real", "dev-real", "test-real"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    items = []
    for part in args.parts:
        recs, sups = (load_manifest(p) for p in manifest_paths(args.manifest_dir, part))
        for s in sups:
            if (s.custom or {}).get("text_raw"):
                items.append((s.id, recs[s.recording_id].sources[0].source, s.custom["text_raw"]))
    items.sort()
    random.Random(args.seed).shuffle(items)
    sample = items[: args.n]
    refs = [normalize_text(t) for _, _, t in sample]
    audios = [sf.read(path, dtype="float32")[0] for _, path, _ in sample]
    teacher = load_whisper_teacher("packaged:tiny.en", backend="faster-whisper", beam_size=5)
    hyps = [normalize_text(t.text_raw) for t in teacher.transcribe(audios)]
    print(f"sample: {len(sample)} of {len(items)} clips with a mapped line (seed {args.seed})")
    print(f"WER vs mapped lines: {compute_wer(refs, hyps).wer:.2f}%, exact {sum(r == h for r, h in zip(refs, hyps))}")
    print(f"WER vs lines shuffled by one: {compute_wer(refs[1:] + refs[:1], hyps).wer:.2f}%")
    for name, keep in (("Joe's descriptions", lambda i: "-JOE" in i), ("dialogue", lambda i: "-JOE" not in i)):
        idx = [k for k, (i, _, _) in enumerate(sample) if keep(i)]
        if idx:
            w = compute_wer([refs[k] for k in idx], [hyps[k] for k in idx]).wer
            print(f"  {name}: {len(idx)} clips, WER {w:.2f}%")
    slow = [resample(resample(a, 16000, 11840), 11025, 16000) for a in audios]
    hyps_slow = [normalize_text(t.text_raw) for t in teacher.transcribe(slow)]
    print(f"WER vs mapped lines, clips re-timed to 11,025 Hz: {compute_wer(refs, hyps_slow).wer:.2f}%")


if __name__ == "__main__":
    main()
