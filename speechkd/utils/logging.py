"""Logging set-up shared by every command (stdlib only)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Union

FORMAT = "%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s"


def setup_logging(
    level: str = "INFO", log_file: Optional[Union[str, Path]] = None, rank: Optional[int] = None
) -> None:
    """Configure the root logger: stderr always, plus ``log_file`` when given.

    With ``rank`` set, messages are prefixed with it and ``log_file`` gets a ``.rank{rank}`` suffix
    (one log file per DDP rank).
    """
    fmt = FORMAT if rank is None else f"%(asctime)s %(levelname)s [rank{rank}] [%(filename)s:%(lineno)d] %(message)s"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file = Path(log_file)
        if rank is not None:
            log_file = log_file.with_name(f"{log_file.name}.rank{rank}")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt, handlers=handlers, force=True)
