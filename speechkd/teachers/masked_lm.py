"""Masked-LM teacher (BERT-style) for LM-to-CTC distillation: per-position top-k soft labels.

``MaskedLmTeacher.load(path_or_id)`` wraps any transformers masked LM (``AutoModelForMaskedLM``) and its
tokenizer. For one transcript of ``L`` LM tokens ``y_1..y_L`` the soft label of position ``i`` is the
LM's distribution at ``i`` when *only* ``y_i`` is replaced by the mask token (Futami et al., 2020)::

    input_i = [CLS] y_1 .. y_{i-1} [MASK] y_{i+1} .. y_L [SEP]
    p_i     = softmax(logits(input_i)[i] / T)             (V,)
    ids_i, probs_i = top-k of p_i, probs renormalised to sum to 1

All ``L`` masked copies of all utterances of a call are run in batches of ``batch_size`` sequences
(one forward per batch, on the teacher's device); the LM's output projection to its vocabulary runs at the
masked position of each copy only (checked against the full output on the first batch). Token ids are in
the LM's vocabulary; the CTC student's BPE vocabulary never meets them (the attention decoders predict LM
tokens).

Text normalisation before tokenising: ``lowercase`` (LibriSpeech transcripts are upper case; uncased
BERT lower-cases anyway, a cased LM must not see shouting) and whitespace collapsing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from speechkd.errors import SpeechkdError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
TEXT_NORMALIZATION = "lowercase+collapse-whitespace"
# Compute dtypes of the LM forward: float32 as stored, or autocast to bfloat16/float16 (GPU speed); the softmax,
# top-k and renormalisation always run in float32.
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def normalize_lm_text(text: str, lowercase: bool = True) -> str:
    """The text the LM tokenizer sees (see :data:`TEXT_NORMALIZATION`)."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hex sha256 of the tokenizer's vocabulary (token -> id) and its special tokens."""
    payload = {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(tokenizer.special_tokens_map.items())}
    return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()


@dataclass
class SoftLabels:
    """Soft labels of one utterance: ``tokens (L,)`` int32 LM ids, ``topk_ids (L, k)`` int32,
    ``topk_probs (L, k)`` float16 (each row sums to 1 up to fp16 rounding)."""

    tokens: Any
    topk_ids: Any
    topk_probs: Any


class MaskedLmTeacher:
    """A frozen masked LM with its tokenizer (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, device: str = "cpu", batch_size: int = 64,
                 lowercase: bool = True, dtype: str = "float32") -> None:
        for attr in ("mask_token_id", "cls_token_id", "sep_token_id", "pad_token_id"):
            if getattr(tokenizer, attr, None) is None:
                raise SpeechkdError(f"masked LM '{name}': its tokenizer has no {attr.replace('_id', '')}")
        if batch_size < 1:
            raise SpeechkdError(f"masked LM batch_size must be >= 1, got {batch_size}")
        if dtype not in COMPUTE_DTYPES:
            raise SpeechkdError(f"masked LM dtype '{dtype}': use one of {', '.join(COMPUTE_DTYPES)}")
        self.dtype = dtype
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.lowercase = lowercase
        self._fingerprint: Optional[str] = None
        self._gather_ok: Optional[bool] = None  # output projection at masked positions only: unchecked / ok / not

    @classmethod
    def load(cls, path_or_id: PathLike, device: str = "cpu", batch_size: int = 64, lowercase: bool = True,
             name: Optional[str] = None, dtype: str = "float32") -> "MaskedLmTeacher":
        """Load model and tokenizer with transformers (a local directory or a hub id)."""
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
            model = AutoModelForMaskedLM.from_pretrained(str(path_or_id))
        except (OSError, ValueError) as e:
            raise SpeechkdError(f"cannot load masked LM '{path_or_id}': {e}") from None
        return cls(model, tokenizer, name or str(path_or_id), device, batch_size, lowercase, dtype)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def max_positions(self) -> int:
        """Most LM tokens of one utterance (the model's positions minus [CLS] and [SEP])."""
        return int(getattr(self.model.config, "max_position_embeddings", 512)) - 2

    def fingerprint(self) -> str:
        """Hex sha256 of the LM's config and weights."""
        if self._fingerprint is None:
            from speechkd.teachers.base import stable_config, weights_digest

            config = stable_config(self.model.config.to_dict())
            payload = json.dumps({"config": config, "weights": weights_digest(self.model)}, sort_keys=True, default=str)
            self._fingerprint = hashlib.sha256(payload.encode()).hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """Identity of the LM and its tokenizer (stored in soft-label metadata, checked by training)."""
        return {
            "lm": self.name,
            "model_type": str(self.model.config.model_type),
            "lm_fingerprint": self.fingerprint(),
            "tokenizer": type(self.tokenizer).__name__,
            "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
            "vocab_size": self.vocab_size,
            "text_normalization": TEXT_NORMALIZATION if self.lowercase else "collapse-whitespace",
        }

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """LM token ids of each text (normalised, no special tokens)."""
        norm = [normalize_lm_text(t, self.lowercase) for t in texts]
        return [list(ids) for ids in self.tokenizer(norm, add_special_tokens=False)["input_ids"]]

    @torch.no_grad()
    def soft_labels(self, utts: Sequence[Sequence[int]], k: int, temperature: float) -> list[SoftLabels]:
        """Soft labels of utterances given as LM token ids (each non-empty, at most :attr:`max_positions`)."""
        import numpy as np

        if not 1 <= k <= self.vocab_size:
            raise SpeechkdError(f"top-k k={k} must be in [1, vocab_size={self.vocab_size}]")
        if temperature <= 0:
            raise SpeechkdError(f"temperature must be > 0, got {temperature}")
        for u in utts:
            if not 0 < len(u) <= self.max_positions:
                raise SpeechkdError(f"soft_labels: utterance of {len(u)} LM tokens (need 1..{self.max_positions})")
        # (utterance index, masked position) of every masked copy, in order
        jobs = [(n, i) for n, u in enumerate(utts) for i in range(len(u))]
        ids_out = torch.empty((len(jobs), k), dtype=torch.int32)
        probs_out = torch.empty((len(jobs), k), dtype=torch.float16)
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            inputs, attn, pos = self._batch(utts, chunk)
            if self._gather_ok is None:
                self._gather_ok = self._gather_matches_full_output(inputs, attn, pos)
            with torch.autocast(torch.device(self.device).type, dtype=getattr(torch, self.dtype),
                                enabled=self.dtype != "float32"):
                picked = self._masked_logits(inputs, attn, pos, gather=self._gather_ok).float()  # (B, V)
            top_logp, top_ids = (picked / temperature).log_softmax(dim=-1).topk(k, dim=-1)  # (B, k)
            ids_out[start : start + len(chunk)] = top_ids.to(torch.int32).cpu()
            probs_out[start : start + len(chunk)] = top_logp.softmax(dim=-1).to(torch.float16).cpu()
        out, offset = [], 0
        for u in utts:
            n = len(u)
            out.append(SoftLabels(np.asarray(u, dtype=np.int32), ids_out[offset : offset + n].numpy(),
                                  probs_out[offset : offset + n].numpy()))
            offset += n
        return out

    def _masked_logits(self, inputs: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor,
                       gather: bool) -> torch.Tensor:
        """input_ids (B, S), attention_mask (B, S), masked position (B,) -> logits at those positions (B, V).

        ``gather``: the LM's output projection (``get_output_embeddings()``, the (H, V) layer that is most of a
        small LM's head) runs at the masked positions only, through a pre-hook that hands it ``(B, 1, H)`` instead
        of ``(B, S, H)``: S times less of the largest matrix product and no (B, S, V) tensor. Else the full output.
        """
        rows = torch.arange(inputs.size(0), device=inputs.device)
        head = self.model.get_output_embeddings() if gather else None
        if head is None:
            return self.model(input_ids=inputs, attention_mask=attn).logits[rows, pos]

        def gather_rows(_module: Any, args: tuple) -> tuple:
            return (args[0][rows, pos].unsqueeze(1), *args[1:])  # (B, S, H) -> (B, 1, H)

        handle = head.register_forward_pre_hook(gather_rows)
        try:
            return self.model(input_ids=inputs, attention_mask=attn).logits[:, 0]  # (B, 1, V) -> (B, V)
        finally:
            handle.remove()

    def _gather_matches_full_output(self, inputs: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor) -> bool:
        """Whether the gathered projection equals the LM's full output at ``pos`` (float32, one batch); logged
        when not (an LM whose head does not end with ``get_output_embeddings()``)."""
        with torch.autocast(torch.device(self.device).type, enabled=False):
            try:
                gathered = self._masked_logits(inputs, attn, pos, gather=True)
            except (RuntimeError, IndexError, ValueError):
                gathered = None
            full = self._masked_logits(inputs, attn, pos, gather=False)
        # loose enough for TF32 / another GEMM shape; a wrong gather gives other positions' logits, far off
        ok = gathered is not None and gathered.shape == full.shape and torch.allclose(gathered, full, rtol=1e-2,
                                                                                    atol=1e-2)
        if not ok:
            log.info("masked LM '%s': its head does not end with get_output_embeddings(); the full (B, S, V) output "
                     "is computed instead", self.name)
        return bool(ok)

    def _batch(
        self, utts: Sequence[Sequence[int]], chunk: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids (B, S), attention_mask (B, S), masked position (B,)) of the masked copies ``chunk``."""
        tok = self.tokenizer
        seqs = []
        for n, i in chunk:
            ids = [tok.cls_token_id, *utts[n], tok.sep_token_id]
            ids[1 + i] = tok.mask_token_id
            seqs.append(ids)
        s = max(len(x) for x in seqs)
        inputs = torch.full((len(seqs), s), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(seqs), s), dtype=torch.long)
        for b, ids in enumerate(seqs):
            inputs[b, : len(ids)] = torch.tensor(ids)
            attn[b, : len(ids)] = 1
        pos = torch.tensor([1 + i for _, i in chunk], dtype=torch.long)
        return inputs.to(self.device), attn.to(self.device), pos.to(self.device)
