#!/usr/bin/env python3
"""What kind of word errors does a decoding make: misspellings, or wrong real words?

For each decode dir (its ``ref-/hyp-<set>-<tag>.trn``), aligns every utterance (the scorer's alignment) and
splits the errors:

* substitutions whose hypothesis word is **not a word of the LM text** (``--lm-text``: one sentence a line):
  non-words, a spelling the acoustic model made up. An LM that scores whole words (a masked LM's soft labels
  over its word pieces, which is what LM-to-CTC distils) has nothing to say about how a heard word is spelt;
  a token-level LM fused into the beam has;
* of those, **near misses**: within ``max(1, len(ref) // 3)`` character edits of the reference word;
* substitutions by a **real word** of the LM text: the errors that knowing the language could fix;
* insertions (and how many are real words) and deletions.

Prints one row per decode dir and set, with per-100-reference-word rates.

    cd egs/minilibri
    ../../.venv/bin/python ../../bench/wer_error_types.py --lm-text exp/lm2ctc_minilm/lm_text.txt \\
        --decode-dirs exp_wk/asr_whisper_init_ctc_seed{0,1,2}/decode --sets dev test-clean --tag ctc-greedy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rapidfuzz.distance import Levenshtein  # jiwer's own edit-distance library

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechkd.decoding.scoring import align_decoding  # noqa: E402


def error_types(decode_dir: Path, test_set: str, tag: str, vocab: set[str]) -> dict[str, int]:
    pairs, aligned = align_decoding(decode_dir, test_set, tag)
    flat = [p for utt in aligned for p in utt]
    subs = [(r, h) for r, h in flat if r is not None and h is not None and r != h]
    nonword = [(r, h) for r, h in subs if h not in vocab]
    ins = [h for r, h in flat if r is None]
    return {
        "words": sum(len(r) for _, r, _ in pairs),
        "sub": len(subs),
        "sub_nonword": len(nonword),
        "sub_nonword_near": sum(Levenshtein.distance(r, h) <= max(1, len(r) // 3) for r, h in nonword),
        "sub_realword": len(subs) - len(nonword),
        "ins": len(ins),
        "ins_realword": sum(h in vocab for h in ins),
        "del": sum(h is None for _, h in flat),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm-text", type=Path, required=True, help="text whose words count as real words")
    p.add_argument("--decode-dirs", type=Path, nargs="+", required=True)
    p.add_argument("--sets", nargs="+", default=["dev", "test-clean"])
    p.add_argument("--tag", default="ctc-greedy")
    args = p.parse_args()
    vocab = {w for line in args.lm_text.read_text(encoding="utf-8").splitlines() for w in line.split()}
    print(f"# {len(vocab)} distinct words in {args.lm_text}; rates per 100 reference words")
    cols = ["sub", "sub_nonword", "sub_nonword_near", "sub_realword", "ins", "ins_realword", "del"]
    print("| decode dir | set | words | " + " | ".join(cols) + " | non-word share of subs |")
    print("|---|---|---|" + "---|" * (len(cols) + 1))
    for d in args.decode_dirs:
        for s in args.sets:
            t = error_types(d, s, args.tag, vocab)
            rates = " | ".join(f"{100 * t[c] / t['words']:.1f}" for c in cols)
            share = t["sub_nonword"] / t["sub"] if t["sub"] else float("nan")
            print(f"| {d} | {s} | {t['words']} | {rates} | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
