"""MiniLibri text sources: an R lazy-load database written here, prose to sentences."""

import struct
import warnings
import zlib

import numpy as np
import pytest

from speechkd.data.text_sources import austen_sentences, prose_sentences, read_r_lazyload, split_sentences
from speechkd.errors import SpeechkdError

rdata = pytest.importorskip("rdata")

BOOK = [
    "PRIDE AND PREJUDICE", "", "By Jane Austen", "", "", "Chapter 1", "",
    "It is a truth universally acknowledged, that a single man in possession",
    "of a good fortune, must be in want of a wife.", "",
    '"My dear Mr. Bennet," said his lady to him one day, "have you heard that',
    'Netherfield Park is let at last?"', "",
    "Mr. Bennet replied that he had not. She was _quite_ sure of it. Yes. It cost 10 pounds.", "",
    "CHAPTER II", "", "THE END",
]


def _write_lazyload(prefix, books):
    """An R lazy-load database as R writes it: gzip RDS index + records of (u32 size, zlib(XDR))."""
    blob, variables = b"", {}
    tmp = prefix.parent / "one.rds"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, lines in books.items():
            rdata.write_rds(tmp, np.array(lines, dtype=object), compression=None)
            raw = tmp.read_bytes()
            record = struct.pack(">I", len(raw)) + zlib.compress(raw)
            variables[name] = np.array([len(blob), len(record)], dtype=np.int32)
            blob += record
        rdata.write_rds(f"{prefix}.rdx", {"variables": variables, "references": {}, "compressed": True},
                        compression="gzip")
    (prefix.parent / f"{prefix.name}.rdb").write_bytes(blob)


def test_r_lazyload_round_trip(tmp_path):
    _write_lazyload(tmp_path / "Rdata", {"emma": ["a", "b c"], "persuasion": BOOK})
    got = read_r_lazyload(tmp_path / "Rdata")
    assert got == {"emma": ["a", "b c"], "persuasion": BOOK}
    # a corrupt record names the file and the variable
    rdb = tmp_path / "Rdata.rdb"
    data = bytearray(rdb.read_bytes())
    data[5] ^= 0xFF
    rdb.write_bytes(bytes(data))
    with pytest.raises(SpeechkdError, match="Rdata.rdb: record 'emma'"):
        read_r_lazyload(tmp_path / "Rdata")


def test_prose_sentences_drop_headings_quotes_italics_and_numbers():
    got = prose_sentences(BOOK, min_words=2, max_words=25)
    assert got == [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife.",
        "My dear Mr. Bennet, said his lady to him one day, have you heard that Netherfield Park is let at last?",
        "Mr. Bennet replied that he had not.",
        "She was quite sure of it.",
    ]  # "Yes." is too short; "10 pounds" has digits; titles, chapters and THE END are gone
    assert split_sentences("Ask Mrs. Jennings. She knows!") == ["Ask Mrs. Jennings.", "She knows!"]


def test_austen_source_reads_the_books_in_order_and_names_a_missing_install(tmp_path):
    _write_lazyload(tmp_path / "Rdata", {"emma": ["Emma was happy all day long."], "persuasion": BOOK})
    assert austen_sentences(tmp_path / "Rdata", 3, 25, books=("emma",)) == ["Emma was happy all day long."]
    with pytest.raises(SpeechkdError, match=r"lacks the book\(s\) \['mansfieldpark'"):
        austen_sentences(tmp_path / "Rdata", 3, 25, books=("emma", "mansfieldpark"))
    with pytest.raises(SpeechkdError, match="apt-get install --no-install-recommends r-cran-janeaustenr"):
        austen_sentences(tmp_path / "nothing", 3, 25)
