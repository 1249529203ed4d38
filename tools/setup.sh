#!/usr/bin/env bash
# Set up speechkd on a fresh Debian/Ubuntu machine (or any machine with python3 >= 3.10).
#
#   bash tools/setup.sh            # system packages (when root) + .venv with speechkd[dev,whisper,minilibri,export,mvq]
#
# Environment knobs:
#   SPEECHKD_VENV=path     virtual environment to create/use (default: .venv in the repo root)
#   SPEECHKD_NO_APT=1      skip the apt-get step (you installed the system packages yourself)
#   SPEECHKD_TORCH=spec    torch requirement installed first (default: torch==2.13.0, the CPU build
#                          this project is tested with; on a GPU machine pick the CUDA build you want)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SPEECHKD_VENV:-$root/.venv}
torch_spec=${SPEECHKD_TORCH:-torch==2.13.0}

log() { echo "$(date '+%F %T') [setup] $*" >&2; }

# System packages: audio tools, TTS voices, real recordings and book text for the mini corpus, sclite, shellcheck.
apt_pkgs=(sox espeak-ng flite festival festvox-us-slt-hts festvox-kallpc16k
  asterisk-core-sounds-en-wav asterisk-core-sounds-en pocketsphinx-testdata
  bible-kjv sctk shellcheck)
if [ "${SPEECHKD_NO_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Jane Austen's novels (the mini corpus text), stored as R data: R's core comes along, not its toolchain.
  if ! dpkg -s r-cran-janeaustenr >/dev/null 2>&1; then
    log "apt-get install --no-install-recommends r-cran-janeaustenr"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends r-cran-janeaustenr >/dev/null
  fi
else
  log "skipping apt-get (not root, no apt-get, or SPEECHKD_NO_APT=1); the mini corpus uses whatever voices exist"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  log "installing $torch_spec"
  "${pip[@]}" "$torch_spec"
fi
log "installing speechkd (editable) with extras dev,whisper,minilibri,export,mvq"
"${pip[@]}" -e "${root}[dev,whisper,minilibri,export,mvq]"
log "done: activate with 'source $venv/bin/activate'"
