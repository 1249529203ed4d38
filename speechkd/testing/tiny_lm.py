"""A tiny random masked LM (WordPiece tokenizer trained on given texts + untrained BertForMaskedLM) for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from speechkd.training.mlm import MlmConfig, build_mlm, train_wordpiece

TINY_MLM = dict(vocab_size=120, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=40)


def make_tiny_masked_lm(out_dir: Union[str, Path], texts: Sequence[str], seed: int = 0, **sizes: int) -> Path:
    """Write a random ``BertForMaskedLM`` + ``BertTokenizerFast`` to ``out_dir`` with ``save_pretrained``."""
    import torch

    cfg = MlmConfig(**{**TINY_MLM, **sizes})
    tokenizer = train_wordpiece([t.lower() for t in texts], cfg.vocab_size)
    torch.manual_seed(seed)
    model = build_mlm(tokenizer, cfg)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
