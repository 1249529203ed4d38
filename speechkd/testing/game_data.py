"""Tiny synthetic game archives in the two formats :mod:`speechkd.data.game_speech` reads (no game data).

:func:`write_fake_queen` writes ``queen.1c`` (resource table, MP3 clips, one ``.DOG`` dialogue file, a sound
effect and a broken entry); :func:`write_fake_sky` writes ``sky.dnr`` + ``sky.dsk`` (plain and RNC-compressed
8-bit PCM speech files, one with the shifted-offset encoding, a non-speech file and a broken entry). Both
lay the files out as the Debian packages do, under ``<root>/<deb>/usr/share/scummvm/...``, and return what
a correct reader must find.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from pathlib import Path

import numpy as np

from speechkd.data.game_speech import DOG_HEADER_SIZE, QUEEN, SKY, SKY_HEADER_SIZE

QUEEN_RATE = 11025  # rate written in the fake MP3 headers (the reader is told the true rate separately)


@dataclasses.dataclass
class FakeQueen:
    path: Path
    durations: dict[str, float]  # clip name (no .SB) -> seconds of the tone written (at QUEEN_RATE)
    texts: dict[str, str]  # clip name -> the line a correct DOG parser finds
    speakers: dict[str, str]  # clip name -> speaker label
    sound_effects: tuple[str, ...]
    broken: tuple[str, ...]


@dataclasses.dataclass
class FakeSky:
    dnr: Path
    dsk: Path
    pcm: dict[int, np.ndarray]  # speech file number -> uint8 samples written
    compressed: tuple[int, ...]
    broken: tuple[int, ...]


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    """A sine at ``freq`` Hz, shape ``(round(seconds * rate),)``, float32 amplitude 0.5."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def mp3_bytes(audio: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="MP3")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ Queen
def _string(buf: bytearray, text: str, align: int) -> None:
    """Length byte + text, padded as the engine reads it (a non-empty string ends on a multiple of ``align``)."""
    buf.append(len(text))
    buf += text.encode("latin-1")
    if text:
        while len(buf) % align:
            buf.append(0)


def _record(buf: bytearray, line_id: int, text: str) -> None:
    buf += struct.pack(">Hh", 0, line_id)
    _string(buf, text, 4)


def dog_file(talk_key: int, joe: list[tuple[int, str]], person: list[tuple[int, str]], again: tuple[str, str]) -> bytes:
    """A one-level ``.DOG`` file: bank header, 32-byte talk header, dialogue tree, Joe's and the person's
    lines, an empty cut-scene block and the two second-visit lines."""
    levels = 1
    body = bytearray(32 + levels * 96)
    for line_id, text in joe:
        _record(body, line_id, text)
    person_at = len(body)
    for line_id, text in person:
        _record(body, line_id, text)
    cutaway_at = len(body)
    body += struct.pack(">hh", 0, 0)
    _string(body, "", 2)
    if len(body) % 2:
        body.append(0)
    second_at = len(body)
    _string(body, again[0], 2)
    _string(body, again[1], 2)
    struct.pack_into(">5h", body, 0, levels, 1, talk_key, len(joe), len(person))
    struct.pack_into(">3H", body, 22, person_at, cutaway_at, second_at)
    return b"AmBk" + bytes(DOG_HEADER_SIZE - 4) + bytes(body)


def jas_files(descriptions: list[str], names: list[str], rooms: list[str], responses: dict[int, str]) -> list:
    """``QUEEN.JAS`` (bank header + counts of rooms, names, objects, descriptions) and ``QUEEN2.JAS`` (CR LF
    lines: descriptions, names, rooms, 12 verbs, 40 Joe responses)."""
    counts = struct.pack(">4H", len(rooms), len(names), 0, len(descriptions))
    verbs = [f"Verb{i}" for i in range(12)]
    lines = descriptions + names + rooms + verbs + [responses.get(i, "") for i in range(1, 41)]
    return [("QUEEN.JAS", b"AmBk" + bytes(DOG_HEADER_SIZE - 4) + counts), ("QUEEN2.JAS", "\r\n".join(lines).encode())]


def queen_bundle(entries: list[tuple[str, bytes]], broken: tuple[str, ...] = ()) -> bytes:
    """A ``queen.1c``: 15-byte header (u16 count at byte 13), 21-byte table entries, then the data;
    ``broken`` names get an offset past the end of the file."""
    names = [n for n, _ in entries] + list(broken)
    too_long = [n for n in names if len(n) > 12]
    if too_long:
        raise ValueError(f"queen.1c names are at most 12 characters: {too_long}")
    start = 15 + 21 * len(names)
    table, data = bytearray(), bytearray()
    for name, payload in entries:
        table += name.encode("ascii").ljust(12, b"\0") + struct.pack(">BII", 1, start + len(data), len(payload))
        data += payload
    for name in broken:
        table += name.encode("ascii").ljust(12, b"\0") + struct.pack(">BII", 1, start + len(data) + 1000, 500)
    header = b"QTBLCEM10" + bytes(4) + struct.pack(">H", len(names))
    return header + bytes(table) + bytes(data)


def write_fake_queen(root: Path) -> FakeQueen:
    """Write ``<root>/<deb>/usr/share/scummvm/.../queen.1c`` with a dialogue file for character TESTER."""
    talk_key = 7
    joe = [(0, "Hello there."), (5, "First part.*FRSecond part.*15")]
    person = [(5, "*GDOkay then.*XY00(237,112)Walk away."), (0x1E, "Hex id line.")]
    again = ("Back again.", "Me too.")
    texts = {
        "07SSSSJ1": "Hello there.",
        "070005J1": "First part.",
        "070005J2": "Second part.",
        "070005P2": "Okay then.",  # segment 1 was the grab command: no clip
        "070005P3": "Walk away.",
        "07001EP1": "Hex id line.",
        "07XXXXP1": "Back again.",
        "07XXXXJ1": "Me too.",
        "JOE00011": "It doesn't seem to open",  # Joe's response 1
        "JOE00421": "A fine desk.",  # clip 42 = object description 2
    }
    durations = {name: 0.4 + 0.1 * i for i, name in enumerate(sorted(texts) + ["C1A__051"])}
    speakers = {n: ("queen-JOE" if n[6] == "J" or n.startswith("JOE") else "queen-TESTER") for n in texts}
    speakers["C1A__051"] = "queen-CUTSCENE"
    entries = [(f"{n}.SB", mp3_bytes(tone(d, QUEEN_RATE), QUEEN_RATE)) for n, d in durations.items()]
    entries += [("12SSSSSS.SB", mp3_bytes(tone(0.3, QUEEN_RATE, 880.0), QUEEN_RATE))]
    entries += [("TESTER2.DOG", dog_file(talk_key, joe, person, again)), ("ROOM1.PCX", b"\x0a" * 40)]
    entries += jas_files(["A desk.", "A fine desk.*24"], ["Desk"], ["ROOM1"], {1: "It doesn't seem to open*03"})
    broken = ("07001FP1.SB",)
    path = root / QUEEN.deb / QUEEN.files[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(queen_bundle(entries, broken))
    return FakeQueen(path, durations, texts, speakers, ("12SSSSSS",), tuple(b[:-3] for b in broken))


# ------------------------------------------------------------------------------------------------ Sky
def sky_file(pcm: np.ndarray, compressed: bool) -> bytes:
    """22-byte header (11 LE u16; word 0 bit 7 = RNC body) + the PCM body (RNC-packed when ``compressed``)."""
    import propack

    body = pcm.astype(np.uint8).tobytes()
    header = [0] * 11
    header[0] = 0x80 if compressed else 0
    header[6] = (SKY_HEADER_SIZE + len(body)) & 0xFFFF
    return struct.pack("<11H", *header) + (propack.pack(body) if compressed else body)


def write_fake_sky(root: Path) -> FakeSky:
    """Write ``sky.dnr`` + ``sky.dsk`` under ``<root>/<deb>/usr/share/scummvm/beneath-a-steel-sky/``."""
    rng = np.random.default_rng(0)
    pcm = {
        50000: (128 + 100 * tone(0.5, 11025)).astype(np.uint8),
        50001: (128 + 100 * tone(0.7, 11025, 300.0)).astype(np.uint8),
        50002: (128 + 100 * tone(0.6, 11025, 500.0)).astype(np.uint8),
    }
    compressed = (50001,)
    dsk = bytearray(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())  # something before the first file
    index = []
    for num in (100, 50000, 50001, 50002):
        blob = sky_file(pcm[num] if num in pcm else np.full(100, 7, np.uint8), num in compressed)
        while num == 50002 and len(dsk) % 16:  # the shifted-offset encoding needs a multiple of 16
            dsk.append(0)
        offset = len(dsk)
        dsk += blob
        flags = len(blob) | (0 if num in compressed else 1 << 23)  # bit 23 set: never compressed
        field = (offset >> 4) | 0x800000 if num == 50002 else offset
        index.append((num, field, flags))
    index.append((50003, len(dsk) + 4096, 300))  # points past the end of sky.dsk
    dnr = struct.pack("<I", len(index)) + b"".join(
        struct.pack("<H", n) + o.to_bytes(3, "little") + f.to_bytes(3, "little") for n, o, f in index
    )
    base = root / SKY.deb
    paths = [base / f for f in SKY.files]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_bytes(dnr)
    paths[1].write_bytes(bytes(dsk))
    return FakeSky(paths[0], paths[1], pcm, compressed, (50003,))
