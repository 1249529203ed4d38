"""Token n-gram LM (interpolated Witten-Bell) over BPE ids, for CTC shallow fusion.

Trained on the same text as the masked LM (the training transcripts), tokenised by the CTC's BPE model, so
it scores exactly the units the CTC emits. With ``h`` the last ``n-1`` tokens (``<s>`` padded), ``h'`` its
last ``n-2``, ``c`` counts, ``N1+(h .)`` the number of distinct tokens seen after ``h``::

    P(w | h) = (c(h, w) + N1+(h .) P(w | h')) / (c(h) + N1+(h .))        (P(w | h) = P(w | h') if c(h) = 0)
    P(w)     = (c(w) + N1+(.) / V) / (N + N1+(.))                          (V = vocabulary + </s>)

Always a proper distribution over the vocabulary plus ``</s>`` (no unseen token gets zero probability).
Saved with ``torch.save`` together with its order, vocabulary size and the BPE model's checksum.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from speechkd.errors import SpeechkdError

PathLike = Union[str, Path]
BOS = -1  # context padding before the first token
FORMAT = "speechkd-token-ngram-v1"


class TokenNgramLm:
    """``log_prob(context, token)``: natural-log probability; ``token = eos_id`` scores the sentence end."""

    def __init__(self, order: int, vocab_size: int, counts: dict[tuple[int, ...], Counter], meta: dict[str, Any]) -> None:
        if order < 1:
            raise SpeechkdError(f"n-gram order must be >= 1, got {order}")
        self.order = order
        self.vocab_size = vocab_size
        self.eos_id = vocab_size  # one past the token ids
        self.counts = counts  # context tuple (length 0 .. order-1) -> Counter of next tokens
        self.meta = meta
        self._totals = {h: sum(c.values()) for h, c in counts.items()}
        self._cache: dict[tuple[tuple[int, ...], int], float] = {}

    @classmethod
    def train(cls, sentences: Iterable[Sequence[int]], order: int, vocab_size: int, **meta: Any) -> "TokenNgramLm":
        counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        n = 0
        for sent in sentences:
            seq = [BOS] * (order - 1) + list(sent) + [vocab_size]
            for i in range(order - 1, len(seq)):
                for k in range(order):  # contexts of length 0 .. order-1
                    counts[tuple(seq[i - k : i])][seq[i]] += 1
            n += 1
        if n == 0:
            raise SpeechkdError("n-gram LM: no training sentences")
        return cls(order, vocab_size, dict(counts), {**meta, "num_sentences": n})

    def _prob(self, h: tuple[int, ...], w: int) -> float:
        if not h:
            c = self.counts.get((), Counter())
            types, total = len(c), self._totals.get((), 0)
            return (c[w] + types / (self.vocab_size + 1)) / (total + types)
        lower = self._prob(h[1:], w)
        c = self.counts.get(h)
        if not c:
            return lower
        return (c[w] + len(c) * lower) / (self._totals[h] + len(c))

    def log_prob(self, context: Sequence[int], token: int) -> float:
        """log P(token | last order-1 tokens of context), context without padding (``<s>`` added)."""
        k = self.order - 1
        h = tuple(([BOS] * k + list(context))[-k:]) if k else ()
        key = (h, token)
        if key not in self._cache:
            self._cache[key] = math.log(self._prob(h, token))
        return self._cache[key]

    def save(self, path: PathLike) -> None:
        import torch

        torch.save({"format": FORMAT, "order": self.order, "vocab_size": self.vocab_size,
                    "counts": {h: dict(c) for h, c in self.counts.items()}, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: PathLike) -> "TokenNgramLm":
        import torch

        obj = torch.load(path, weights_only=False)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise SpeechkdError(f"{path} is not a speechkd token n-gram LM ({FORMAT})")
        return cls(obj["order"], obj["vocab_size"], {h: Counter(c) for h, c in obj["counts"].items()}, obj["meta"])
