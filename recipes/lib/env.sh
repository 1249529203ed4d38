#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Recipe environment, sourced by egs/<corpus>/path.sh after it sets SPEECHKD_ROOT (the repository root):
# PYTHONPATH, the python to use, and lib.sh.
#
# The python: $PYTHON if set, else the repository's .venv (tools/setup.sh makes it), else `python` on PATH.
# Choose another explicitly with  PYTHON=/path/to/python ./run.sh ...  or activate a venv first.
export SPEECHKD_ROOT
export PYTHONPATH="$SPEECHKD_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$SPEECHKD_ROOT/.venv/bin/python" ]; then python=$SPEECHKD_ROOT/.venv/bin/python; else python=python; fi
fi
export PYTHON=$python # recipes/*.sh called from run.sh use the same python
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SPEECHKD_ROOT/recipes/lib/lib.sh"
command -v "$python" >/dev/null 2>&1 ||
  die "no python '$python': set PYTHON (e.g. PYTHON=$SPEECHKD_ROOT/.venv/bin/python) or activate the venv"
