"""Decode test sets with a trained ASR experiment and score them.

``speechkd asr decode`` wraps :func:`decode_asr`. Methods:

- ``ctc-greedy``: argmax of the CTC head, repeats collapsed, blanks dropped.
- ``greedy``: transducer greedy search (one symbol per frame by default).
- ``beam``: transducer modified beam search (``beam_size`` hypotheses, one symbol per frame).
- ``ctc-beam``: CTC prefix beam search (``beam_size`` prefixes); with ``ngram_lm`` (a
  :class:`speechkd.decoding.ngram.TokenNgramLm` over the same BPE) shallow fusion with weight ``lm_weight``
  and a per-token ``insertion_bonus`` (tag ``ctc-beam<B>-lm<w>``).

``chunk_size > 0`` decodes a causal model chunk-wise: ``greedy`` then runs real streaming (the
encoder fed chunk by chunk with its caches, decoder state carried across chunks); the other
methods encode with the same chunked attention mask (simulated streaming, identical outputs).

Results go to ``<exp_dir>/decode/`` or another ``out_dir`` (``recogs-/errs-<set>-<tag>.txt``, trn files), one
``wer-summary.tsv`` row per (set, tag), via :func:`speechkd.decoding.scoring.write_results`, and a
``decode-log.tsv`` row per call naming the checkpoint decoded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from speechkd.errors import SpeechkdError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
METHODS = ("ctc-greedy", "greedy", "beam", "ctc-beam")


@dataclass
class FusionLm:
    """Shallow fusion of ``ctc-beam`` and ``beam``: the token LM and its weights."""

    lm: Any
    weight: float = 0.5
    insertion_bonus: float = 0.0


def decode_tag(method: str, beam_size: int, chunk_size: int, left_context: int, length_norm: bool = True,
               fusion: Optional[FusionLm] = None) -> str:
    """Name of a decoding configuration, used in result file names (``-nolennorm``: beam search
    without length normalisation)."""
    tag = method
    if method == "beam":
        tag = f"beam{beam_size}" + ("" if length_norm else "-nolennorm")
    if method == "ctc-beam":
        tag = f"ctc-beam{beam_size}"
    if method in ("beam", "ctc-beam") and fusion is not None:
        tag += f"-lm{fusion.weight:g}" + (f"-bonus{fusion.insertion_bonus:g}" if fusion.insertion_bonus else "")
    if chunk_size > 0:
        tag += f"-chunk{chunk_size}" + (f"-left{left_context}" if left_context >= 0 else "")
    return tag


def resolve_checkpoint(exp_dir: PathLike, checkpoint: Optional[PathLike]) -> Path:
    """The checkpoint file a decode of ``exp_dir`` reads: ``checkpoint`` (a path, or a name inside ``exp_dir``);
    by default ``averaged.pt`` when present, else the newest ``epoch-<e>.pt``."""
    from speechkd.training.asr_experiment import AVERAGED_NAME
    from speechkd.training.checkpoint import epoch_checkpoints

    if checkpoint is None:
        avg = Path(exp_dir) / AVERAGED_NAME
        epochs = epoch_checkpoints(exp_dir)
        if avg.is_file():
            return avg
        if epochs:
            return epochs[-1][1]
        raise SpeechkdError(f"no averaged.pt or epoch-*.pt checkpoint in {exp_dir}")
    path = Path(checkpoint)
    if not path.is_absolute() and not path.is_file():
        path = Path(exp_dir) / path
    return path


def load_model_for_decoding(
    exp_dir: PathLike, checkpoint: Optional[PathLike], tokenizer: Any = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode, experiment config, paths) from ``exp_dir`` and a checkpoint file.

    ``paths`` is the training config's ``paths`` section plus ``checkpoint`` (the file read, see
    :func:`resolve_checkpoint`) and ``averaged_from`` (the checkpoints it averages; None for a plain one).

    The model has no training-only heads (:func:`speechkd.models.asr.decoding_config`): LM-KD attention
    decoders are neither built nor loaded. ``checkpoint`` defaults to ``averaged.pt`` when present, else the newest epoch checkpoint.
    With a ``tokenizer``, a checkpoint trained with another BPE model is refused (a checkpoint without
    the checksum, from an older speechkd, only gets a warning).
    """
    from speechkd.models.asr import AsrModel, decoding_config, decoding_state_dict
    from speechkd.training.asr_experiment import read_experiment
    from speechkd.training.checkpoint import check_fingerprints, load_checkpoint

    cfg, paths = read_experiment(exp_dir)
    checkpoint = resolve_checkpoint(exp_dir, checkpoint)
    state = load_checkpoint(checkpoint)
    if tokenizer is not None:
        check_fingerprints(state, {"bpe_model": tokenizer.fingerprint()}, checkpoint, "decode")
    model = AsrModel(decoding_config(cfg.model))  # training-only heads (attention decoders) dropped
    try:
        model.load_state_dict(decoding_state_dict(state["model"] if "model" in state else state))
    except RuntimeError as e:
        raise SpeechkdError(f"checkpoint {checkpoint} does not fit the model in {exp_dir}/config.yaml: {e}") from e
    norm = model.encoder.input_norm
    if norm is not None and not norm.ready:
        raise SpeechkdError(f"checkpoint {checkpoint} has encoder.global_cmvn=true but no CMVN statistics")
    log.info("loaded %s", checkpoint)
    model.eval()
    paths = {**paths, "checkpoint": str(checkpoint), "averaged_from": state.get("averaged_from")}
    return model, cfg, paths


def _check_method(model: Any, method: str, chunk_size: int) -> None:
    if method not in METHODS:
        raise SpeechkdError(f"unknown decoding method {method!r}; choose from {', '.join(METHODS)}")
    if method in ("ctc-greedy", "ctc-beam") and model.ctc_output is None:
        raise SpeechkdError("ctc-greedy decoding needs a model with a CTC head (model.use_ctc=true)")
    if method in ("greedy", "beam") and model.joiner is None:
        raise SpeechkdError(f"{method} decoding needs a transducer (model.use_transducer=true)")
    if chunk_size > 0 and model.cfg.encoder_type != "conformer":
        raise SpeechkdError(f"chunk_size={chunk_size}: the {model.cfg.encoder_type} encoder is full-context only")
    if chunk_size > 0 and not model.cfg.encoder.causal:
        raise SpeechkdError(
            f"chunk_size={chunk_size} needs a causal (streaming) encoder; this model has encoder.causal=false"
        )


def decode_batch(
    model: Any,
    batch: dict[str, Any],
    method: str,
    beam_size: int,
    chunk_size: int,
    left_context: int,
    length_norm: bool = True,
    fusion: Optional[FusionLm] = None,
) -> list[list[int]]:
    """Token ids for every utterance of ``batch`` (inputs (N, T, C), input_lens (N,)).
    ``length_norm``: beam search picks its result by length-normalised score.
    ``fusion``: the token LM of ``ctc-beam`` and ``beam`` (None: no LM)."""
    from speechkd.decoding.ctc import ctc_greedy_search, ctc_prefix_beam_search
    from speechkd.decoding.streaming import streaming_greedy_search
    from speechkd.decoding.transducer import greedy_search, modified_beam_search

    x, x_lens = batch["inputs"], batch["input_lens"]
    if method == "greedy" and chunk_size > 0:
        return streaming_greedy_search(model, x, x_lens, chunk_size=chunk_size, left_context=left_context)
    enc = model.encode(x, x_lens, chunk_size=chunk_size, left_context=left_context)
    if method == "ctc-greedy":
        return ctc_greedy_search(model.ctc_log_probs(enc.out), enc.out_lens, blank_id=model.blank_id)
    if method == "ctc-beam":
        lm, w, bonus = (fusion.lm, fusion.weight, fusion.insertion_bonus) if fusion else (None, 0.0, 0.0)
        return ctc_prefix_beam_search(model.ctc_log_probs(enc.out), enc.out_lens, beam=beam_size,
                                      blank_id=model.blank_id, lm=lm, lm_weight=w, insertion_bonus=bonus)
    if method == "greedy":
        return greedy_search(model, enc.out, enc.out_lens)
    lm, w, bonus = (fusion.lm, fusion.weight, fusion.insertion_bonus) if fusion else (None, 0.0, 0.0)
    return modified_beam_search(model, enc.out, enc.out_lens, beam=beam_size, length_norm=length_norm, lm=lm,
                                lm_weight=w, insertion_bonus=bonus)


def decode_asr(
    exp_dir: PathLike,
    parts: Sequence[str],
    methods: Sequence[str] = ("greedy",),
    beam_size: int = 4,
    chunk_sizes: Sequence[int] = (-1,),
    left_context: int = -1,
    checkpoint: Optional[PathLike] = None,
    cuts_dir: Optional[PathLike] = None,
    bpe_model: Optional[PathLike] = None,
    max_duration: float = 200.0,
    length_norm: bool = True,
    ngram_lm: Optional[PathLike] = None,
    lm_weight: float = 0.5,
    insertion_bonus: float = 0.0,
    device: Optional[str] = None,
    out_dir: Optional[PathLike] = None,
) -> dict[tuple[str, str], Any]:
    """Decode ``parts`` with every (method, chunk size) and score them, on ``device``
    (:func:`speechkd.training.dist.resolve_device`: default CUDA when available, ``cuda:$LOCAL_RANK``
    under torchrun).

    ``ngram_lm``: a token n-gram (:mod:`speechkd.decoding.ngram`) over the same BPE model, fused into
    ``ctc-beam`` and ``beam`` with ``lm_weight`` and ``insertion_bonus`` (a BPE checksum mismatch is refused;
    so are an LM given with no method that uses it and a bonus without an LM, before anything is read).

    Returns ``{(part, tag): WerStats}``. ``cuts_dir`` and ``bpe_model`` default to the ones
    recorded at training time. Every combination is checked before any decoding starts.

    ``out_dir`` (default ``<exp_dir>/decode``) receives the result files; each call appends a row to its
    ``decode-log.tsv`` (time, checkpoint, the checkpoints it averages, parts, tags), so a directory that holds
    the decodes of several checkpoints (e.g. a learning curve) says which file each row came from.
    """
    from speechkd.data.datamodule import AsrDataModule
    from speechkd.text.tokenizer import Tokenizer
    from speechkd.training.asr_experiment import load_cuts

    from speechkd.training.asr_experiment import read_experiment

    if ngram_lm is not None and not set(methods) & {"beam", "ctc-beam"}:
        raise SpeechkdError(f"--ngram-lm {ngram_lm}: only --methods beam and ctc-beam use an LM, got {list(methods)}")
    if ngram_lm is None and insertion_bonus:
        raise SpeechkdError(f"--insertion-bonus {insertion_bonus:g} is part of shallow fusion: pass --ngram-lm too")
    paths = read_experiment(exp_dir)[1]
    cuts_dir = cuts_dir or paths.get("cuts_dir")
    bpe_model = bpe_model or paths.get("bpe_model")
    if not cuts_dir or not bpe_model:
        raise SpeechkdError("pass --cuts-dir and --bpe-model (not recorded in the experiment's config.yaml)")
    tokenizer = Tokenizer(bpe_model)
    import torch

    from speechkd.training.dist import resolve_device

    model, cfg, paths = load_model_for_decoding(exp_dir, checkpoint, tokenizer)
    fusion = None
    if ngram_lm is not None:
        from speechkd.decoding.ngram import TokenNgramLm

        lm = TokenNgramLm.load(ngram_lm)
        made_with = lm.meta.get("bpe_model_sha256")
        if made_with != tokenizer.sha256 or lm.vocab_size != tokenizer.vocab_size:
            raise SpeechkdError(f"{ngram_lm} was trained on BPE {made_with} (vocab {lm.vocab_size}); this model uses "
                                f"{tokenizer.sha256} (vocab {tokenizer.vocab_size})")
        fusion = FusionLm(lm, lm_weight, insertion_bonus)
    dev = torch.device(resolve_device(device))
    model.to(dev)
    log.info("decoding on %s", dev)
    for method in methods:
        for chunk in chunk_sizes:
            _check_method(model, method, chunk)
    data_cfg = cfg.data
    data_cfg.max_duration = max_duration
    dm = AsrDataModule(data_cfg, tokenizer=None)
    out_dir = Path(out_dir) if out_dir is not None else Path(exp_dir) / "decode"
    tags = [decode_tag(m, beam_size, c, left_context, length_norm, fusion) for m in methods for c in chunk_sizes]
    append_decode_log(out_dir, paths["checkpoint"], paths["averaged_from"], parts, tags)
    results: dict[tuple[str, str], Any] = {}
    for part in parts:
        cuts = load_cuts(cuts_dir, [part])
        for method in methods:
            for chunk in chunk_sizes:
                tag = decode_tag(method, beam_size, chunk, left_context, length_norm, fusion)
                results[(part, tag)] = _decode_part(
                    model, dm, cuts, tokenizer, part, tag, out_dir, method, beam_size, chunk, left_context, length_norm,
                    fusion,
                )
    return results


DECODE_LOG = "decode-log.tsv"
DECODE_LOG_COLUMNS = ("time", "checkpoint", "averaged_from", "parts", "tags")


def append_decode_log(
    out_dir: PathLike, checkpoint: str, averaged_from: Optional[Sequence[str]], parts: Sequence[str],
    tags: Sequence[str],
) -> Path:
    """Append one row (``DECODE_LOG_COLUMNS``, tab-separated; lists comma-separated) to ``out_dir/decode-log.tsv``,
    writing the header first when the file is new. ``averaged_from`` None is written as ``-``."""
    out = Path(out_dir) / DECODE_LOG
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.is_file()
    row = (time.strftime("%Y-%m-%dT%H:%M:%S"), checkpoint, ",".join(averaged_from) if averaged_from else "-",
           ",".join(parts), ",".join(tags))
    with open(out, "a", encoding="utf-8") as f:
        if new:
            f.write("\t".join(DECODE_LOG_COLUMNS) + "\n")
        f.write("\t".join(row) + "\n")
    return out


def _decode_part(
    model: Any,
    dm: Any,
    cuts: Any,
    tokenizer: Any,
    part: str,
    tag: str,
    out_dir: Path,
    method: str,
    beam_size: int,
    chunk_size: int,
    left_context: int,
    length_norm: bool,
    fusion: Optional[FusionLm] = None,
) -> Any:
    import torch

    from speechkd.data.collate import move_batch
    from speechkd.decoding.scoring import write_results

    rows: list[tuple[str, str, str]] = []
    audio_s, t0 = 0.0, time.perf_counter()
    with torch.inference_mode():
        for batch in dm.eval_dataloader(cuts):
            batch = move_batch(batch, next(model.parameters()).device)
            ids = decode_batch(model, batch, method, beam_size, chunk_size, left_context, length_norm, fusion)
            hyps = tokenizer.decode(ids)
            rows.extend(zip(batch["cut_ids"], batch["texts"], hyps))
            audio_s += dm.batch_duration(batch)
    elapsed = time.perf_counter() - t0
    stats = write_results(rows, out_dir, part, tag=tag)
    log.info("%s %s: WER %.2f%% (%d utts), RTF %.4f", part, tag, stats.wer, len(rows), elapsed / max(audio_s, 1e-9))
    return stats
