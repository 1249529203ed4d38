"""ASR task: a batch -> weighted CTC and pruned-transducer losses.

The losses themselves are pure functions in :mod:`speechkd.losses`; this module only glues the
model's heads to them and applies the weights from :class:`AsrLossConfig`.

Pruned transducer (k2's recipe, as in icefall):

1. ``am = simple_am_proj(enc) (N, T, V)``, ``lm = simple_lm_proj(decoder(blank + y)) (N, U+1, V)``;
   the smoothed "simple" loss on ``am + lm`` gives occupation gradients ``px_grad, py_grad``.
2. ``ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, prune_range) (N, T, prune_range)``.
3. The joiner runs only on ``(N, T, prune_range, J)`` pruned inputs, never on ``(N, T, U+1, J)``.
4. ``loss = simple_scale * simple + pruned_scale * pruned``; during ``warmup_steps`` the simple scale
   goes from 1.0 down to ``simple_loss_scale`` and the pruned scale from ``pruned_warmup_start``
   up to 1.0 (the pruned loss is meaningless until the simple loss has found an alignment).

MVQ-KD adds ``codebook_loss_scale * codebook`` (per-codebook cross entropy of the teacher's codebook indexes
predicted from a middle encoder layer by ``model.training_heads["codebook"]``; :class:`CodebookTerm`).
Auxiliary terms on the encoder output (``AsrTask.aux_terms``; now: LM-to-CTC distillation through attention
decoders, :mod:`speechkd.tasks.lm_kd`, when ``loss.lm_kd.weight > 0``) are added to the total.

Utterances that CTC cannot align (fewer output frames than tokens plus repeats) are removed from
the CTC term; a batch with nothing left to train on
is skipped with a reason (the trainer logs and counts it). Left-out utterances are logged with
their cut ids and counted in ``AsrTask.num_ctc_infeasible``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from speechkd.decoding.ctc import ctc_emitted_tokens
from speechkd.decoding.transducer import greedy_search
from speechkd.errors import SpeechkdError
from speechkd.tasks.base import LossOutput
from speechkd.tasks.lm_kd import LmKdLossConfig, LmKdTerm

log = logging.getLogger(__name__)

BACKENDS = ("auto", "k2", "portable")


@dataclass
class AsrLossConfig:
    """Loss weights and knobs of the ASR task."""

    ctc_weight: float = 0.2  # weight of the CTC loss (needs model.use_ctc; the presets have both heads)
    transducer_weight: float = 1.0  # weight of simple+pruned transducer losses (needs use_transducer)
    simple_loss_scale: float = 0.5  # weight of the simple loss inside the transducer term
    prune_range: int = 5  # symbols kept per frame by pruning
    lm_scale: float = 0.25  # lm-only smoothing of the simple loss
    am_scale: float = 0.0  # am-only smoothing of the simple loss
    warmup_steps: int = 2000  # steps over which the pruned loss is phased in
    pruned_warmup_start: float = 0.1  # pruned-loss scale at step 0
    rnnt_backend: str = "auto"  # auto (k2 when importable) | k2 | portable
    # MVQ-KD: weight of the codebook-prediction loss (needs codebook indexes: `speechkd asr train --codebook-dir`)
    codebook_loss_scale: float = 0.0
    # Training steps at the start during which the transducer term is left out, so that only CTC (and the
    # codebook loss) trains the encoder: a CTC-first phase against the blank plateau (training/plateau.py).
    ctc_only_steps: int = 0
    # > 0: the CTC-only phase instead lasts until greedy CTC emits at least this many tokens per reference
    # token over the last ``ctc_only_window`` training batches (summed over DDP ranks), i.e. until the encoder
    # has left the blank plateau; ``ctc_only_steps`` then caps the phase (0 = no cap). Survives a resume.
    ctc_only_until_emission_ratio: float = 0.0
    ctc_only_window: int = 20
    # The ratio rule is judged from this step on: a fresh CTC head emits random tokens for the first tens of
    # steps (ratio ~0.5 at step 20 on MiniLibri) before it collapses to blank.
    ctc_only_min_steps: int = 100
    # lr multiplier while the CTC-only phase lasts; once the transducer joins it rises linearly to 1 over
    # ``ctc_only_lr_ramp_steps`` steps (0 = at once). With optimizer.lr at twice the lr that escapes the plateau and
    # 0.5 here, the phase runs at the escaping lr and the transducer trains at twice it (AsrTask.lr_scale).
    ctc_only_lr_scale: float = 1.0
    ctc_only_lr_ramp_steps: int = 0
    # Auxiliary term: LM-to-CTC distillation through attention decoders (speechkd.tasks.lm_kd); off by default.
    lm_kd: LmKdLossConfig = field(default_factory=LmKdLossConfig)

    def validate(self) -> None:
        self.lm_kd.validate()
        if self.ctc_weight < 0 or self.transducer_weight < 0 or self.ctc_weight + self.transducer_weight <= 0:
            raise SpeechkdError(
                f"loss: ctc_weight={self.ctc_weight} and transducer_weight={self.transducer_weight} "
                "must be >= 0 and not both 0"
            )
        if self.ctc_only_steps < 0 or (self.ctc_only_steps > 0 and self.ctc_weight <= 0):
            raise SpeechkdError(
                f"loss.ctc_only_steps={self.ctc_only_steps} must be >= 0, and > 0 only with loss.ctc_weight > 0 "
                f"(got ctc_weight={self.ctc_weight})"
            )
        r = self.ctc_only_until_emission_ratio
        if r < 0 or r > 2 or (r > 0 and (self.ctc_weight <= 0 or self.transducer_weight <= 0)):
            raise SpeechkdError(
                f"loss.ctc_only_until_emission_ratio={r} must be in [0, 2], and > 0 only when both "
                f"loss.ctc_weight (got {self.ctc_weight}) and loss.transducer_weight (got "
                f"{self.transducer_weight}) are > 0"
            )
        if self.ctc_only_window < 1 or self.ctc_only_min_steps < 0:
            raise SpeechkdError(
                f"loss.ctc_only_window must be >= 1 (got {self.ctc_only_window}) and loss.ctc_only_min_steps "
                f">= 0 (got {self.ctc_only_min_steps})"
            )
        phase = self.transducer_weight > 0 and (self.ctc_only_steps > 0 or self.ctc_only_until_emission_ratio > 0)
        if self.ctc_only_lr_scale <= 0 or self.ctc_only_lr_ramp_steps < 0 or (
            (self.ctc_only_lr_scale != 1.0 or self.ctc_only_lr_ramp_steps > 0) and not phase
        ):
            raise SpeechkdError(
                f"loss.ctc_only_lr_scale={self.ctc_only_lr_scale} must be > 0 and loss.ctc_only_lr_ramp_steps="
                f"{self.ctc_only_lr_ramp_steps} >= 0, and they act only with a CTC-only phase "
                "(loss.ctc_only_steps or loss.ctc_only_until_emission_ratio > 0, and loss.transducer_weight > 0)"
            )
        if self.codebook_loss_scale < 0:
            raise SpeechkdError(f"loss.codebook_loss_scale must be >= 0, got {self.codebook_loss_scale}")
        if self.prune_range < 1:
            raise SpeechkdError(f"loss.prune_range must be >= 1, got {self.prune_range}")
        if self.rnnt_backend not in BACKENDS:
            raise SpeechkdError(f"loss.rnnt_backend must be one of {BACKENDS}, got {self.rnnt_backend!r}")

    def check_model(self, use_ctc: bool, use_transducer: bool) -> None:
        """A loss with weight > 0 needs its head; a head with weight 0 would be unused (DDP error)."""
        for name, weight, present in (
            ("ctc", self.ctc_weight, use_ctc),
            ("transducer", self.transducer_weight, use_transducer),
        ):
            if weight > 0 and not present:
                raise SpeechkdError(f"loss.{name}_weight={weight} but the model has no {name} head")
            if weight == 0 and present:
                raise SpeechkdError(
                    f"loss.{name}_weight=0 but the model has a {name} head that would never train; "
                    f"set model.use_{name}=false or give it a weight"
                )

    def scales(self, step: int, start: Optional[int] = None) -> tuple[float, float]:
        """(simple_scale, pruned_scale) at training ``step`` (warm-up schedule above); the warm-up starts
        at ``start``, the step the transducer joined (default: after the ``ctc_only_steps``)."""
        step = step - (self.ctc_only_steps if start is None else start)
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return self.simple_loss_scale, 1.0
        frac = step / self.warmup_steps
        simple = 1.0 - frac * (1.0 - self.simple_loss_scale)
        pruned = self.pruned_warmup_start + frac * (1.0 - self.pruned_warmup_start)
        return simple, pruned


def pad_tokens(tokens: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """list of N token lists -> (padded (N, U_max) int64, lens (N,) int64), built on the host and copied to
    ``device`` once (no per-utterance copies, no device sync)."""
    u_max = max((len(t) for t in tokens), default=0)
    out = torch.tensor([t + [pad] * (u_max - len(t)) for t in tokens], dtype=torch.int64).view(len(tokens), u_max)
    lens = torch.tensor([len(t) for t in tokens], dtype=torch.int64)
    if device.type == "cuda":
        out, lens = out.pin_memory(), lens.pin_memory()
    return out.to(device, non_blocking=True), lens.to(device, non_blocking=True)


def transducer_losses(
    model: Any,
    enc_out: torch.Tensor,
    enc_lens: torch.Tensor,
    tokens: list[list[int]],
    cfg: AsrLossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(simple_loss, pruned_loss), each summed over the batch.

    enc_out (N, T, D), enc_lens (N,), tokens: N lists of ids (blank excluded).
    """
    from speechkd.losses import rnnt

    decoder, joiner = model.require_transducer()
    blank = model.blank_id
    device = enc_out.device
    y, y_lens = pad_tokens(tokens, pad=0, device=device)  # (N, U)
    sos_y, _ = pad_tokens([[blank] + t for t in tokens], pad=blank, device=device)  # (N, U+1)
    dec_out = decoder(sos_y)  # (N, U+1, decoder_dim)
    boundary = torch.zeros((y.size(0), 4), dtype=torch.int64, device=device)
    boundary[:, 2] = y_lens
    boundary[:, 3] = enc_lens

    lm = model.simple_lm_proj(dec_out)  # (N, U+1, V)
    am = model.simple_am_proj(enc_out)  # (N, T, V)
    simple_loss, (px_grad, py_grad) = rnnt.rnnt_loss_smoothed(
        lm=lm.float(),
        am=am.float(),
        symbols=y,
        termination_symbol=blank,
        lm_only_scale=cfg.lm_scale,
        am_only_scale=cfg.am_scale,
        boundary=boundary,
        reduction="sum",
        return_grad=True,
        backend=cfg.rnnt_backend,
    )
    ranges = rnnt.get_rnnt_prune_ranges(
        px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=cfg.prune_range, backend=cfg.rnnt_backend
    )  # (N, T, prune_range)
    am_pruned, lm_pruned = rnnt.do_rnnt_pruning(
        am=joiner.encoder_proj(enc_out), lm=joiner.decoder_proj(dec_out), ranges=ranges, backend=cfg.rnnt_backend
    )  # (N, T, prune_range, J) each
    logits = joiner(am_pruned, lm_pruned, project_input=False)  # (N, T, prune_range, V)
    pruned_loss = rnnt.rnnt_loss_pruned(
        logits=logits.float(),
        symbols=y,
        ranges=ranges,
        termination_symbol=blank,
        boundary=boundary,
        reduction="sum",
        backend=cfg.rnnt_backend,
    )
    return simple_loss, pruned_loss


def ctc_term(
    model: Any, enc_out: torch.Tensor, enc_lens: torch.Tensor, tokens: list[list[int]]
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """(CTC loss summed over feasible utterances, indices of the infeasible utterances, log-probs (N, T, V)).

    When no utterance is feasible the loss is ``0 * log_probs.sum()``: zero, but still connected to
    the CTC head so DDP sees its parameters used.
    """
    from speechkd.losses.ctc import ctc_feasible, ctc_loss

    log_probs = model.ctc_log_probs(enc_out)  # (N, T, V)
    ok = ctc_feasible(enc_lens, tokens).tolist()  # (N,) bools: one read-back
    good = [i for i, feasible in enumerate(ok) if feasible]
    bad = [i for i, feasible in enumerate(ok) if not feasible]
    if not good:
        return log_probs.sum() * 0.0, bad, log_probs
    if bad:
        idx = torch.tensor(good, device=log_probs.device)
        log_probs_ok, lens_ok, kept = log_probs[idx], enc_lens[idx], [tokens[i] for i in good]
    else:
        log_probs_ok, lens_ok, kept = log_probs, enc_lens, tokens
    loss = ctc_loss(log_probs_ok, lens_ok, kept, blank=model.blank_id, reduction="sum")
    return loss, bad, log_probs


@dataclass
class CodebookTerm:
    """Where MVQ-KD's codebook loss reads from: ``model.training_heads["codebook"]`` on the output of
    encoder block ``layer`` (1-based), targets ``batch["targets"][field] (N, T_t, C)`` at
    ``teacher_frames_per_frame`` teacher frames per encoder frame."""

    layer: int
    field: str
    teacher_frames_per_frame: int


def codebook_term(model: Any, enc: Any, batch: dict[str, Any], term: CodebookTerm) -> torch.Tensor:
    """Summed per-codebook cross entropy of the codebook head (see :mod:`speechkd.losses.codebook`)."""
    from speechkd.losses.codebook import codebook_loss, stack_teacher_frames

    mid = enc.layer_outputs[term.layer - 1]  # (N, T, D)
    logits = model.training_heads["codebook"](mid)  # (N, T, K, V)
    targets = stack_teacher_frames(batch["targets"][term.field], term.teacher_frames_per_frame, mid.size(1))
    return codebook_loss(logits, targets, enc.out_lens)


def _codebook_aux_term(term: CodebookTerm, scale: float) -> Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """MVQ-KD's codebook loss as an auxiliary term: ``(model, enc, batch) -> (scale * loss, {"codebook": ...})``."""

    def aux(model: Any, enc: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cb = codebook_term(model, enc, batch, term)
        return scale * cb, {"codebook": cb.detach() * scale}

    return aux


def _sum_over_ranks(*values: float) -> tuple[float, ...]:
    """``values`` summed over DDP ranks (unchanged without a process group), so every rank decides alike."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return tuple(float(v) for v in t.tolist())


def transcribed_rows(
    enc_out: torch.Tensor, enc_lens: torch.Tensor, batch: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, list[list[int]], list[str], int]:
    """The rows of a batch that have transcripts: ``(enc_out (N', T, D), enc_lens (N',), tokens, cut_ids,
    number of untranscribed rows left out)``; the batch itself (no copy) when every row is transcribed."""
    tokens: list[list[int]] = batch["tokens"]
    cut_ids: list[str] = batch.get("cut_ids") or [str(i) for i in range(len(tokens))]
    transcribed = batch.get("transcribed")
    if transcribed is None or all(transcribed):
        return enc_out, enc_lens, tokens, cut_ids, 0
    keep = [i for i, t in enumerate(transcribed) if t]
    rows = torch.tensor(keep, dtype=torch.long, device=enc_out.device)
    return (enc_out.index_select(0, rows), enc_lens.index_select(0, rows), [tokens[i] for i in keep],
            [cut_ids[i] for i in keep], len(transcribed) - len(keep))


class AsrTask:
    """CTC and/or pruned-transducer training of :class:`speechkd.models.asr.AsrModel`, optionally with
    MVQ-KD's codebook loss (``codebook``: where it reads from; weight ``loss.codebook_loss_scale``).

    ``step_fn`` returns the current training step (for the pruned-loss warm-up); the CLI binds it to
    the trainer's counter so warm-up survives a resume.
    """

    def __init__(
        self, cfg: AsrLossConfig, step_fn: Optional[Callable[[], int]] = None, codebook: Optional[CodebookTerm] = None
    ) -> None:
        cfg.validate()
        if (cfg.codebook_loss_scale > 0) != (codebook is not None):
            raise SpeechkdError(
                f"loss.codebook_loss_scale={cfg.codebook_loss_scale} needs codebook targets and a codebook head "
                "(and a codebook head needs a scale > 0)"
            )
        self.cfg = cfg
        self.step_fn = step_fn or (lambda: 0)
        # Step at which the transducer term joined (CTC-only phase over); None while the phase lasts.
        self.transducer_start: Optional[int] = None if self._ctc_phase_configured() else 0
        self._window: deque[tuple[float, float]] = deque(maxlen=cfg.ctc_only_window)
        self.num_ctc_infeasible = 0  # utterances left out of the CTC loss so far (logged as they occur)
        # Auxiliary heads on encoder outputs: callables (model, enc, batch) -> (weighted loss, info).
        self.aux_terms: list[Callable[..., tuple[torch.Tensor, dict[str, Any]]]] = []
        if codebook is not None:
            self.aux_terms.append(_codebook_aux_term(codebook, cfg.codebook_loss_scale))
        if cfg.lm_kd.enabled:
            self.aux_terms.append(LmKdTerm(cfg.lm_kd))

    def _ctc_phase_configured(self) -> bool:
        return self.cfg.transducer_weight > 0 and (
            self.cfg.ctc_only_steps > 0 or self.cfg.ctc_only_until_emission_ratio > 0
        )

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs: when the transducer joined (saved in every trainer checkpoint)."""
        return {"transducer_start": self.transducer_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "transducer_start" in state:
            self.transducer_start = state["transducer_start"]

    def lr_scale(self, step: int) -> float:
        """Multiplier of the scheduler's lr at training ``step`` (the trainer asks after the step's loss, so the
        phase decision of this step counts): ``loss.ctc_only_lr_scale`` during the CTC-only phase, then a linear
        rise to 1 over ``loss.ctc_only_lr_ramp_steps``."""
        cfg, start = self.cfg, self.transducer_start
        if start is None or step < start:
            return cfg.ctc_only_lr_scale
        done = step - start
        if done >= cfg.ctc_only_lr_ramp_steps:
            return 1.0
        return cfg.ctc_only_lr_scale + (1.0 - cfg.ctc_only_lr_scale) * done / cfg.ctc_only_lr_ramp_steps

    def _transducer_has_trained(self) -> bool:
        """Whether the transducer loss has joined the training (its greedy output means something)."""
        return self.transducer_start is not None and self.step_fn() > self.transducer_start

    def _in_ctc_only_phase(self, step: int, counts: dict[str, float]) -> bool:
        """Whether this training step leaves the transducer out; ends the phase (once, for good) when
        its rule is met. ``counts`` are this batch's greedy-CTC emission counts."""
        if self.transducer_start is not None:
            return step < self.transducer_start
        cfg = self.cfg
        if cfg.ctc_only_until_emission_ratio <= 0:
            if step < cfg.ctc_only_steps:
                return True
            self.transducer_start = cfg.ctc_only_steps
            return False
        # The one per-step device read of this task, and only during the phase. A batch without transcribed
        # rows adds nothing to the window but still joins the sum over ranks (a collective every rank must call).
        if "ref_tokens" in counts:
            self._window.append((float(counts.get("ctc_hyp_tokens", 0.0)), float(counts["ref_tokens"])))
        hyp, ref = _sum_over_ranks(sum(h for h, _ in self._window), sum(r for _, r in self._window))
        ratio = hyp / ref if ref > 0 else 0.0
        full = len(self._window) == self._window.maxlen and step >= cfg.ctc_only_min_steps
        capped = cfg.ctc_only_steps > 0 and step >= cfg.ctc_only_steps
        if (full and ratio >= cfg.ctc_only_until_emission_ratio) or capped:
            self.transducer_start = step
            log.info(
                "CTC-only phase over at step %d: greedy CTC emits %.3f tokens per reference token over the last "
                "%d batches (target %.2f%s); the transducer loss joins now",
                step, ratio, len(self._window), cfg.ctc_only_until_emission_ratio,
                f", cap {cfg.ctc_only_steps} steps reached" if capped else "",
            )
            return False
        return True

    def compute_loss(self, model: torch.nn.Module, batch: dict[str, Any], training: bool) -> LossOutput:
        # Everything runs inside model.forward (AsrModel.forward(fn) calls fn(self)) so DDP sees
        # every submodule call of the step.
        return model(lambda m: self._losses(m, batch, training))

    def _losses(self, model: Any, batch: dict[str, Any], training: bool) -> LossOutput:
        cfg = self.cfg
        enc = model.encode(batch["inputs"], batch["input_lens"])
        # Losses and counts stay 0-d device tensors: the trainer reads them once per log interval.
        num_frames = enc.out_lens.sum()
        info: dict[str, Any] = {}
        counts: dict[str, Any] = {}
        total: Optional[torch.Tensor] = None
        # Untranscribed utterances (batch["transcribed"] False) get only the transcript-free auxiliary terms.
        asr_out, asr_lens, tokens, cut_ids, num_untranscribed = transcribed_rows(enc.out, enc.out_lens, batch)
        if num_untranscribed:
            counts["untranscribed_utts"] = float(num_untranscribed)
            if not self.aux_terms:
                raise SpeechkdError(
                    f"{num_untranscribed} untranscribed utterance(s) in a batch (e.g. "
                    f"{next(c for c, t in zip(batch['cut_ids'], batch['transcribed']) if not t)}) but no "
                    "transcript-free loss is configured (MVQ-KD's loss.codebook_loss_scale > 0)"
                )
        if not tokens:  # every utterance untranscribed: the auxiliary terms alone
            if training and cfg.transducer_weight > 0:
                self._in_ctc_only_phase(self.step_fn(), {})  # keeps the ranks' collectives in step
            return self._with_aux_terms(model, enc, batch, None, num_frames, info, counts)
        num_ref_tokens = float(sum(len(t) for t in tokens))
        if cfg.ctc_weight > 0:
            ctc, bad, log_probs = ctc_term(model, asr_out, asr_lens, tokens)
            counts.update({
                "ctc_hyp_tokens": ctc_emitted_tokens(log_probs.detach(), asr_lens, model.blank_id).sum(),
                "ref_tokens": num_ref_tokens,
            })
            if bad:
                self.num_ctc_infeasible += len(bad)
                log.warning(
                    "%d utterance(s) too short for CTC left out of the CTC loss (%d so far): %s",
                    len(bad),
                    self.num_ctc_infeasible,
                    " ".join(cut_ids[i] for i in bad),
                )
            if len(bad) == len(tokens) and cfg.transducer_weight == 0:
                return LossOutput.skip(f"all {len(bad)} utterances are too short for CTC")
            info["ctc"] = ctc.detach() * cfg.ctc_weight
            total = cfg.ctc_weight * ctc
        ctc_only = training and cfg.transducer_weight > 0 and self._in_ctc_only_phase(self.step_fn(), counts)
        if cfg.transducer_weight > 0 and not ctc_only:
            simple, pruned = transducer_losses(model, asr_out, asr_lens, tokens, cfg)
            s_scale, p_scale = (
                cfg.scales(self.step_fn(), self.transducer_start) if training else (cfg.simple_loss_scale, 1.0)
            )
            info["simple"] = simple.detach()
            info["pruned"] = pruned.detach()
            tr = cfg.transducer_weight * (s_scale * simple + p_scale * pruned)
            total = tr if total is None else total + tr
            if not training and self._transducer_has_trained():
                # the blank-plateau check of validation (training/plateau.py): what the transducer emits greedily
                counts["transducer_hyp_tokens"] = float(sum(len(h) for h in greedy_search(model, asr_out, asr_lens)))
                counts["ref_tokens"] = num_ref_tokens
        return self._with_aux_terms(model, enc, batch, total, num_frames, info, counts)

    def _with_aux_terms(
        self, model: Any, enc: Any, batch: dict[str, Any], total: Optional[torch.Tensor], num_frames: Any,
        info: dict[str, Any], counts: dict[str, Any],
    ) -> LossOutput:
        """``total`` plus every auxiliary term (their logged parts added to ``info``), as the step's LossOutput."""
        for term in self.aux_terms:
            aux, aux_info = term(model, enc, batch)
            info.update(aux_info)
            total = aux if total is None else total + aux
        assert total is not None
        return LossOutput(loss=total, num_frames=num_frames, info=info, counts=counts)
