"""Neural network modules (``nn.Module`` only, no losses).

* ``subsampling``: 4x conv subsampling of fbank features (causal option).
* ``conformer``: ``ConformerEncoder`` / ``EncoderConfig``: full-context, chunk-masked and streaming.
* ``transducer``: stateless decoder and joiner.
* ``asr``: ``AsrModel`` / ``AsrModelConfig`` (encoder + CTC and/or transducer heads), size presets
  (``presets/*.yaml``: ``mini`` ~5.2M, ``small`` ~23.5M parameters with vocab 500).
"""

from speechkd.models.asr import AsrModel, AsrModelConfig, list_presets, load_preset
from speechkd.models.conformer import ConformerEncoder, EncoderConfig, EncoderOutput, EncoderStreamingState

__all__ = [
    "AsrModel",
    "AsrModelConfig",
    "ConformerEncoder",
    "EncoderConfig",
    "EncoderOutput",
    "EncoderStreamingState",
    "list_presets",
    "load_preset",
]
