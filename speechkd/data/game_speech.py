"""Real recorded English speech from two Debian game packages, as an unlabelled lhotse part (e.g. ``train-real``).

Sources (Debian ``main``, free to redistribute and modify; the audio is read locally and never committed):

* ``flight-of-the-amazon-queen`` (``queen``): ``queen.1c`` is a resource bundle. Byte 13 holds a big-endian
  u16 entry count, the table starts at byte 15 with 21-byte entries (12-byte NUL-padded name, 1 bundle byte,
  big-endian u32 offset, big-endian u32 size). Speech entries end in ``.SB`` and are MP3 files whose header
  says 11,025 Hz; the engine (ScummVM) plays such files at 11,840 Hz, the rate the studio recorded at, so
  :attr:`GameSpeechConfig.queen_rate` defaults to 11,840 (the declared rate would play them 7% slow).
  Clip names tell the speaker: ``JOE#####`` (Joe's descriptions), ``KKHHHH[JP]N`` (dialogue: 2-digit talk
  key of a ``.DOG`` dialogue file, hex line id, J = Joe / P = the other person, segment number),
  ``C<digit>...`` (cut-scenes: several speakers, one group CUTSCENE), other letter prefixes (intro, comic:
  one group each), ``...SSSS`` (sound effects: skipped).
* ``beneath-a-steel-sky`` (``sky``): ``sky.dnr`` indexes ``sky.dsk``: little-endian u32 count, then 8-byte
  entries (u16 file number, u24 offset, u24 flags). Speech is file numbers 50000-55229. size = flags &
  0x3FFFFF; when bit 23 of the offset is set, offset = (offset & 0x7FFFFF) << 4. Every file starts with a
  22-byte header (11 little-endian u16); when flags bit 23 is clear and header word 0 has bit 7 set, the
  body is RNC ProPack-compressed (PyPI ``propack``). The audio is 8-bit unsigned PCM at 11,025 Hz, mono.
  No speaker is recoverable from the names: every clip gets the group ``sky``.

Speaker labels are ``<game>-<character>``: reliable for Queen dialogue (J/P in the name is who speaks; the
person is the character of the ``.DOG`` file with that talk key) and Joe's descriptions; cut-scene groups
and ``sky`` mix voices. One voice actor can play several characters, so disjoint characters are not
proven disjoint voices.

Output::

    <audio_dir>/<game>/<recording id>.flac                   # 16 kHz mono 16-bit FLAC
    <manifest_dir>/librispeech_recordings_<part>.jsonl.gz    # lhotse RecordingSet
    <manifest_dir>/librispeech_supervisions_<part>.jsonl.gz  # SupervisionSet, text "" (unlabelled)
    <manifest_dir>/librispeech_{recordings,supervisions}_{dev,test}-real.jsonl.gz  # labelled (see below)
    <manifest_dir>/game-speech-report-<part>.tsv              # every clip left out: reason, clip, game, detail
    <manifest_dir>/game-speech-<part>.yaml                    # what was read: packages, rates, counts, hours

Transcripts: the Queen ``.DOG`` dialogue files hold each line as ASCII; :func:`parse_dog` rebuilds the clip
name the engine plays for each segment of a line, which gives the text of almost every dialogue clip
(J and P clips); :func:`queen_joe_lines` does the same for Joe's descriptions (``QUEEN2.JAS``). Cut-scene
clips stay without text. With ``transcripts`` on, the clips of ``dev_speakers``/``test_speakers``
(characters, never Joe) leave the pool and those with a transcript form labelled parts (text
LibriSpeech-normalised); the pool keeps empty texts. The displayed line is in ``custom["text_raw"]``
wherever it is known, the pool included (for label-quality reports; no stage trains on it).

Finished FLAC files are not redone (resumable); clips are processed in sorted order (deterministic).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import logging
import os
import re
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import numpy as np

from speechkd.data.prepare import LANGUAGE, manifest_paths
from speechkd.errors import SpeechkdError
from speechkd.utils.atomic import atomic_to_file, atomic_write_text

if TYPE_CHECKING:
    from lhotse import RecordingSet, SupervisionSet

log = logging.getLogger(__name__)

Pathlike = Union[str, Path]

REPORT_COLUMNS = ("reason", "clip_id", "game", "detail")


@dataclasses.dataclass(frozen=True)
class GamePackage:
    """A Debian package holding one game's data files (paths inside the package tree)."""

    game: str
    deb: str
    files: tuple[str, ...]


QUEEN = GamePackage(
    "queen", "flight-of-the-amazon-queen", ("usr/share/scummvm/flight-of-the-amazon-queen/queen.1c",)
)
SKY = GamePackage(
    "sky",
    "beneath-a-steel-sky",
    ("usr/share/scummvm/beneath-a-steel-sky/sky.dnr", "usr/share/scummvm/beneath-a-steel-sky/sky.dsk"),
)
PACKAGES = {p.game: p for p in (QUEEN, SKY)}


class GameDataUnavailable(SpeechkdError):
    """The package's data files are neither installed, nor cached, nor downloadable here."""


@dataclasses.dataclass
class GameSpeechConfig:
    """Every knob of the extraction."""

    games: tuple[str, ...] = ("queen", "sky")
    part: str = "train-real"
    sampling_rate: int = 16000  # output rate
    queen_rate: int = 11840  # true rate of Queen's MP3s (their header says 11,025 Hz; ScummVM plays 11,840)
    sky_rate: int = 11025
    min_duration: float = 0.2  # seconds; shorter clips are skipped (reason too_short)
    num_jobs: int = 1
    # Labelled real parts from the Queen dialogue files: every clip of these characters leaves the pool; their
    # clips with a transcript form the part (characters disjoint from the pool; Joe always stays in the pool).
    transcripts: bool = True
    dev_part: str = "dev-real"
    dev_speakers: tuple[str, ...] = ("JIM", "HENRY")
    test_part: str = "test-real"
    test_speakers: tuple[str, ...] = ("SPARKY", "TAM", "WITCH", "FAYE")


@dataclasses.dataclass(frozen=True)
class RawClip:
    """One speech clip as stored in the game data: ``codec`` is ``mp3`` or ``sky`` (header + u8 PCM, maybe RNC)."""

    clip_id: str  # recording id: "<game>-<name in the archive>"
    game: str
    speaker: str
    codec: str
    data: bytes
    rate: int
    compressed: bool = False
    text: str = ""  # the line as displayed, when the dialogue files give it


@dataclasses.dataclass(frozen=True)
class SkippedClip:
    reason: str  # sound_effect | bad_entry | undecodable | empty_audio | too_short | held_out_no_transcript | held_out_mumble
    clip_id: str
    game: str
    detail: str = ""


@dataclasses.dataclass
class GameSpeechReport:
    """What :func:`extract_game_speech` did, per game."""

    part: str  # the pool; clips/seconds/speakers below count the pool only
    clips: Counter = dataclasses.field(default_factory=Counter)  # game -> clips kept
    seconds: Counter = dataclasses.field(default_factory=Counter)  # game -> seconds kept
    speakers: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # game -> sorted speakers
    reused: Counter = dataclasses.field(default_factory=Counter)  # game -> FLAC files found from a previous run
    parts: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)  # part -> (clips, seconds)
    skipped: list[SkippedClip] = dataclasses.field(default_factory=list)
    recordings_path: Optional[Path] = None
    supervisions_path: Optional[Path] = None

    def skipped_by_reason(self, game: str) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped if s.game == game))


# ------------------------------------------------------------------------------------------------ packages
def find_package_root(
    pkg: GamePackage, cache_dir: Pathlike, download: bool = True, system_root: Pathlike = "/"
) -> Path:
    """A directory under which all of ``pkg.files`` exist: ``system_root`` when installed, else the package
    unpacked in ``<cache_dir>/<deb>/`` (from a ``<deb>_*.deb`` already in ``cache_dir``, else ``apt-get download``).

    Raises:
        GameDataUnavailable: not installed, no .deb cached, and ``apt-get download`` failed or is absent.
    """
    if all(Path(system_root, f).is_file() for f in pkg.files):
        return Path(system_root)
    cache_dir = Path(cache_dir)
    root = cache_dir / pkg.deb
    if all((root / f).is_file() for f in pkg.files):
        return root
    cache_dir.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache_dir.glob(f"{pkg.deb}_*.deb"))
    if not debs and download:
        debs = [_apt_download(pkg.deb, cache_dir)]
    if not debs:
        raise GameDataUnavailable(f"{pkg.deb}: not installed and no {pkg.deb}_*.deb in {cache_dir}")
    _dpkg_extract(debs[-1], root)
    missing = [f for f in pkg.files if not (root / f).is_file()]
    if missing:
        raise GameDataUnavailable(f"{debs[-1]} does not hold {', '.join(missing)}")
    return root


def _apt_download(deb: str, cache_dir: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise GameDataUnavailable(f"{deb}: not installed, not cached in {cache_dir}, and apt-get is not available")
    log.info("apt-get download %s (into %s)", deb, cache_dir)
    res = subprocess.run(["apt-get", "download", deb], cwd=cache_dir, capture_output=True, text=True)
    debs = sorted(cache_dir.glob(f"{deb}_*.deb"))
    if res.returncode != 0 or not debs:
        detail = " | ".join(res.stderr.strip().splitlines()[-3:])
        raise GameDataUnavailable(f"apt-get download {deb} failed (exit {res.returncode}): {detail}")
    return debs[-1]


def _dpkg_extract(deb: Path, root: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise GameDataUnavailable(f"dpkg-deb is needed to unpack {deb}")
    tmp = root.with_name(f".tmp-{root.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
    if res.returncode != 0:
        raise GameDataUnavailable(f"dpkg-deb -x {deb} failed: {res.stderr.strip()}")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)


def deb_version(root: Path, pkg: GamePackage) -> Optional[str]:
    """The package version from the cached ``.deb`` name or dpkg's database (None if unknown)."""
    debs = sorted(root.parent.glob(f"{pkg.deb}_*.deb"))
    if debs:
        return debs[-1].name.split("_")[1]
    if shutil.which("dpkg-query") is None:
        return None
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg.deb], capture_output=True, text=True)
    if res.returncode != 0:
        return None
    return res.stdout.strip() or None


# ------------------------------------------------------------------------------------------------ Queen
@dataclasses.dataclass(frozen=True)
class QueenEntry:
    name: str
    offset: int
    size: int


QUEEN_TABLE_COUNT_AT = 13
QUEEN_TABLE_START = 15
QUEEN_ENTRY_SIZE = 21
QUEEN_DIALOGUE = re.compile(r"^(\d\d)([0-9A-F]{4}|SSSS|XXXX)([JP])[0-9A-F]$")
QUEEN_JOE = re.compile(r"^JOE\d{5}$")
QUEEN_SFX = re.compile(r"SSSS$")
QUEEN_CUTSCENE = re.compile(r"^C\d")
DOG_HEADER_SIZE = 20  # "AmBk" bank header before a .DOG file's dialogue data


def parse_queen_table(data: bytes, where: str = "queen.1c") -> list[QueenEntry]:
    """The resource table of a ``queen.1c`` bundle (module docstring); entries in table order.

    Raises:
        SpeechkdError: the file is too short for its table.
    """
    if len(data) < QUEEN_TABLE_START:
        raise SpeechkdError(f"{where}: {len(data)} bytes, too short for a resource table")
    (count,) = struct.unpack_from(">H", data, QUEEN_TABLE_COUNT_AT)
    end = QUEEN_TABLE_START + count * QUEEN_ENTRY_SIZE
    if end > len(data):
        raise SpeechkdError(f"{where}: table of {count} entries needs {end} bytes, file has {len(data)}")
    out = []
    for i in range(count):
        at = QUEEN_TABLE_START + i * QUEEN_ENTRY_SIZE
        name = data[at : at + 12].split(b"\0", 1)[0].decode("ascii", errors="replace")
        _, offset, size = struct.unpack_from(">BII", data, at + 12)
        out.append(QueenEntry(name, offset, size))
    return out


def queen_talk_keys(data: bytes, table: Sequence[QueenEntry]) -> dict[int, str]:
    """Talk key (the 2 leading digits of a dialogue clip name) -> character, from every ``.DOG`` file.

    The character is the DOG file name without extension and trailing digits (``SPARKY3.DOG`` -> SPARKY).
    The talk key is the third big-endian i16 after the DOG's 20-byte bank header.
    """
    keys: dict[int, str] = {}
    for e in table:
        if not e.name.upper().endswith(".DOG") or e.offset + DOG_HEADER_SIZE + 6 > len(data):
            continue
        (talk_key,) = struct.unpack_from(">h", data, e.offset + DOG_HEADER_SIZE + 4)
        keys.setdefault(talk_key, re.sub(r"\d+$", "", e.name.rsplit(".", 1)[0]).upper())
    return keys


def queen_speaker(name: str, talk_keys: dict[int, str]) -> Optional[str]:
    """Speaker label of a Queen clip name without ``.SB`` (module docstring); None for a sound effect."""
    if QUEEN_SFX.search(name):
        return None
    m = QUEEN_DIALOGUE.match(name)
    if m:
        if m.group(3) == "J":
            return "queen-JOE"
        return f"queen-{talk_keys.get(int(m.group(1)), 'DIALOGUE' + m.group(1))}"
    if QUEEN_JOE.match(name):
        return "queen-JOE"
    if QUEEN_CUTSCENE.match(name):  # C<scene><n>: several speakers, no label in the name
        return "queen-CUTSCENE"
    return f"queen-{re.match(r'[A-Z]*', name).group(0) or 'OTHER'}"


@dataclasses.dataclass(frozen=True)
class DialogueLine:
    """The text of one Queen dialogue clip, from the ``.DOG`` file that plays it."""

    text: str  # as displayed (punctuation, case), markup removed
    dog: str  # e.g. "AND1.DOG"
    speaker: str  # "queen-JOE" or "queen-<character of the DOG file>"


SPEAK_NONE_COMMANDS = ("GD", "GM")  # grab animations: no segment is spoken
SPEAK_XY_EXTRA = 11  # "*XY00(237,112)": 11 more characters after "XY"


def _dog_string(b: bytes, offset: int, align: int) -> tuple[str, int]:
    """A length-prefixed string at ``offset`` and the offset after it (rounded up to ``align``)."""
    n = b[offset]
    offset += 1
    text = b[offset : offset + n].decode("latin-1")
    if n:
        offset = (offset + n + align - 1) & ~(align - 1)
    return text, offset


def _dog_records(b: bytes, offset: int, count: int) -> list[tuple[int, str]]:
    """``count`` records (u16 unused, i16 line id, string aligned to 4) from ``offset``."""
    out = []
    for _ in range(count):
        (line_id,) = struct.unpack_from(">h", b, offset + 2)
        text, offset = _dog_string(b, offset + 4, 4)
        out.append((line_id, text))
    return out


def speech_segments(sentence: str) -> list[tuple[int, str]]:
    """``(segment number, text)`` of a dialogue sentence: ``*`` + a 2-character command ends a segment; every
    command advances the number (so clip suffixes skip numbers), grab commands (GD/GM) speak nothing."""
    out, start, i, index = [], 0, 0, 0
    while i < len(sentence):
        if sentence[i] != "*":
            i += 1
            continue
        text, command = sentence[start:i], sentence[i + 1 : i + 3]
        i += 3 + (SPEAK_XY_EXTRA if command == "XY" else 0)
        if command not in SPEAK_NONE_COMMANDS:
            out.append((index, text))
        index += 1
        start = i
    if start < len(sentence):
        out.append((index, sentence[start:]))
    return out


def parse_dog(b: bytes, dog: str) -> dict[str, DialogueLine]:
    """Clip name (without ``.SB``) -> line, for one ``.DOG`` file's data after its 20-byte bank header.

    Layout (big-endian): level count (negative: no quit), unique key, talk key, Joe line count, person line
    count, 6 game-state words, person-lines offset, cut-scene offset, second-visit offset; the dialogue tree
    (96 bytes a level) from byte 32, then Joe's lines. Clip names: 2-digit talk key, 4-digit hex line id
    (``SSSS`` for Joe's opening line, ``XXXX`` for second-visit lines), J or P, hex segment number.
    """
    levels, _, talk_key, joe_count, person_count = struct.unpack_from(">5h", b, 0)
    person_at, _, second_at = struct.unpack_from(">3H", b, 22)
    person = f"queen-{re.sub(r'[0-9]+$', '', dog.rsplit('.', 1)[0]).upper()}"
    sentences: list[tuple[str, str, str]] = []  # (line id field, J|P, sentence)
    for line_id, text in _dog_records(b, 32 + abs(levels) * 96, joe_count):
        sentences.append(("SSSS" if line_id == 0 else f"{line_id:4X}", "J", text))
    for line_id, text in _dog_records(b, person_at, person_count):
        sentences.append((f"{line_id:4X}", "P", text))
    person_again, offset = _dog_string(b, second_at, 2)
    joe_again, _ = _dog_string(b, offset, 2)
    sentences += [("XXXX", "P", person_again), ("XXXX", "J", joe_again)]
    out = {}
    for line_field, who, sentence in sentences:
        for index, text in speech_segments(sentence):
            if text.strip():
                name = f"{talk_key:2d}{line_field}{who}{index + 1:X}".replace(" ", "0")
                out[name] = DialogueLine(text.strip(), dog, "queen-JOE" if who == "J" else person)
    return out


def queen_dialogue_lines(data: bytes, table: Sequence[QueenEntry]) -> tuple[dict[str, DialogueLine], set[str]]:
    """Clip name -> line over every ``.DOG`` file of the bundle, and the names two files give different texts
    (left out: ambiguous)."""
    lines: dict[str, DialogueLine] = {}
    conflicts: set[str] = set()
    for e in sorted(table, key=lambda e: e.name):
        if not e.name.upper().endswith(".DOG") or e.offset + e.size > len(data):
            continue
        try:
            parsed = parse_dog(data[e.offset + DOG_HEADER_SIZE : e.offset + e.size], e.name)
        except (struct.error, IndexError) as err:
            log.warning("queen: %s is not a dialogue file this parser understands (%s); no lines from it", e.name, err)
            continue
        for name, line in parsed.items():
            if name in lines and lines[name].text != line.text:
                conflicts.add(name)
            lines.setdefault(name, line)
    for name in conflicts:
        lines.pop(name, None)
    return lines, conflicts


JOE_RESPONSE_MAX = 40  # Joe's generic responses come first in the JOE clip numbering


def queen_joe_lines(data: bytes, table: Sequence[QueenEntry]) -> dict[str, DialogueLine]:
    """Clip name -> line for Joe's description clips ``JOE<nnnn><segment>``.

    ``QUEEN2.JAS`` is plain text, one string a line (CR LF): object descriptions, object names, room names,
    12 verbs, then Joe's 40 responses, ... ``QUEEN.JAS`` (after its 20-byte bank header) starts with the
    big-endian u16 counts of rooms, names, objects and descriptions. Clip number n <= 40 is response n,
    a larger n is description n - 40. Empty dict when either file is missing.
    """
    entries = {e.name.upper(): e for e in table}
    jas, text = entries.get("QUEEN.JAS"), entries.get("QUEEN2.JAS")
    if jas is None or text is None or jas.offset + DOG_HEADER_SIZE + 8 > len(data):
        return {}
    rooms, names, _, descriptions = struct.unpack_from(">4H", data, jas.offset + DOG_HEADER_SIZE)
    strings = data[text.offset : text.offset + text.size].decode("latin-1").split("\r\n")
    responses_at = descriptions + names + rooms + 12
    out = {}
    for n in range(1, JOE_RESPONSE_MAX + descriptions + 1):
        at = responses_at + n - 1 if n <= JOE_RESPONSE_MAX else n - JOE_RESPONSE_MAX - 1
        if at >= len(strings):
            continue
        for index, segment in speech_segments(strings[at]):
            if segment.strip():
                out[f"JOE{n:04d}{index + 1:X}"] = DialogueLine(segment.strip(), "QUEEN2.JAS", "queen-JOE")
    return out


def queen_clips(path: Path, rate: int) -> tuple[list[RawClip], list[SkippedClip]]:
    """Every ``.SB`` entry of ``queen.1c``: speech clips (with their dialogue line where the ``.DOG`` files give
    one), and the sound effects / broken entries skipped."""
    data = path.read_bytes()
    table = parse_queen_table(data, str(path))
    keys = queen_talk_keys(data, table)
    lines, conflicts = queen_dialogue_lines(data, table)
    if conflicts:
        log.warning("queen: %d clip names get different texts from two dialogue files; left unlabelled", len(conflicts))
    lines.update(queen_joe_lines(data, table))
    clips, skipped = [], []
    for e in sorted(table, key=lambda e: e.name):
        if not e.name.upper().endswith(".SB"):
            continue
        name = e.name[:-3]
        clip_id = f"queen-{name}"
        speaker = queen_speaker(name, keys)
        if speaker is None:
            skipped.append(SkippedClip("sound_effect", clip_id, "queen", "name ends in SSSS"))
        elif e.offset + e.size > len(data) or e.size == 0:
            skipped.append(SkippedClip("bad_entry", clip_id, "queen", f"offset {e.offset} size {e.size}, file {len(data)}"))
        else:
            line = lines.get(name)
            speaker, text = (line.speaker, line.text) if line else (speaker, "")
            clips.append(RawClip(clip_id, "queen", speaker, "mp3", data[e.offset : e.offset + e.size], rate, text=text))
    return clips, skipped


# ------------------------------------------------------------------------------------------------ Sky
@dataclasses.dataclass(frozen=True)
class SkyEntry:
    file_num: int
    offset: int
    size: int
    compressible: bool  # flags bit 23 clear: the file header decides


SKY_SPEECH_FILES = range(50000, 55230)
SKY_HEADER_SIZE = 22


def parse_sky_index(dnr: bytes, where: str = "sky.dnr") -> list[SkyEntry]:
    """The ``sky.dnr`` index (module docstring), offsets and sizes decoded.

    Raises:
        SpeechkdError: the file is too short for its entry count.
    """
    if len(dnr) < 4:
        raise SpeechkdError(f"{where}: {len(dnr)} bytes, too short for an index")
    (count,) = struct.unpack_from("<I", dnr, 0)
    if 4 + 8 * count > len(dnr):
        raise SpeechkdError(f"{where}: index of {count} entries needs {4 + 8 * count} bytes, file has {len(dnr)}")
    out = []
    for i in range(count):
        at = 4 + 8 * i
        (num,) = struct.unpack_from("<H", dnr, at)
        offset = int.from_bytes(dnr[at + 2 : at + 5], "little")
        flags = int.from_bytes(dnr[at + 5 : at + 8], "little")
        if offset & 0x800000:
            offset = (offset & 0x7FFFFF) << 4
        out.append(SkyEntry(num, offset, flags & 0x3FFFFF, not (flags >> 23) & 1))
    return out


def sky_clips(dnr_path: Path, dsk_path: Path, rate: int) -> tuple[list[RawClip], list[SkippedClip]]:
    """Every speech file (50000-55229) of ``sky.dsk``, raw (header + body); RNC is undone when decoding."""
    index = parse_sky_index(dnr_path.read_bytes(), str(dnr_path))
    dsk = dsk_path.read_bytes()
    clips, skipped = [], []
    for e in sorted(index, key=lambda e: e.file_num):
        if e.file_num not in SKY_SPEECH_FILES:
            continue
        clip_id = f"sky-{e.file_num}"
        if e.offset + e.size > len(dsk) or e.size <= SKY_HEADER_SIZE:
            skipped.append(SkippedClip("bad_entry", clip_id, "sky", f"offset {e.offset} size {e.size}, file {len(dsk)}"))
            continue
        raw = dsk[e.offset : e.offset + e.size]
        (flag,) = struct.unpack_from("<H", raw, 0)
        compressed = e.compressible and bool((flag >> 7) & 1)
        clips.append(RawClip(clip_id, "sky", "sky", "sky", raw, rate, compressed))
    return clips, skipped


def sky_pcm(clip: RawClip) -> bytes:
    """The unsigned 8-bit PCM body of a Sky speech file (RNC-unpacked when compressed)."""
    body = clip.data[SKY_HEADER_SIZE:]
    if not clip.compressed:
        return body
    import propack

    return bytes(propack.unpack(body))


# ------------------------------------------------------------------------------------------------ audio
def decode_clip(clip: RawClip) -> np.ndarray:
    """Samples of one clip at ``clip.rate``, float32 in [-1, 1], shape ``(T,)``."""
    if clip.codec == "mp3":
        import soundfile as sf

        audio, _ = sf.read(io.BytesIO(clip.data), dtype="float32", always_2d=True)
        return audio.mean(axis=1)
    if clip.codec == "sky":
        pcm = np.frombuffer(sky_pcm(clip), dtype=np.uint8)
        return (pcm.astype(np.float32) - 128.0) / 128.0
    raise SpeechkdError(f"{clip.clip_id}: unknown codec {clip.codec!r}")


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``(T,)`` at ``rate`` -> ``(T * target / rate,)`` at ``target`` (polyphase, scipy)."""
    if rate == target:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def _extract_one(clip: RawClip, path: Path, target: int, min_duration: float) -> Union[int, SkippedClip]:
    """Write one clip as 16-bit FLAC at ``target`` Hz (atomically); its sample count, or why it was skipped."""
    import soundfile as sf

    if path.is_file():
        return sf.info(str(path)).frames
    try:
        audio = decode_clip(clip)
    except Exception as e:  # noqa: BLE001 - decoders raise many types on corrupt data
        return SkippedClip("undecodable", clip.clip_id, clip.game, f"{type(e).__name__}: {e}"[:300])
    if audio.size == 0:
        return SkippedClip("empty_audio", clip.clip_id, clip.game)
    if audio.size / clip.rate < min_duration:
        return SkippedClip("too_short", clip.clip_id, clip.game, f"{audio.size / clip.rate:.3f} s")
    out = np.clip(resample(audio, clip.rate, target), -1.0, 32767 / 32768)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    sf.write(str(tmp), out, target, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)
    return int(out.size)


def _extract_batch(args: tuple[list[RawClip], list[Path], int, float]) -> list[Union[int, SkippedClip]]:
    clips, paths, target, min_duration = args
    return [_extract_one(c, p, target, min_duration) for c, p in zip(clips, paths)]


def clip_path(audio_dir: Path, clip: RawClip) -> Path:
    return audio_dir / clip.game / f"{clip.clip_id}.flac"


# ------------------------------------------------------------------------------------------------ driver
def read_game_clips(game: str, root: Path, cfg: GameSpeechConfig) -> tuple[list[RawClip], list[SkippedClip]]:
    """Speech clips of one game from its package tree ``root``."""
    pkg = PACKAGES[game]
    if game == "queen":
        return queen_clips(root / pkg.files[0], cfg.queen_rate)
    return sky_clips(root / pkg.files[0], root / pkg.files[1], cfg.sky_rate)


def extract_game_speech(
    cache_dir: Pathlike,
    audio_dir: Pathlike,
    manifest_dir: Pathlike,
    cfg: GameSpeechConfig = GameSpeechConfig(),
    download: bool = True,
    system_root: Pathlike = "/",
) -> GameSpeechReport:
    """Fetch the packages, write every speech clip as FLAC, and the manifests of ``cfg.part`` (unlabelled) and,
    with ``cfg.transcripts``, of the labelled ``cfg.dev_part``/``cfg.test_part``.

    Raises:
        GameDataUnavailable: a package cannot be had (callers may skip the stage).
        SpeechkdError: unknown game, malformed archive, or no clip extracted.
    """
    unknown = [g for g in cfg.games if g not in PACKAGES]
    if unknown:
        raise SpeechkdError(f"unknown game(s) {' '.join(unknown)}; known: {' '.join(PACKAGES)}")
    if cfg.num_jobs < 1:
        raise SpeechkdError(f"num_jobs must be >= 1, got {cfg.num_jobs}")
    audio_dir = Path(os.path.abspath(audio_dir))
    manifest_dir = Path(manifest_dir)
    report = GameSpeechReport(cfg.part)
    kept: list[tuple[RawClip, Path, int]] = []
    sources = {}
    for game in cfg.games:
        pkg = PACKAGES[game]
        root = find_package_root(pkg, cache_dir, download=download, system_root=system_root)
        sources[game] = {"package": pkg.deb, "version": deb_version(root, pkg), "files": [str(root / f) for f in pkg.files]}
        clips, skipped = read_game_clips(game, root, cfg)
        report.skipped += skipped
        paths = [clip_path(audio_dir, c) for c in clips]
        report.reused[game] = sum(p.is_file() for p in paths)
        log.info("%s: %d clips (%d already extracted), %d skipped", game, len(clips), report.reused[game], len(skipped))
        for clip, path, res in zip(clips, paths, _run(clips, paths, cfg)):
            if isinstance(res, SkippedClip):
                report.skipped.append(res)
            else:
                kept.append((clip, path, res))
    if not kept:
        raise SpeechkdError(f"no speech clip extracted from {' '.join(cfg.games)}")
    parts = assign_parts(kept, cfg, report.skipped)
    for clip, _, n in parts[cfg.part]:
        report.clips[clip.game] += 1
        report.seconds[clip.game] += n / cfg.sampling_rate
    for game in cfg.games:
        report.speakers[game] = sorted({c.speaker for c, _, _ in parts[cfg.part] if c.game == game})
    manifest_dir.mkdir(parents=True, exist_ok=True)
    for part, members in parts.items():
        recs, sups = build_manifests(members, cfg.sampling_rate, labelled=part != cfg.part)
        rec_path, sup_path = manifest_paths(manifest_dir, part)
        atomic_to_file(sups, sup_path)
        atomic_to_file(recs, rec_path)
        report.parts[part] = (len(members), sum(n for _, _, n in members) / cfg.sampling_rate)
    report.recordings_path, report.supervisions_path = manifest_paths(manifest_dir, cfg.part)
    write_report(report_path(manifest_dir, cfg.part), report.skipped)
    write_summary(summary_path(manifest_dir, cfg.part), report, cfg, sources, parts)
    return report


def assign_parts(
    kept: Sequence[tuple[RawClip, Path, int]], cfg: GameSpeechConfig, skipped: list[SkippedClip]
) -> dict[str, list[tuple[RawClip, Path, int]]]:
    """Pool (``cfg.part``) and, with ``cfg.transcripts``, the labelled parts: clips of the held-out characters
    with a transcript; their clips without one are left out (``held_out_no_transcript``, added to ``skipped``).

    Raises:
        SpeechkdError: a held-out character is Joe, is in both labelled parts, or has no labelled clip.
    """
    parts: dict[str, list[tuple[RawClip, Path, int]]] = {cfg.part: []}
    held: dict[str, str] = {}
    if cfg.transcripts:
        for part, names in ((cfg.dev_part, cfg.dev_speakers), (cfg.test_part, cfg.test_speakers)):
            if not names:
                continue  # no characters held out for this part: it is not written
            parts[part] = []
            for name in names:
                speaker = f"queen-{name.upper()}"
                if speaker == "queen-JOE" or speaker in held:
                    raise SpeechkdError(f"held-out character {name}: Joe speaks in most scenes, and a character "
                                        "belongs to one labelled part only")
                held[speaker] = part
    for item in kept:
        clip = item[0]
        part = held.get(clip.speaker) if clip.game == "queen" else None
        if part is None:
            parts[cfg.part].append(item)
        elif not normalize_text(clip.text):
            skipped.append(SkippedClip("held_out_no_transcript", clip.clip_id, clip.game, clip.speaker))
        elif is_mumble(normalize_text(clip.text)):
            skipped.append(SkippedClip("held_out_mumble", clip.clip_id, clip.game, clip.text))
        else:
            parts[part].append(item)
    empty = [p for p, members in parts.items() if not members]
    if empty:
        raise SpeechkdError(f"part(s) {' '.join(empty)} would be empty: check --dev-speakers/--test-speakers")
    return parts


MUMBLE_WORD = re.compile(r"^[^AEIOUY]+$|(.)\1\1")


def is_mumble(text: str) -> bool:
    """A scripted grunt rather than words ("MMMMRFT GRRBLT", "UMMMM", "H"): a word without a vowel letter or
    with a letter three times in a row. Such lines are no fair test of a recogniser."""
    return any(MUMBLE_WORD.search(w.replace("'", "")) for w in text.split())


def normalize_text(text: str) -> str:
    """LibriSpeech-style reference text of a displayed game line (upper-case words, no punctuation)."""
    from speechkd.text.normalize import normalize_librispeech

    return normalize_librispeech(text)


def _run(clips: list[RawClip], paths: list[Path], cfg: GameSpeechConfig) -> Iterable[Union[int, SkippedClip]]:
    """Results of :func:`_extract_one` in clip order, in ``cfg.num_jobs`` processes (batches of 64 clips)."""
    batches = [
        (clips[i : i + 64], paths[i : i + 64], cfg.sampling_rate, cfg.min_duration) for i in range(0, len(clips), 64)
    ]
    if cfg.num_jobs == 1:
        for b in batches:
            yield from _extract_batch(b)
        return
    with concurrent.futures.ProcessPoolExecutor(cfg.num_jobs) as ex:
        for results in ex.map(_extract_batch, batches):
            yield from results


def build_manifests(
    members: Sequence[tuple[RawClip, Path, int]], rate: int, labelled: bool = False
) -> tuple["RecordingSet", "SupervisionSet"]:
    """Recordings (the FLAC files) and one supervision per clip with its speaker label; text empty unless
    ``labelled`` (then the normalised transcript). The displayed line, where the game files give one, is in
    ``custom["text_raw"]`` in every part (for label-quality reports; nothing trains on it)."""
    from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs, sups = [], []
    for clip, path, num_samples in sorted(members, key=lambda k: k[0].clip_id):
        rec = Recording(
            id=clip.clip_id,
            sources=[AudioSource(type="file", channels=[0], source=str(path))],
            sampling_rate=rate,
            num_samples=num_samples,
            duration=num_samples / rate,
        )
        recs.append(rec)
        custom = {"game": clip.game, **({"text_raw": clip.text} if clip.text else {})}
        sups.append(
            SupervisionSegment(
                id=clip.clip_id,
                recording_id=clip.clip_id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=normalize_text(clip.text) if labelled else "",
                language=LANGUAGE,
                speaker=clip.speaker,
                custom=custom,
            )
        )
    return RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups)


def report_path(manifest_dir: Pathlike, part: str) -> Path:
    return Path(manifest_dir) / f"game-speech-report-{part}.tsv"


def summary_path(manifest_dir: Pathlike, part: str) -> Path:
    return Path(manifest_dir) / f"game-speech-{part}.yaml"


def write_report(path: Path, skipped: Iterable[SkippedClip]) -> None:
    """One TSV row per clip left out (``REPORT_COLUMNS``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(REPORT_COLUMNS) + "\n")
        for s in skipped:
            row = (s.reason, s.clip_id, s.game, s.detail)
            f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in row) + "\n")


def write_summary(
    path: Path, report: GameSpeechReport, cfg: GameSpeechConfig, sources: dict, parts: dict[str, list]
) -> None:
    """``game-speech-<part>.yaml``: sources, rates, per-game pool counts and the parts written (consumers read
    it, not comments)."""
    import yaml

    games = {}
    for game in cfg.games:
        games[game] = {
            **sources[game],
            "pool_clips": report.clips[game],
            "pool_hours": round(report.seconds[game] / 3600, 4),
            "pool_speakers": report.speakers[game],
            "skipped": report.skipped_by_reason(game),
            "source_rate": cfg.queen_rate if game == "queen" else cfg.sky_rate,
        }
    doc = {
        "pool_part": cfg.part,
        "sampling_rate": cfg.sampling_rate,
        "min_duration": cfg.min_duration,
        "parts": {
            part: {
                "transcripts": part != cfg.part,
                "clips": len(members),
                "hours": round(sum(n for _, _, n in members) / cfg.sampling_rate / 3600, 4),
                "speakers": sorted({c.speaker for c, _, _ in members}),
            }
            for part, members in parts.items()
        },
        "games": games,
    }
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
