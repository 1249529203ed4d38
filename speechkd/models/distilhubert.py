"""DistilHuBERT student: waveform CNN + a few transformer layers + teacher-layer prediction heads.

The backbone *is* a transformers model (``HubertModel`` by default; ``Wav2Vec2Model`` / ``WavLMModel``
when the teacher is of that family) built from a shallow config, so the exported student is a standard
transformers checkpoint and runs exactly the code of transformers' own model (same speed, same outputs).
The prediction heads live beside the backbone: DistilHuBERT's single linear layer on the last student
layer that produces ``H * D_teacher`` values per frame, split into one ``D_teacher`` vector per target
teacher layer. The heads exist only for training; export drops them (:mod:`speechkd.models.hf_export`).

Teacher layers are indexed the transformers way: ``hidden_states[0]`` is the input of the first
transformer layer (CNN features after projection and positional convolution), ``hidden_states[i]`` the
output of layer ``i``; valid target indices are ``0..depth``. The paper's default targets for a 12-layer
teacher are layers 4, 8 and 12.

Frame rates: :func:`align_frame_rates` maps student and teacher frame sequences onto one time grid
(identity, integer-ratio average pooling of the faster stream, or linear interpolation of the teacher)
and checks per-utterance lengths against a tolerance.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechkd.errors import SpeechkdError

logger = logging.getLogger(__name__)

#: Student backbone families: transformers ``model_type`` values whose base models share the
#: CNN / feature-projection / positional-conv / post-LN encoder structure and parameter names.
SUPPORTED_FAMILIES = ("hubert", "wav2vec2", "wavlm")
DEFAULT_FAMILY = "hubert"
#: Sample rate of the waveform front-ends (HuBERT family checkpoints are 16 kHz).
DEFAULT_SAMPLE_RATE = 16000

#: Student config fields that are taken from the teacher's transformers config when it has a waveform
#: CNN (same front-end, positional convolution and layer arrangement, so their weights can be copied).
_TEACHER_FRONTEND_FIELDS = (
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_extract_activation",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "feat_proj_layer_norm",
    "hidden_act",
    "do_stable_layer_norm",
    "layer_norm_eps",
)


PRED_HEAD_TYPES = ("mlp", "linear")


class PredictionHeads(nn.Module):
    """``(N, T, hidden)`` -> ``(N, H, T, dim)``: one prediction per teacher layer.

    ``"mlp"`` (s3prl's ``Linear -> GELU -> SplitLinear``): a shared ``Linear(hidden, H * inter)``, GELU, then
    head ``h`` maps its own ``inter`` slice with its own ``Linear(inter, dim)``. ``"linear"``: one
    ``Linear(hidden, H * dim)`` split into heads.
    """

    def __init__(self, hidden: int, num_heads: int, dim: int, kind: str = "mlp", inter: Optional[int] = None) -> None:
        super().__init__()
        self.num_heads, self.dim, self.kind = num_heads, dim, kind
        if kind == "linear":
            self.proj = nn.Linear(hidden, num_heads * dim)
            return
        self.inter = inter or hidden
        self.proj = nn.Linear(hidden, num_heads * self.inter)
        self.weight = nn.Parameter(torch.empty(num_heads, self.inter, dim))
        self.bias = nn.Parameter(torch.zeros(num_heads, dim))
        bound = 1.0 / math.sqrt(self.inter)  # nn.Linear's default initialisation, per head
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        n, t, _ = x.shape
        if self.kind == "linear":
            return self.proj(x).view(n, t, self.num_heads, self.dim).transpose(1, 2)
        h = F.gelu(self.proj(x)).view(n, t, self.num_heads, self.inter)
        return torch.einsum("nthi,hio->nhto", h, self.weight) + self.bias[None, :, None, :]


@dataclass
class DistilHubertConfig:
    """Student architecture. Defaults: DistilHuBERT (Chang et al., 2022) for a HuBERT-base teacher.

    ``conv_*`` describe the waveform CNN (one entry per conv layer: channels, kernel, stride);
    ``pred_head_layers`` are teacher layer indices (``0..depth``) the heads predict; ``pred_head_dim``
    is the teacher's hidden size (``None``: filled in by :meth:`DistilHubertStudent.from_teacher`,
    or the student's ``hidden_size`` when built without a teacher).
    """

    family: str = "auto"  # "auto" (the teacher's family when supported, else hubert) or SUPPORTED_FAMILIES
    sample_rate: int = DEFAULT_SAMPLE_RATE
    # waveform CNN front-end (HuBERT-base: 7 layers, 512 channels, 20 ms frame shift)
    conv_dim: list[int] = field(default_factory=lambda: [512] * 7)
    conv_kernel: list[int] = field(default_factory=lambda: [10, 3, 3, 3, 3, 2, 2])
    conv_stride: list[int] = field(default_factory=lambda: [5, 2, 2, 2, 2, 2, 2])
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group" (first conv layer, HuBERT-base) or "layer" (every layer)
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True  # hubert family only
    cnn_grad_mult: float = 0.1  # gradient scale into the CNN (s3prl's feature_grad_mult); 1.0 = plain
    # positional convolution
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    # transformer
    hidden_size: int = 768
    num_layers: int = 2
    num_heads: int = 12
    ffn_dim: int = 3072
    hidden_act: str = "gelu"
    do_stable_layer_norm: bool = False  # False: post-LN (HuBERT-base); True: pre-LN (large models)
    layer_norm_eps: float = 1e-5
    # regularisation
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    feat_proj_dropout: float = 0.1
    layerdrop: float = 0.0
    # prediction heads
    pred_head_layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    pred_head_dim: Optional[int] = None
    # "mlp": s3prl's head, Linear(hidden, H * inter) -> GELU -> one Linear(inter, dim) per head (a 2-layer MLP
    # per teacher layer); "linear": one Linear(hidden, H * dim) (speechkd < issue 14, and old exp dirs).
    pred_head_type: str = "mlp"
    pred_head_inter_dim: Optional[int] = None  # "mlp" hidden width per head (None: hidden_size, as s3prl)
    init_from_teacher: bool = True  # copy CNN + first num_layers teacher layers where shapes allow

    def __post_init__(self) -> None:
        n_conv = len(self.conv_dim)
        if not (len(self.conv_kernel) == len(self.conv_stride) == n_conv) or n_conv == 0:
            raise SpeechkdError(
                f"DistilHubertConfig: conv_dim/conv_kernel/conv_stride must be non-empty and of equal "
                f"length, got {self.conv_dim}, {self.conv_kernel}, {self.conv_stride}"
            )
        if self.family != "auto" and self.family not in SUPPORTED_FAMILIES:
            raise SpeechkdError(
                f"DistilHubertConfig.family={self.family!r}: expected 'auto' or one of {SUPPORTED_FAMILIES}"
            )
        if self.hidden_size % self.num_heads != 0:
            raise SpeechkdError(
                f"DistilHubertConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if not self.pred_head_layers:
            raise SpeechkdError("DistilHubertConfig.pred_head_layers is empty: give at least one teacher layer")
        if self.pred_head_type not in PRED_HEAD_TYPES:
            raise SpeechkdError(f"DistilHubertConfig.pred_head_type={self.pred_head_type!r}: use one of {PRED_HEAD_TYPES}")

    @property
    def frame_shift(self) -> float:
        """Seconds between student frames (product of the CNN strides / sample rate)."""
        return math.prod(self.conv_stride) / self.sample_rate


@dataclass
class TeacherInfo:
    """What the student needs to know about its teacher (also written into the export metadata)."""

    model_type: str
    num_layers: int
    hidden_size: int
    name_or_path: str = ""
    frame_shift: Optional[float] = None  # seconds; None when not derivable from the config


@dataclass
class StudentOutput:
    """Student forward result.

    ``hidden_states``: ``[(N, T, D)] * (num_layers + 1)`` (index 0: CNN features after projection and
    positional convolution, i.e. the first layer's input; fewer entries when layerdrop skips layers in
    training); ``head_outputs``: ``(N, H, T, D_teacher)``; ``lens``: ``(N,)`` valid frames per utterance.
    """

    hidden_states: list[Tensor]
    head_outputs: Tensor
    lens: Tensor


# --------------------------------------------------------------------------------------------------
# teacher description


def _teacher_config(teacher: Any) -> Any:
    """The transformers config of ``teacher`` (a ``PreTrainedModel``, a ``PretrainedConfig``, or an
    object whose ``.model`` is a ``PreTrainedModel``)."""
    from transformers import PretrainedConfig, PreTrainedModel

    if isinstance(teacher, PretrainedConfig):
        return teacher
    if isinstance(teacher, PreTrainedModel):
        return teacher.config
    inner = getattr(teacher, "model", None)
    if isinstance(inner, PreTrainedModel):
        return inner.config
    raise SpeechkdError(
        f"teacher of type {type(teacher).__name__} is neither a transformers PreTrainedModel nor a "
        "PretrainedConfig (nor has a .model attribute that is one)"
    )


def _teacher_base_model(teacher: Any) -> Optional[nn.Module]:
    """The base (headless) transformers model of ``teacher``, or None when only a config was given."""
    from transformers import PreTrainedModel

    model = teacher if isinstance(teacher, PreTrainedModel) else getattr(teacher, "model", None)
    if not isinstance(model, PreTrainedModel):
        return None
    return model.base_model


def describe_teacher(teacher: Any) -> TeacherInfo:
    """Depth, width, type and frame shift of a transformers speech encoder (HuBERT family or Whisper).

    ``teacher``: a transformers model or config, or a wrapper whose ``.model`` is a transformers model
    (e.g. a speechkd teacher; its numeric ``frame_shift`` attribute, when present, is used).
    """
    config = _teacher_config(teacher)
    model_type = str(getattr(config, "model_type", "unknown"))
    depth = getattr(config, "encoder_layers", None) or getattr(config, "num_hidden_layers", None)
    width = getattr(config, "d_model", None) or getattr(config, "hidden_size", None)
    if not depth or not width:
        raise SpeechkdError(
            f"cannot read the depth/width of teacher config {model_type!r} "
            f"(name_or_path={getattr(config, '_name_or_path', '')!r}): no encoder_layers/num_hidden_layers "
            "or d_model/hidden_size"
        )
    frame_shift = getattr(teacher, "frame_shift", None)  # a speechkd Teacher knows its own
    strides = getattr(config, "conv_stride", None)
    if not isinstance(frame_shift, (int, float)):
        frame_shift = math.prod(strides) / DEFAULT_SAMPLE_RATE if strides else None
    return TeacherInfo(
        model_type=model_type,
        num_layers=int(depth),
        hidden_size=int(width),
        name_or_path=str(getattr(config, "_name_or_path", "")),
        frame_shift=frame_shift,
    )


def validate_pred_head_layers(layers: Sequence[int], teacher_depth: int) -> None:
    """Raise SpeechkdError unless every index is a valid teacher hidden-state index ``0..depth``."""
    for idx in layers:
        if not 0 <= idx <= teacher_depth:
            raise SpeechkdError(
                f"pred_head_layers contains teacher layer {idx}, but the teacher has {teacher_depth} "
                f"layers (valid indices: 0..{teacher_depth}; 0 = CNN features)"
            )
    if len(set(layers)) != len(layers):
        raise SpeechkdError(f"pred_head_layers {list(layers)} repeats a teacher layer")


def stack_target_layers(hidden_states: Sequence[Tensor], layers: Sequence[int]) -> Tensor:
    """Pick the target teacher layers: ``[(N, T, D)] * (depth + 1)`` -> ``(N, H, T, D)``."""
    validate_pred_head_layers(layers, len(hidden_states) - 1)
    return torch.stack([hidden_states[i] for i in layers], dim=1)


# --------------------------------------------------------------------------------------------------
# backbone construction


def _resolve_family(cfg: DistilHubertConfig, teacher_type: Optional[str]) -> str:
    if cfg.family != "auto":
        return cfg.family
    if teacher_type in SUPPORTED_FAMILIES:
        return teacher_type
    return DEFAULT_FAMILY


def build_backbone_config(
    cfg: DistilHubertConfig, family: str, base_config: Optional[Any] = None
) -> Any:
    """transformers config of the student backbone.

    ``base_config`` (the teacher's config, used when it is of the same family) supplies every
    family-specific field (e.g. WavLM's relative-position buckets); ``cfg`` then sets the architecture.
    Masking/SpecAugment is off (DistilHuBERT does not mask), so no ``masked_spec_embed`` exists.
    """
    from transformers import AutoConfig

    base = base_config.to_dict() if base_config is not None else {}
    for key in ("architectures", "_name_or_path", "model_type", "transformers_version", "torch_dtype", "dtype"):
        base.pop(key, None)
    fields = dict(
        conv_dim=list(cfg.conv_dim),
        conv_kernel=list(cfg.conv_kernel),
        conv_stride=list(cfg.conv_stride),
        num_feat_extract_layers=len(cfg.conv_dim),
        conv_bias=cfg.conv_bias,
        feat_extract_norm=cfg.feat_extract_norm,
        feat_extract_activation=cfg.feat_extract_activation,
        num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        hidden_act=cfg.hidden_act,
        do_stable_layer_norm=cfg.do_stable_layer_norm,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_dropout=cfg.hidden_dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        feat_proj_dropout=cfg.feat_proj_dropout,
        layerdrop=cfg.layerdrop,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        use_weighted_layer_sum=False,
    )
    if family == "hubert":
        fields["feat_proj_layer_norm"] = cfg.feat_proj_layer_norm
    base.update(fields)
    return AutoConfig.for_model(family, **base)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``scale`` in backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


def conv_output_lengths(lens: Tensor, kernels: Sequence[int], strides: Sequence[int]) -> Tensor:
    """Frames out of a stack of unpadded 1-D convolutions: ``(N,)`` samples -> ``(N,)`` frames."""
    for k, s in zip(kernels, strides):
        lens = torch.div(lens - k, s, rounding_mode="floor") + 1
    return lens


# --------------------------------------------------------------------------------------------------
# the student


class DistilHubertStudent(nn.Module):
    """CNN + ``num_layers`` transformer layers (a transformers model) + DistilHuBERT prediction heads.

    ``forward(wavs (N, S), wav_lens (N,)) -> StudentOutput``. Samples past ``wav_lens`` are zeroed and
    masked out of attention; with ``feat_extract_norm="group"`` (HuBERT-base) the first conv layer still
    normalises over the padded length, exactly as the transformers model does.
    """

    def __init__(
        self, cfg: DistilHubertConfig, teacher: Optional[TeacherInfo] = None, backbone_config: Optional[Any] = None
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        if teacher is not None:
            validate_pred_head_layers(cfg.pred_head_layers, teacher.num_layers)
        head_dim = cfg.pred_head_dim or (teacher.hidden_size if teacher else cfg.hidden_size)
        family = _resolve_family(cfg, teacher.model_type if teacher else None)
        self.cfg = dataclasses.replace(cfg, pred_head_dim=head_dim, family=family)
        self.teacher = teacher
        self.family = family
        if backbone_config is None:
            backbone_config = build_backbone_config(self.cfg, self.family)
        self.backbone = AutoModel.from_config(backbone_config)
        self.pred_head = PredictionHeads(cfg.hidden_size, len(cfg.pred_head_layers), head_dim, cfg.pred_head_type,
                                         cfg.pred_head_inter_dim)
        self.copied_from_teacher: list[str] = []
        if cfg.cnn_grad_mult != 1.0:
            self.backbone.feature_extractor.register_forward_hook(self._scale_cnn_grad)

    def _scale_cnn_grad(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return _ScaleGrad.apply(output, self.cfg.cnn_grad_mult)

    @property
    def frame_shift(self) -> float:
        """Seconds between student frames."""
        return self.cfg.frame_shift

    @property
    def num_heads(self) -> int:
        return len(self.cfg.pred_head_layers)

    @classmethod
    def from_teacher(cls, teacher: Any, cfg: Optional[DistilHubertConfig] = None) -> "DistilHubertStudent":
        """Build a student for ``teacher`` (transformers model or config; see :func:`describe_teacher`).

        The CNN front-end and positional-conv settings follow the teacher's when it has them; the heads
        predict ``cfg.pred_head_layers`` (validated against the teacher's depth) of width
        ``teacher hidden size``. With a model (not just a config) and ``cfg.init_from_teacher``, every
        backbone tensor whose name and shape match the teacher's is copied (CNN, projection, positional
        conv, the first ``num_layers`` layers); what was copied is logged and kept in
        ``copied_from_teacher``.
        """
        cfg = cfg or DistilHubertConfig()
        info = describe_teacher(teacher)
        validate_pred_head_layers(cfg.pred_head_layers, info.num_layers)
        if cfg.pred_head_dim is not None and cfg.pred_head_dim != info.hidden_size:
            raise SpeechkdError(
                f"pred_head_dim={cfg.pred_head_dim} differs from the teacher's hidden size {info.hidden_size} "
                f"({info.model_type} {info.name_or_path!r}): the heads predict teacher vectors; leave it unset"
            )
        tconfig = _teacher_config(teacher)
        present = {n: getattr(tconfig, n) for n in _TEACHER_FRONTEND_FIELDS if getattr(tconfig, n, None) is not None}
        overrides = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in present.items()}
        if "conv_dim" not in overrides:  # e.g. Whisper: no waveform CNN, keep the student's own
            overrides = {}
        changed = {k: v for k, v in overrides.items() if getattr(cfg, k) != v}
        if changed:
            logger.info("student front-end follows the teacher (%s): %s", info.model_type, changed)
        cfg = dataclasses.replace(cfg, pred_head_dim=cfg.pred_head_dim or info.hidden_size, **overrides)
        family = _resolve_family(cfg, info.model_type)
        base = tconfig if family == info.model_type else None
        student = cls(cfg, teacher=info, backbone_config=build_backbone_config(cfg, family, base))
        tmodel = _teacher_base_model(teacher)
        if cfg.init_from_teacher and tmodel is not None:
            student.copied_from_teacher = copy_matching_weights(tmodel, student.backbone)
        return student

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> StudentOutput:
        """``wavs (N, S)`` float, ``wav_lens (N,)`` int -> :class:`StudentOutput`."""
        if wavs.dim() != 2 or wav_lens.dim() != 1 or wav_lens.shape[0] != wavs.shape[0]:
            raise SpeechkdError(
                f"DistilHubertStudent expects wavs (N, S) and wav_lens (N,), got {tuple(wavs.shape)} "
                f"and {tuple(wav_lens.shape)}"
            )
        lens = conv_output_lengths(wav_lens, self.cfg.conv_kernel, self.cfg.conv_stride)
        bad = (lens < 1) | (wav_lens > wavs.shape[1])
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise SpeechkdError(
                f"utterance {i} of the batch has {int(wav_lens[i])} samples (padded length {wavs.shape[1]}): "
                "too short for the student's CNN or longer than the padded batch"
            )
        sample_mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < wav_lens[:, None]
        wavs = wavs.masked_fill(~sample_mask, 0.0)
        out = self.backbone(wavs, attention_mask=sample_mask.long(), output_hidden_states=True)
        last = out.last_hidden_state  # (N, T, D)
        heads = self.pred_head(last)  # (N, H, T, dim)
        return StudentOutput(hidden_states=list(out.hidden_states), head_outputs=heads, lens=lens)


def _module_group(name: str) -> str:
    """Unit of copying for a state-dict name: through the first numeric component
    (``encoder.layers.3``, ``feature_extractor.conv_layers.0``), else the first two components
    (``feature_projection.projection``, ``encoder.pos_conv_embed``)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2])


def copy_matching_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy ``source``'s tensors into ``target`` module group by module group (see ``_module_group``).

    A group (e.g. one transformer layer) is copied only when every one of its tensors exists in
    ``source`` under the same name with the same shape, so no layer is left half-initialised.
    Returns the copied tensor names; logs the copied and not-copied groups.
    """
    src = source.state_dict()
    groups: dict[str, dict[str, Tensor]] = {}
    for name, tensor in target.state_dict().items():
        groups.setdefault(_module_group(name), {})[name] = tensor
    copied: dict[str, Tensor] = {}
    copied_groups: list[str] = []
    skipped: list[str] = []
    for group, tensors in groups.items():
        problems = [
            f"{n}: {'missing in teacher' if n not in src else f'shape {tuple(src[n].shape)} != {tuple(t.shape)}'}"
            for n, t in tensors.items()
            if n not in src or src[n].shape != t.shape
        ]
        if problems:
            skipped.append(f"{group} ({problems[0]})")
        else:
            copied.update({n: src[n] for n in tensors})
            copied_groups.append(group)
    target.load_state_dict(copied, strict=False)
    n_values = sum(v.numel() for v in copied.values())
    logger.info("initialised %.2fM values from the teacher: %s", n_values / 1e6, copied_groups)
    if skipped:
        logger.info("not initialised from the teacher: %s", skipped)
    return sorted(copied)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter values of ``module``."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# frame-rate alignment


def _pool_time(x: Tensor, lens: Tensor, factor: int, time_dim: int) -> tuple[Tensor, Tensor]:
    """Average non-overlapping windows of ``factor`` frames along ``time_dim``; partial tails dropped."""
    moved = x.movedim(time_dim, -1)
    shape = moved.shape
    pooled = F.avg_pool1d(moved.reshape(-1, 1, shape[-1]), kernel_size=factor, stride=factor)
    pooled = pooled.reshape(*shape[:-1], pooled.shape[-1]).movedim(-1, time_dim)
    return pooled, torch.div(lens, factor, rounding_mode="floor")


def _interp_time(x: Tensor, lens: Tensor, src_shift: float, dst_shift: float, time_dim: int) -> tuple[Tensor, Tensor]:
    """Linearly interpolate frames at times ``i * src_shift`` onto the grid ``j * dst_shift``.

    Output frame ``j`` is valid while ``j * dst_shift <= (len - 1) * src_shift``.
    """
    t_in = x.shape[time_dim]
    t_out = int(math.floor((t_in - 1) * src_shift / dst_shift + 1e-9)) + 1
    pos = torch.arange(t_out, device=x.device, dtype=torch.float64) * (dst_shift / src_shift)
    lo = pos.floor().long().clamp(max=t_in - 1)
    hi = (lo + 1).clamp(max=t_in - 1)
    w_shape = [1] * x.dim()
    w_shape[time_dim] = t_out
    w = (pos - lo.double()).to(x.dtype).view(w_shape)
    out = x.index_select(time_dim, lo) * (1 - w) + x.index_select(time_dim, hi) * w
    new_lens = torch.floor((lens - 1).double() * src_shift / dst_shift + 1e-9).long() + 1
    return out, new_lens


def _integer_ratio(ratio: float, rate_tol: float) -> Optional[int]:
    k = round(ratio)
    return k if k >= 1 and abs(ratio - k) <= rate_tol * ratio else None


def align_frame_rates(
    student: Tensor,
    student_lens: Tensor,
    student_frame_shift: float,
    teacher: Tensor,
    teacher_lens: Tensor,
    teacher_frame_shift: float,
    time_dim: int = 1,
    max_len_diff: int = 2,
    rate_tol: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor]:
    """Put student and teacher frames on one time grid; returns ``(student', teacher', lens)``.

    ``student``/``teacher`` have time on ``time_dim`` (e.g. ``(N, H, T, D)`` with ``time_dim=2``).
    Rules, with ``r = teacher_frame_shift / student_frame_shift``:

    * ``r ~ 1`` (within ``rate_tol``): no resampling (e.g. HuBERT teacher, or a 50 Hz Whisper encoder
      against the 20 ms CNN: same rate, lengths may differ by rounding);
    * ``r ~ k`` integer > 1 (teacher slower): the student is average-pooled by ``k`` (gradients flow);
    * ``1/r ~ k`` integer > 1 (teacher faster): the teacher is average-pooled by ``k``;
      pooling keeps only whole windows (``lens // k``);
    * otherwise: the teacher is linearly interpolated onto the student's frame times.

    Then per utterance the two lengths must agree within ``max_len_diff`` frames (else SpeechkdError
    naming the utterance and both lengths); both are cut to the shorter one, and the time axis to the
    longest remaining length. Frames past ``lens`` are padding.
    """
    if student_frame_shift <= 0 or teacher_frame_shift <= 0:
        raise SpeechkdError(
            f"frame shifts must be positive, got student {student_frame_shift}, teacher {teacher_frame_shift}"
        )
    ratio = teacher_frame_shift / student_frame_shift
    slow_k, fast_k = _integer_ratio(ratio, rate_tol), _integer_ratio(1.0 / ratio, rate_tol)
    if slow_k == 1 or fast_k == 1:
        pass
    elif slow_k is not None:
        student, student_lens = _pool_time(student, student_lens, slow_k, time_dim)
    elif fast_k is not None:
        teacher, teacher_lens = _pool_time(teacher, teacher_lens, fast_k, time_dim)
    else:
        teacher, teacher_lens = _interp_time(teacher, teacher_lens, teacher_frame_shift, student_frame_shift, time_dim)
    diff = (student_lens - teacher_lens).abs()
    if bool((diff > max_len_diff).any()):
        i = int((diff > max_len_diff).nonzero()[0, 0])
        raise SpeechkdError(
            f"student/teacher frame counts disagree for utterance {i} of the batch: {int(student_lens[i])} vs "
            f"{int(teacher_lens[i])} at the common frame shift (frame shifts {student_frame_shift} s / "
            f"{teacher_frame_shift} s, tolerance {max_len_diff} frames)"
        )
    lens = torch.minimum(student_lens, teacher_lens)
    t = int(lens.max())
    if student.shape[time_dim] < t or teacher.shape[time_dim] < t:
        raise SpeechkdError(
            f"lengths {lens.tolist()} exceed the padded time axis (student {student.shape[time_dim]}, "
            f"teacher {teacher.shape[time_dim]} frames)"
        )
    return student.narrow(time_dim, 0, t), teacher.narrow(time_dim, 0, t), lens

