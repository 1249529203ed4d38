#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ASR backbone stages (20-49): train a CTC / pruned-transducer model, average checkpoints, decode, score,
# export to ONNX and decode the exports with sherpa-onnx.
# Called by egs/<corpus>/run.sh after its data stages; usable on its own:
#
#   recipes/asr.sh --config egs/minilibri/conf/ctc.yaml --exp-dir egs/minilibri/exp/ctc \
#     --cuts-dir egs/minilibri/data/fbank --bpe-model egs/minilibri/data/lang_bpe_256/bpe.model \
#     --train-parts train --valid-parts dev --test-parts "dev test-clean test-other" --methods ctc-greedy
#
# Stages: 20 train, 21 average checkpoints, 30 decode full context, 31 decode chunk-wise (streaming models),
# 32 decode full context with shallow fusion of a token n-gram (only with --ngram-lm),
# 39 WER table (<exp-dir>/decode/wer-table.md), 40 ONNX export (<exp-dir>/export/<kind>: ctc for ctc-greedy,
# offline-transducer for greedy/beam, streaming-chunkC-leftL per chunk size), 41 sherpa-onnx decode of every
# export (fp32 and int8) plus our own chunk-wise decode at the export's left context, 49 WER table again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"  # PYTHONPATH, $python ($PYTHON, else the repo's .venv, else python), lib.sh

stage=20                  # first stage to run
stop_stage=49             # last stage to run
config=                   # experiment YAML (model_preset, model, loss, data, trainer)
overrides=                # space-separated config overrides, e.g. "trainer.num_epochs=2 data.num_workers=0"
exp_dir=                  # experiment directory
cuts_dir=                 # directory with librispeech_cuts_<part>.jsonl.gz (training/validation)
test_cuts_dir=            # directory with the test parts' cuts (default: --cuts-dir)
bpe_model=                # sentencepiece model
train_parts=train         # space-separated training parts
valid_parts=dev           # space-separated validation parts
test_parts="dev test-clean test-other"  # space-separated parts to decode
avg=3                     # number of epoch checkpoints to average (capped at the number of epochs)
methods=greedy            # space-separated decoding methods: ctc-greedy greedy beam
beam_size=4               # beam of modified beam search
length_norm=true          # beam search picks its result by log-probability per token (icefall's default)
chunk_sizes=              # space-separated streaming chunk sizes (encoder frames); empty: no streaming decode
left_context=-1           # streaming left context in encoder frames (-1: all)
nproc=1                   # training processes (torchrun; GPUs or CPU processes)
export_left_context=64    # streaming ONNX export: attention left context in encoder frames (fixed cache size)
export_int8=true          # also export int8 (dynamically quantised) models and decode them
sherpa_threads=1          # onnxruntime threads of the sherpa-onnx decodes
codebook_dir=             # MVQ-KD codebook indexes for training (recipes/mvq_kd.sh; needs loss.codebook_loss_scale > 0)
untranscribed_parts=      # more training audio whose text is never read (MVQ-KD's codebook loss only; needs --codebook-dir)
ngram_lm=                 # stage 32: token n-gram over --bpe-model (speechkd lm2ctc train-ngram) fused into --fusion-methods
fusion_methods=beam       # stage 32: methods decoded with --ngram-lm (beam: transducer; ctc-beam: CTC head)
lm_weight=0.6             # stage 32: shallow-fusion weight of the LM log-probability
insertion_bonus=2.0       # stage 32: score added per emitted token (offsets the LM's preference for short outputs)
device=auto               # decoding device: auto (CUDA when available) | cpu | cuda | cuda:N
help_message="Usage: $0 [options]   (ASR stages 20-49: train, average, decode, score, export, sherpa-onnx decode)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$exp_dir" ] || die "--exp-dir is required"
[ -n "$cuts_dir" ] || die "--cuts-dir is required"
[ -n "$bpe_model" ] || die "--bpe-model is required"
[ -n "$test_cuts_dir" ] || test_cuts_dir=$cuts_dir
read -r -a train_arr <<<"$train_parts"
read -r -a valid_arr <<<"$valid_parts"
read -r -a test_arr <<<"$test_parts"
read -r -a method_arr <<<"$methods"
read -r -a chunk_arr <<<"$chunk_sizes"
read -r -a override_arr <<<"$overrides"
set_args=()
for o in "${override_arr[@]}"; do set_args+=(--set "$o"); done
config_args=()
[ -z "$config" ] || config_args=(--config "$config")
launcher=("$python")
[ "$nproc" -le 1 ] || launcher=("$python" -m torch.distributed.run --standalone --nproc_per_node "$nproc")
config_sum=
[ -z "$config" ] || config_sum=$(config_sum "$config")  # an edited config (or base) retrains; a moved one does not
key="config=$config_sum overrides=$overrides train=$train_parts bpe=$bpe_model"
codebook_args=()
if [ -n "$codebook_dir" ]; then
  codebook_args=(--codebook-dir "$codebook_dir")
  key="$key codebooks=$codebook_dir"
fi
read -r -a untranscribed_arr <<<"$untranscribed_parts"
if [ ${#untranscribed_arr[@]} -gt 0 ]; then
  codebook_args+=(--untranscribed-parts "${untranscribed_arr[@]}")
  key="$key untranscribed=$untranscribed_parts"
fi

if [ "$stage" -le 20 ] && [ "$stop_stage" -ge 20 ]; then
  log "Stage 20: train ($exp_dir)"
  require_file "$bpe_model" -- "run the data stages first"
  if ! stage_done 20 "$exp_dir" "$key"; then
    "${launcher[@]}" -m speechkd asr train "${config_args[@]}" "${set_args[@]}" --exp-dir "$exp_dir" \
      --cuts-dir "$cuts_dir" --train-parts "${train_arr[@]}" --valid-parts "${valid_arr[@]}" --bpe-model "$bpe_model" \
      "${codebook_args[@]}"
    mark_done 20 "$exp_dir" "$key"
  fi
fi

if [ "$stage" -le 21 ] && [ "$stop_stage" -ge 21 ]; then
  log "Stage 21: average the last $avg epoch checkpoints"
  if ! stage_done 21 "$exp_dir" "$key avg=$avg"; then
    "$python" -m speechkd asr average --exp-dir "$exp_dir" --avg "$avg" --cap
    mark_done 21 "$exp_dir" "$key avg=$avg"
  fi
fi

if [ "$stage" -le 30 ] && [ "$stop_stage" -ge 30 ]; then
  log "Stage 30: decode ${test_parts} with ${methods} (full context)"
  dkey="$key avg=$avg methods=$methods beam=$beam_size length_norm=$length_norm parts=$test_parts"
  norm_args=()
  [ "$length_norm" = true ] || norm_args=(--no-length-norm)
  if ! stage_done 30 "$exp_dir" "$dkey"; then
    "$python" -m speechkd asr decode --exp-dir "$exp_dir" --parts "${test_arr[@]}" --methods "${method_arr[@]}" \
      --beam-size "$beam_size" "${norm_args[@]}" --cuts-dir "$test_cuts_dir" --device "$device"
    mark_done 30 "$exp_dir" "$dkey"
  fi
fi

if [ "$stage" -le 31 ] && [ "$stop_stage" -ge 31 ] && [ ${#chunk_arr[@]} -gt 0 ]; then
  log "Stage 31: streaming decode of ${test_parts}, chunk sizes ${chunk_sizes}, left context $left_context"
  dkey="$key avg=$avg chunks=$chunk_sizes left=$left_context parts=$test_parts"
  if ! stage_done 31 "$exp_dir" "$dkey"; then
    "$python" -m speechkd asr decode --exp-dir "$exp_dir" --parts "${test_arr[@]}" --methods greedy \
      --chunk-sizes "${chunk_arr[@]}" --left-context "$left_context" --cuts-dir "$test_cuts_dir" --device "$device"
    mark_done 31 "$exp_dir" "$dkey"
  fi
fi

if [ "$stage" -le 32 ] && [ "$stop_stage" -ge 32 ] && [ -n "$ngram_lm" ]; then
  log "Stage 32: decode ${test_parts} with ${fusion_methods} + $ngram_lm (weight $lm_weight, bonus $insertion_bonus)"
  require_file "$ngram_lm" -- "train it with speechkd lm2ctc train-ngram on this BPE model"
  read -r -a fusion_arr <<<"$fusion_methods"
  dkey="$key avg=$avg fusion=$fusion_methods lm=$(cksum <"$ngram_lm") weight=$lm_weight bonus=$insertion_bonus"
  dkey="$dkey beam=$beam_size length_norm=$length_norm parts=$test_parts"
  norm_args=()
  [ "$length_norm" = true ] || norm_args=(--no-length-norm)
  if ! stage_done 32 "$exp_dir" "$dkey"; then
    "$python" -m speechkd asr decode --exp-dir "$exp_dir" --parts "${test_arr[@]}" --methods "${fusion_arr[@]}" \
      --beam-size "$beam_size" "${norm_args[@]}" --ngram-lm "$ngram_lm" --lm-weight "$lm_weight" \
      --insertion-bonus "$insertion_bonus" --cuts-dir "$test_cuts_dir" --device "$device"
    mark_done 32 "$exp_dir" "$dkey"
  fi
fi

if [ "$stage" -le 39 ] && [ "$stop_stage" -ge 39 ]; then
  log "Stage 39: WER table -> $exp_dir/decode/wer-table.md"
  require_file "$exp_dir/decode/wer-summary.tsv" -- "run stage 30 first"
  "$python" -m speechkd score table --summary "$exp_dir/decode/wer-summary.tsv" --sets "${test_arr[@]}" \
    --output "$exp_dir/decode/wer-table.md"
fi

# Export kinds: "<kind> <dir name> <chunk size>" per line, from the decoding methods and chunk sizes.
export_specs=()
for m in "${method_arr[@]}"; do
  case $m in
    ctc-greedy) export_specs+=("ctc ctc 0") ;;
    greedy | beam) [[ " ${export_specs[*]} " == *" offline-transducer "* ]] || export_specs+=("offline-transducer offline-transducer 0") ;;
  esac
done
if [[ " ${export_specs[*]} " == *" offline-transducer "* ]]; then
  for c in "${chunk_arr[@]}"; do
    export_specs+=("streaming-transducer streaming-chunk$c-left$export_left_context $c")
  done
fi
int8_args=()
[ "$export_int8" = true ] && int8_args=(--int8)

if [ "$stage" -le 40 ] && [ "$stop_stage" -ge 40 ]; then
  log "Stage 40: ONNX export (${#export_specs[@]} models) -> $exp_dir/export"
  for spec in "${export_specs[@]}"; do
    read -r kind name chunk <<<"$spec"
    ekey="$key avg=$avg kind=$kind chunk=$chunk left=$export_left_context int8=$export_int8"
    if ! stage_done 40 "$exp_dir/export/$name" "$ekey"; then
      "$python" -m speechkd export onnx --exp-dir "$exp_dir" --output-dir "$exp_dir/export/$name" --kind "$kind" \
        --chunk-size "$chunk" --left-context "$export_left_context" "${int8_args[@]}"
      mark_done 40 "$exp_dir/export/$name" "$ekey"
    fi
  done
fi

if [ "$stage" -le 41 ] && [ "$stop_stage" -ge 41 ]; then
  log "Stage 41: sherpa-onnx decode of ${test_parts} with every export (fp32${int8_args[*]:+ and int8})"
  for spec in "${export_specs[@]}"; do
    read -r kind name chunk <<<"$spec"
    for q in "" "${int8_args[@]}"; do
      dkey="$key avg=$avg kind=$kind chunk=$chunk left=$export_left_context int8=$q parts=$test_parts"
      if ! stage_done 41 "$exp_dir/export/$name" "$dkey"; then
        # shellcheck disable=SC2086 # $q is empty or --int8
        "$python" -m speechkd export decode --export-dir "$exp_dir/export/$name" --parts "${test_arr[@]}" \
          --cuts-dir "$test_cuts_dir" --out-dir "$exp_dir/decode" --num-threads "$sherpa_threads" $q
        mark_done 41 "$exp_dir/export/$name" "$dkey"
      fi
    done
    if [ "$kind" = streaming-transducer ]; then
      # our own chunk-wise decoding with the export's fixed left context: the row to compare with
      dkey="$key avg=$avg chunk=$chunk left=$export_left_context parts=$test_parts"
      if ! stage_done 41 "$exp_dir" "$dkey"; then
        "$python" -m speechkd asr decode --exp-dir "$exp_dir" --parts "${test_arr[@]}" --methods greedy \
          --chunk-sizes "$chunk" --left-context "$export_left_context" --cuts-dir "$test_cuts_dir" --device "$device"
        mark_done 41 "$exp_dir" "$dkey"
      fi
    fi
  done
fi

if [ "$stage" -le 49 ] && [ "$stop_stage" -ge 49 ]; then
  log "Stage 49: WER table with the sherpa-onnx rows -> $exp_dir/decode/wer-table.md"
  require_file "$exp_dir/decode/wer-summary.tsv" -- "run stage 30 first"
  "$python" -m speechkd score table --summary "$exp_dir/decode/wer-summary.tsv" --sets "${test_arr[@]}" \
    --output "$exp_dir/decode/wer-table.md"
fi
