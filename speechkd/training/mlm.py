"""Offline stand-in for BERT: a small masked LM trained from scratch on a corpus's training transcripts.

No masked LM with its prediction head can be installed here, so LM-to-CTC distillation on MiniLibri uses
this one. ``train_mlm`` does, in order:

1. reads the LM text: the training transcripts, optionally plus a text corpus (MiniLibri: the rest of the
   text source its sentences were drawn from, LibriSpeech's LM-corpus analogue), with every dev/test
   transcript removed (:func:`drop_excluded`), normalised as the teacher will see them
   (:func:`speechkd.teachers.masked_lm.normalize_lm_text`);
2. holds out ``heldout_fraction`` of the sentences (seeded) for evaluation;
3. trains an uncased WordPiece tokenizer (``tokenizers``, ``vocab_size`` pieces, BERT's special tokens)
   on the remaining sentences;
4. trains ``BertForMaskedLM`` from a small ``BertConfig`` (sizes in :class:`MlmConfig`) with BERT's
   masking (``mask_prob`` of the tokens; 80 % [MASK], 10 % random, 10 % kept), AdamW, linear warm-up/decay;
5. reports the masked-token accuracy and perplexity on the held-out sentences (and on ``eval_texts``,
   e.g. the dev transcripts, when given), with a fixed masking seed;
6. writes the model and tokenizer with ``save_pretrained`` (loadable by
   :meth:`speechkd.teachers.masked_lm.MaskedLmTeacher.load`) and ``metadata.yaml`` (config, data, scores).

With ``init_encoder`` (a directory or hub id of a pretrained BERT encoder, e.g. the packaged MiniLM-L6,
which ships without its MLM head), steps 3-4 change: the encoder's own tokenizer and weights are used,
the MLM head is new (its output matrix tied to the word embeddings, as in BERT), and only the head and
the top ``train_top_layers`` encoder layers train. The size knobs are then the encoder's, not the config's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from speechkd.errors import SpeechkdError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
METADATA_FILE = "metadata.yaml"


@dataclass
class MlmConfig:
    """Tokenizer, model and training knobs of the stand-in masked LM."""

    vocab_size: int = 2000  # WordPiece vocabulary (incl. special tokens and characters)
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_positions: int = 130  # LM tokens per sentence + [CLS] + [SEP]
    dropout: float = 0.1
    mask_prob: float = 0.15
    batch_size: int = 64
    steps: int = 3000
    lr: float = 5e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    heldout_fraction: float = 0.05
    seed: int = 0
    lowercase: bool = True
    log_every: int = 100
    init_encoder: Optional[str] = None  # pretrained BertModel directory or hub id: start from it (module docstring)
    train_top_layers: int = 0  # with init_encoder: encoder layers (from the top) trained with the new head

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise SpeechkdError(f"mlm hidden_size={self.hidden_size} not divisible by num_heads={self.num_heads}")
        if not 0 < self.mask_prob < 1 or not 0 < self.heldout_fraction < 1:
            raise SpeechkdError(f"mlm mask_prob={self.mask_prob} and heldout_fraction={self.heldout_fraction} must be in (0, 1)")
        if self.steps < 1 or self.batch_size < 1:
            raise SpeechkdError(f"mlm steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if self.train_top_layers < 0 or (self.train_top_layers and not self.init_encoder):
            raise SpeechkdError(f"mlm train_top_layers={self.train_top_layers} needs init_encoder and must be >= 0")


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> Any:
    """A ``BertTokenizerFast`` (uncased WordPiece, BERT special tokens) trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(list(texts), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")


def build_mlm(tokenizer: Any, cfg: MlmConfig) -> Any:
    """A randomly initialised ``BertForMaskedLM`` of ``cfg``'s sizes over ``tokenizer``'s vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(config)


def mlm_from_encoder(path: str, train_top_layers: int) -> tuple[Any, Any]:
    """(``BertForMaskedLM`` with the pretrained encoder at ``path`` and a new MLM head, its tokenizer).

    Only the head's transform and bias and the top ``train_top_layers`` encoder layers keep
    ``requires_grad``; the output matrix is tied to the (frozen) word embeddings.
    """
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    config = BertConfig.from_pretrained(path)
    if config.model_type != "bert":
        raise SpeechkdError(f"mlm init_encoder={path!r}: model_type {config.model_type!r}, expected 'bert'")
    if train_top_layers > config.num_hidden_layers:
        raise SpeechkdError(f"mlm train_top_layers={train_top_layers} but {path!r} has {config.num_hidden_layers} layers")
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = BertModel.from_pretrained(path, add_pooling_layer=False)
    model = BertForMaskedLM(config)
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    if missing or unexpected:
        raise SpeechkdError(f"mlm init_encoder={path!r}: weights do not fit BertForMaskedLM "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    for p in model.bert.parameters():
        p.requires_grad_(False)
    for layer in model.bert.encoder.layer[config.num_hidden_layers - train_top_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return model, tokenizer


def _encode(tokenizer: Any, texts: Sequence[str], max_positions: int) -> list[list[int]]:
    """[CLS] ids [SEP] per text, cut to ``max_positions``; empty texts dropped."""
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_positions)["input_ids"]
    return [x for x in ids if len(x) > 2]


def _collate(seqs: Sequence[Sequence[int]], tokenizer: Any, mask_prob: float, gen: Any) -> dict[str, Any]:
    """Pad ``seqs`` and apply BERT masking: returns input_ids, attention_mask, labels (-100 = not scored)."""
    import torch

    s = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), s), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, x in enumerate(seqs):
        ids[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id) | (attn == 0)
    chosen = (torch.rand(ids.shape, generator=gen) < mask_prob) & ~special
    # at least one scored token per sentence, so every batch has a loss
    none = ~chosen.any(dim=1)
    if none.any():
        lens = attn.sum(dim=1)
        for i in none.nonzero(as_tuple=True)[0].tolist():
            chosen[i, 1 + int(torch.randint(int(lens[i]) - 2, (1,), generator=gen))] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (r < 0.8)] = tokenizer.mask_token_id
    rand_tok = torch.randint(len(tokenizer), ids.shape, generator=gen)
    swap = chosen & (r >= 0.8) & (r < 0.9)
    inputs[swap] = rand_tok[swap]
    return {"input_ids": inputs, "attention_mask": attn, "labels": labels}


def masked_logits(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(logits (M, V) at the M scored positions of ``batch``, their labels (M,)).

    The vocabulary projection runs at the scored positions only (BERT's ``forward`` projects every
    position: most of the cost with a 30k vocabulary), and the encoder runs without autograd when
    none of its parameters trains.
    """
    import torch

    frozen = not any(p.requires_grad for p in model.bert.parameters())
    with torch.no_grad() if frozen else contextlib.nullcontext():
        hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]  # (N, S, H)
    m = batch["labels"] != -100
    return model.cls(hidden[m]), batch["labels"][m]


def evaluate_mlm(model: Any, tokenizer: Any, seqs: Sequence[Sequence[int]], mask_prob: float, seed: int = 1234,
                 batch_size: int = 64) -> dict[str, float]:
    """Masked-token accuracy and perplexity of ``model`` on ``seqs`` with a fixed masking seed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    correct = total = 0
    nll = 0.0
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            batch = _collate(seqs[start : start + batch_size], tokenizer, mask_prob, gen)
            logits, labels = masked_logits(model, batch)
            correct += int((logits.argmax(-1) == labels).sum())
            nll += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total += int(labels.numel())
    if total == 0:
        raise SpeechkdError("evaluate_mlm: no scored tokens")
    return {"masked_accuracy": correct / total, "perplexity": math.exp(nll / total), "scored_tokens": total}


def drop_excluded(texts: Sequence[str], excluded: Sequence[str], lowercase: bool = True) -> tuple[list[str], int]:
    """``texts`` without any sentence equal (after LM normalisation) to one of ``excluded`` (e.g. the dev/test
    transcripts); returns the kept texts and how many were removed."""
    from speechkd.teachers.masked_lm import normalize_lm_text

    bad = {normalize_lm_text(t, lowercase) for t in excluded}
    kept = [t for t in texts if normalize_lm_text(t, lowercase) not in bad]
    return kept, len(texts) - len(kept)


def split_heldout(texts: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) sentences: a seeded random ``fraction`` of the distinct sentences is held out."""
    distinct = sorted(set(texts))
    rng = random.Random(seed)
    rng.shuffle(distinct)
    n_held = max(1, int(round(fraction * len(distinct))))
    held = set(distinct[:n_held])
    return [t for t in texts if t not in held], sorted(held)


_SCRATCH_MODEL_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "dropout")


def model_summary(model: Any, trained: list[torch.nn.Parameter]) -> dict[str, Any]:
    """The trained LM's architecture and parameter counts, as recorded in its ``metadata.yaml``."""
    c = model.config
    return {"hidden_size": c.hidden_size, "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size, "dropout": c.hidden_dropout_prob,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trained_parameters": sum(p.numel() for p in trained)}


def train_mlm(texts: Sequence[str], out_dir: PathLike, cfg: MlmConfig, eval_texts: Optional[Sequence[str]] = None,
              source: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train the stand-in masked LM on ``texts`` (module docstring); returns the metadata written."""
    import torch
    import yaml

    from speechkd.teachers.masked_lm import normalize_lm_text
    from speechkd.training.checkpoint import seed_everything

    cfg.validate()
    texts = [normalize_lm_text(t, cfg.lowercase) for t in texts]
    texts = [t for t in texts if t]
    if len(texts) < 2:
        raise SpeechkdError(f"train_mlm: {len(texts)} non-empty training sentence(s); need at least 2")
    seed_everything(cfg.seed)
    train_texts, held_texts = split_heldout(texts, cfg.heldout_fraction, cfg.seed)
    if cfg.init_encoder:
        model, tokenizer = mlm_from_encoder(cfg.init_encoder, cfg.train_top_layers)
    else:
        tokenizer = train_wordpiece(train_texts, cfg.vocab_size)
        model = build_mlm(tokenizer, cfg)
    train_seqs = _encode(tokenizer, train_texts, cfg.max_positions)
    held_seqs = _encode(tokenizer, held_texts, cfg.max_positions)
    trained = [p for p in model.parameters() if p.requires_grad]
    log.info("masked LM: %d training / %d held-out sentences, vocab %d, %.2fM parameters (%.2fM trained)%s",
             len(train_seqs), len(held_seqs), len(tokenizer), sum(p.numel() for p in model.parameters()) / 1e6,
             sum(p.numel() for p in trained) / 1e6, f", from {cfg.init_encoder}" if cfg.init_encoder else "")
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(cfg.warmup_steps, 1), max(0.0, (cfg.steps - s) / max(cfg.steps - cfg.warmup_steps, 1)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        batch = _collate([train_seqs[rng.randrange(len(train_seqs))] for _ in range(cfg.batch_size)],
                         tokenizer, cfg.mask_prob, gen)
        logits, labels = masked_logits(model, batch)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.info("mlm step %d/%d: loss %.3f", step + 1, cfg.steps, float(loss.detach()))
    scores = {"heldout": evaluate_mlm(model, tokenizer, held_seqs, cfg.mask_prob)}
    if eval_texts:
        ev = _encode(tokenizer, [normalize_lm_text(t, cfg.lowercase) for t in eval_texts], cfg.max_positions)
        if ev:
            scores["eval_texts"] = evaluate_mlm(model, tokenizer, ev, cfg.mask_prob)
    for name, s in scores.items():
        log.info("masked LM on %s: masked-token accuracy %.3f, perplexity %.1f (%d tokens)",
                 name, s["masked_accuracy"], s["perplexity"], s["scored_tokens"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from dataclasses import asdict

    kind = (f"masked LM: pretrained encoder {cfg.init_encoder} + new MLM head" if cfg.init_encoder
            else "stand-in masked LM (BertForMaskedLM from scratch)")
    config = asdict(cfg)
    if cfg.init_encoder:  # the from-scratch model keys do not apply: record what the encoder has instead
        for key in _SCRATCH_MODEL_KEYS:
            config.pop(key)
    meta = {"kind": kind, "config": config, "model": model_summary(model, trained),
            "num_train_sentences": len(train_seqs), "num_heldout_sentences": len(held_seqs),
            "vocab_size": len(tokenizer), "scores": scores, "source": source or {}}
    (out / METADATA_FILE).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    return meta
