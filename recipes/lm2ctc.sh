#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# LM-to-CTC distillation (stages 10-39): masked-LM soft labels taught to a CTC model through attention
# decoders on intermediate + final encoder layers; the decoders are dropped for decoding (greedy CTC stays
# one parallel argmax). Called by egs/<corpus>/run.sh --methods lm2ctc; usable on its own:
#
#   recipes/lm2ctc.sh --exp-dir egs/minilibri/exp/lm2ctc --cuts-dir egs/minilibri/data/fbank \
#     --bpe-model egs/minilibri/data/lang_bpe_64/bpe.model --config egs/minilibri/conf/lm2ctc.yaml \
#     --lm-config egs/minilibri/conf/mlm.yaml --baseline-exp-dirs "egs/minilibri/exp/asr_ctc_seed0"
#
# Stages:
#   10 LM text (train transcripts; with --lm-text-source also the corpus's text source minus every valid/test
#      transcript) and the stand-in masked LM trained on it (skipped when --lm names one, e.g. bert-base-uncased)
#   11 top-k soft labels of the train + valid transcripts (sharded, resumable) -> <exp-dir>/soft_labels
#   12 token n-gram LM over the CTC's BPE on the same LM text (shallow-fusion baseline) -> <exp-dir>/ngram.pt
#   20/21 train/average each --systems entry and seed (recipes/asr.sh): kd = CE + KL, hard = CE only (ablation)
#   30 greedy CTC decoding of each student (recipes/asr.sh)
#   32 shallow fusion: CTC prefix beam search + the n-gram on each --baseline-exp-dirs model (no-KD CTC)
#   33 decoding speed (RTF) of the students and the baselines in one run -> <exp-dir>/rtf.md
#   34 paired bootstrap over test utterances of each system's greedy WER against the baselines' (seeds averaged)
#      -> <exp-dir>/bootstrap-<system>.md: how much of a difference the choice of test utterances explains
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"

stage=10                  # first stage to run
stop_stage=39             # last stage to run
exp_dir=                  # LM, soft labels, n-gram and students: <exp-dir>/<system>_seed<N>
cuts_dir=                 # directory with librispeech_cuts_<part>.jsonl.gz (features)
bpe_model=                # sentencepiece model of the CTC
train_parts=train         # space-separated training parts (the only text the LMs see)
valid_parts=dev           # space-separated validation parts (soft-labelled too; stand-in LM accuracy on them)
test_parts="dev test-clean test-other"  # space-separated parts to decode
lm=                       # masked LM (directory or hub id); empty: train the stand-in in stage 10
lm_config=                # YAML of the stand-in masked LM (speechkd.training.mlm.MlmConfig)
lm_text_source=           # MiniLibri text source (austen | bible) added to the LM text, minus valid/test transcripts
lm_overrides=             # space-separated overrides of --lm-config
k=8                       # top-k soft labels per position
temperature=3.0           # soft-label temperature
max_tokens=               # transcripts with more LM tokens are skipped, counted (default: the LM's limit)
lm_batch_size=64          # masked sequences per LM forward
lm_device=cpu             # cpu | cuda
lm_dtype=float32          # the LM forward's compute dtype: float32 | bfloat16 | float16 (bfloat16 for speed on a GPU)
num_shards=1              # soft-label shards (unit of resumption; one per process under torchrun)
config=                   # student YAML (model.attention_decoders + loss.lm_kd on top of the CTC config)
overrides=                # space-separated student overrides
systems="kd hard"         # kd: CE + KL to the soft labels; hard: decoders with CE only (auxiliary-decoder ablation)
seeds=0                   # training seeds (space-separated): <exp-dir>/<system>_seed<N>
avg=3                     # epoch checkpoints averaged for decoding
ngram_order=4             # order of the token n-gram
beam_size=8               # CTC prefix beam of the shallow-fusion baseline
lm_weight=0.5             # shallow-fusion weight
insertion_bonus=0.0       # shallow fusion: score per emitted token
baseline_exp_dirs=        # space-separated no-KD CTC experiments decoded with shallow fusion (stage 32) and timed (33)
rtf_part=dev              # part whose decoding is timed in stage 33
rtf_repeats=5             # timed rounds of stage 33
bootstrap_samples=10000   # resamples of stage 34's paired bootstrap
nproc=1                   # training processes
help_message="Usage: $0 [options]   (LM-to-CTC distillation stages 10-39)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$exp_dir" ] || die "--exp-dir is required"
[ -n "$cuts_dir" ] || die "--cuts-dir is required"
[ -n "$bpe_model" ] || die "--bpe-model is required"
read -r -a train_arr <<<"$train_parts"
read -r -a valid_arr <<<"$valid_parts"
read -r -a system_arr <<<"$systems"
read -r -a seed_arr <<<"$seeds"
read -r -a baseline_arr <<<"$baseline_exp_dirs"
read -r -a test_arr <<<"$test_parts"
train_cuts=()
for p in "${train_arr[@]}"; do train_cuts+=("$cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
valid_cuts=()
for p in "${valid_arr[@]}"; do valid_cuts+=("$cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
held_cuts=()  # never LM text
for p in "${valid_arr[@]}" "${test_arr[@]}"; do held_cuts+=("$cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
text_args=()
[ -z "$lm_text_source" ] || text_args=(--text-files "$exp_dir/lm_text.txt")
trained_lm=false
if [ -z "$lm" ]; then
  lm=$exp_dir/mlm
  trained_lm=true
fi
sl_dir=$exp_dir/soft_labels
ngram=$exp_dir/ngram.pt

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ]; then
  log "Stage 10: LM text (${train_parts} transcripts ${lm_text_source:++ $lm_text_source}) and the stand-in masked LM ($trained_lm) -> $lm"
  require_file "${train_cuts[0]}" -- "run the data stages first"
  if [ -n "$lm_text_source" ] && ! stage_done 10 "$exp_dir" "lm-text=$lm_text_source"; then
    "$python" -m speechkd lm2ctc lm-text --text-source "$lm_text_source" --out "$exp_dir/lm_text.txt"
    mark_done 10 "$exp_dir" "lm-text=$lm_text_source"
  fi
fi

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && [ "$trained_lm" = true ]; then
  read -r -a lm_override_arr <<<"$lm_overrides"
  lm_set=()
  for o in "${lm_override_arr[@]}"; do lm_set+=(--set "$o"); done
  lm_cfg=()
  [ -z "$lm_config" ] || lm_cfg=(--config "$lm_config")
  lm_sum=
  [ -z "$lm_config" ] || lm_sum=$(config_sum "$lm_config")
  key="config=$lm_sum overrides=$lm_overrides train=$train_parts text=$lm_text_source"
  if ! stage_done 10 "$exp_dir" "$key"; then
    "$python" -m speechkd lm2ctc train-lm --cuts "${train_cuts[@]}" "${text_args[@]}" --exclude-cuts "${held_cuts[@]}" \
      --eval-cuts "${valid_cuts[@]}" --out-dir "$lm" "${lm_cfg[@]}" "${lm_set[@]}"
    mark_done 10 "$exp_dir" "$key"
  fi
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  log "Stage 11: top-$k soft labels (T=$temperature) of ${train_parts} ${valid_parts} with $lm -> $sl_dir"
  max_args=()
  [ -z "$max_tokens" ] || max_args=(--max-tokens "$max_tokens")
  "$python" -m speechkd lm2ctc soft-labels --lm "$lm" --cuts-dir "$cuts_dir" --parts "${train_arr[@]}" "${valid_arr[@]}" \
    --out-dir "$sl_dir" --k "$k" --temperature "$temperature" --batch-size "$lm_batch_size" --device "$lm_device" \
    --dtype "$lm_dtype" --num-shards "$num_shards" "${max_args[@]}"
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  log "Stage 12: ${ngram_order}-gram over the BPE tokens of the LM text -> $ngram"
  key="order=$ngram_order train=$train_parts bpe=$bpe_model text=$lm_text_source"
  if ! stage_done 12 "$exp_dir" "$key"; then
    "$python" -m speechkd lm2ctc train-ngram --cuts "${train_cuts[@]}" "${text_args[@]}" --exclude-cuts "${held_cuts[@]}" \
      --bpe-model "$bpe_model" --order "$ngram_order" --out "$ngram"
    mark_done 12 "$exp_dir" "$key"
  fi
fi

if [ "$stop_stage" -ge 20 ] && [ "$stage" -le 39 ]; then
  s_stage=$((stage > 20 ? stage : 20))
  s_stop=$((stop_stage < 30 ? stop_stage : 30))
  if [ "$s_stage" -le "$s_stop" ]; then
    for system in "${system_arr[@]}"; do
      case $system in
        kd) sys_overrides= ;;
        hard) sys_overrides="loss.lm_kd.hard_weight=1.0 loss.lm_kd.soft_weight=0.0" ;;
        *) die "unknown system '$system' in --systems (known: kd hard)" ;;
      esac
      for s in "${seed_arr[@]}"; do
        log "Stages $s_stage-$s_stop: student $system, seed $s"
        "$SPEECHKD_ROOT/recipes/asr.sh" --stage "$s_stage" --stop-stage "$s_stop" --config "$config" \
          --overrides "$overrides loss.lm_kd.lm=$lm loss.lm_kd.k=$k loss.lm_kd.temperature=$temperature $sys_overrides trainer.seed=$s" \
          --exp-dir "$exp_dir/${system}_seed$s" --cuts-dir "$sl_dir" --test-cuts-dir "$cuts_dir" --bpe-model "$bpe_model" \
          --train-parts "$train_parts" --valid-parts "$valid_parts" --test-parts "$test_parts" --methods ctc-greedy \
          --avg "$avg" --nproc "$nproc"
      done
    done
  fi
fi

if [ "$stage" -le 32 ] && [ "$stop_stage" -ge 32 ]; then
  for b in "${baseline_arr[@]}"; do
    log "Stage 32: shallow fusion (CTC prefix beam $beam_size + ${ngram_order}-gram, weight $lm_weight) of $b"
    require_file "$ngram" -- "run stage 12 first"
    key="ngram=$(cksum <"$ngram") beam=$beam_size weight=$lm_weight bonus=$insertion_bonus parts=$test_parts"
    if ! stage_done 32 "$b" "$key"; then
      "$python" -m speechkd asr decode --exp-dir "$b" --parts "${test_arr[@]}" --methods ctc-beam \
        --beam-size "$beam_size" --ngram-lm "$ngram" --lm-weight "$lm_weight" --insertion-bonus "$insertion_bonus" \
        --cuts-dir "$cuts_dir" --bpe-model "$bpe_model"
      mark_done 32 "$b" "$key"
    fi
  done
fi

if [ "$stage" -le 33 ] && [ "$stop_stage" -ge 33 ]; then
  log "Stage 33: decoding speed in one run -> $exp_dir/rtf.md"
  dirs=()
  names=()
  for b in "${baseline_arr[@]}"; do dirs+=("$b"); names+=("nokd:$(basename "$b")"); done
  for system in "${system_arr[@]}"; do
    for s in "${seed_arr[@]}"; do dirs+=("$exp_dir/${system}_seed$s"); names+=("${system}_seed$s"); done
  done
  rtf_methods=(ctc-greedy)
  ngram_args=()
  if [ ${#baseline_arr[@]} -gt 0 ]; then
    rtf_methods+=(ctc-beam)
    ngram_args=(--ngram-lm "$ngram" --lm-weight "$lm_weight" --beam-size "$beam_size")
  fi
  "$python" -m speechkd lm2ctc rtf --exp-dirs "${dirs[@]}" --names "${names[@]}" --cuts-dir "$cuts_dir" \
    --part "$rtf_part" --methods "${rtf_methods[@]}" --repeats "$rtf_repeats" "${ngram_args[@]}" --output "$exp_dir/rtf.md"
fi

if [ "$stage" -le 34 ] && [ "$stop_stage" -ge 34 ] && [ ${#baseline_arr[@]} -gt 0 ]; then
  base_dirs=()
  for b in "${baseline_arr[@]}"; do base_dirs+=("$b/decode"); done
  log "Stage 34: paired bootstrap of ${systems} against the no-KD baselines -> $exp_dir/bootstrap-<system>.md"
  for system in "${system_arr[@]}"; do
    sys_dirs=()
    for s in "${seed_arr[@]}"; do sys_dirs+=("$exp_dir/${system}_seed$s/decode"); done
    "$python" -m speechkd score bootstrap --a "${base_dirs[@]}" --b "${sys_dirs[@]}" --names no-kd "$system" \
      --sets "${test_arr[@]}" --tag ctc-greedy --samples "$bootstrap_samples" --output "$exp_dir/bootstrap-$system.md"
  done
fi
