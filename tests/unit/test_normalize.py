import pytest

from speechkd.text.normalize import (
    is_target_script,
    normalize_librispeech,
    script_fraction,
    spell_cardinal,
    spell_ordinal,
    spell_year,
)

CASES = [
    # punctuation, case, apostrophes, hyphens, whitespace
    ("Hello, world!", "HELLO WORLD"),
    ("don't  stop\tbelieving\n", "DON'T STOP BELIEVING"),
    ("John\u2019s \u201cbook\u201d", "JOHN'S BOOK"),
    ("'Tis the farmers' market", "TIS THE FARMERS MARKET"),
    ("rock'n'roll", "ROCK'N'ROLL"),
    ("well-known state-of-the-art", "WELL KNOWN STATE OF THE ART"),
    ("wait\u2014what?", "WAIT WHAT"),
    ("end.Start", "END START"),
    ("U.S.A.", "U S A"),
    ("you & me", "YOU AND ME"),
    ("", ""),
    ("  ...  ", ""),
    # Unicode
    ("caf\u00e9 na\u00efve", "CAFE NAIVE"),
    ("\ufb01ne", "FINE"),  # NFKC ligature
    ("\uff28\uff49", "HI"),  # full-width letters
    ("Stra\u00dfe", "STRASSE"),
    ("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440", "\u041f\u0420\u0418\u0412\u0415\u0422 \u041c\u0418\u0420"),
    # annotations
    ("[BLANK_AUDIO] hello (music) <unk> world", "HELLO WORLD"),
    # abbreviations
    ("Mr. and Mrs. Smith met Dr. Jones", "MISTER AND MISSUS SMITH MET DOCTOR JONES"),
    # cardinals
    ("0 1 7 13 20 21 99", "ZERO ONE SEVEN THIRTEEN TWENTY TWENTY ONE NINETY NINE"),
    ("100 101 120 999", "ONE HUNDRED ONE HUNDRED ONE ONE HUNDRED TWENTY NINE HUNDRED NINETY NINE"),
    ("1,234", "ONE THOUSAND TWO HUNDRED THIRTY FOUR"),
    ("1,000,000", "ONE MILLION"),
    ("12345", "TWELVE THOUSAND THREE HUNDRED FORTY FIVE"),
    ("007", "ZERO ZERO SEVEN"),
    ("MP3", "MP THREE"),
    # years
    ("in 1984.", "IN NINETEEN EIGHTY FOUR"),
    ("1900 1905 1100", "NINETEEN HUNDRED NINETEEN OH FIVE ELEVEN HUNDRED"),
    ("2000 2007 2010 2024", "TWO THOUSAND TWO THOUSAND SEVEN TWENTY TEN TWENTY TWENTY FOUR"),
    ("1066", "ONE THOUSAND SIXTY SIX"),  # outside YEAR_RANGES: cardinal
    ("3000", "THREE THOUSAND"),
    # ordinals
    ("1st 2nd 3rd 4th", "FIRST SECOND THIRD FOURTH"),
    ("21ST 22nd 33RD 12th", "TWENTY FIRST TWENTY SECOND THIRTY THIRD TWELFTH"),
    ("40th 90th 100th 1000000th", "FORTIETH NINETIETH ONE HUNDREDTH ONE MILLIONTH"),
    # decimals, percent, currency
    ("3.14", "THREE POINT ONE FOUR"),
    ("0.5", "ZERO POINT FIVE"),
    ("5% and 2.5 %", "FIVE PERCENT AND TWO POINT FIVE PERCENT"),
    ("$5", "FIVE DOLLARS"),
    ("$1", "ONE DOLLAR"),
    ("$5.50", "FIVE DOLLARS FIFTY CENTS"),
    ("$0.01", "ONE CENT"),
    ("$1,000,000", "ONE MILLION DOLLARS"),
    ("$1.5 million", "ONE POINT FIVE MILLION DOLLARS"),
    ("\u00a33 and \u20ac2.01", "THREE POUNDS AND TWO EUROS ONE CENT"),
    ("$1984", "ONE THOUSAND NINE HUNDRED EIGHTY FOUR DOLLARS"),  # money is never a year
    # times, decades
    ("at 10:30, 9:05 and 7:00", "AT TEN THIRTY NINE OH FIVE AND SEVEN O'CLOCK"),
    ("the 1980s and '90s", "THE NINETEEN EIGHTIES AND NINETIES"),
    # a whole sentence
    (
        "Mr. Smith paid $5.50 on May 21st, 1984 -- don't ask!",
        "MISTER SMITH PAID FIVE DOLLARS FIFTY CENTS ON MAY TWENTY FIRST NINETEEN EIGHTY FOUR DON'T ASK",
    ),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_normalize_librispeech(text, expected):
    assert normalize_librispeech(text) == expected


def test_normalize_is_idempotent_on_librispeech_text():
    ref = "HE HOPED THERE WOULD BE STEW FOR DINNER TURNIPS AND CARROTS AND BRUISED POTATOES AND FAT MUTTON'S PIECES"
    assert normalize_librispeech(ref) == ref
    for text, _ in CASES:
        once = normalize_librispeech(text)
        assert normalize_librispeech(once) == once


def test_keep_bracketed_when_asked():
    assert normalize_librispeech("a (quiet) word", drop_bracketed=False) == "A QUIET WORD"


_VALUES = {w: i for i, w in enumerate(
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN "
    "FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN".split())}
_VALUES.update({w: 10 * (i + 2) for i, w in enumerate("TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split())})
_SCALES = {"THOUSAND": 10**3, "MILLION": 10**6, "BILLION": 10**9, "TRILLION": 10**12}


def _words_to_int(words: str) -> int:
    """Independent inverse of the speller (test oracle)."""
    total, group = 0, 0
    for w in words.split():
        if w == "HUNDRED":
            group *= 100
        elif w in _SCALES:
            total += group * _SCALES[w]
            group = 0
        else:
            group += _VALUES[w]
    return total + group


def test_spell_cardinal_round_trips():
    values = list(range(0, 2000)) + [10**k + d for k in range(3, 15) for d in (0, 1, 19, 999, 123456 % 10**k)]
    values += [10**15 - 1, 7_000_000_017, 20_020_020]
    for n in values:
        words = spell_cardinal(n)
        assert _words_to_int(words) == n, (n, words)
        assert "  " not in words and words == words.strip()


def test_spell_cardinal_beyond_scales_is_digit_by_digit():
    assert spell_cardinal(10**15) == "ONE" + " ZERO" * 15
    with pytest.raises(ValueError):
        spell_cardinal(-1)


def test_spell_ordinal_and_year():
    assert [spell_ordinal(n) for n in (1, 5, 8, 9, 11, 12, 20, 101, 1000)] == [
        "FIRST", "FIFTH", "EIGHTH", "NINTH", "ELEVENTH", "TWELFTH", "TWENTIETH",
        "ONE HUNDRED FIRST", "ONE THOUSANDTH",
    ]
    assert spell_year(1776) == "SEVENTEEN SEVENTY SIX"
    assert spell_year(1801) == "EIGHTEEN OH ONE"
    assert spell_year(2100) == "TWO THOUSAND ONE HUNDRED"  # outside YEAR_RANGES


def test_script_detection():
    assert is_target_script("Hello there")
    assert not is_target_script("\u041f\u0440\u0438\u0432\u0435\u0442")  # Cyrillic
    assert is_target_script("\u041f\u0440\u0438\u0432\u0435\u0442", "cyrillic")
    assert is_target_script("\u65e5\u672c\u8a9e\u3067\u3059", "cjk")  # kanji + hiragana
    assert is_target_script("\u0393\u03b5\u03b9\u03b1", "greek")
    assert not is_target_script("123 ...")  # no letters at all
    assert script_fraction("123 ...") is None
    # 5 Latin letters + 3 Cyrillic letters: 5/8
    assert script_fraction("hello \u043c\u0438\u0440") == pytest.approx(5 / 8)
    assert not is_target_script("hello \u043c\u0438\u0440")
    assert is_target_script("hello \u043c\u0438\u0440", min_fraction=0.6)
    assert is_target_script("caf\u00e9 na\u00efve")  # accented Latin is Latin
