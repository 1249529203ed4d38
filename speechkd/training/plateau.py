"""Detect a CTC run stuck on the blank plateau, and say so loudly.

From scratch on little data a CTC (or CTC-assisted) model first learns to emit blank on every frame:
its loss falls to a plateau (about 1.5 per frame on MiniLibri) and greedy decoding returns
(almost) nothing. Most runs leave the plateau after a few hundred steps; some never do, and a
table of their WER is a table of deletions. The monitor watches the ratio

    emission ratio = tokens that greedy CTC emits / reference tokens

over the training batches of each log interval (a task reports both counts in
:attr:`speechkd.tasks.base.LossOutput.counts`). On the plateau it is near 0; a model that has
learnt to transcribe emits about one token per reference token. From ``check_step`` on, every
log interval is judged: ``stuck`` when the ratio is below ``min_emission_ratio``, ``escaped``
otherwise. The verdict of the latest judged interval is written to ``<exp_dir>/plateau.yaml``
(with the history of judgements), logged as an error while stuck, and read by
``speechkd score table``, which refuses to tabulate a stuck run as a result.

Greedy CTC can leave the plateau while a transducer trained beside it still emits nothing (a MiniLibri run
with 256 BPE pieces did). So a task may also report, at validation, the tokens another decoder of the model
emits greedily (``valid_hyp_key``; the ASR task reports the transducer's once it has joined the training).
Every validation from ``check_step`` on is judged the same way; the run is ``stuck`` when either the latest
judged training interval or the latest judged validation is below ``min_emission_ratio``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import yaml

from speechkd.errors import SpeechkdError

log = logging.getLogger(__name__)

PLATEAU_FILE = "plateau.yaml"
STATUSES = ("unchecked", "stuck", "escaped")


@dataclass
class PlateauConfig:
    """When and how a run is judged to be on the blank plateau (see the module docstring)."""

    enabled: bool = True
    check_step: int = 1000  # first step whose log interval is judged (earlier intervals are only recorded)
    min_emission_ratio: float = 0.3  # emitted / reference tokens below this: on the plateau
    hyp_key: str = "ctc_hyp_tokens"  # LossOutput.counts key of the emitted tokens
    ref_key: str = "ref_tokens"  # LossOutput.counts key of the reference tokens
    valid_hyp_key: str = "transducer_hyp_tokens"  # judged at validation too (module docstring); "" to skip

    def validate(self) -> None:
        if self.check_step < 0:
            raise SpeechkdError(f"trainer.plateau.check_step must be >= 0, got {self.check_step}")
        if not 0.0 < self.min_emission_ratio < 1.0:
            raise SpeechkdError(
                f"trainer.plateau.min_emission_ratio must be in (0, 1), got {self.min_emission_ratio}"
            )


def emission_ratio(counts: dict[str, float], cfg: PlateauConfig) -> Optional[float]:
    """``counts[hyp_key] / counts[ref_key]``; None when the task reports neither (or no reference)."""
    hyp, ref = counts.get(cfg.hyp_key), counts.get(cfg.ref_key)
    if hyp is None or not ref:
        return None
    return float(hyp) / float(ref)


class PlateauMonitor:
    """Judges log intervals and keeps ``<exp_dir>/plateau.yaml`` up to date (when ``write``)."""

    def __init__(self, cfg: PlateauConfig, exp_dir: Union[str, Path], write: bool = True) -> None:
        cfg.validate()
        self.cfg = cfg
        self.path = Path(exp_dir) / PLATEAU_FILE
        self.write = write
        self.verdicts: dict[str, str] = {}  # source ("train" or "valid") -> status of its latest judged ratio
        self.history: list[dict] = []
        self._warned_no_counts = False

    @property
    def status(self) -> str:
        """``stuck`` if any source's latest judgement is, else ``escaped`` once one was judged, else ``unchecked``."""
        if "stuck" in self.verdicts.values():
            return "stuck"
        return "escaped" if self.verdicts else "unchecked"

    def observe(self, step: int, counts: dict[str, float]) -> Optional[str]:
        """Record the greedy-CTC emission ratio of the training interval ending at ``step``; returns the status."""
        if not self.cfg.enabled:
            return None
        ratio = emission_ratio(counts, self.cfg)
        if ratio is None:
            if not self._warned_no_counts:
                log.info("plateau check: the task reports no %s/%s counts; not checked", self.cfg.hyp_key,
                         self.cfg.ref_key)
                self._warned_no_counts = True
            return None
        return self._judge(step, ratio, "train", "greedy CTC (training batches)")

    def observe_validation(self, step: int, counts: dict[str, float]) -> Optional[str]:
        """Record the ``valid_hyp_key`` emission ratio of the validation at ``step`` (nothing when the task
        reported no such count, e.g. a CTC-only model); returns the status."""
        if not self.cfg.enabled or not self.cfg.valid_hyp_key:
            return None
        hyp, ref = counts.get(self.cfg.valid_hyp_key), counts.get(self.cfg.ref_key)
        if hyp is None or not ref:
            return None
        return self._judge(step, float(hyp) / float(ref), "valid", f"greedy {self.cfg.valid_hyp_key} (validation)")

    def _judge(self, step: int, ratio: float, source: str, what: str) -> str:
        judged = step >= self.cfg.check_step
        if judged:
            self.verdicts[source] = "stuck" if ratio < self.cfg.min_emission_ratio else "escaped"
        self.history.append({"step": int(step), "emission_ratio": round(ratio, 4), "judged": judged,
                             "source": source})
        if judged and self.verdicts[source] == "stuck":
            log.error(
                "BLANK PLATEAU: at step %d %s emits %.3f tokens per reference token (threshold %.2f "
                "from step %d): this run has not learnt to transcribe; its WER is not a result",
                step, what, ratio, self.cfg.min_emission_ratio, self.cfg.check_step,
            )
        self._save()
        return self.status

    def flush(self) -> None:
        """Write the current verdict (``unchecked`` with an empty history when nothing was observed)."""
        if self.cfg.enabled:
            self._save()

    def _save(self) -> None:
        if not self.write:
            return
        # step / emission_ratio: the stuck source's latest ratio when one is stuck, else the latest of all
        stuck = [h for h in self.history if h.get("judged") and self.verdicts.get(h.get("source", "train")) == "stuck"]
        last = stuck[-1] if stuck else (self.history[-1] if self.history else {})
        body = {
            "status": self.status,
            "step": last.get("step"),
            "emission_ratio": last.get("emission_ratio"),
            "source": last.get("source"),
            "verdicts": dict(self.verdicts),
            "min_emission_ratio": self.cfg.min_emission_ratio,
            "check_step": self.cfg.check_step,
            "history": self.history,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(body, sort_keys=False))
        tmp.replace(self.path)

    def state_dict(self) -> dict:
        return {"status": self.status, "verdicts": dict(self.verdicts), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        verdicts = state.get("verdicts")
        if verdicts is None:  # a checkpoint written before the validation check: its status is the CTC one
            status = state.get("status", "unchecked")
            verdicts = {} if status == "unchecked" else {"train": status}
        self.verdicts = dict(verdicts)
        self.history = list(state.get("history", []))


def read_plateau_status(exp_dir: Union[str, Path]) -> Optional[dict]:
    """The content of ``<exp_dir>/plateau.yaml``, or None when the run wrote none."""
    path = Path(exp_dir) / PLATEAU_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    if data.get("status") not in STATUSES:
        raise SpeechkdError(f"{path}: status must be one of {STATUSES}, got {data.get('status')!r}")
    return data
