"""``speechkd distill evaluate-upstream``: how good and how small is a distilled speech encoder?

Three measurements, written as markdown tables to ``<out_dir>/upstream-report.md`` (and as numbers to
``upstream-report.yaml``):

(a) **Heads vs teacher** on the dev parts: per prediction head (teacher layer), the frame-weighted mean
    cosine similarity and L1 distance between the trained student's head outputs and the teacher's
    hidden states (teacher run on the fly, same alignment and loss code as training).
(b) **SUPERB-style ASR probe**, for each upstream (``fbank``: 80-dim log-mel, ``teacher``, ``student``:
    the exported transformers checkpoint): the upstream is frozen; a learnable softmax-weighted sum of
    all its hidden states feeds a small BiLSTM + CTC head over BPE tokens
    (:class:`~speechkd.models.probe.WeightedSumCtcProbe`), trained for ``probe.max_steps`` steps on the
    labelled train parts; greedy CTC WER on each test part via
    :func:`~speechkd.decoding.scoring.write_results` (files in ``<out_dir>/probe/``, tag = upstream).
(c) **Compression**: parameters, weight files on disk, and the real-time factor (compute seconds per
    second of audio, batch 1, after warm-up) of every upstream measured in the same run on CPU, and on
    GPU when one is present.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from torch import Tensor

from speechkd.errors import SpeechkdError
from speechkd.models.probe import ProbeModelConfig

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
UPSTREAM_KINDS = ("fbank", "teacher", "student")
REPORT_MD = "upstream-report.md"
REPORT_YAML = "upstream-report.yaml"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
BYTES_PER_MB = 1e6


@dataclass
class ProbeConfig:
    """Training of the ASR probe (SUPERB ASR: Adam 1e-4, 200k steps, 2x1024 BiLSTM; defaults are small)."""

    model: ProbeModelConfig = field(default_factory=ProbeModelConfig)
    max_steps: int = 1000
    lr: float = 1e-3
    grad_clip: float = 5.0
    max_duration: float = 60.0  # seconds of audio per batch
    num_buckets: int = 4
    max_cut_duration: float = 20.0  # longer training cuts are left out (logged by the datamodule)
    num_workers: int = 0
    seed: int = 42
    log_every_n: int = 50
    # Keep each training cut's upstream layers (float16, CPU) after its first batch, so the frozen upstream
    # runs once per cut instead of once per step. Memory: layers x dim x frames x 2 bytes (Whisper tiny,
    # 5 x 384 at 50 frames/s: ~0.7 GB per hour of audio; HuBERT base, 13 x 768: ~3.6 GB per hour, so the
    # 100 h LibriSpeech probe set would need ~360 GB). The cache stops growing at cache_max_gb (logged):
    # later cuts run the upstream at every step.
    cache_features: bool = True
    cache_max_gb: float = 4.0
    # Probe training on the _sp<factor> speed-perturbed copies too (SUPERB: original audio only).
    use_speed_perturbed: bool = False

    def validate(self) -> None:
        if self.max_steps < 1 or self.lr <= 0:
            raise SpeechkdError(f"probe.max_steps must be >= 1 and probe.lr > 0, got {self.max_steps}, {self.lr}")
        if self.cache_max_gb < 0:
            raise SpeechkdError(f"probe.cache_max_gb must be >= 0, got {self.cache_max_gb}")


@dataclass
class UpstreamEvalConfig:
    """Everything ``speechkd distill evaluate-upstream`` needs besides paths."""

    upstreams: list[str] = field(default_factory=lambda: list(UPSTREAM_KINDS))
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    num_mel_bins: int = 80  # fbank upstream
    eval_max_duration: float = 60.0  # seconds per batch for dev distances and test decoding
    rtf_utterances: int = 10  # test utterances timed per upstream and device
    rtf_warmup: int = 2  # untimed runs first
    sample_rate: int = 16000

    def validate(self) -> None:
        bad = [u for u in self.upstreams if u not in UPSTREAM_KINDS]
        if bad or not self.upstreams:
            raise SpeechkdError(f"upstreams {self.upstreams}: choose from {UPSTREAM_KINDS}")
        if self.rtf_utterances < 1 or self.rtf_warmup < 0:
            raise SpeechkdError("rtf_utterances must be >= 1 and rtf_warmup >= 0")


# ==================================================================================================
# upstreams: (N, S) audio -> all hidden states (N, T, D), lens (N,)


def _zero_pad(hidden: list[Tensor], lens: Tensor) -> list[Tensor]:
    mask = (torch.arange(hidden[0].shape[1], device=lens.device)[None, :] < lens[:, None])[:, :, None]
    return [h.masked_fill(~mask, 0.0) for h in hidden]


class FbankUpstream:
    """80-dim log-mel filter banks (lhotse's ``Fbank``, as the stored features): one "layer", 10 ms frames."""

    name = "fbank"

    def __init__(self, num_mel_bins: int = 80, sample_rate: int = 16000) -> None:
        from speechkd.data.features import make_fbank_extractor

        self.extractor = make_fbank_extractor(num_mel_bins, sample_rate)
        self.sample_rate = sample_rate
        self.num_layers = 1
        self.dim = num_mel_bins
        self.frame_shift = self.extractor.frame_shift

    def to(self, device: Any) -> "FbankUpstream":
        return self

    def num_parameters(self) -> int:
        return 0

    def weight_bytes(self) -> int:
        return 0

    def memory_bytes(self) -> int:
        return 0

    @torch.no_grad()
    def __call__(self, wavs: Tensor, wav_lens: Tensor) -> tuple[list[Tensor], Tensor]:
        feats = [
            torch.as_tensor(np.asarray(self.extractor.extract(wavs[i, :n].cpu().numpy(), self.sample_rate)))
            for i, n in enumerate(wav_lens.tolist())
        ]
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(wavs.device)
        return [padded], lens.to(wavs.device)


class TeacherUpstream:
    """A :class:`~speechkd.teachers.Teacher`: all ``num_layers + 1`` hidden states.

    Utterances longer than ``max_samples`` (default: the teacher's ``max_samples``, e.g. Whisper's 30 s
    position table; None = no limit) are encoded in consecutive chunks of ``max_samples`` whose frames
    are concatenated.
    """

    name = "teacher"

    def __init__(self, teacher: Any, checkpoint: str, max_samples: Optional[int] = None) -> None:
        self.teacher = teacher
        self.checkpoint = checkpoint
        self.max_samples = max_samples or getattr(teacher, "max_samples", None)
        self.num_layers = teacher.num_layers + 1
        self.dim = teacher.hidden_size
        self.frame_shift = teacher.frame_shift

    def to(self, device: Any) -> "TeacherUpstream":
        self.teacher.to(device)
        return self

    def num_parameters(self) -> int:
        return self.teacher.num_parameters()

    def weight_bytes(self) -> int:
        return weight_file_bytes(self.checkpoint)

    def memory_bytes(self) -> int:
        return module_bytes(self.teacher.model)

    @torch.no_grad()
    def __call__(self, wavs: Tensor, wav_lens: Tensor) -> tuple[list[Tensor], Tensor]:
        if self.max_samples is None or int(wav_lens.max()) <= self.max_samples:
            out = self.teacher(wavs, wav_lens)
            return [h.float() for h in out.hidden_states], out.lens.to(wavs.device)
        rows = [self._chunked(wavs[i, :n]) for i, n in enumerate(wav_lens.tolist())]  # [(T_i, L, D)]
        lens = torch.tensor([r.shape[0] for r in rows], dtype=torch.long, device=wavs.device)
        padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (N, T, L, D)
        return list(padded.unbind(dim=2)), lens

    def _chunked(self, wav: Tensor) -> Tensor:
        """One utterance ``(S,)`` in chunks of ``max_samples`` -> ``(T, L, D)`` concatenated frames."""
        assert self.max_samples is not None
        parts = []
        for start in range(0, wav.shape[0], self.max_samples):
            chunk = wav[start : start + self.max_samples]
            out = self.teacher(chunk[None], torch.tensor([chunk.shape[0]], device=wav.device))
            parts.append(torch.stack([h[0, : int(out.lens[0])].float() for h in out.hidden_states], dim=1))
        return torch.cat(parts, dim=0)


class HFStudentUpstream:
    """An exported student (standard transformers HuBERT/wav2vec2/WavLM checkpoint): all hidden states."""

    name = "student"

    def __init__(self, export_dir: PathLike) -> None:
        from speechkd.models.hf_export import load_exported_student

        self.export_dir = Path(export_dir)
        self.model, self.meta = load_exported_student(export_dir)
        self.model.eval().requires_grad_(False)
        cfg = self.model.config
        self.num_layers = int(cfg.num_hidden_layers) + 1
        self.dim = int(cfg.hidden_size)
        self.frame_shift = float(self.meta["backbone"]["frame_shift"])

    def to(self, device: Any) -> "HFStudentUpstream":
        self.model.to(device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def weight_bytes(self) -> int:
        return weight_file_bytes(self.export_dir)

    def memory_bytes(self) -> int:
        return module_bytes(self.model)

    @torch.no_grad()
    def __call__(self, wavs: Tensor, wav_lens: Tensor) -> tuple[list[Tensor], Tensor]:
        mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < wav_lens[:, None]
        out = self.model(wavs.masked_fill(~mask, 0.0), attention_mask=mask.long(), output_hidden_states=True)
        lens = self.model._get_feat_extract_output_lengths(wav_lens).long()
        return _zero_pad(list(out.hidden_states), lens), lens


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as loaded."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def weight_file_bytes(path: PathLike) -> int:
    """Bytes of the weight files (``*.safetensors``, ``*.bin``, ``*.pt``) directly in ``path`` (0 for a hub id)."""
    p = Path(path)
    if not p.is_dir():
        return 0
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES)


# ==================================================================================================
# (a) heads vs teacher


def head_distances(task: Any, model: Any, loader: Any, device: torch.device) -> dict[int, dict[str, float]]:
    """Frame-weighted mean cosine and L1 per head over ``loader``: ``{teacher_layer: {"cos", "l1"}}``."""
    from speechkd.data.collate import move_batch

    sums: dict[str, float] = {}
    frames = 0.0
    model.eval()
    with torch.no_grad():
        for batch in loader:
            out = task.compute_loss(model, move_batch(batch, device), False)
            frames += float(out.num_frames)  # LossOutput values may be 0-d device tensors
            for k, v in out.info.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    if frames == 0:
        raise SpeechkdError("head distances: the dev parts gave no frames")
    return {layer: {"cos": sums[f"cos_L{layer}"] / frames, "l1": sums[f"l1_L{layer}"] / frames} for layer in task.layers}


# ==================================================================================================
# (b) probe


def probe_batches(loader: Any, max_steps: int) -> Any:
    """Yield training batches over as many epochs as needed for ``max_steps`` batches."""
    from speechkd.data.datamodule import set_loader_epoch

    step, epoch = 0, 1
    while step < max_steps:
        set_loader_epoch(loader, epoch)
        got = False
        for batch in loader:
            got = True
            yield batch
            step += 1
            if step >= max_steps:
                return
        if not got:
            raise SpeechkdError("probe: the training parts gave no batch (check probe.max_duration / the cuts)")
        epoch += 1


def probe_inputs(upstream: Any, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
    """``(layers (L, N, T, D), lens (N,))`` of the frozen upstream for a batch."""
    wavs = batch["inputs"].to(device)
    wav_lens = batch["input_lens"].to(device)
    hidden, lens = upstream(wavs, wav_lens)
    return torch.stack(hidden, dim=0), lens


class LayerCache:
    """Per-cut memo of a frozen upstream's layers: ``inputs(batch) -> (layers (L, N, T, D), lens (N,))``.

    A batch with any unseen cut runs the upstream once on the whole batch (as :func:`probe_inputs` does)
    and stores the unseen cuts' valid frames as ``(L, T_i, D)`` in ``dtype`` on the CPU; later batches
    are assembled from the cache (zero padding), so each cut costs one upstream forward per probe run.
    The store never exceeds ``max_bytes``: once full, cuts not in it run the upstream at every batch
    (logged once). Either way the layers are rounded to ``dtype``, so results do not depend on the cap.
    """

    def __init__(self, upstream: Any, dtype: torch.dtype = torch.float16, max_bytes: Optional[int] = None) -> None:
        self.upstream = upstream
        self.dtype = dtype
        self.max_bytes = max_bytes
        self.store: dict[str, Tensor] = {}
        self.num_bytes = 0
        self.full = False

    def _add(self, cid: str, item: Tensor) -> bool:
        size = item.numel() * item.element_size()
        if self.max_bytes is not None and self.num_bytes + size > self.max_bytes:
            if not self.full:
                log.warning("probe %s: layer cache full at %.1f MB (%d cuts, probe.cache_max_gb); other cuts run "
                            "the upstream at every step", getattr(self.upstream, "name", "?"),
                            self.num_bytes / BYTES_PER_MB, len(self.store))
                self.full = True
            return False
        self.store[cid] = item
        self.num_bytes += size
        return True

    def inputs(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
        ids = list(batch["cut_ids"])
        if any(cid not in self.store for cid in ids):
            layers, lens = probe_inputs(self.upstream, batch, device)
            stored = True
            for i, cid in enumerate(ids):
                if cid not in self.store:
                    stored &= self._add(cid, layers[:, i, : int(lens[i])].to("cpu", self.dtype).contiguous())
            if not stored:
                mask = (torch.arange(layers.shape[2], device=lens.device)[None, :] < lens[:, None])[None, :, :, None]
                return layers.to(self.dtype).float().masked_fill(~mask, 0.0), lens
        items = [self.store[cid] for cid in ids]
        lens = torch.tensor([it.shape[1] for it in items], dtype=torch.int64)
        num_layers, dim = items[0].shape[0], items[0].shape[2]
        out = torch.zeros(num_layers, len(items), int(lens.max()), dim, dtype=torch.float32)
        for i, it in enumerate(items):
            out[:, i, : it.shape[1]] = it.float()
        return out.to(device), lens.to(device)


def train_probe(
    upstream: Any, vocab_size: int, train_loader: Any, cfg: ProbeConfig, device: torch.device, blank_id: int = 0
) -> tuple[Any, list[float]]:
    """Train a :class:`WeightedSumCtcProbe` on ``upstream``; returns ``(probe, per-step loss per token)``."""
    from speechkd.losses.ctc import ctc_feasible, ctc_loss
    from speechkd.models.probe import WeightedSumCtcProbe

    torch.manual_seed(cfg.seed)
    probe = WeightedSumCtcProbe(upstream.num_layers, upstream.dim, vocab_size, cfg.model).to(device)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
    losses: list[float] = []
    infeasible = 0
    cache = LayerCache(upstream, max_bytes=int(cfg.cache_max_gb * 1e9)) if cfg.cache_features else None
    if cache:
        log.info("probe %s: caching upstream layers in RAM, up to %.1f GB (probe.cache_max_gb)", upstream.name,
                 cfg.cache_max_gb)
    for step, batch in enumerate(probe_batches(train_loader, cfg.max_steps), start=1):
        layers, lens = cache.inputs(batch, device) if cache else probe_inputs(upstream, batch, device)
        log_probs, lens = probe(layers, lens)
        ok = ctc_feasible(lens, batch["tokens"])
        infeasible += int((~ok).sum())
        idx = ok.nonzero(as_tuple=True)[0]
        if len(idx) == 0:
            log.warning("probe %s step %d: no utterance is long enough for CTC; batch skipped", upstream.name, step)
            continue
        tokens = [batch["tokens"][i] for i in idx.tolist()]
        loss = ctc_loss(log_probs[idx], lens[idx], tokens, blank=blank_id, reduction="sum") / sum(map(len, tokens))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if step % cfg.log_every_n == 0:
            log.info("probe %s step %d: ctc/token %.4f (last %d steps), layer weights %s", upstream.name, step,
                     float(np.mean(losses[-cfg.log_every_n:])), cfg.log_every_n,
                     [round(w, 3) for w in probe.layer_weights().tolist()])
    if infeasible:
        log.warning("probe %s: %d training utterances were too short for CTC and left out", upstream.name, infeasible)
    if cache:
        log.info("probe %s: cached the layers of %d cuts (%.1f MB)", upstream.name, len(cache.store),
                 cache.num_bytes / BYTES_PER_MB)
    return probe.eval(), losses


def decode_probe(
    upstream: Any, probe: Any, tokenizer: Any, loader: Any, device: torch.device
) -> list[tuple[str, str, str]]:
    """Greedy CTC decoding: ``[(cut_id, reference, hypothesis)]``."""
    from speechkd.decoding.ctc import ctc_greedy_search

    results = []
    with torch.no_grad():
        for batch in loader:
            layers, lens = probe_inputs(upstream, batch, device)
            log_probs, lens = probe(layers, lens)
            hyps = tokenizer.decode(ctc_greedy_search(log_probs, lens, blank_id=tokenizer.blank_id))
            results.extend(zip(batch["cut_ids"], batch["texts"], hyps))
    return results


# ==================================================================================================
# (c) compression


def time_upstream(upstream: Any, wavs: Sequence[Tensor], device: torch.device, warmup: int) -> float:
    """Real-time factor: compute seconds / audio seconds over ``wavs`` (batch 1, after ``warmup`` runs)."""
    upstream.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    lens = [torch.tensor([w.shape[0]], device=device) for w in wavs]
    inputs = [w[None].to(device) for w in wavs]
    for i in range(min(warmup, len(inputs))):
        upstream(inputs[i], lens[i])
    sync()
    t0 = time.perf_counter()
    for x, n in zip(inputs, lens):
        upstream(x, n)
    sync()
    elapsed = time.perf_counter() - t0
    audio_s = sum(w.shape[0] for w in wavs) / 16000.0
    return elapsed / audio_s


def load_rtf_audio(cuts: Any, count: int, sample_rate: int) -> list[Tensor]:
    """The first ``count`` cuts' mono audio as ``(S,)`` float tensors."""
    wavs = []
    for cut in cuts:
        if cut.sampling_rate != sample_rate:
            cut = cut.resample(sample_rate)
        wavs.append(torch.from_numpy(cut.load_audio()[0].astype(np.float32)))
        if len(wavs) >= count:
            break
    if not wavs:
        raise SpeechkdError("compression: no test audio to time the upstreams on")
    return wavs


# ==================================================================================================
# report


def _fmt(x: Optional[float], spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_report(report: dict[str, Any]) -> str:
    """Markdown of the three tables from the ``upstream-report.yaml`` dict."""
    lines = [f"# Upstream evaluation of {report['student']}", "", f"Teacher: `{report['teacher']}`", ""]
    heads = report.get("heads") or {}
    if heads:
        lines += [f"## (a) Student heads vs teacher on {', '.join(report['dev_parts'])}", "",
                  "| head (teacher layer) | cosine | L1 |", "|---|---|---|"]
        lines += [f"| {layer} | {_fmt(v['cos'], '.4f')} | {_fmt(v['l1'], '.4f')} |" for layer, v in heads.items()]
        lines.append("")
    probe = report.get("probe") or {}
    if probe:
        parts = report["test_parts"]
        lines += [f"## (b) ASR probe WER % (frozen upstream, weighted layer sum + BiLSTM + CTC, "
                  f"{report['probe_steps']} steps on {', '.join(report['train_parts'])})", "",
                  "| upstream | " + " | ".join(parts) + " | final train CTC/token | layer weights |",
                  "|---" * (len(parts) + 3) + "|"]
        for name, row in probe.items():
            wers = " | ".join(_fmt(row["wer"].get(p)) for p in parts)
            weights = " ".join(f"{w:.2f}" for w in row["layer_weights"])
            lines.append(f"| {name} | {wers} | {_fmt(row['final_loss'], '.3f')} | {weights} |")
        lines.append("")
    comp = report.get("compression") or {}
    if comp:
        lines += ["## (c) Compression (real-time factor: compute s per audio s, batch 1, same run)", "",
                  "| upstream | parameters | weights in memory (MB) | checkpoint weights on disk (MB) | CPU RTF | GPU RTF |",
                  "|---|---|---|---|---|---|"]
        for name, row in comp.items():
            lines.append(
                f"| {name} | {row['parameters'] / 1e6:.2f}M | {row['memory_bytes'] / BYTES_PER_MB:.1f} | "
                f"{_fmt(row['disk_bytes'] / BYTES_PER_MB, '.1f')} | "
                f"{_fmt(row.get('rtf_cpu'), '.4f')} | {_fmt(row.get('rtf_gpu'), '.4f')} |"
            )
        lines += ["", f"CPU threads: {report.get('cpu_threads')}; disk = weight files of the checkpoint directory "
                  "(a Whisper teacher's includes its decoder; a hub id counts 0)."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_YAML).write_text(yaml.safe_dump(report, sort_keys=False))
    path = out / REPORT_MD
    path.write_text(render_report(report))
    log.info("upstream report -> %s", path)
    return path


# ==================================================================================================
# the command


def _audio_data_config(max_duration: float, sample_rate: int, training: bool, cfg: Optional[ProbeConfig] = None) -> Any:
    from speechkd.data.datamodule import DataConfig

    if not training:
        return DataConfig(input="audio", sampling_rate=sample_rate, max_duration=max_duration, num_workers=0,
                          max_cut_duration=min(max_duration, DataConfig.max_cut_duration), shuffle=False)
    assert cfg is not None
    return DataConfig(input="audio", sampling_rate=sample_rate, max_duration=cfg.max_duration,
                      num_buckets=cfg.num_buckets, shuffle=True, drop_last=False, seed=cfg.seed,
                      num_workers=cfg.num_workers, min_cut_duration=0.0, max_cut_duration=cfg.max_cut_duration,
                      drop_empty_text=True)


def evaluate_upstream(
    exp_dir: PathLike,
    cuts_dir: PathLike,
    bpe_model: PathLike,
    train_parts: Sequence[str],
    dev_parts: Sequence[str],
    test_parts: Sequence[str],
    student_dir: Optional[PathLike] = None,
    teacher_path: Optional[str] = None,
    config_path: Optional[PathLike] = None,
    overrides: Sequence[str] = (),
    out_dir: Optional[PathLike] = None,
    checkpoint: Optional[PathLike] = None,
    device: Optional[str] = None,
) -> Path:
    """Run (a), (b), (c) of the module docstring for the student of ``exp_dir``; returns the report path.

    ``student_dir``: an exported student (default: the trained student of ``exp_dir`` is exported to
    ``<out_dir>/student-hf`` first). ``teacher_path``: default the teacher of the training config.
    """
    from speechkd.config import load_config
    from speechkd.data.datamodule import AsrDataModule
    from speechkd.decoding.scoring import write_results
    from speechkd.tasks.distill import DistillLossConfig, DistillModel, DistillTask
    from speechkd.text.tokenizer import Tokenizer
    from speechkd.training.asr_experiment import load_cuts
    from speechkd.training.distill_experiment import (
        export_distill,
        load_configured_teacher,
        load_trained_student,
        read_distill_experiment,
    )
    from speechkd.utils.runinfo import write_run_info

    cfg = load_config(UpstreamEvalConfig, config_path, overrides)
    exp_cfg, _ = read_distill_experiment(exp_dir)
    if teacher_path:
        exp_cfg.teacher.path = teacher_path
    out_dir = Path(out_dir) if out_dir else Path(exp_dir) / "upstream"
    write_run_info(out_dir, {"eval": _as_dict(cfg), "teacher": exp_cfg.teacher.path}, name="evaluate-upstream")
    from speechkd.training.dist import resolve_device

    dev = torch.device(resolve_device(device))
    tokenizer = Tokenizer(bpe_model)
    teacher = load_configured_teacher(exp_cfg.teacher)
    student, ckpt = load_trained_student(exp_dir, checkpoint)
    if student_dir is None:
        student_dir = export_distill(exp_dir, out_dir / "student-hf", checkpoint=ckpt)
    eval_dm = AsrDataModule(_audio_data_config(cfg.eval_max_duration, cfg.sample_rate, False), tokenizer)
    report: dict[str, Any] = {
        "student": str(student_dir), "teacher": exp_cfg.teacher.path, "checkpoint": str(ckpt),
        "dev_parts": list(dev_parts), "train_parts": list(train_parts), "test_parts": list(test_parts),
        "probe_steps": cfg.probe.max_steps, "cpu_threads": torch.get_num_threads(),
    }

    # (a) heads vs teacher
    layers = list(student.cfg.pred_head_layers)
    loss_cfg = DistillLossConfig(mode="on_the_fly", l1_weight=exp_cfg.loss.l1_weight, cos_weight=exp_cfg.loss.cos_weight,
                                 max_len_diff=exp_cfg.loss.max_len_diff)
    task = DistillTask(loss_cfg, layers, teacher.frame_shift, cfg.sample_rate)
    model = DistillModel(student, teacher).to(dev)
    if dev_parts:
        report["heads"] = head_distances(task, model, eval_dm.eval_dataloader(load_cuts(cuts_dir, dev_parts)), dev)
        for layer, v in report["heads"].items():
            log.info("head for teacher layer %d: cosine %.4f, L1 %.4f", layer, v["cos"], v["l1"])

    # (b) probes and (c) compression
    upstreams = {
        "fbank": lambda: FbankUpstream(cfg.num_mel_bins, cfg.sample_rate),
        "teacher": lambda: TeacherUpstream(teacher, exp_cfg.teacher.path),
        "student": lambda: HFStudentUpstream(student_dir),
    }
    train_dm = AsrDataModule(_audio_data_config(0.0, cfg.sample_rate, True, cfg.probe), tokenizer)
    rtf_wavs = load_rtf_audio(load_cuts(cuts_dir, [test_parts[0]]), cfg.rtf_utterances, cfg.sample_rate)
    report["probe"], report["compression"] = {}, {}
    for name in cfg.upstreams:
        up = upstreams[name]().to(dev)
        probe, losses = train_probe(up, tokenizer.vocab_size, train_dm.train_dataloader(
                                        load_cuts(cuts_dir, train_parts, speed_perturbed=cfg.probe.use_speed_perturbed)),
                                    cfg.probe, dev, tokenizer.blank_id)
        row = {"wer": {}, "final_loss": float(np.mean(losses[-cfg.probe.log_every_n:])) if losses else None,
               "layer_weights": [float(w) for w in probe.layer_weights().tolist()]}
        for part in test_parts:
            results = decode_probe(up, probe, tokenizer, eval_dm.eval_dataloader(load_cuts(cuts_dir, [part])), dev)
            row["wer"][part] = write_results(results, out_dir / "probe", test_set=part, tag=name).wer
        report["probe"][name] = row
        comp = {"parameters": up.num_parameters(), "disk_bytes": up.weight_bytes(), "memory_bytes": up.memory_bytes(),
                "rtf_cpu": time_upstream(up, rtf_wavs, torch.device("cpu"), cfg.rtf_warmup)}
        if torch.cuda.is_available():
            comp["rtf_gpu"] = time_upstream(up, rtf_wavs, torch.device("cuda"), cfg.rtf_warmup)
        report["compression"][name] = comp
        up.to(dev)
        log.info("%s: probe WER %s, %s", name, row["wer"], comp)
    return write_report(report, out_dir)


def _as_dict(cfg: Any) -> dict[str, Any]:
    from speechkd.config import to_dict

    return to_dict(cfg)
