"""ASR experiment: config, model building, training and checkpoint averaging from recipe paths.

``speechkd asr train`` / ``speechkd asr average`` are thin wrappers around :func:`train_asr` and
:func:`average_asr`. The experiment YAML has four sections (``model``, ``loss``, ``data``,
``trainer``) plus ``model_preset``: the preset (``speechkd/models/presets/<name>.yaml``) gives the
model defaults and the ``model`` section overrides them. ``model.vocab_size`` always comes from the
BPE model, so a config cannot disagree with the tokenizer.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from speechkd.config import apply_overrides, deep_merge, from_dict, load_yaml, read_experiment_config, to_dict
from speechkd.data.datamodule import DataConfig
from speechkd.errors import SpeechkdError
from speechkd.models.asr import AsrModelConfig
from speechkd.tasks.asr import AsrLossConfig
from speechkd.training.mvq_experiment import MvqConfig, check_mvq_experiment
from speechkd.tasks.lm_kd import TARGET_FIELDS as LM_KD_FIELDS
from speechkd.training.trainer import TrainerConfig

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
AVERAGED_NAME = "averaged.pt"
CMVN_NAME = "global_cmvn.pt"


@dataclass
class AsrExperimentConfig:
    """Everything ``speechkd asr train`` needs besides paths."""

    model_preset: str = "mini"
    model: AsrModelConfig = field(default_factory=AsrModelConfig)
    loss: AsrLossConfig = field(default_factory=AsrLossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mvq: MvqConfig = field(default_factory=MvqConfig)  # MVQ-KD teacher side; used when loss.codebook_loss_scale > 0

    def validate(self) -> None:
        self.loss.check_model(self.model.use_ctc, self.model.use_transducer)
        if self.model.encoder_type == "whisper" and (self.data.input != "audio" or self.data.sampling_rate != 16000):
            raise SpeechkdError(
                f"model.encoder_type=whisper reads 16 kHz audio (Whisper's own log-mel), but data.input="
                f"{self.data.input!r} and data.sampling_rate={self.data.sampling_rate}: set data.input=audio"
            )
        if self.model.encoder_type == "whisper" and self.loss.codebook_loss_scale > 0:
            raise SpeechkdError("loss.codebook_loss_scale > 0 (MVQ-KD) needs the conformer encoder: the codebook "
                                "frames are aligned to fbank frames, not to the whisper encoder's raw-audio input")
        check_mvq_experiment(self)
        self.loss.lm_kd.check_model(self.model.attention_decoders.layers)


def load_experiment_config(
    path: Optional[PathLike], overrides: Sequence[str] = (), vocab_size: Optional[int] = None
) -> AsrExperimentConfig:
    """Preset model defaults <- YAML ``path`` <- ``overrides``; ``vocab_size`` (from BPE) wins."""
    from speechkd.models.asr import PRESET_DIR, list_presets

    data = load_yaml(path) if path else {}
    data = apply_overrides(data, overrides)
    preset = data.get("model_preset", AsrExperimentConfig.model_preset)
    preset_path = PRESET_DIR / f"{preset}.yaml"
    if not preset_path.is_file():
        raise SpeechkdError(f"unknown model_preset '{preset}'; available: {', '.join(list_presets())}")
    data["model"] = deep_merge(load_yaml(preset_path), data.get("model") or {})
    if vocab_size is not None:
        given = data["model"].get("vocab_size")
        overridden = any(o.split("=", 1)[0].strip() == "model.vocab_size" for o in overrides)
        if overridden and given != vocab_size:
            raise SpeechkdError(f"model.vocab_size={given} disagrees with the BPE model's {vocab_size}")
        data["model"]["vocab_size"] = vocab_size
    return from_dict(AsrExperimentConfig, data)


def load_cuts(
    cuts_dir: PathLike, parts: Sequence[str], prefix: str = "librispeech_cuts", speed_perturbed: bool = True
) -> Any:
    """CutSet of ``<cuts_dir>/<prefix>_<part>.jsonl.gz`` for every part, concatenated (lazily).

    ``speed_perturbed=False`` leaves out the ``_sp<factor>`` copies (lazily): they are for fbank ASR
    training; the audio methods (DistilHuBERT, stored targets, probes, pseudo-labels) use the originals.
    Several parts are chained in order; training should read one shuffled manifest instead
    (``speechkd data shuffle-cuts``).

    Raises:
        SpeechkdError: a manifest is missing, or its first cut's stored data cannot be found from the
            current directory (:func:`speechkd.data.features.check_cut_paths`).
    """
    from lhotse import CutSet, combine

    from speechkd.data.features import check_cut_paths

    paths = [Path(cuts_dir) / f"{prefix}_{p}.jsonl.gz" for p in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SpeechkdError(f"cut manifest(s) not found: {', '.join(missing)} (run the data stages first)")
    sets = [CutSet.from_jsonl_lazy(p) for p in paths]
    for cuts, path in zip(sets, paths):
        check_cut_paths(cuts, path)
    cuts = sets[0] if len(sets) == 1 else combine(*sets)
    if not speed_perturbed:
        from speechkd.data.cutsets import drop_speed_perturbed

        cuts = drop_speed_perturbed(cuts)
    return cuts


def warn_if_chained(train_parts: Sequence[str]) -> None:
    """Several training parts are read one after the other (the sampler only shuffles inside its buffer):
    say so, with the fix."""
    if len(train_parts) > 1:
        log.warning(
            "training parts %s are read one after the other: batches mix them only inside data.buffer_size "
            "cuts. Shuffle them into one manifest first (speechkd data shuffle-cuts, data stage 5)",
            " ".join(train_parts),
        )


def build_asr_model(cfg: AsrExperimentConfig) -> Any:
    """The model of ``cfg`` with initial weights fixed by ``cfg.trainer.seed`` (seeded before it is built)."""
    from speechkd.models.asr import AsrModel
    from speechkd.training.checkpoint import seed_everything

    seed_everything(cfg.trainer.seed)
    return AsrModel(cfg.model)


def train_asr(
    config_path: Optional[PathLike],
    overrides: Sequence[str],
    exp_dir: PathLike,
    cuts_dir: PathLike,
    train_parts: Sequence[str],
    valid_parts: Sequence[str],
    bpe_model: PathLike,
    resume: bool = True,
    codebook_dir: Optional[PathLike] = None,
    untranscribed_parts: Sequence[str] = (),
) -> None:
    """Train an :class:`~speechkd.models.asr.AsrModel` (CTC and/or pruned transducer); with
    ``loss.codebook_loss_scale > 0`` also MVQ-KD's codebook loss on the indexes in ``codebook_dir``.

    ``untranscribed_parts``: more training audio whose text is never read (e.g. an unlabelled pool); its
    utterances get only MVQ-KD's codebook loss, so they need ``loss.codebook_loss_scale > 0`` and indexes.
    """
    from speechkd.data.datamodule import AsrDataModule
    from speechkd.tasks.asr import AsrTask
    from speechkd.text.tokenizer import Tokenizer
    from speechkd.training.trainer import Trainer

    tokenizer = Tokenizer(bpe_model)
    cfg = load_experiment_config(config_path, overrides, vocab_size=tokenizer.vocab_size)
    if cfg.model.blank_id != tokenizer.blank_id:
        raise SpeechkdError(f"model.blank_id={cfg.model.blank_id} but the BPE model's blank is {tokenizer.blank_id}")
    check_untranscribed_parts(cfg, train_parts, valid_parts, untranscribed_parts)
    lm_meta = check_lm_kd_inputs(cfg, cuts_dir) if cfg.loss.lm_kd.enabled else None
    train_cuts = load_cuts(cuts_dir, train_parts)
    if untranscribed_parts:
        from lhotse import combine

        from speechkd.data.collate import mark_untranscribed

        train_cuts = combine(train_cuts, mark_untranscribed(load_cuts(cuts_dir, untranscribed_parts)))
    warn_if_chained([*train_parts, *untranscribed_parts])
    valid_cuts = load_cuts(cuts_dir, valid_parts) if valid_parts else None
    model = build_asr_model(cfg)
    teacher_init = None
    if cfg.model.encoder_type == "whisper" and cfg.model.whisper.init_from:
        from speechkd.training.teacher_init import init_whisper_encoder

        teacher_init = init_whisper_encoder(model.encoder, cfg.model.whisper.init_from)  # a resumed run then loads its own
    log.info(
        "model: %.2fM parameters (encoder %.2fM, %s), preset %s, causal=%s",
        model.num_params() / 1e6,
        model.num_params(model.encoder) / 1e6,
        cfg.model.encoder_type,
        cfg.model_preset,
        cfg.model.encoder_type == "conformer" and cfg.model.encoder.causal,
    )
    codebook = codebook_meta = None
    if cfg.loss.codebook_loss_scale > 0:
        from speechkd.training.mvq_experiment import setup_codebook_training

        train_cuts, valid_cuts, codebook, codebook_meta = setup_codebook_training(
            cfg, model, codebook_dir, train_cuts, [*train_parts, *untranscribed_parts], valid_cuts, valid_parts
        )
    elif codebook_dir is not None:
        raise SpeechkdError(f"--codebook-dir {codebook_dir} given but loss.codebook_loss_scale is 0")
    task = AsrTask(cfg.loss, codebook=codebook)
    target_fields = ([codebook.field] if codebook else []) + (list(LM_KD_FIELDS) if lm_meta is not None else [])
    dm = AsrDataModule(cfg.data, tokenizer=tokenizer, target_fields=target_fields)
    run_config = to_dict(cfg)
    run_config["paths"] = {
        "cuts_dir": str(cuts_dir),
        "train_parts": list(train_parts),
        "untranscribed_parts": list(untranscribed_parts),
        "valid_parts": list(valid_parts),
        "bpe_model": str(Path(bpe_model).resolve()),
        "bpe_model_sha256": tokenizer.sha256,
    }
    if codebook_meta is not None:
        run_config["paths"]["codebook_dir"] = str(codebook_dir)
    if teacher_init is not None:
        run_config["paths"]["teacher_init"] = teacher_init
    if lm_meta is not None:
        run_config["paths"]["lm_soft_labels"] = {k: lm_meta.get(k) for k in ("lm", "lm_fingerprint", "k", "temperature")}
    if model.encoder.input_norm is not None:
        d = cfg.data
        source = {"cuts_dir": str(cuts_dir), "train_parts": list(train_parts), "features": d.features,
                  "num_mel_bins": d.num_mel_bins, "sampling_rate": d.sampling_rate, "max_cuts": d.cmvn_max_cuts,
                  "sample": f"uniform, seed {d.seed}"}
        set_global_cmvn(model, dm, train_cuts, exp_dir, source)
    trainer = Trainer(cfg.trainer, model, task, dm, train_cuts, valid_cuts, exp_dir, run_config=run_config,
                      fingerprints={"bpe_model": tokenizer.fingerprint()})
    task.step_fn = lambda: trainer.state.step
    trainer.fit(resume=resume)


def check_untranscribed_parts(
    cfg: AsrExperimentConfig, train_parts: Sequence[str], valid_parts: Sequence[str], untranscribed: Sequence[str]
) -> None:
    """Before anything loads: untranscribed training parts need a transcript-free loss (MVQ-KD's codebook
    loss), cannot be LM-KD targets (their soft labels come from transcripts), and cannot also be transcribed
    training or validation parts."""
    if not untranscribed:
        return
    if cfg.loss.codebook_loss_scale <= 0:
        raise SpeechkdError(
            f"untranscribed parts {list(untranscribed)} need a loss that reads no transcript: MVQ-KD's "
            f"loss.codebook_loss_scale > 0 (got {cfg.loss.codebook_loss_scale})"
        )
    if cfg.loss.lm_kd.enabled:
        raise SpeechkdError(f"untranscribed parts {list(untranscribed)} cannot be trained with loss.lm_kd (its soft "
                            "labels come from transcripts)")
    both = sorted(set(untranscribed) & (set(train_parts) | set(valid_parts)))
    if both:
        raise SpeechkdError(f"parts {both} are given both as untranscribed and as transcribed training/validation parts")
    if len(set(untranscribed)) != len(untranscribed):
        raise SpeechkdError(f"untranscribed parts {list(untranscribed)} name a part twice")


def check_lm_kd_inputs(cfg: AsrExperimentConfig, cuts_dir: PathLike) -> dict[str, Any]:
    """Before training with ``loss.lm_kd``: the soft labels in ``cuts_dir`` must come from the LM named by
    ``loss.lm_kd.lm`` (weights and tokenizer fingerprints) with the configured k and temperature, and the
    decoders' vocabulary must be the LM's. Sets ``model.attention_decoders.vocab_size`` when it is 0.
    Returns the soft labels' metadata; SpeechkdError naming both values on any mismatch."""
    from speechkd.targets.lm_soft_labels import METADATA_FILE, check_soft_label_metadata, read_soft_label_metadata
    from speechkd.teachers.masked_lm import MaskedLmTeacher

    meta = read_soft_label_metadata(cuts_dir)
    where = Path(cuts_dir) / METADATA_FILE
    lm = MaskedLmTeacher.load(cfg.loss.lm_kd.lm).describe()
    expected = {**cfg.loss.lm_kd.expected_metadata(), **{k: lm[k] for k in ("lm_fingerprint", "tokenizer_fingerprint")}}
    dec = cfg.model.attention_decoders
    expected["vocab_size"] = dec.vocab_size or lm["vocab_size"]
    check_soft_label_metadata(meta, expected, where)
    dec.vocab_size = int(meta["vocab_size"])
    if dec.max_tokens < int(meta.get("max_tokens", 0)):
        log.warning("%s: soft labels go up to %s LM tokens, the decoders to %d: longer utterances are left out "
                    "of the LM-KD loss (counted in the log)", where, meta.get("max_tokens"), dec.max_tokens)
    return meta


def set_global_cmvn(model: Any, dm: Any, train_cuts: Any, exp_dir: PathLike, source: dict[str, Any]) -> None:
    """Put the training set's global mean/std into ``model.encoder.input_norm``.

    The statistics are estimated once (:meth:`AsrDataModule.global_feature_stats`) and kept in
    ``exp_dir/global_cmvn.pt`` with the ``source`` (training cuts and feature settings) they came
    from; a later run with the same source reuses them. A resumed checkpoint carries its own copy,
    which then replaces these (the buffers are part of the model's state).
    """
    import torch

    from speechkd.training.checkpoint import load_checkpoint, save_checkpoint_atomic
    from speechkd.training.dist import dist_info_from_env

    path = Path(exp_dir) / CMVN_NAME
    stats = load_checkpoint(path) if path.is_file() else None
    if stats is not None and stats.get("source") != source:
        log.warning("%s was computed for other data or data settings: estimating the statistics again", path)
        stats = None
    if stats is None:
        mean, std, num_cuts = dm.global_feature_stats(train_cuts)
        stats = {"mean": mean, "std": std, "num_cuts": num_cuts, "source": source, "torch": torch.__version__}
        if dist_info_from_env().rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint_atomic(stats, path)
    model.encoder.input_norm.set_stats(stats["mean"], stats["std"], stats["num_cuts"])
    log.info(
        "global CMVN from %d training cuts (%s): mean of means %.3f, mean std %.3f",
        stats["num_cuts"],
        path,
        float(stats["mean"].mean()),
        float(stats["std"].mean()),
    )


def read_experiment(exp_dir: PathLike) -> tuple[AsrExperimentConfig, dict[str, Any]]:
    """The resolved config (and its ``paths`` section) that ``train_asr`` wrote into ``exp_dir``."""
    return read_experiment_config(exp_dir, AsrExperimentConfig, "speechkd asr train")


def transducer_warmup_checkpoints(exp_dir: PathLike, paths: Sequence[Path]) -> dict[Path, str]:
    """The checkpoints among ``paths`` written while the transducer of a run with a CTC-only phase was untrained:
    in the phase (it had not joined) or within its ``loss.warmup_steps`` after joining (from ``exp_dir/config.yaml``).
    Averaged with later epochs they pull the transducer back towards blanks (a 3-epoch run whose phase ended in
    epoch 1 decoded mostly deletions). Runs without a phase (``transducer_start`` 0) and checkpoints without task
    state are never listed. Returns ``{path: why}``."""
    from speechkd.training.checkpoint import load_checkpoint

    cfg_path = Path(exp_dir) / "config.yaml"
    loss = (load_yaml(cfg_path).get("loss") or {}) if cfg_path.is_file() else {}
    warmup = int(loss.get("warmup_steps", AsrLossConfig.warmup_steps))
    early: dict[Path, str] = {}
    for p in paths:
        ckpt = load_checkpoint(p, mmap=True)
        task, step = ckpt.get("task") or {}, (ckpt.get("train_state") or {}).get("step")
        if "transducer_start" not in task or step is None:
            continue
        start = task["transducer_start"]
        if start is None:
            early[p] = f"written at step {step} in the CTC-only phase (the transducer had not joined)"
        elif start > 0 and step < start + warmup:
            early[p] = (f"written at step {step}, {step - start} steps after the transducer joined at step {start} "
                        f"(loss.warmup_steps {warmup})")
    return early


def average_asr(
    exp_dir: PathLike, avg: int, by: str = "epoch", last: Optional[int] = None, cap: bool = False,
    output: Optional[PathLike] = None,
) -> Path:
    """Average the last ``avg`` checkpoints of ``exp_dir`` (ending at number ``last``) into ``output``, by default
    ``exp_dir/averaged.pt`` (the deployable model: training-only heads such as LM-KD attention decoders are left
    out). Another ``output`` leaves ``averaged.pt`` alone, e.g. for a learning curve of averages.

    ``cap``: average all available checkpoints when there are fewer than ``avg`` (logged) instead
    of failing — for short smoke runs.
    """
    import torch

    from speechkd.training.average import average_checkpoints, common_fingerprints, select_checkpoints
    from speechkd.training.checkpoint import (
        FINGERPRINTS_KEY,
        epoch_checkpoints,
        save_checkpoint_atomic,
        step_checkpoints,
    )

    if cap:
        found = len(epoch_checkpoints(exp_dir) if by == "epoch" else step_checkpoints(exp_dir))
        if 0 < found < avg:
            log.warning("only %d %s checkpoint(s) in %s: averaging %d instead of %d", found, by, exp_dir, found, avg)
            avg = found

    paths = select_checkpoints(exp_dir, avg, by=by, last=last)
    early = transducer_warmup_checkpoints(exp_dir, paths)
    if early and len(early) < len(paths):
        for p, why in early.items():
            log.warning("leaving %s out of the average: %s", p.name, why)
        paths = [p for p in paths if p not in early]
    elif early:
        log.warning("every checkpoint to average was written before the transducer's warm-up ended (%s): averaging "
                    "them anyway (a short run?)", "; ".join(f"{p.name}: {why}" for p, why in early.items()))
    log.info("averaging %s", ", ".join(p.name for p in paths))
    from speechkd.models.asr import decoding_state_dict

    fingerprints = common_fingerprints(paths)
    state = decoding_state_dict(average_checkpoints(paths))  # training-only heads are not averaged
    out = Path(output) if output is not None else Path(exp_dir) / AVERAGED_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint_atomic(
        {"model": state, "averaged_from": [p.name for p in paths], "torch": torch.__version__, "argv": sys.argv,
         FINGERPRINTS_KEY: fingerprints},
        out,
    )
    return out
