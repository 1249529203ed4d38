"""Self-describing artifacts: every exp/target dir records its config, command and versions."""

from __future__ import annotations

import datetime as _dt
import importlib
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml


def package_versions() -> dict[str, Optional[str]]:
    """Versions of speechkd and the libraries that shape results (None when not installed)."""
    out: dict[str, Optional[str]] = {"python": sys.version.split()[0]}
    for name in ("speechkd", "torch", "lhotse", "k2", "transformers", "sentencepiece", "jiwer", "torchaudio"):
        try:
            mod = importlib.import_module(name)
            out[name] = str(getattr(mod, "__version__", "unknown"))
        except Exception:  # noqa: BLE001 - optional packages may fail to import in many ways
            out[name] = None
    out["git_sha"] = git_sha()
    return out


def git_sha(cwd: Optional[Union[str, Path]] = None) -> Optional[str]:
    """The speechkd checkout's commit (with ``-dirty`` when modified), or None outside git."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return None


def write_run_info(
    out_dir: Union[str, Path],
    config: Optional[Mapping[str, Any]] = None,
    argv: Optional[Sequence[str]] = None,
    name: str = "run",
) -> None:
    """Write ``config.yaml`` (resolved), append the exact command to ``command.sh``, and write
    ``versions.yaml`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        with open(out_dir / "config.yaml", "w") as f:
            yaml.safe_dump(dict(config), f, sort_keys=False)
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith("__main__.py"):
        argv = ["python", "-m", "speechkd", *argv[1:]]
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    command_log = out_dir / "command.sh"
    header = "" if command_log.exists() else "#!/usr/bin/env bash\n# commands that wrote this directory, oldest first\n"
    with open(command_log, "a") as f:
        f.write(f"{header}# {name} {stamp}\n{shlex.join(argv)}\n")
    with open(out_dir / "versions.yaml", "w") as f:
        yaml.safe_dump(package_versions(), f, sort_keys=False)
