"""SentencePiece BPE/unigram tokenizer with the id layout every speechkd model assumes.

Ids: 0 = ``<blk>`` (CTC/transducer blank), 1 = ``<sos/eos>``, 2 = ``<unk>``, then the learned pieces.
:func:`train_bpe` writes into ``output_dir`` (e.g. ``data/lang_bpe_500``):

- ``bpe.model``: the sentencepiece model;
- ``tokens.txt``: ``<token> <id>`` per line, in id order;
- ``metadata.yaml``: vocab size, model type, special ids, training-text size, sha256 of ``bpe.model``.

:class:`Tokenizer` refuses a model whose special ids differ from this layout, so a model trained with
another layout fails loudly instead of silently shifting every label by a few ids.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

from speechkd.errors import SpeechkdError
from speechkd.utils.hashing import sha256_file

log = logging.getLogger(__name__)

Pathlike = Union[str, Path]

BLANK = "<blk>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"
BLANK_ID, SOS_EOS_ID, UNK_ID = 0, 1, 2
SPECIAL_TOKENS = (BLANK, SOS_EOS, UNK)  # in id order
MODEL_NAME = "bpe.model"
TOKENS_NAME = "tokens.txt"
METADATA_NAME = "metadata.yaml"
DEFAULT_CHARACTER_COVERAGE = 1.0
DEFAULT_INPUT_SENTENCE_SIZE = 100_000_000  # sentencepiece samples this many sentences at most

_SPEED_PERTURBED_RE = re.compile(r"_sp\d+(\.\d+)?$")
_MAX_VOCAB_RE = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train_bpe(
    texts: Iterable[str],
    output_dir: Pathlike,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = DEFAULT_CHARACTER_COVERAGE,
    input_sentence_size: int = DEFAULT_INPUT_SENTENCE_SIZE,
) -> Path:
    """Train a sentencepiece model on ``texts``; return the path of ``bpe.model``.

    Args:
        texts: training sentences (LibriSpeech style: upper-case words); empty ones are skipped.
        output_dir: created if needed; receives ``bpe.model``, ``tokens.txt`` and ``metadata.yaml``.
        vocab_size: total number of ids including the 3 special tokens.
        model_type: sentencepiece model type ("unigram", "bpe", "char", "word").
        character_coverage: fraction of characters covered by the model.
        input_sentence_size: at most this many sentences are sampled for training.

    Raises:
        SpeechkdError: empty text, a vocabulary too large for the text (the message gives the
            largest size sentencepiece accepts), or another training failure.
    """
    import sentencepiece as spm

    if vocab_size <= len(SPECIAL_TOKENS):
        raise SpeechkdError(f"vocab_size must be > {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    counter = _SentenceCounter(texts)
    with tempfile.TemporaryDirectory(dir=output_dir) as tmp:
        prefix = Path(tmp) / "bpe"
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(counter),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                user_defined_symbols=[BLANK, SOS_EOS],  # ids 0 and 1
                unk_id=UNK_ID,
                bos_id=-1,
                eos_id=-1,
                minloglevel=1,
            )
        except RuntimeError as e:
            if counter.error is not None:  # the text source failed (e.g. an unreadable manifest)
                raise counter.error from e
            raise _explain_training_error(e, vocab_size, counter, output_dir) from e
        model_path = output_dir / MODEL_NAME
        shutil.move(str(prefix.with_suffix(".model")), model_path)
    tok = Tokenizer(model_path)
    write_tokens(tok, output_dir / TOKENS_NAME)
    _write_metadata(output_dir / METADATA_NAME, tok, model_type, character_coverage, counter)
    log.info(
        "Trained %s model with %d tokens on %d sentences -> %s",
        model_type,
        vocab_size,
        counter.num_sentences,
        model_path,
    )
    return model_path


class _SentenceCounter:
    """Iterates non-empty stripped texts once, counting sentences, skipped empties and characters.

    sentencepiece turns any exception of its sentence iterator into a generic RuntimeError; the
    user-facing one the source raised is kept in ``error`` so that the caller can re-raise it.
    """

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.num_sentences = 0
        self.num_empty = 0
        self.num_chars = 0
        self.error: Optional[SpeechkdError] = None

    def __iter__(self) -> Iterator[str]:
        try:
            for text in self._texts:
                text = text.strip()
                if not text:
                    self.num_empty += 1
                    continue
                self.num_sentences += 1
                self.num_chars += len(text)
                yield text
        except SpeechkdError as e:
            self.error = e
            raise
        if self.num_empty:
            log.warning("Skipped %d empty text(s) while training the tokenizer", self.num_empty)


def _explain_training_error(
    e: RuntimeError, vocab_size: int, counter: _SentenceCounter, output_dir: Path
) -> SpeechkdError:
    if counter.num_sentences == 0:
        return SpeechkdError(f"no non-empty text to train the tokenizer for {output_dir}")
    m = _MAX_VOCAB_RE.search(str(e))
    if m:
        return SpeechkdError(
            f"vocab_size {vocab_size} is too large for the training text ({counter.num_sentences} sentences, "
            f"{counter.num_chars} characters): this text supports at most {m.group(2)} tokens. "
            f"Use a vocab size of at most {m.group(2)} (--vocab-size), or train on more text."
        )
    return SpeechkdError(f"sentencepiece failed to train a {vocab_size}-token model for {output_dir}: {e}")


def write_tokens(tok: "Tokenizer", path: Pathlike) -> None:
    """``<token> <id>`` per line, in id order."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(tok.vocab_size):
            f.write(f"{tok.id_to_piece(i)} {i}\n")


def _write_metadata(path: Path, tok: "Tokenizer", model_type: str, coverage: float, counter: _SentenceCounter) -> None:
    import sentencepiece as spm
    import yaml

    meta = {
        "vocab_size": tok.vocab_size,
        "model_type": model_type,
        "blank_id": BLANK_ID,
        "sos_eos_id": SOS_EOS_ID,
        "unk_id": UNK_ID,
        "character_coverage": coverage,
        "num_training_sentences": counter.num_sentences,
        "num_skipped_empty": counter.num_empty,
        "model_sha256": sha256_file(tok.model_path),
        "sentencepiece_version": spm.__version__,
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(meta, f, sort_keys=False)


def texts_from_manifests(paths: Sequence[Pathlike]) -> Iterator[str]:
    """Supervision texts of lhotse cuts or supervisions manifests, for :func:`train_bpe`.

    Speed-perturbed copies (supervision ids ending in ``_sp<factor>``) repeat their original's text
    and are left out (counted in the log); a missing text is yielded as "" (counted as empty there).

    Raises:
        SpeechkdError: at once (not when iteration starts) when a manifest does not exist.
    """
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise SpeechkdError(f"manifest not found: {', '.join(missing)}")
    return _iter_manifest_texts([Path(p) for p in paths])


def _iter_manifest_texts(paths: Sequence[Path]) -> Iterator[str]:
    from lhotse import CutSet, SupervisionSet, load_manifest_lazy

    for path in paths:
        manifest = load_manifest_lazy(path)
        if isinstance(manifest, CutSet):
            sups: Iterable = (s for cut in manifest for s in cut.supervisions)
        elif isinstance(manifest, SupervisionSet):
            sups = manifest
        else:
            raise SpeechkdError(f"{path} is a {type(manifest).__name__}; expected cuts or supervisions")
        num_perturbed = 0
        for sup in sups:
            if _SPEED_PERTURBED_RE.search(sup.id):
                num_perturbed += 1
                continue
            yield sup.text or ""
        if num_perturbed:
            log.info("%s: left out %d speed-perturbed copies", path, num_perturbed)


class Tokenizer:
    """Text <-> token ids with a speechkd sentencepiece model (ids 0/1/2 = blank, sos/eos, unk)."""

    blank_id = BLANK_ID
    sos_id = eos_id = SOS_EOS_ID
    unk_id = UNK_ID

    def __init__(self, model_path: Pathlike) -> None:
        import sentencepiece as spm

        self.model_path = Path(model_path)
        self._sha256: Optional[str] = None
        if not self.model_path.is_file():
            raise SpeechkdError(f"tokenizer model not found: {self.model_path}")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.load(str(self.model_path))
        except (OSError, RuntimeError) as e:
            raise SpeechkdError(f"{self.model_path} is not a sentencepiece model: {e}") from e
        self._check_special_ids()

    def _check_special_ids(self) -> None:
        found = [self._sp.id_to_piece(i) for i in range(min(len(SPECIAL_TOKENS), self._sp.get_piece_size()))]
        if tuple(found) != SPECIAL_TOKENS or self._sp.unk_id() != UNK_ID:
            raise SpeechkdError(
                f"{self.model_path}: ids 0,1,2 are {found}, expected {list(SPECIAL_TOKENS)}; "
                "train it with `speechkd data bpe` (speechkd.text.tokenizer.train_bpe)"
            )

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def sha256(self) -> str:
        """Checksum of the model file: token ids mean the same only under the same checksum."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.model_path)
        return self._sha256

    def fingerprint(self) -> dict[str, str]:
        """``{"path", "sha256"}`` of the model, for checkpoints (see :mod:`speechkd.training.checkpoint`)."""
        return {"path": str(self.model_path.resolve()), "sha256": self.sha256}

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no blank, no sos/eos added)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings; wrap a single text in a list")
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, token_ids: Sequence[Sequence[int]]) -> list[str]:
        """Texts of each id sequence; blank and sos/eos ids are dropped (they carry no text)."""
        specials = {BLANK_ID, SOS_EOS_ID}
        return [self._sp.decode([int(i) for i in ids if int(i) not in specials]) for ids in token_ids]

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size})"
