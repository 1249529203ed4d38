#!/usr/bin/env bash
# Kaldi-style command-line options for recipe scripts. Source it right after the option block:
#
#   stage=0            # first stage to run
#   stop_stage=100     # last stage to run
#   speed_perturb=false  # add 0.9/1.1 speed-perturbed copies of the train cuts
#   . recipes/lib/parse_options.sh
#
# Semantics:
#   --stage 3 / --stage=3     sets stage=3
#   --speed-perturb true      dashes become underscores: sets speed_perturb
#   only variables of the caller's option block may be set (the last run of top-level `name=value` lines,
#   comments and blank lines right above the line that sources this file); when the caller's source cannot be read, any variable already
#   defined is accepted (Kaldi's rule). Unknown options are errors.
#   a boolean option (default true or false) accepts only true or false.
#   stage and stop_stage (when they are options) must be integers, and --stage must not come after
#   --stop-stage: an empty stage range is an error, not a run that does nothing.
#   --help / -h prints $help_message (if set; it is not an option itself) and every option with its current default and its
#   trailing comment, then exits 0.
#   Parsing stops at the first argument that does not start with "--"; it stays in "$@" (positional).
#
# All helper variables are prefixed _po_ and unset at the end.

# The caller's file and the line that sources this file.
_po_src=${BASH_SOURCE[1]:-}
# A script that did `cd "$(dirname "$0")"` before sourcing us sees a relative BASH_SOURCE that no longer
# resolves from the new directory; the directory it came from is in OLDPWD.
if [ -n "$_po_src" ] && [ ! -r "$_po_src" ] && [ -n "${OLDPWD:-}" ] && [ -r "$OLDPWD/$_po_src" ]; then
  _po_src=$OLDPWD/$_po_src
fi
_po_line=${BASH_LINENO[0]:-0}

# Option names and their comments, from the caller's option block.
_po_names=()
_po_comments=()
if [ -n "$_po_src" ] && [ -r "$_po_src" ] && [ "$_po_line" -gt 0 ]; then
  _po_n=0
  while IFS= read -r _po_l || [ -n "$_po_l" ]; do
    _po_n=$((_po_n + 1))
    [ "$_po_n" -ge "$_po_line" ] && break
    if [[ $_po_l =~ ^([A-Za-z_][A-Za-z0-9_]*)=([^#]*)(#[[:space:]]*(.*))?$ ]]; then
      if [ "${BASH_REMATCH[1]}" != help_message ]; then
        _po_names+=("${BASH_REMATCH[1]}")
        _po_comments+=("${BASH_REMATCH[4]}")
      fi
    elif [[ -n ${_po_l//[[:space:]]/} && ! $_po_l =~ ^[[:space:]]*# ]]; then
      # any other statement ends what came before: the option block is the last run of assignments
      # (with comments and blank lines) before this file is sourced, not set-up lines like `here=...`
      _po_names=()
      _po_comments=()
    fi
  done <"$_po_src"
fi

_po_die() {
  echo "${_po_src##*/}: $*" >&2
  echo "Run '${_po_src##*/} --help' for the options." >&2
  exit 1
}

_po_is_option() {  # _po_is_option NAME: 0 when NAME may be set from the command line
  local n
  if [ ${#_po_names[@]} -gt 0 ]; then
    for n in "${_po_names[@]}"; do
      [ "$n" = "$1" ] && return 0
    done
    return 1
  fi
  [ -n "${!1+set}" ]
}

_po_help() {
  local i name flag
  if [ -n "${help_message:-}" ]; then
    printf '%s\n\n' "$help_message"
  else
    printf 'Usage: %s [options]\n\n' "${_po_src##*/}"
  fi
  echo "Options (default in brackets):"
  for i in "${!_po_names[@]}"; do
    name=${_po_names[$i]}
    flag="--${name//_/-}"
    printf '  %-22s %-12s %s\n' "$flag" "[${!name-}]" "${_po_comments[$i]}"
  done
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help | -h)
      _po_help
      exit 0
      ;;
    --*=*)
      _po_opt=${1%%=*}
      _po_val=${1#*=}
      shift
      ;;
    --?*)
      _po_opt=$1
      [ $# -ge 2 ] || _po_die "option $1 needs a value"
      _po_val=$2
      shift 2
      ;;
    *) break ;;
  esac
  _po_name=${_po_opt#--}
  _po_name=${_po_name//-/_}
  [[ $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_die "invalid option name $_po_opt"
  _po_is_option "$_po_name" || _po_die "unknown option $_po_opt"
  case "${!_po_name-}" in
    true | false)
      case "$_po_val" in
        true | false) ;;
        *) _po_die "option $_po_opt is boolean: use true or false, not '$_po_val'" ;;
      esac
      ;;
  esac
  printf -v "$_po_name" '%s' "$_po_val"
done

# The stage range: integers, and not empty.
for _po_name in stage stop_stage; do
  if _po_is_option "$_po_name" && [ -n "${!_po_name+set}" ] && ! [[ ${!_po_name} =~ ^-?[0-9]+$ ]]; then
    _po_die "option --${_po_name//_/-} must be an integer, not '${!_po_name}'"
  fi
done
if _po_is_option stage && _po_is_option stop_stage && [ -n "${stage+set}" ] && [ -n "${stop_stage+set}" ] &&
  [ "$stage" -gt "$stop_stage" ]; then
  _po_die "empty stage range: --stage $stage comes after --stop-stage $stop_stage, so no stage would run"
fi

unset -f _po_die _po_is_option _po_help
unset _po_src _po_line _po_names _po_comments _po_n _po_l _po_opt _po_val _po_name
true
