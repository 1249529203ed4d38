#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Whisper pseudo-labelling: label the training audio with a Whisper teacher, drop hallucinated labels
# (per-rule report), train a streaming transducer on the kept labels only, decode, compare.
# Called by egs/<corpus>/run.sh after its data stages (fbank cuts must exist); usable on its own.
#
# Stages: 10 prepare the teacher (convert the pip-packaged CTranslate2 model for the transformers backend),
# 11 label the training part, 12 filter the labels (filter-report.tsv), 13 BPE model on the kept labels,
# 14-15 the teacher's own WER on the test parts (<exp-dir>/decode/), 16 telephone-band copies of the student's
# training parts (only with --narrowband-rate: <part>-nb<rate>, trained on beside the originals), 17 a token n-gram over
# the student's BPE on the student's training text (only with --lm-order: shallow fusion, asr.sh stage 32), 20-49 recipes/asr.sh on the
# pseudo-labelled cuts for every --seeds entry (train, average, decode full context and chunk-wise,
# ONNX export + sherpa-onnx decode),
# students and their tables in <exp-dir>/student_seed<N>/.
# No ground-truth text of --train-part reaches training: the BPE model is trained on pseudo-labels, and the
# WER-vs-reference filter is off unless --reference-filter true (distil-whisper's rule, for corpora with
# transcripts). --labelled-parts adds parts trained on with their own transcripts (pseudo-labelled audio beside
# a labelled set, e.g. an unlabelled real-speech pool beside the transcribed train set).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"  # PYTHONPATH, $python ($PYTHON, else the repo's .venv, else python), lib.sh

stage=10                  # first stage to run
stop_stage=49             # last stage to run
teacher=packaged:tiny.en  # Whisper: packaged:tiny.en | packaged:base (pip-packaged CTranslate2), a CTranslate2 dir (faster-whisper), a transformers dir or hub id
language=en               # language of the audio, for multilingual teachers (ignored by English-only ones)
backend=faster-whisper    # faster-whisper | transformers
beam_size=5               # teacher beam (1 = greedy)
batch_size=8              # clips per teacher call
num_shards=4              # labelling shards (resumable unit; one per GPU/rank under torchrun)
device=cpu                # cpu | cuda
num_threads=2             # CPU threads of the teacher
max_new_tokens=           # cap on teacher tokens per clip (empty: the model's 448); a repetition loop decodes to the
                          # cap and holds up its batch, so about 6 per second of the longest clip bounds that cost
exp_dir=                  # experiment directory (labels, filtered cuts, student)
cuts_dir=                 # directory with librispeech_cuts_<part>.jsonl.gz (features + recordings)
train_part=train          # part(s) to pseudo-label (their transcripts are never used for training); several (space-
                          # separated, e.g. slices of a pool) are labelled and filtered one by one (labels/<part>,
                          # filter/<part>), so adding a slice later relabels nothing
labelled_parts=           # parts of --cuts-dir the student also trains on with their own transcripts (e.g. train beside
                          # a pseudo-labelled train-real: semi-supervised); their text joins the BPE model's; empty: none
test_parts="dev test-clean test-other"  # parts to decode and to score the teacher on
reference_filter=false    # also drop labels whose WER against the reference exceeds filter max_wer
score_train_labels=true   # stage 15: also score the train labels (all / kept) against its transcripts (false for unlabelled audio)
filter_overrides=         # space-separated label-filter overrides, e.g. "max_chars_per_sec=30"
vocab_size=256            # BPE vocabulary of the student (trained on the kept pseudo-labels)
config=                   # student experiment YAML (recipes/asr.sh --config)
overrides=                # space-separated student config overrides
chunk_sizes="8 16"        # streaming decoding chunk sizes of the student (encoder frames)
methods="greedy beam"     # student decoding methods (full context)
avg=3                     # epoch checkpoints averaged
narrowband_rate=          # stage 16: also train on copies of every training part band-limited to rate/2 Hz (8000: the
                          # telephone band of 8 kHz test audio such as MiniLibri's test-other); empty: no copies
lm_order=                 # stage 17: order of a token n-gram over the student's BPE on its training text (kept pseudo-labels,
                          # --labelled-parts transcripts, --lm-text-source), fused into beam search (asr.sh stage 32);
                          # empty: no LM. Every --test-parts transcript is removed from the LM text.
lm_text_source=           # stage 17: also the corpus's text source as LM text (speechkd lm2ctc lm-text: MiniLibri's
                          # austen | bible); empty: the training text only
lm_weight=0.6             # stage 32: shallow-fusion weight of the n-gram
insertion_bonus=2.0       # stage 32: score per emitted token (the LM alone prefers short outputs: deletions)
seeds=0                   # student training seeds (space-separated): one student per seed in <exp-dir>/student_seed<N>
help_message="Usage: $0 [options]   (Whisper pseudo-labelling stages 10-39)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$exp_dir" ] || die "--exp-dir is required"
[ -n "$cuts_dir" ] || die "--cuts-dir is required"
read -r -a test_arr <<<"$test_parts"
read -r -a filter_arr <<<"$filter_overrides"
label_dir=$exp_dir/labels
pl_cuts_dir=$exp_dir/data        # librispeech_cuts_<train_part>.jsonl.gz with pseudo-label text
lang_dir=$exp_dir/lang_bpe_$vocab_size
teacher_dir=$teacher
if [ "$backend" = transformers ] && [[ "$teacher" == packaged:* ]]; then
  teacher_dir=$exp_dir/teacher_hf
fi
filter_args=()
[ "$reference_filter" = true ] || filter_args+=(--set max_wer=null)
for o in "${filter_arr[@]}"; do filter_args+=(--set "$o"); done
label_args=(--teacher "$teacher_dir" --backend "$backend" --beam-size "$beam_size" --batch-size "$batch_size"
  --num-shards "$num_shards" --device "$device" --num-threads "$num_threads" --language "$language")
[ -z "$max_new_tokens" ] || label_args+=(--max-new-tokens "$max_new_tokens")
read -r -a train_arr <<<"$train_part"
[ ${#train_arr[@]} -gt 0 ] || die "--train-part needs at least one part"
read -r -a labelled_arr <<<"$labelled_parts"
for p in "${labelled_arr[@]}"; do
  for t in "${train_arr[@]}"; do
    [ "$p" != "$t" ] || die "--labelled-parts: $p is a pseudo-labelled part (--train-part)"
  done
done
# One part keeps the single-part layout (filter/ holds its report); several get filter/<part>/ each.
filter_dir() { if [ ${#train_arr[@]} -eq 1 ]; then echo "$exp_dir/filter"; else echo "$exp_dir/filter/$1"; fi; }
# The labelled parts are linked beside the pseudo-labelled cuts, so the student reads every training part from one
# directory; their features stay where the data stages wrote them.
link_labelled_parts() {
  local p src
  mkdir -p "$pl_cuts_dir"
  for p in "${labelled_arr[@]}"; do
    src=$cuts_dir/librispeech_cuts_$p.jsonl.gz
    require_file "$src" -- "run the data stages for part $p first"
    ln -sfn "$(cd "$(dirname "$src")" && pwd)/$(basename "$src")" "$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz"
  done
}
key="teacher=$teacher backend=$backend beam=$beam_size"
[ "$language" = en ] || key="$key language=$language"  # the default keeps the stage keys of earlier runs
[ -z "$max_new_tokens" ] || key="$key max_new_tokens=$max_new_tokens"
# label_part STAGE PART: the teacher's labels of PART in labels/PART (sharded, resumable), one stage marker per part.
label_part() {
  if ! stage_done "$1" "$exp_dir" "$key part=$2"; then
    "$python" -m speechkd pseudo pseudo-label --cuts "$cuts_dir/librispeech_cuts_$2.jsonl.gz" \
      --output-dir "$label_dir/$2" "${label_args[@]}"
    mark_done "$1" "$exp_dir" "$key part=$2"
  fi
}

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && [ "$teacher_dir" != "$teacher" ]; then
  log "Stage 10: convert $teacher (CTranslate2) to a transformers checkpoint in $teacher_dir"
  if ! stage_done 10 "$exp_dir" "$teacher"; then
    "$python" -m speechkd teachers convert-ct2-whisper "$teacher" "$teacher_dir" --overwrite
    mark_done 10 "$exp_dir" "$teacher"
  fi
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  for p in "${train_arr[@]}"; do  # every part checked before the first one is labelled (hours)
    require_file "$cuts_dir/librispeech_cuts_$p.jsonl.gz" -- "run the data stages first"
  done
  for p in "${train_arr[@]}"; do
    log "Stage 11: pseudo-label $p with $teacher ($backend, beam $beam_size)"
    label_part 11 "$p"
  done
fi

if [ "$stage" -le 12 ] && [ "$stop_stage" -ge 12 ]; then
  log "Stage 12: filter the labels -> $(filter_dir "${train_arr[0]}")/filter-report.tsv${train_arr[1]:+ (and filter/<part>/ of every part)}"
  fkey="$key reference_filter=$reference_filter filters=$filter_overrides"
  for p in "${train_arr[@]}"; do
    pkey=$fkey
    [ ${#train_arr[@]} -eq 1 ] || pkey="$fkey part=$p"  # the single-part key of earlier runs is kept
    if ! stage_done 12 "$exp_dir" "$pkey"; then
      "$python" -m speechkd pseudo filter-labels --cuts "$label_dir/$p/cuts.jsonl.gz" \
        --output-cuts "$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz" --report-dir "$(filter_dir "$p")" \
        "${filter_args[@]}"
      mark_done 12 "$exp_dir" "$pkey"
    fi
  done
fi

if [ "$stage" -le 13 ] && [ "$stop_stage" -ge 13 ]; then
  log "Stage 13: BPE model ($vocab_size) on the kept pseudo-labels${labelled_parts:+ and the transcripts of $labelled_parts}"
  bkey="$key reference_filter=$reference_filter filters=$filter_overrides vocab=$vocab_size"
  [ -z "$labelled_parts" ] || bkey="$bkey labelled=$labelled_parts"
  [ ${#train_arr[@]} -eq 1 ] || bkey="$bkey parts=${train_arr[*]}"
  link_labelled_parts
  bpe_cuts=()
  for p in "${train_arr[@]}"; do bpe_cuts+=("$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
  for p in "${labelled_arr[@]}"; do bpe_cuts+=("$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
  if ! stage_done 13 "$exp_dir" "$bkey"; then
    "$python" -m speechkd data bpe --cuts "${bpe_cuts[@]}" \
      --output-dir "$lang_dir" --vocab-size "$vocab_size" --overwrite
    mark_done 13 "$exp_dir" "$bkey"
  fi
fi

if [ "$stage" -le 14 ] && [ "$stop_stage" -ge 14 ]; then
  for part in "${test_arr[@]}"; do
    log "Stage 14: label $part with the teacher (to score the teacher against the references)"
    label_part 14 "$part"
  done
fi

if [ "$stage" -le 15 ] && [ "$stop_stage" -ge 15 ]; then
  for part in "${test_arr[@]}"; do
    log "Stage 15: the teacher's WER on $part -> $exp_dir/decode/wer-summary.tsv"
    "$python" -m speechkd pseudo score-labels --cuts "$label_dir/$part/cuts.jsonl.gz" \
      --out-dir "$exp_dir/decode" --test-set "$part" --tag "teacher-$backend-beam$beam_size"
  done
  if [ "$score_train_labels" = true ]; then
    # Label quality only: the student never sees these transcripts.
    for p in "${train_arr[@]}"; do
      log "Stage 15: WER of the $p pseudo-labels before (labels-all) and after (labels-kept) filtering"
      "$python" -m speechkd pseudo score-labels --cuts "$label_dir/$p/cuts.jsonl.gz" \
        --out-dir "$exp_dir/decode" --test-set "$p" --tag labels-all
      "$python" -m speechkd pseudo score-labels --cuts "$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz" \
        --out-dir "$exp_dir/decode" --test-set "$p" --tag labels-kept
    done
  fi
fi

student_parts=("${train_arr[@]}" "${labelled_arr[@]}")  # the student's training parts (+ their narrowband copies)
if [ -n "$narrowband_rate" ]; then
  [[ "$narrowband_rate" =~ ^[0-9]+$ ]] || die "--narrowband-rate: '$narrowband_rate' is not a sampling rate in Hz"
  read -r -a student_parts <<<"${student_parts[*]} $(printf '%s-nb'"$narrowband_rate"' ' "${student_parts[@]}")"
fi
if [ "$stage" -le 16 ] && [ "$stop_stage" -ge 16 ] && [ -n "$narrowband_rate" ]; then
  log "Stage 16: copies of ${train_arr[*]}${labelled_parts:+ $labelled_parts} band-limited to $((narrowband_rate / 2)) Hz"
  link_labelled_parts
  # reruns reuse a copy only while its input manifest is unchanged (speechkd data narrowband checks)
  "$python" -m speechkd data narrowband --cuts-dir "$pl_cuts_dir" --parts "${train_arr[@]}" "${labelled_arr[@]}" \
    --rate "$narrowband_rate"
fi

ngram=
[ -z "$lm_order" ] || ngram=$exp_dir/ngram$lm_order.pt
if [ "$stage" -le 17 ] && [ "$stop_stage" -ge 17 ] && [ -n "$lm_order" ]; then
  [[ "$lm_order" =~ ^[1-9][0-9]*$ ]] || die "--lm-order: '$lm_order' is not an n-gram order"
  log "Stage 17: $lm_order-gram over $lang_dir/bpe.model on the student's text${lm_text_source:+ and $lm_text_source} -> $ngram"
  require_file "$lang_dir/bpe.model" -- "run stage 13 first"
  link_labelled_parts
  lm_cuts=()
  for p in "${train_arr[@]}" "${labelled_arr[@]}"; do lm_cuts+=("$pl_cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
  held_cuts=()
  for p in "${test_arr[@]}"; do held_cuts+=("$cuts_dir/librispeech_cuts_$p.jsonl.gz"); done
  text_args=()
  if [ -n "$lm_text_source" ]; then
    text_args=(--text-files "$exp_dir/lm_text_$lm_text_source.txt")
    if ! stage_done 17 "$exp_dir" "lm-text=$lm_text_source"; then
      "$python" -m speechkd lm2ctc lm-text --text-source "$lm_text_source" --out "$exp_dir/lm_text_$lm_text_source.txt"
      mark_done 17 "$exp_dir" "lm-text=$lm_text_source"
    fi
  fi
  nkey="order=$lm_order bpe=$(cksum <"$lang_dir/bpe.model") text=${train_arr[*]} ${labelled_arr[*]} $lm_text_source"
  nkey="$nkey held=$test_parts labels=$(cat "${lm_cuts[@]}" | cksum)"
  if ! stage_done 17 "$exp_dir" "$nkey"; then
    "$python" -m speechkd lm2ctc train-ngram --cuts "${lm_cuts[@]}" "${text_args[@]}" --exclude-cuts "${held_cuts[@]}" \
      --bpe-model "$lang_dir/bpe.model" --order "$lm_order" --out "$ngram"
    mark_done 17 "$exp_dir" "$nkey"
  fi
fi

if [ "$stop_stage" -ge 20 ]; then
  config_args=()
  [ -z "$config" ] || config_args=(--config "$config")
  read -r -a seed_arr <<<"$seeds"
  [ ${#seed_arr[@]} -gt 0 ] || die "--seeds needs at least one seed"
  link_labelled_parts
  for s in "${seed_arr[@]}"; do
    "$here/asr.sh" --stage "$stage" --stop-stage "$stop_stage" "${config_args[@]}" \
      --overrides "$overrides trainer.seed=$s" --exp-dir "$exp_dir/student_seed$s" --cuts-dir "$pl_cuts_dir" \
      --test-cuts-dir "$cuts_dir" --bpe-model "$lang_dir/bpe.model" --train-parts "${student_parts[*]}" --valid-parts "" \
      --test-parts "$test_parts" --methods "$methods" --chunk-sizes "$chunk_sizes" --avg "$avg" \
      --ngram-lm "$ngram" --lm-weight "$lm_weight" --insertion-bonus "$insertion_bonus"
  done
fi
