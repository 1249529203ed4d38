"""Sentences for the MiniLibri TTS voices to read, from text installable here.

Sources (``MiniLibriConfig.text_source``):

- ``austen`` (default): Jane Austen's six novels (public domain; 717k words), as packaged in Debian's
  ``r-cran-janeaustenr`` (MIT). Book prose like LibriSpeech's Project Gutenberg audiobooks, with
  mostly common words. The package stores them as an R lazy-load database (``Rdata.rdx`` index,
  ``Rdata.rdb`` records); the well-kept ``rdata`` package parses R's serialisation, so R itself is
  not needed: ``apt-get download r-cran-janeaustenr && dpkg-deb -x`` is enough where apt cannot
  install.
- ``bible``: the King James Bible (Debian ``bible-kjv``), the first MiniLibri text. Its archaic words
  and names made Whisper tiny.en misread a third of the words; kept for comparison.

Prose is turned into sentences by :func:`prose_sentences`: headings and editorial lines dropped,
wrapped lines joined into paragraphs, italics markers and double quotes removed, split after
``.``/``?``/``!`` (not after ``Mr.``-style abbreviations), and only plain sentences kept (ASCII letters
and punctuation, no digits, no ``--`` dashes: they join speeches and narration).
"""

from __future__ import annotations

import logging
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Sequence, Union

from speechkd.errors import SpeechkdError

logger = logging.getLogger(__name__)

AUSTEN_RDATA = "/usr/lib/R/site-library/janeaustenr/data/Rdata"  # + .rdx / .rdb
AUSTEN_BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")

_ABBREVIATIONS = ("Mr", "Mrs", "Dr", "St", "Col", "Capt", "Gen", "Rev", "Sir", "Lt", "Messrs", "Esq", "Mme", "Ms")
_HEADING_RE = re.compile(r"^(chapter|volume|book|finis|the end\b|by jane austen)\b|^[IVXLC\d]+\.?$", re.I)
_SENT_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_RE = re.compile(r"^[A-Za-z][A-Za-z ,;:'.!?-]*[.!?]$")


def read_r_lazyload(prefix: Union[str, Path]) -> dict[str, list[str]]:
    """Character vectors of an R lazy-load database ``<prefix>.rdx`` + ``<prefix>.rdb`` (name -> lines).

    The ``.rdx`` index (a gzip RDS) maps each variable to ``(offset, length)`` in the ``.rdb``, where
    every record is a 4-byte big-endian uncompressed length followed by a zlib stream of R's XDR
    serialisation. Other object types than character vectors are skipped.
    """
    import rdata

    rdx, rdb = Path(f"{prefix}.rdx"), Path(f"{prefix}.rdb")
    for p in (rdx, rdb):
        if not p.is_file():
            raise SpeechkdError(f"R data file not found: {p}")
    with warnings.catch_warnings():  # rdata warns that a bare serialisation is "assumed RDS"
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_file(rdx))
        blob = rdb.read_bytes()
        out: dict[str, list[str]] = {}
        for key, (offset, length) in index["variables"].items():
            name = str(key)
            record = blob[int(offset) : int(offset) + int(length)]
            if len(record) < 5:
                raise SpeechkdError(f"{rdb}: record {name!r} at {offset} is truncated")
            (size,) = struct.unpack(">I", record[:4])
            try:
                raw = zlib.decompress(record[4:])
            except zlib.error as e:
                raise SpeechkdError(f"{rdb}: record {name!r} is not zlib-compressed ({e})") from e
            if len(raw) != size:
                raise SpeechkdError(f"{rdb}: record {name!r} decompresses to {len(raw)} bytes, its header says {size}")
            value = rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))
            if getattr(value, "dtype", None) is not None and value.dtype.kind in "UO":
                out[name] = ["" if x is None else str(x) for x in value.tolist()]
    return out


def prose_paragraphs(lines: Iterable[str]) -> list[str]:
    """Wrapped lines -> paragraphs (blank-line separated), headings and one-line titles dropped."""
    paras: list[str] = []
    cur: list[str] = []
    for line in list(lines) + [""]:
        line = line.strip()
        if line:
            cur.append(line)
            continue
        if cur:
            para = " ".join(cur)
            if not (len(cur) == 1 and (_HEADING_RE.match(para) or para.isupper())):
                paras.append(para)
            cur = []
    return paras


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph, split after ``.``/``!``/``?`` + space + capital, not after abbreviations."""
    text = paragraph.replace("_", "").replace('"', " ").replace("\u201c", " ").replace("\u201d", " ")
    text = re.sub(r"\s+", " ", text).strip()
    parts = _SENT_END_RE.split(text)
    out: list[str] = []
    for part in parts:
        if out and re.search(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.$", out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return [s.strip() for s in out if s.strip()]


def prose_sentences(lines: Iterable[str], min_words: int, max_words: int) -> list[str]:
    """Plain sentences of ``min_words``..``max_words`` words from wrapped prose ``lines``, in order."""
    out = []
    for para in prose_paragraphs(lines):
        for sent in split_sentences(para):
            if _PLAIN_RE.match(sent) and "--" not in sent and min_words <= len(sent.split()) <= max_words:
                out.append(sent)
    return out


def austen_sentences(prefix: Union[str, Path], min_words: int, max_words: int,
                     books: Sequence[str] = AUSTEN_BOOKS) -> list[str]:
    """Sentences of Jane Austen's novels from ``r-cran-janeaustenr``'s data (see the module docstring)."""
    if not Path(f"{prefix}.rdb").is_file():
        raise SpeechkdError(
            f"Jane Austen's novels not found at {prefix}.rdb: apt-get install --no-install-recommends "
            "r-cran-janeaustenr (tools/setup.sh does), or choose --text-source bible"
        )
    texts = read_r_lazyload(prefix)
    missing = [b for b in books if b not in texts]
    if missing:
        raise SpeechkdError(f"{prefix}.rdb lacks the book(s) {missing} (found {sorted(texts)})")
    out: list[str] = []
    for book in books:
        sents = prose_sentences(texts[book], min_words, max_words)
        logger.info("text source austen: %s gives %d sentences of %d-%d words", book, len(sents), min_words, max_words)
        out.extend(sents)
    return out
