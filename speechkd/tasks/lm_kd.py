"""LM-to-CTC distillation term of the ASR task: attention decoders on encoder layers taught by a masked LM.

Enabled by ``loss.lm_kd.weight > 0`` (with ``model.attention_decoders.layers`` non-empty). For each decoder
on encoder layer ``l`` (1-based) the batch's LM-vocabulary transcript and soft labels (collated from the
cut fields of :mod:`speechkd.targets.lm_soft_labels`) give::

    L_l   = hard_weight * CE(decoder_l, y_lm) + soft_weight * KL(p_topk || decoder_l)   (summed over tokens)
    L_lm  = weight * sum_l w_l L_l          (w_l = layer_weights, default 1 / number of decoders)

The CTC head keeps its BPE tokens (``batch["tokens"]``); the decoders never see BPE ids and the CTC never
sees LM ids, so the two tokenisations of one transcript need not align. Utterances whose LM transcript is
longer than the decoders' ``max_tokens`` (or empty) are left out of this term, logged and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from speechkd.errors import SpeechkdError
from speechkd.targets.lm_soft_labels import FIELD_IDS, FIELD_PROBS, FIELD_TOKENS

log = logging.getLogger(__name__)


@dataclass
class LmKdLossConfig:
    """Weights of the attention decoders' losses and the soft labels they expect."""

    weight: float = 0.0  # weight of the whole decoder term (0: off; then the model must have no decoders)
    hard_weight: float = 0.7  # CE to the LM-vocabulary transcript (Futami et al.: 0.7)
    soft_weight: float = 0.3  # KL to the top-k soft labels (0.3); 0 gives the hard-labels-only ablation
    layer_weights: list[float] = field(default_factory=list)  # per decoder, in model layer order; empty: equal
    lm: str = ""  # path / hub id of the masked LM the soft labels must come from (checked at start)
    k: int = 8  # top-k the soft labels must have
    temperature: float = 3.0  # temperature the soft labels must have

    def validate(self) -> None:
        if min(self.weight, self.hard_weight, self.soft_weight) < 0 or any(w < 0 for w in self.layer_weights):
            raise SpeechkdError(f"loss.lm_kd: weights must be >= 0 (weight={self.weight}, hard={self.hard_weight}, "
                                f"soft={self.soft_weight}, layers={self.layer_weights})")
        if self.weight > 0 and self.hard_weight + self.soft_weight == 0:
            raise SpeechkdError("loss.lm_kd: hard_weight and soft_weight are both 0")
        if self.weight > 0 and not self.lm:
            raise SpeechkdError("loss.lm_kd.lm: name the masked LM the soft labels were made with")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def check_model(self, decoder_layers: list[int]) -> None:
        if self.weight > 0 and not decoder_layers:
            raise SpeechkdError(f"loss.lm_kd.weight={self.weight} but model.attention_decoders.layers is empty")
        if self.weight == 0 and decoder_layers:
            raise SpeechkdError(f"model.attention_decoders.layers={decoder_layers} but loss.lm_kd.weight=0: "
                                "the decoders would never train")
        if self.layer_weights and len(self.layer_weights) != len(decoder_layers):
            raise SpeechkdError(f"loss.lm_kd.layer_weights={self.layer_weights} has {len(self.layer_weights)} "
                                f"entries for {len(decoder_layers)} decoder layers {decoder_layers}")

    def expected_metadata(self) -> dict[str, Any]:
        """The soft-label metadata values this config requires (besides the LM's identity)."""
        return {"k": self.k, "temperature": float(self.temperature)}


TARGET_FIELDS = (FIELD_TOKENS, FIELD_IDS, FIELD_PROBS)


class LmKdTerm:
    """``term(model, enc, batch) -> (loss, info)``; counts left-out utterances in ``num_left_out``."""

    def __init__(self, cfg: LmKdLossConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.num_left_out = 0

    def __call__(self, model: Any, enc: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from speechkd.losses.lm_kd import token_ce, topk_kl

        decoders = model.attention_decoders
        if decoders is None:
            raise SpeechkdError("loss.lm_kd is on but the model has no attention decoders")
        tg = batch["targets"]
        lens = tg[FIELD_TOKENS + "_lens"].to(enc.out.device)
        max_tokens = next(iter(decoders.values())).max_tokens
        keep = (lens > 0) & (lens <= max_tokens)
        if not bool(keep.all()):
            bad = (~keep).nonzero(as_tuple=True)[0].tolist()
            self.num_left_out += len(bad)
            log.warning("%d utterance(s) with 0 or more than %d LM tokens left out of the LM-KD loss (%d so far): %s",
                        len(bad), max_tokens, self.num_left_out, " ".join(batch["cut_ids"][i] for i in bad))
        if not bool(keep.any()):  # zero, but connected to every decoder parameter (DDP)
            return sum(p.sum() for p in decoders.parameters()) * 0.0, {}
        idx = keep.nonzero(as_tuple=True)[0]
        lens = lens[idx]
        u = int(lens.max())
        tokens = tg[FIELD_TOKENS].to(enc.out.device)[idx, :u]
        ids = tg[FIELD_IDS].to(enc.out.device)[idx, :u]
        probs = tg[FIELD_PROBS].to(enc.out.device)[idx, :u]
        layer_w = self.cfg.layer_weights or [1.0 / len(decoders)] * len(decoders)
        total = torch.zeros((), device=enc.out.device)
        ce_sum = kl_sum = torch.zeros((), device=enc.out.device)  # logged: kept on the device
        for w, (layer, dec) in zip(layer_w, decoders.items()):
            logits = dec(enc.layer_outputs[int(layer) - 1][idx], enc.out_lens[idx], tokens, lens)  # (N', U, V_lm)
            ce = token_ce(logits, tokens, lens)
            kl = topk_kl(logits, ids, probs, lens) if self.cfg.soft_weight > 0 else ce.new_zeros(())
            total = total + w * (self.cfg.hard_weight * ce + self.cfg.soft_weight * kl)
            ce_sum = ce_sum + w * ce.detach()
            kl_sum = kl_sum + w * kl.detach()
        wt = self.cfg.weight
        info = {"lm_ce": wt * self.cfg.hard_weight * ce_sum, "lm_kl": wt * self.cfg.soft_weight * kl_sum}
        return wt * total, info
