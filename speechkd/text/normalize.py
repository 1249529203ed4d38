"""Text normalisation for LibriSpeech-style scoring and pseudo-labels (stdlib only).

``normalize_librispeech`` maps free text (e.g. a Whisper transcript) onto the LibriSpeech
reference style: upper-case words, no punctuation except word-internal apostrophes, numbers
written as words. The rules, applied in this order, are:

1. Unicode NFKC (``"ﬁ" -> "fi"``, ``"²" -> "2"``, full-width forms -> ASCII); typographic
   apostrophes (U+2018, U+2019, U+02BC, U+0060, U+00B4) -> ``'``; diacritics on ASCII letters
   are dropped (``"café" -> "CAFE"``; LibriSpeech text is ASCII); other scripts are kept as is.
2. With ``drop_bracketed`` (default on), spans in ``[...]``, ``<...>`` and ``(...)`` are removed:
   they are annotations such as ``[BLANK_AUDIO]`` or ``(music)`` in recogniser output.
3. Numbers -> words (American style, no "AND": 120 -> ONE HUNDRED TWENTY):

   ============================  ======================================================
   ``$5`` / ``$1`` / ``$5.50``   FIVE DOLLARS / ONE DOLLAR / FIVE DOLLARS FIFTY CENTS
   ``$0.05``, ``£3``, ``€2``     FIVE CENTS, THREE POUNDS, TWO EUROS
   ``$1.5 million``              ONE POINT FIVE MILLION DOLLARS
   ``5%`` / ``2.5 %``            FIVE PERCENT / TWO POINT FIVE PERCENT
   ``21st``, ``2nd``, ``100th``  TWENTY FIRST, SECOND, ONE HUNDREDTH
   ``10:30``, ``9:05``, ``7:00``  TEN THIRTY, NINE OH FIVE, SEVEN O'CLOCK
   ``1980s``, ``90s``            NINETEEN EIGHTIES, NINETIES (spelled, last word pluralised)
   ``3.14``                      THREE POINT ONE FOUR (digits after the point one by one)
   ``1,234``                     ONE THOUSAND TWO HUNDRED THIRTY FOUR (grouped = cardinal)
   ``1984``, ``1900``, ``1905``  NINETEEN EIGHTY FOUR, NINETEEN HUNDRED, NINETEEN OH FIVE
   ``2000``, ``2007``, ``2024``  TWO THOUSAND, TWO THOUSAND SEVEN, TWENTY TWENTY FOUR
   ``007``                       ZERO ZERO SEVEN (a leading zero: digit by digit)
   other integers                cardinals up to 10**15 - 1, digit by digit beyond
   ============================  ======================================================

   A bare four-digit integer in ``YEAR_RANGES`` (1100-1999, 2000-2099) is read as a year;
   every other integer as a cardinal. Not handled (left to the punctuation rule): signs
   (``-5`` -> FIVE), fractions (``1/2`` -> ONE TWO), Roman numerals.
4. ``&`` -> AND; the abbreviations in ``ABBREVIATIONS`` (MR, MRS, DR) are spelled out as
   LibriSpeech writes them (MISTER, MISSUS, DOCTOR).
5. Upper case; every other punctuation or symbol character (Unicode categories P* and S*,
   hyphens and dashes included) becomes a space; apostrophes are kept only inside a word
   (``DON'T``, ``JOHN'S``; ``'TIS`` -> ``TIS``, ``JAMES'`` -> ``JAMES``); whitespace collapsed.
   Letters and digits next to each other are split (``MP3`` -> ``MP THREE``).

``is_target_script`` tells whether the letters of a text are (mostly) in one script, e.g. to
spot a non-English or other-script transcript from a multilingual teacher.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional

ONES = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN "
    "FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
# Powers of one thousand, smallest first (index k names 1000**k).
SCALES = ("", "THOUSAND", "MILLION", "BILLION", "TRILLION")
MAX_CARDINAL = 1000 ** len(SCALES) - 1

ORDINAL_EXCEPTIONS = {
    "ONE": "FIRST",
    "TWO": "SECOND",
    "THREE": "THIRD",
    "FIVE": "FIFTH",
    "EIGHT": "EIGHTH",
    "NINE": "NINTH",
    "TWELVE": "TWELFTH",
}

# Inclusive ranges of bare four-digit integers read as years.
YEAR_RANGES = ((1100, 1999), (2000, 2099))

# symbol -> (singular unit, plural unit, singular sub-unit, plural sub-unit)
CURRENCIES = {
    "$": ("DOLLAR", "DOLLARS", "CENT", "CENTS"),
    "£": ("POUND", "POUNDS", "PENNY", "PENCE"),
    "€": ("EURO", "EUROS", "CENT", "CENTS"),
}
SUBUNITS_PER_UNIT_DIGITS = 2  # "$5.50": exactly two decimals are read as cents

ABBREVIATIONS = {"MR": "MISTER", "MRS": "MISSUS", "DR": "DOCTOR"}

APOSTROPHES = "\u2018\u2019\u02bc\u0060\u00b4"

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_SCALE_WORDS = "|".join(s for s in SCALES if s)
_CURRENCY_RE = re.compile(
    r"([" + re.escape("".join(CURRENCIES)) + r"])\s?(" + _NUM + r")(?:\s+(" + _SCALE_WORDS + r")\b)?",
    re.IGNORECASE,
)
_PERCENT_RE = re.compile(r"(" + _NUM + r")\s?%")
_ORDINAL_RE = re.compile(r"(?<![\d.,])(\d+)(ST|ND|RD|TH)\b", re.IGNORECASE)
_TIME_RE = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])")
_DECADE_RE = re.compile(r"(?<![\d.,])(\d+0)'?S\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![\d.,])(" + _NUM + r")")
_BRACKETED_RE = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_WORD_RE = re.compile(r"[^\W\d_]+|\d+")


# --------------------------------------------------------------------------- number speller
def spell_cardinal(n: int) -> str:
    """``123 -> "ONE HUNDRED TWENTY THREE"``; 0 <= n <= MAX_CARDINAL, else digit by digit."""
    if n < 0:
        raise ValueError(f"spell_cardinal: negative number {n}")
    if n > MAX_CARDINAL:
        return spell_digits(str(n))
    if n == 0:
        return ONES[0]
    words: list[str] = []
    for k in range(len(SCALES) - 1, -1, -1):
        group = (n // 1000**k) % 1000
        if group:
            words.append(_spell_below_thousand(group))
            if SCALES[k]:
                words.append(SCALES[k])
    return " ".join(words)


def _spell_below_thousand(n: int) -> str:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "HUNDRED"]
    if rest >= len(ONES):
        tens, ones = divmod(rest, 10)
        words.append(TENS[tens])
        if ones:
            words.append(ONES[ones])
    elif rest:
        words.append(ONES[rest])
    return " ".join(words)


def spell_digits(digits: str) -> str:
    """``"007" -> "ZERO ZERO SEVEN"``."""
    return " ".join(ONES[int(d)] for d in digits)


def spell_ordinal(n: int) -> str:
    """``21 -> "TWENTY FIRST"``, ``100 -> "ONE HUNDREDTH"``."""
    words = spell_cardinal(n).split()
    last = words[-1]
    if last in ORDINAL_EXCEPTIONS:
        words[-1] = ORDINAL_EXCEPTIONS[last]
    elif last.endswith("Y"):
        words[-1] = last[:-1] + "IETH"
    else:
        words[-1] = last + "TH"
    return " ".join(words)


def spell_year(n: int) -> str:
    """``1984 -> "NINETEEN EIGHTY FOUR"``, ``1900 -> "NINETEEN HUNDRED"``, ``1905 -> "NINETEEN OH FIVE"``,
    ``2000..2009 -> "TWO THOUSAND [N]"``; other values fall back to :func:`spell_cardinal`."""
    if not _is_year(n):
        return spell_cardinal(n)
    if 2000 <= n <= 2009:
        return spell_cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{spell_cardinal(high)} HUNDRED"
    low_words = spell_cardinal(low) if low >= 10 else f"OH {ONES[low]}"
    return f"{spell_cardinal(high)} {low_words}"


def _is_year(n: int) -> bool:
    return any(lo <= n <= hi for lo, hi in YEAR_RANGES)


def spell_number(token: str, years: bool = True) -> str:
    """Spell a numeric token: ``"1,234"``, ``"3.14"``, ``"1984"``, ``"007"``.

    Grouped (comma) numbers are cardinals; a decimal part is read digit by digit after POINT;
    a bare four-digit integer in ``YEAR_RANGES`` is a year when ``years``; a leading zero means
    digit by digit.
    """
    integer, _, decimals = token.partition(".")
    grouped = "," in integer
    integer = integer.replace(",", "")
    if decimals:
        return f"{spell_cardinal(int(integer))} POINT {spell_digits(decimals)}"
    if len(integer) > 1 and integer.startswith("0"):
        return spell_digits(integer)
    value = int(integer)
    if years and not grouped and len(integer) == 4 and _is_year(value):
        return spell_year(value)
    return spell_cardinal(value)


def _pluralise(words: str) -> str:
    """``"NINETEEN EIGHTY" -> "NINETEEN EIGHTIES"``, ``"SIX" -> "SIXES"``, ``"TEN" -> "TENS"``."""
    head, _, last = words.rpartition(" ")
    if last.endswith("Y"):
        last = last[:-1] + "IES"
    elif last.endswith(("X", "S")):
        last += "ES"
    else:
        last += "S"
    return f"{head} {last}".strip()


# --------------------------------------------------------------------------- rewrite rules
def _currency(m: re.Match) -> str:
    unit1, units, sub1, subs = CURRENCIES[m.group(1)]
    amount, scale = m.group(2), m.group(3)
    if scale:
        return f" {spell_number(amount, years=False)} {scale.upper()} {units} "
    integer, _, decimals = amount.partition(".")
    if decimals and len(decimals) != SUBUNITS_PER_UNIT_DIGITS:
        return f" {spell_number(amount, years=False)} {units} "
    whole = int(integer.replace(",", ""))
    cents = int(decimals) if decimals else 0
    parts = []
    if whole or not cents:
        parts.append(f"{spell_cardinal(whole)} {unit1 if whole == 1 else units}")
    if cents:
        parts.append(f"{spell_cardinal(cents)} {sub1 if cents == 1 else subs}")
    return " " + " ".join(parts) + " "


def _percent(m: re.Match) -> str:
    return f" {spell_number(m.group(1), years=False)} PERCENT "


def _ordinal(m: re.Match) -> str:
    return f" {spell_ordinal(int(m.group(1)))} "


def _time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f" {spell_cardinal(hours)} O'CLOCK "
    minute_words = spell_cardinal(minutes) if minutes >= 10 else f"OH {ONES[minutes]}"
    return f" {spell_cardinal(hours)} {minute_words} "


def _decade(m: re.Match) -> str:
    return f" {_pluralise(spell_number(m.group(1)))} "


def _number(m: re.Match) -> str:
    return f" {spell_number(m.group(1))} "


def _strip_latin_diacritics(text: str) -> str:
    out: list[str] = []
    base_is_ascii = False
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch):
            if not base_is_ascii:
                out.append(ch)
            continue
        base_is_ascii = ch.isascii() and ch.isalpha()
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


def _punctuation_to_space(text: str) -> str:
    return "".join(
        " " if ch != "'" and unicodedata.category(ch)[0] in "PS" else ch for ch in text
    )


def _clean_token(token: str) -> list[str]:
    """Strip outer apostrophes, split letters from digits, expand abbreviations."""
    token = token.strip("'")
    if not token:
        return []
    if token in ABBREVIATIONS:
        return [ABBREVIATIONS[token]]
    if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
        # "MP3" -> "MP 3" -> digits spelled below; apostrophes inside are dropped here.
        pieces = _WORD_RE.findall(token)
        return [w for p in pieces for w in (spell_number(p).split() if p.isdigit() else [p])]
    if token.isdigit():  # digits that no rule above consumed (e.g. after a split "1/2")
        return spell_number(token).split()
    return [token]


def normalize_librispeech(text: str, drop_bracketed: bool = True) -> str:
    """Normalise ``text`` to LibriSpeech reference style (see the module docstring for the rules).

    >>> normalize_librispeech("Mr. Smith paid $5.50 on May 21st, 1984 -- don't ask!")
    "MISTER SMITH PAID FIVE DOLLARS FIFTY CENTS ON MAY TWENTY FIRST NINETEEN EIGHTY FOUR DON'T ASK"
    """
    text = unicodedata.normalize("NFKC", text)
    text = text.translate({ord(c): "'" for c in APOSTROPHES})
    text = _strip_latin_diacritics(text)
    if drop_bracketed:
        text = _BRACKETED_RE.sub(" ", text)
    text = _CURRENCY_RE.sub(_currency, text)
    text = _PERCENT_RE.sub(_percent, text)
    text = _ORDINAL_RE.sub(_ordinal, text)
    text = _TIME_RE.sub(_time, text)
    text = _DECADE_RE.sub(_decade, text)
    text = _NUMBER_RE.sub(_number, text)
    text = text.replace("&", " AND ")
    text = _punctuation_to_space(text.upper())
    return " ".join(w for tok in text.split() for w in _clean_token(tok))


# --------------------------------------------------------------------------- script detection
# Script name -> prefix of the Unicode character names of its letters.
SCRIPT_NAME_PREFIXES = {
    "latin": ("LATIN",),
    "cyrillic": ("CYRILLIC",),
    "greek": ("GREEK",),
    "arabic": ("ARABIC",),
    "hebrew": ("HEBREW",),
    "devanagari": ("DEVANAGARI",),
    "thai": ("THAI",),
    "hangul": ("HANGUL",),
    "cjk": ("CJK", "HIRAGANA", "KATAKANA"),
}


def script_fraction(text: str, script: str = "latin") -> Optional[float]:
    """Fraction of the letters of ``text`` that belong to ``script``; ``None`` when it has no letters.

    ``script`` is a key of ``SCRIPT_NAME_PREFIXES`` or any word that starts the Unicode names of
    that script's letters (e.g. ``"georgian"``).
    """
    prefixes = SCRIPT_NAME_PREFIXES.get(script.lower(), (script.upper(),))
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    hits = sum(unicodedata.name(ch, "").startswith(prefixes) for ch in letters)
    return hits / len(letters)


def is_target_script(text: str, script: str = "latin", min_fraction: float = 0.9) -> bool:
    """True when at least ``min_fraction`` of the letters of ``text`` are in ``script``.

    A text without letters (empty, digits or punctuation only) is not in any script: False.
    """
    frac = script_fraction(text, script)
    return frac is not None and frac >= min_fraction
