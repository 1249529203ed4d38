#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Sourced by run.sh from its own directory: the repository root, then the shared recipe environment
# (PYTHONPATH, the python to use — $PYTHON, else ../../.venv, else python — and lib.sh).
SPEECHKD_ROOT=$(cd ../.. && pwd)
# shellcheck source=../../recipes/lib/env.sh
. "$SPEECHKD_ROOT/recipes/lib/env.sh"
