"""LibriSpeech-shaped cut manifests without audio, written line by line (any size, constant memory).

Each line is a lhotse ``MonoCut`` dict with precomputed-feature metadata pointing into a storage
directory that exists but holds no data: enough for everything that reads manifests (samplers, filters,
shuffles, merges), not for loading features. Layout as the fbank stage writes it: a part's original cuts
first, then one ``<id>_sp<factor>`` copy of each per speed factor.

Example::

    write_fake_cuts_manifest(tmp / "librispeech_cuts_train-clean-100.jsonl.gz", "train-clean-100", 300,
                             seed=0, speed_factors=(0.9, 1.1))
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Optional, Sequence, Union

PathLike = Union[str, Path]
# Training cuts per LibriSpeech part (281,241 in all, 960.9 h).
LIBRISPEECH_TRAIN_CUTS = {"train-clean-100": 28_539, "train-clean-360": 104_014, "train-other-500": 148_688}
MEAN_DURATION_S = 12.3  # LibriSpeech training utterances: ~12.3 s on average, 1-35 s
WORDS = ("THE", "AND", "OF", "TO", "A", "IN", "HE", "THAT", "WAS", "IT", "HIS", "HER", "YOU", "WITH", "SAID")


def _cut_dict(
    cut_id: str, duration: float, text: str, speaker: str, storage: str, index: int, label: Optional[str] = None
) -> dict:
    num_frames = int(round(duration / 0.01))
    custom = None
    if label is not None:  # a pseudo-labelled cut (speechkd.targets.pseudo_label's fields)
        custom = {"reference": text, "teacher": "fake", "teacher_text": label, "avg_logprob": -0.2,
                  "compression_ratio": 1.5, "no_speech_prob": 0.01}
    sup = {"id": cut_id, "recording_id": cut_id, "start": 0.0, "duration": duration, "channel": 0,
           "text": label if label is not None else text, "language": "English", "speaker": speaker}
    if custom:
        sup["custom"] = custom
    return {
        "id": cut_id, "start": 0.0, "duration": duration, "channel": 0,
        "supervisions": [sup],
        "features": {"type": "kaldi-fbank", "num_frames": num_frames, "num_features": 80, "frame_shift": 0.01,
                     "sampling_rate": 16000, "start": 0.0, "duration": duration, "storage_type": "lilcom_chunky",
                     "storage_path": storage, "storage_key": f"{index * 4096},4096", "recording_id": cut_id,
                     "channels": 0},
        "recording": {"id": cut_id, "sources": [{"type": "file", "channels": [0], "source": f"/absent/{cut_id}.flac"}],
                      "sampling_rate": 16000, "num_samples": int(round(duration * 16000)), "duration": duration,
                      "channel_ids": [0]},
        "type": "MonoCut",
    }


def write_fake_cuts_manifest(
    path: PathLike, part: str, num_cuts: int, seed: int = 0, speed_factors: Sequence[float] = (),
    speaker_offset: int = 0,
    pseudo_labels: bool = False,
) -> int:
    """Write ``num_cuts`` fake cuts of ``part`` (+ their speed-perturbed copies) to ``path``; returns the
    number of lines. Cut ids are ``<spk>-<chapter>-<utt>`` with speakers unique to the part (from
    ``speaker_offset``), ~100 cuts per speaker in manifest order, as in LibriSpeech. ``pseudo_labels``:
    each supervision's text is a teacher label (the reference with one word in ten changed) with the
    reference and teacher scores in ``custom``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = path.parent / f"fake_feats_{part}"
    storage.mkdir(exist_ok=True)
    rng = random.Random(seed)
    utts = []
    for i in range(num_cuts):
        spk = speaker_offset + i // 100
        duration = round(min(35.0, max(1.0, rng.gammavariate(4.0, MEAN_DURATION_S / 4.0))), 3)
        text = " ".join(rng.choice(WORDS) for _ in range(max(1, int(duration * 2.7))))
        utts.append((f"{spk}-{i // 20}-{i % 20:04d}", duration, text, str(spk)))
    n = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as f:
        for factor in (None, *speed_factors):
            for i, (uid, duration, text, spk) in enumerate(utts):
                cut_id = uid if factor is None else f"{uid}_sp{factor}"
                dur = duration if factor is None else round(duration / factor, 3)
                label = None
                if pseudo_labels:
                    words = text.split()
                    words[i % len(words)] = "HYP" if i % 10 == 0 else words[i % len(words)]
                    label = " ".join(words)
                f.write(json.dumps(_cut_dict(cut_id, dur, text, spk, str(storage), i, label)) + "\n")
                n += 1
    return n
