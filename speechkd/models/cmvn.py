"""Global mean/variance normalisation of the encoder input, with the statistics inside the model.

The per-bin mean and standard deviation are estimated once from the training features (see
:meth:`speechkd.data.datamodule.AsrDataModule.global_feature_stats`) and stored as buffers, so
every checkpoint, averaged model and decoding run carries and applies the statistics it was trained
with.
"""

from __future__ import annotations

import torch
from torch import nn

from speechkd.errors import SpeechkdError

STD_FLOOR = 1e-5  # a constant feature bin is left unscaled rather than divided by ~0


class GlobalCMVN(nn.Module):
    """x (N, T, C) -> (x - mean) / std per bin C. Identity until :meth:`set_stats` is called."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))
        # Cuts the statistics came from (0: never set). A float so that checkpoint averaging keeps it.
        self.register_buffer("num_cuts", torch.zeros(()))

    @property
    def ready(self) -> bool:
        return bool(self.num_cuts > 0)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor, num_cuts: int) -> None:
        """mean (C,), std (C,) from ``num_cuts`` training cuts."""
        dim = self.mean.numel()
        if mean.shape != (dim,) or std.shape != (dim,):
            raise SpeechkdError(
                f"global CMVN: statistics of shape {tuple(mean.shape)} / {tuple(std.shape)} do not fit "
                f"the encoder's input_dim={dim}"
            )
        if num_cuts < 1 or not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise SpeechkdError(f"global CMVN: invalid statistics (num_cuts={num_cuts}, non-finite values?)")
        self.mean.copy_(mean)
        self.inv_std.copy_(1.0 / std.clamp_min(STD_FLOOR))
        self.num_cuts.fill_(float(num_cuts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std
