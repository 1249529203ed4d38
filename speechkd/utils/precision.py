"""Numerical precision helpers shared by losses and teachers."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def autocast_off(tensors: Iterable[Tensor]) -> Iterator[None]:
    """Disable autocast for every device type the tensors live on (CPU and CUDA autocast are separate)."""
    with contextlib.ExitStack() as stack:
        for device_type in sorted({t.device.type for t in tensors}):
            if device_type in ("cpu", "cuda"):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield
