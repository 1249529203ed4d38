"""Trainer: exact mid-epoch resume, bad/skipped batches; checkpoint utilities; lr schedules."""

import math

import pytest
import torch

from speechkd.data.datamodule import AsrDataModule, DataConfig
from speechkd.errors import SpeechkdError
from speechkd.testing.toy import ToyCtcTask, ToyModel, ToyTokenizer, make_toy_cuts
from speechkd.training.average import average_checkpoints, average_state_dicts, select_checkpoints
from speechkd.training.checkpoint import find_resume_checkpoint, save_checkpoint_atomic, step_checkpoints
from speechkd.training.scheduler import SchedulerConfig, lr_factor
from speechkd.training.trainer import Trainer, TrainerConfig

NUM_EPOCHS = 2


@pytest.fixture(scope="module")
def cuts(tmp_path_factory):
    return make_toy_cuts(tmp_path_factory.mktemp("tr") / "audio", num_cuts=10, seed=7)


class _Interrupt(Exception):
    pass


def _run(cuts, exp, num_workers=0, task=None, hooks=(), resume=True, fingerprints=None, **cfg_kw):
    dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=num_workers,
                                  max_cut_duration=3.0), tokenizer=ToyTokenizer())
    torch.manual_seed(0)
    kw = dict(num_epochs=NUM_EPOCHS, log_every_n=2, save_every_n=3, valid_every_n=4, progress_bar=False,
              tensorboard=False, scheduler=SchedulerConfig(kind="noam", warmup_steps=3))
    kw.update(cfg_kw)
    trainer = Trainer(TrainerConfig(**kw), ToyModel(dropout=0.3), task or ToyCtcTask(), dm, cuts,
                      cuts.subset(first=3), exp, on_step_end=hooks, fingerprints=fingerprints)
    state = trainer.fit(resume=resume)
    return trainer, state


@pytest.fixture(scope="module")
def reference(cuts, tmp_path_factory):
    trainer, state = _run(cuts, tmp_path_factory.mktemp("ref"))
    return trainer.model.state_dict(), state


def _assert_same(sd_a, sd_b):
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k


def test_resume_after_crash_is_exact(cuts, reference, tmp_path):
    ref_sd, ref_state = reference
    assert ref_state.step >= 8 and ref_state.epoch == NUM_EPOCHS + 1

    def crash(tr):
        if tr.state.step == 7:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        _run(cuts, tmp_path, hooks=[crash])
    assert [s for s, _ in step_checkpoints(tmp_path)] == [3, 6]  # 7 was lost with the crash
    trainer, state = _run(cuts, tmp_path)
    assert state.step == ref_state.step
    _assert_same(trainer.model.state_dict(), ref_sd)
    assert "resumed from" in (tmp_path / "log" / "train.log.rank0").read_text()
    # without restoring, a fresh run from step 6's weights would differ (dropout RNG, optimizer)
    assert not torch.equal(torch.load(tmp_path / "checkpoint-6.pt", weights_only=False)["model"]["out.weight"],
                           ref_sd["out.weight"])


def test_resume_with_max_steps_and_a_worker_is_exact(cuts, reference, tmp_path):
    ref_sd, ref_state = reference
    _, state = _run(cuts, tmp_path, num_workers=1, max_steps=4)
    assert state.step == 4 and (tmp_path / "checkpoint-4.pt").is_file()
    trainer, state = _run(cuts, tmp_path, num_workers=1)
    assert state.step == ref_state.step
    _assert_same(trainer.model.state_dict(), ref_sd)


def test_nan_batch_skipped_and_counted(cuts, tmp_path):
    bad_id = cuts[4].id
    trainer, state = _run(cuts, tmp_path, task=ToyCtcTask(nan_cut_ids=[bad_id]), num_epochs=1)
    assert state.num_bad_batches == 1 and state.consecutive_bad_batches == 0
    # one optimizer update per batch except the bad one
    adam_steps = {int(s["step"]) for s in trainer.optimizer.state.values()}
    assert adam_steps == {state.step - 1}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    log = (tmp_path / "log" / "train.log.rank0").read_text()
    assert "non-finite loss" in log and bad_id in log


def test_too_many_consecutive_bad_batches_is_an_error(cuts, tmp_path):
    task = ToyCtcTask(nan_cut_ids=[c.id for c in cuts])
    with pytest.raises(SpeechkdError, match="3 consecutive bad batches"):
        _run(cuts, tmp_path, task=task, max_consecutive_bad_batches=2)


def test_task_skip_counted_by_reason(cuts, tmp_path):
    trainer, state = _run(cuts, tmp_path, task=ToyCtcTask(skip_cut_ids=[cuts[2].id]), num_epochs=1)
    assert state.skipped == {"toy: batch holds a cut listed in skip_cut_ids": 1}
    assert state.num_bad_batches == 0


class _PhasedToyTask(ToyCtcTask):
    """A task with a phase: lr x 0.25 before step 3, then x 1 (what AsrTask.lr_scale does for its CTC-only phase)."""

    def lr_scale(self, step):
        return 0.25 if step < 3 else 1.0


def test_the_tasks_lr_scale_multiplies_the_schedule_on_the_step_it_is_asked_for(cuts, tmp_path):
    seen = []  # (step just trained, lr it trained with)
    hook = lambda tr: seen.append((tr.state.step - 1, tr.optimizer.param_groups[0]["lr"]))  # noqa: E731
    trainer, _ = _run(cuts, tmp_path, task=_PhasedToyTask(), hooks=[hook], num_epochs=1)
    sched = trainer.scheduler.cfg
    assert len(seen) >= 5
    for step, lr in seen:
        expected = 1e-3 * lr_factor(sched, step, 0) * (0.25 if step < 3 else 1.0)
        assert lr == pytest.approx(expected), step
    # and a task without lr_scale trains on the schedule alone
    plain, _ = _run(cuts, tmp_path / "plain", num_epochs=1)
    assert plain.scheduler.scale == 1.0


def test_starting_over_sets_the_earlier_runs_checkpoints_aside(cuts, tmp_path):
    _run(cuts, tmp_path)  # 2 epochs: step checkpoints and epoch-1.pt, epoch-2.pt
    old = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert "epoch-2.pt" in old
    trainer, state = _run(cuts, tmp_path, resume=False, num_epochs=1)
    aside = tmp_path / "previous-run-1"
    assert sorted(p.name for p in aside.glob("*.pt")) == old
    # only the new run's files are left: a resume takes its newest, an average its epochs
    from speechkd.training.checkpoint import epoch_checkpoints
    assert [e for e, _ in epoch_checkpoints(tmp_path)] == [1]
    assert all(int(p.stem.split("-")[1]) <= state.step for p in tmp_path.glob("checkpoint-*.pt"))
    assert "moved the" in (tmp_path / "log" / "train.log.rank0").read_text()
    _run(cuts, tmp_path, resume=False, num_epochs=1)
    assert (tmp_path / "previous-run-2" / "epoch-1.pt").is_file()  # a second start-over gets its own folder


def test_average_checkpoints_hand_made(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(7)}
    c = {"w": torch.tensor([5.0, 1.0]), "h": torch.tensor([6.0], dtype=torch.float16), "n": torch.tensor(9)}
    torch.save({"model": a, "step": 1}, tmp_path / "epoch-1.pt")
    torch.save({"model": b, "step": 2}, tmp_path / "epoch-2.pt")
    torch.save(c, tmp_path / "epoch-3.pt")  # a bare state dict
    avg = average_checkpoints(select_checkpoints(tmp_path, num=2, by="epoch", last=2))
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0]))
    assert avg["h"].dtype == torch.float16 and avg["h"].item() == 1.5
    assert avg["n"].item() == 7  # int buffer from the last
    avg3 = average_checkpoints(select_checkpoints(tmp_path, num=3))
    assert torch.equal(avg3["w"], torch.tensor([3.0, 3.0])) and avg3["n"].item() == 9 and avg3["h"].item() == 3.0
    with pytest.raises(SpeechkdError, match="found only 3"):
        select_checkpoints(tmp_path, num=4)
    with pytest.raises(SpeechkdError, match="different keys"):
        average_state_dicts([a, {"w": a["w"]}])


def test_resume_picks_highest_step_and_atomic_save(tmp_path):
    save_checkpoint_atomic({"step": 10}, tmp_path / "checkpoint-10.pt")
    save_checkpoint_atomic({"step": 12}, tmp_path / "epoch-2.pt")
    save_checkpoint_atomic({"step": 8}, tmp_path / "checkpoint-8.pt")
    assert find_resume_checkpoint(tmp_path).name == "epoch-2.pt"
    save_checkpoint_atomic({"step": 14}, tmp_path / "checkpoint-14.pt")
    assert find_resume_checkpoint(tmp_path).name == "checkpoint-14.pt"
    assert not list(tmp_path.glob(".*tmp*"))


def test_lr_factors():
    eden = SchedulerConfig(kind="eden", warmup_steps=0, lr_steps=100, lr_epochs=2)
    assert lr_factor(eden, 0, 0) == 1.0
    assert lr_factor(eden, 100, 2) == pytest.approx(2**-0.25 * 2**-0.25)
    warm = SchedulerConfig(kind="eden", warmup_steps=10, warmup_start=0.5, lr_steps=1e9, lr_epochs=1e9)
    assert lr_factor(warm, 4, 0) == pytest.approx(0.7)
    noam = SchedulerConfig(kind="noam", warmup_steps=10)
    assert lr_factor(noam, 4, 0) == pytest.approx(0.5)
    assert lr_factor(noam, 9, 0) == pytest.approx(1.0)
    assert lr_factor(noam, 39, 0) == pytest.approx(math.sqrt(10 / 40))
    assert lr_factor(SchedulerConfig(kind="constant", warmup_steps=0), 123, 4) == 1.0


def test_resume_into_a_different_model_names_the_checkpoint_and_the_fix(cuts, tmp_path):
    _run(cuts, tmp_path, max_steps=3)
    dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=0,
                                  max_cut_duration=3.0), tokenizer=ToyTokenizer())
    other = ToyModel(hidden=16)  # e.g. a changed config in the same exp dir
    trainer = Trainer(TrainerConfig(num_epochs=1, progress_bar=False, tensorboard=False), other, ToyCtcTask(), dm,
                      cuts, None, tmp_path)
    with pytest.raises(SpeechkdError, match=r"checkpoint-3\.pt.*--no-resume"):
        trainer.fit(resume=True)


BPE_A = {"bpe_model": {"path": "/data/lang_bpe_500/bpe.model", "sha256": "a" * 64}}
BPE_B = {"bpe_model": {"path": "/other/lang_bpe_500/bpe.model", "sha256": "b" * 64}}


def test_resume_with_another_bpe_model_is_refused_before_config_is_rewritten(cuts, tmp_path):
    """A same-size BPE model used to be accepted on resume: token ids silently changed meaning."""
    _run(cuts, tmp_path, max_steps=3, fingerprints=BPE_A)
    assert torch.load(tmp_path / "checkpoint-3.pt", weights_only=False)["fingerprints"] == BPE_A
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(SpeechkdError) as err:
        _run(cuts, tmp_path, max_steps=4, fingerprints=BPE_B)
    msg = str(err.value)
    for value in ("checkpoint-3.pt", "a" * 64, "b" * 64, BPE_A["bpe_model"]["path"], BPE_B["bpe_model"]["path"]):
        assert value in msg
    assert (tmp_path / "config.yaml").read_text() == config  # not overwritten with the new path
    _, state = _run(cuts, tmp_path, max_steps=4, fingerprints=BPE_A)  # the same model resumes
    assert state.step == 4


def test_resume_on_other_training_parts_is_refused_and_a_new_dir_may_continue_from_a_copied_checkpoint(cuts, tmp_path):
    """Rerunning a recipe with an option that adds training parts (e.g. narrowband copies) used to resume the
    finished run in the same dir: nothing was trained, and the old model was decoded as the new one."""
    import shutil

    def run(exp, parts, max_steps, resume=True):
        dm = AsrDataModule(DataConfig(features="on_the_fly", max_duration=5.0, num_buckets=2, num_workers=0,
                                      max_cut_duration=3.0), tokenizer=ToyTokenizer())
        cfg = TrainerConfig(num_epochs=NUM_EPOCHS, max_steps=max_steps, save_every_n=3, progress_bar=False,
                            tensorboard=False)
        paths = {"cuts_dir": "data/fbank", "train_parts": parts, "untranscribed_parts": []}
        trainer = Trainer(cfg, ToyModel(), ToyCtcTask(), dm, cuts, None, exp, run_config={"paths": paths})
        return trainer.fit(resume=resume)

    first = tmp_path / "first"
    run(first, ["train"], 3)
    config = (first / "config.yaml").read_text()
    with pytest.raises(SpeechkdError) as err:
        run(first, ["train", "train-nb8000"], 6)
    msg = str(err.value)
    for value in ("checkpoint-3.pt", "train_parts ['train']", "['train', 'train-nb8000']", "--no-resume", "new --exp-dir"):
        assert value in msg, value
    assert (first / "config.yaml").read_text() == config  # refused before anything was rewritten
    assert run(first, ["train"], 4).step == 4  # the same parts resume
    assert run(first, ["train", "train-nb8000"], 2, resume=False).step == 2  # --no-resume starts over
    # (the earlier run's checkpoints were set aside in previous-run-1/)
    # continuing on purpose: the checkpoint copied into a new dir resumes there on the new parts
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "previous-run-1" / "checkpoint-3.pt", second / "checkpoint-3.pt")
    assert run(second, ["train", "train-nb8000"], 5).step == 5


def test_checkpoint_without_fingerprint_resumes_with_a_warning(cuts, tmp_path, caplog):
    _run(cuts, tmp_path, max_steps=3)  # an older checkpoint: no fingerprints stored
    old = torch.load(tmp_path / "checkpoint-3.pt", weights_only=False)
    old.pop("fingerprints")
    save_checkpoint_atomic(old, tmp_path / "checkpoint-3.pt")
    _, state = _run(cuts, tmp_path, max_steps=4, fingerprints=BPE_B)
    assert state.step == 4
    assert "has no bpe_model checksum" in caplog.text


def test_unreadable_newest_checkpoint_resumes_from_the_newest_readable_one(cuts, tmp_path, caplog):
    """A truncated newest checkpoint used to stop `asr train` with 'cannot read checkpoint'."""
    ref_trainer, _ = _run(cuts, tmp_path / "ref", max_steps=6)
    exp = tmp_path / "exp"
    _run(cuts, exp, max_steps=6)
    newest = exp / "checkpoint-6.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # e.g. a full disk
    stale = exp / ".checkpoint-6.pt.tmp-4242"  # an interrupted save's temporary file
    stale.write_bytes(b"partial")
    trainer, state = _run(cuts, exp, max_steps=6)
    assert "checkpoint-6.pt cannot be read" in caplog.text and "resuming from" in caplog.text
    assert "resumed from" in caplog.text
    assert state.step == 6
    _assert_same(trainer.model.state_dict(), ref_trainer.model.state_dict())  # exact, as from the good one
    assert torch.load(newest, weights_only=False)["step"] == 6  # written again
    assert not stale.exists()


def test_no_readable_checkpoint_is_an_error_naming_the_fix(cuts, tmp_path):
    _run(cuts, tmp_path, max_steps=3)
    for p in tmp_path.glob("*.pt"):
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(SpeechkdError, match=r"no checkpoint in .* can be read .*--no-resume"):
        _run(cuts, tmp_path, max_steps=4)


def test_lr_and_schedule_follow_the_world_size_rule():
    from speechkd.training.trainer import TrainerConfig, scale_for_world_size

    cfg = TrainerConfig()
    cfg.optimizer.lr, cfg.scheduler.warmup_steps, cfg.scheduler.lr_steps = 1e-3, 4000, 8000.0
    opt, sched = scale_for_world_size(cfg, 4)  # default: nothing changes unless the config asks
    assert (opt.lr, sched.warmup_steps, sched.lr_steps) == (1e-3, 4000, 8000.0)
    cfg.scale_steps_with_world_size = True
    opt, sched = scale_for_world_size(cfg, 1)
    assert (opt.lr, sched.warmup_steps, sched.lr_steps) == (1e-3, 4000, 8000.0)
    opt, sched = scale_for_world_size(cfg, 4)  # lr kept, schedule by audio seen
    assert opt.lr == 1e-3 and (sched.warmup_steps, sched.lr_steps) == (1000, 2000.0)
    cfg.scale_lr_with_world_size = "linear"
    assert scale_for_world_size(cfg, 4)[0].lr == pytest.approx(4e-3)
    cfg.scale_lr_with_world_size, cfg.reference_world_size = "sqrt", 2
    opt, sched = scale_for_world_size(cfg, 8)
    assert opt.lr == pytest.approx(2e-3) and sched.warmup_steps == 1000
    cfg.scale_steps_with_world_size = False
    assert scale_for_world_size(cfg, 8)[1].warmup_steps == 4000
    assert cfg.optimizer.lr == 1e-3  # the config itself is not modified
    cfg.scale_lr_with_world_size = "cubic"
    with pytest.raises(SpeechkdError, match="scale_lr_with_world_size"):
        cfg.validate()


def test_lr_scales_freeze_and_scale_parameter_groups_by_name(cuts, tmp_path):
    from speechkd.training.trainer import OptimizerConfig

    torch.manual_seed(0)
    before = ToyModel(dropout=0.3).state_dict()  # the model _run builds after the same seed
    seen = []  # (lr of the "out" group, lr of the rest) at every step
    hook = lambda tr: seen.append({g["name"]: g["lr"] for g in tr.optimizer.param_groups})  # noqa: E731
    trainer, _ = _run(cuts, tmp_path, hooks=[hook], num_epochs=1,
                      optimizer=OptimizerConfig(lr_scales={"inp": 0, "out": {"weight": 0.5}}))
    after = trainer.model.state_dict()
    assert torch.equal(after["inp.weight"], before["inp.weight"]) and torch.equal(after["inp.bias"], before["inp.bias"])
    assert not trainer.model.inp.weight.requires_grad
    assert not torch.equal(after["out.weight"], before["out.weight"])  # trained, at half the lr
    assert not torch.equal(after["out.bias"], before["out.bias"])  # not under out.weight: full lr
    assert len(seen) >= 3 and all(set(s) == {"out.weight", "(rest)"} for s in seen)
    for s in seen:
        assert s["out.weight"] == pytest.approx(0.5 * s["(rest)"]) and s["(rest)"] > 0
    # the lr the trainer logs is the base lr, also where a scaled group comes first (the Whisper student's encoder)
    torch.manual_seed(0)
    trainer, _ = _run(cuts, tmp_path / "first", num_epochs=1, optimizer=OptimizerConfig(lr_scales={"inp": 0.25}))
    assert [g["name"] for g in trainer.optimizer.param_groups] == ["inp", "(rest)"]
    assert trainer._lr() == trainer.optimizer.param_groups[1]["lr"] == pytest.approx(4 * trainer.optimizer.param_groups[0]["lr"])


def test_resume_with_changed_lr_scales_is_refused(cuts, tmp_path):
    """A checkpoint written with other lr_scales: a clear error naming both group lists (torch would fail on a
    changed group count, or keep the old multipliers without a word); the same lr_scales resume."""
    from speechkd.training.trainer import OptimizerConfig

    _run(cuts, tmp_path, num_epochs=1, optimizer=OptimizerConfig(lr_scales={"out": 0.5}))
    for changed in ({"out": 0.25}, {"out": 0.5, "inp": 0.5}, {}):
        with pytest.raises(SpeechkdError, match=r"optimizer groups are \[\(rest\) \(4 tensors, x1\), out \(2 tensors, "
                                                r"x0.5\)\], this config's are .*lr_scales changed"):
            _run(cuts, tmp_path, num_epochs=2, optimizer=OptimizerConfig(lr_scales=changed))
    _, state = _run(cuts, tmp_path, num_epochs=2, optimizer=OptimizerConfig(lr_scales={"out": 0.5}, lr=2e-3))
    assert state.epoch >= 2


def test_lr_scales_typo_and_bad_values_are_refused(cuts, tmp_path):
    from speechkd.training.trainer import OptimizerConfig, lr_param_groups

    with pytest.raises(SpeechkdError, match=r"lr_scales.encoder: no parameter .*\(top-level modules: inp, norm, out\)"):
        lr_param_groups(ToyModel(), 1e-3, {"encoder": 0.1})
    with pytest.raises(SpeechkdError, match=r"lr_scales.out must be a number >= 0, got -1"):
        OptimizerConfig(lr_scales={"out": -1}).validate()
    with pytest.raises(SpeechkdError, match="freezes every parameter"):
        lr_param_groups(ToyModel(), 1e-3, {"inp": 0, "norm": 0, "out": 0})
