"""Blank-plateau detection: emitted-token counts, the monitor's verdicts, the trainer writing plateau.yaml."""

import logging

import pytest
import torch
import yaml

from speechkd.data.datamodule import AsrDataModule, DataConfig
from speechkd.decoding.ctc import ctc_emitted_tokens, ctc_greedy_search
from speechkd.errors import SpeechkdError
from speechkd.tasks.base import LossOutput
from speechkd.testing.toy import ToyCtcTask, ToyModel, ToyTokenizer, make_toy_cuts
from speechkd.training.plateau import PlateauConfig, PlateauMonitor, read_plateau_status
from speechkd.training.scheduler import SchedulerConfig
from speechkd.training.trainer import Trainer, TrainerConfig


def test_emitted_token_count_equals_greedy_search_lengths():
    g = torch.Generator().manual_seed(0)
    # few classes so that repeats and blanks between equal labels occur
    log_probs = torch.randn(5, 40, 4, generator=g).log_softmax(-1)
    lens = torch.tensor([40, 33, 1, 0, 17])
    want = [len(h) for h in ctc_greedy_search(log_probs, lens, blank_id=0)]
    assert ctc_emitted_tokens(log_probs, lens, blank_id=0).tolist() == want
    assert sum(want) > 0


def test_monitor_judges_from_check_step_and_writes_its_verdict(tmp_path, caplog):
    mon = PlateauMonitor(PlateauConfig(check_step=100, min_emission_ratio=0.3), tmp_path)
    assert mon.observe(50, {"ctc_hyp_tokens": 0.0, "ref_tokens": 200.0}) == "unchecked"  # too early to judge
    with caplog.at_level(logging.ERROR):
        assert mon.observe(100, {"ctc_hyp_tokens": 40.0, "ref_tokens": 200.0}) == "stuck"  # 0.2 < 0.3
    assert "BLANK PLATEAU" in caplog.text
    status = read_plateau_status(tmp_path)
    assert status["status"] == "stuck" and status["step"] == 100 and status["emission_ratio"] == 0.2
    assert mon.observe(150, {"ctc_hyp_tokens": 190.0, "ref_tokens": 200.0}) == "escaped"
    status = read_plateau_status(tmp_path)
    assert status["status"] == "escaped" and [h["step"] for h in status["history"]] == [50, 100, 150]
    assert mon.observe(200, {"loss": 1.0}) is None  # no counts: nothing judged, nothing changes
    assert read_plateau_status(tmp_path)["step"] == 150


def test_plateau_config_rejects_impossible_values():
    with pytest.raises(SpeechkdError, match="min_emission_ratio"):
        PlateauConfig(min_emission_ratio=1.5).validate()
    with pytest.raises(SpeechkdError, match="check_step"):
        TrainerConfig(plateau=PlateauConfig(check_step=-1)).validate()


class _CountingTask(ToyCtcTask):
    """ToyCtcTask reporting a fixed fraction of the reference tokens as emitted."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def compute_loss(self, model, batch, training):
        out = super().compute_loss(model, batch, training)
        ref = float(sum(len(t) for t in batch["tokens"]))
        return LossOutput(out.loss, out.num_frames, out.info, counts={"ctc_hyp_tokens": self.fraction * ref,
                                                                      "ref_tokens": ref})


def _fit_toy(tmp_path, fraction: float, num_epochs: int, log_every_n: int, check_step: int):
    """Train the toy model with a task reporting ``fraction`` of the reference tokens as emitted."""
    cuts = make_toy_cuts(tmp_path / "audio", num_cuts=6, seed=3)
    dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=0,
                                  max_cut_duration=3.0), tokenizer=ToyTokenizer())
    cfg = TrainerConfig(num_epochs=num_epochs, log_every_n=log_every_n, save_every_n=0, valid_every_n=0,
                        progress_bar=False, tensorboard=False, scheduler=SchedulerConfig(kind="noam", warmup_steps=3),
                        plateau=PlateauConfig(check_step=check_step))
    return Trainer(cfg, ToyModel(), _CountingTask(fraction), dm, cuts, None, tmp_path / "exp").fit()


@pytest.mark.parametrize("fraction,status", [(0.05, "stuck"), (0.9, "escaped")])
def test_trainer_flags_a_run_stuck_on_the_plateau(tmp_path, fraction, status):
    _fit_toy(tmp_path, fraction, num_epochs=3, log_every_n=2, check_step=2)
    got = yaml.safe_load((tmp_path / "exp" / "plateau.yaml").read_text())
    assert got["status"] == status and got["step"] >= 2
    log_text = (tmp_path / "exp" / "log" / "train.log.rank0").read_text()
    assert ("BLANK PLATEAU" in log_text) == (status == "stuck")
    assert f"emission_ratio={fraction:.3f}" in log_text


def test_a_run_shorter_than_one_log_interval_still_leaves_a_verdict(tmp_path):
    """The steps after the last logged interval are judged at the end (CI saw a tiny run end without the file)."""
    state = _fit_toy(tmp_path, 0.05, num_epochs=1, log_every_n=1000, check_step=1)
    assert 0 < state.step < 1000
    got = yaml.safe_load((tmp_path / "exp" / "plateau.yaml").read_text())
    assert got["status"] == "stuck" and got["step"] == state.step and len(got["history"]) == 1


def test_a_transducer_silent_at_validation_makes_the_run_stuck_though_ctc_escaped(tmp_path, caplog):
    """Greedy CTC can leave the plateau while the transducer beside it emits nothing: either source's latest
    judged ratio below the threshold makes the run ``stuck``."""
    mon = PlateauMonitor(PlateauConfig(check_step=100, min_emission_ratio=0.3), tmp_path)
    assert mon.observe(100, {"ctc_hyp_tokens": 180.0, "ref_tokens": 200.0}) == "escaped"
    assert mon.observe_validation(50, {"transducer_hyp_tokens": 0.0, "ref_tokens": 100.0}) == "escaped"  # too early
    with caplog.at_level(logging.ERROR):
        assert mon.observe_validation(110, {"transducer_hyp_tokens": 5.0, "ref_tokens": 100.0}) == "stuck"
    assert "BLANK PLATEAU" in caplog.text and "transducer_hyp_tokens" in caplog.text
    status = read_plateau_status(tmp_path)
    got = (status["status"], status["source"], status["step"], status["emission_ratio"])
    assert got == ("stuck", "valid", 110, 0.05)
    assert status["verdicts"] == {"train": "escaped", "valid": "stuck"}
    # a later CTC interval does not clear it; the stuck source's ratio stays the one reported
    assert mon.observe(120, {"ctc_hyp_tokens": 190.0, "ref_tokens": 200.0}) == "stuck"
    assert read_plateau_status(tmp_path)["step"] == 110
    # the state survives a resume, and a checkpoint of the older format (one status) still loads
    resumed = PlateauMonitor(PlateauConfig(check_step=100), tmp_path / "r")
    resumed.load_state_dict(mon.state_dict())
    assert resumed.status == "stuck" and resumed.verdicts == mon.verdicts
    old = PlateauMonitor(PlateauConfig(check_step=100), tmp_path / "o")
    old.load_state_dict({"status": "stuck", "history": [{"step": 100, "emission_ratio": 0.1, "judged": True}]})
    assert old.status == "stuck" and old.observe(150, {"ctc_hyp_tokens": 90.0, "ref_tokens": 100.0}) == "escaped"
    # the transducer learns: escaped; nothing reported (a CTC-only model) or the check off: nothing judged
    assert mon.observe_validation(130, {"transducer_hyp_tokens": 80.0, "ref_tokens": 100.0}) == "escaped"
    assert mon.observe_validation(140, {"ctc_hyp_tokens": 1.0, "ref_tokens": 100.0}) is None
    off = PlateauMonitor(PlateauConfig(check_step=0, valid_hyp_key=""), tmp_path / "off")
    assert off.observe_validation(10, {"transducer_hyp_tokens": 0.0, "ref_tokens": 100.0}) is None


class _SilentTransducerTask(_CountingTask):
    """Greedy CTC emits 90 % of the reference tokens in training; at validation the "transducer" emits
    ``valid_fraction`` of them."""

    def __init__(self, valid_fraction: float) -> None:
        super().__init__(0.9)
        self.valid_fraction = valid_fraction

    def compute_loss(self, model, batch, training):
        out = super().compute_loss(model, batch, training)
        if not training:
            out.counts["transducer_hyp_tokens"] = self.valid_fraction * out.counts["ref_tokens"]
        return out


@pytest.mark.parametrize("valid_fraction,status", [(0.0, "stuck"), (0.8, "escaped")])
def test_trainer_judges_the_validation_counts(tmp_path, valid_fraction, status):
    cuts = make_toy_cuts(tmp_path / "audio", num_cuts=6, seed=3)
    dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=0,
                                  max_cut_duration=3.0), tokenizer=ToyTokenizer())
    cfg = TrainerConfig(num_epochs=2, log_every_n=2, save_every_n=0, valid_every_n=0, progress_bar=False,
                        tensorboard=False, scheduler=SchedulerConfig(kind="noam", warmup_steps=3),
                        plateau=PlateauConfig(check_step=1))
    Trainer(cfg, ToyModel(), _SilentTransducerTask(valid_fraction), dm, cuts, cuts, tmp_path / "exp").fit()
    got = yaml.safe_load((tmp_path / "exp" / "plateau.yaml").read_text())
    assert got["status"] == status and got["verdicts"]["train"] == "escaped"
    assert got["verdicts"]["valid"] == status
    valid = [h for h in got["history"] if h["source"] == "valid"]
    assert len(valid) == 2 and all(h["emission_ratio"] == valid_fraction for h in valid)  # one per epoch
