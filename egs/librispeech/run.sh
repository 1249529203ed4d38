#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# LibriSpeech: data stages (download, manifests, fbank, BPE, summary), then the method stages.
#
#   PYTHON=../../.venv/bin/python ./run.sh --corpus-dir /data/LibriSpeech --stop-stage 4
#   PYTHON=../../.venv/bin/python ./run.sh --download true --train-parts train-clean-100   # needs internet
#   ./run.sh --help
#
# Stages: 0 download (only with --download true), 1 lhotse manifests, 2 fbank features (+ speed
# perturbation of the train parts), 3 BPE model, 4 summary table, 5 the training parts (and their
# perturbed copies) shuffled into one manifest, train-all-shuf, which every training stage reads.
# Finished stages are skipped (markers under <data-dir>/.done/). Stages 1 and 2 also skip parts whose
# output manifests exist (resume after a crash): to recompute a part, delete its manifests as well as
# the stage marker. Relative paths are relative to this directory (the script cds here).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=path.sh
. ./path.sh

stage=0                  # first stage to run
stop_stage=100           # last stage to run
nj=16                    # parallel jobs (processes)
download=false           # stage 0: download the parts from openslr.org into <download-dir>/LibriSpeech
download_dir=download    # where stage 0 downloads and unpacks
corpus_dir=download/LibriSpeech  # LibriSpeech directory holding the parts (<download-dir>/LibriSpeech with --download true)
train_parts="train-clean-100 train-clean-360 train-other-500"  # training parts
eval_parts="dev-clean dev-other test-clean test-other"  # dev/test parts
bpe_part=train-clean-100 # part whose transcripts train the BPE model
data_dir=data            # manifests, features, BPE model, stage markers
exp_dir=exp              # models and results of the method stages
speed_perturb=true       # add 0.9/1.1 speed-perturbed copies of the train parts
vocab_size=500           # BPE vocabulary size
methods=asr              # method recipes to run after the data stages, in order (asr distilhubert mvq_kd lm2ctc)
distill_teacher=facebook/hubert-base-ls960  # distilhubert teacher: hub id or local checkpoint dir
mvq_teacher=facebook/hubert-xlarge-ls960-ft  # mvq_kd teacher (HuBERT family): hub id or local checkpoint dir
mvq_shards=8             # mvq_kd: parallel codebook-extraction shards (one GPU each when present)
asr_models=transducer_small  # ASR baselines: conf/asr_<name>.yaml each (exp/asr_<name>); also ctc_small
asr_overrides=           # space-separated config overrides for every ASR model, e.g. "trainer.amp=bf16"
set=                     # space-separated config overrides for every experiment (ASR and distilhubert), e.g. "trainer.amp=bf16"
ctc_decode_methods=ctc-greedy  # decoding methods of ctc models
transducer_decode_methods="greedy beam"  # decoding methods of transducer models
chunk_sizes="16 32 64"   # streaming decode chunk sizes (40 ms encoder frames), as trained (train_chunk_sizes)
avg=5                    # epoch checkpoints averaged for decoding
lm2ctc_lm=bert-base-uncased  # lm2ctc: masked LM teacher (hub id or local dir)
lm2ctc_device=cuda       # lm2ctc: device of the soft-label stage
lm2ctc_dtype=bfloat16    # lm2ctc: compute dtype of the masked LM there (float32 | bfloat16 | float16)
lm2ctc_systems="kd hard" # lm2ctc: kd (CE + KL) and hard (decoders with CE only: the auxiliary-decoder ablation)
nproc=1                  # training processes (GPUs) per experiment, via torchrun
help_message="Usage: $0 [options]   (LibriSpeech data stages 0-5, then the method stages 10-49)"

# shellcheck source=../../recipes/lib/parse_options.sh
. "$SPEECHKD_ROOT/recipes/lib/parse_options.sh"

# Every stage that runs appends its seconds and the machine's load to one file (recipes/lib/lib.sh, "Stage times").
case $exp_dir in /*) times_dir=$exp_dir ;; *) times_dir=$PWD/$exp_dir ;; esac
export SPEECHKD_STAGE_TIMES=${SPEECHKD_STAGE_TIMES:-$times_dir/stage_times.tsv}

if [ "$download" = true ]; then
  corpus_dir=$download_dir/LibriSpeech
fi
read -r -a train_list <<<"$train_parts"
read -r -a eval_list <<<"$eval_parts"
parts=("${train_list[@]}" "${eval_list[@]}")
fbank_dir=$data_dir/fbank
lang_dir=$data_dir/lang_bpe_$vocab_size
shuffled_part=train-all-shuf  # stage 5 output: the training parts in random order (what training reads)
sp_parts=()
[ "$speed_perturb" = false ] || sp_parts=("${train_list[@]}")
read -r -a method_arr <<<"$methods"
read -r -a asr_model_arr <<<"$asr_models"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ "$download" = true ]; then
    log "Stage 0: download ${parts[*]} into $download_dir"
    key="download=$download_dir parts=${parts[*]}"
    if ! stage_done 0 "$data_dir" "$key"; then
      "$python" -m speechkd data download-librispeech --target-dir "$download_dir" --parts "${parts[@]}"
      mark_done 0 "$data_dir" "$key"
    fi
  else
    log "Stage 0: no download (--download false); using $corpus_dir"
  fi
fi

if [ "$stop_stage" -ge 1 ]; then
  # Stages 1-4: manifests, fbank (+ speed perturbation), BPE, summary; parts already done are kept (resume).
  "$SPEECHKD_ROOT/recipes/data.sh" --stage "$stage" --stop-stage "$stop_stage" --corpus-dir "$corpus_dir" \
    --data-dir "$data_dir" --parts "${parts[*]}" --sp-parts "${sp_parts[*]}" --bpe-part "$bpe_part" \
    --vocab-size "$vocab_size" --nj "$nj" --overwrite false --shuffle-parts "$train_parts" \
    --shuffled-name "$shuffled_part"
fi

# ==================================================================================================
# Method stages (10-39 targets/training/decoding, 40+ export), one recipe per method, in --methods order.
if [ "$stop_stage" -ge 10 ]; then
  for method in "${method_arr[@]}"; do
    case $method in
      asr)
        # Baselines: one experiment per --asr-models entry, conf/asr_<name>.yaml, exp/asr_<name>.
        for model in "${asr_model_arr[@]}"; do
          model_methods=$transducer_decode_methods
          chunks=$chunk_sizes
          if [[ $model == ctc* ]]; then
            model_methods=$ctc_decode_methods
            chunks=
          fi
          "$SPEECHKD_ROOT/recipes/asr.sh" --stage "$stage" --stop-stage "$stop_stage" \
            --config "conf/asr_$model.yaml" --overrides "$set $asr_overrides" --exp-dir "$exp_dir/asr_$model" \
            --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" --train-parts "$shuffled_part" \
            --valid-parts "dev-clean dev-other" --test-parts "$eval_parts" --methods "$model_methods" \
            --chunk-sizes "$chunks" --avg "$avg" --nproc "$nproc"
        done
        ;;
      distilhubert)
        # DistilHuBERT from HuBERT-base (hub id or local path: --distill-teacher).
        "$SPEECHKD_ROOT/recipes/distilhubert.sh" --stage "$stage" --stop-stage "$stop_stage" \
          --config conf/distilhubert_hubert_base.yaml --overrides "$set" --probe-config conf/distilhubert_probe.yaml \
          --teacher "$distill_teacher" --exp-dir "$exp_dir/distilhubert_hubert_base" --cuts-dir "$fbank_dir" \
          --bpe-model "$lang_dir/bpe.model" --train-parts "$shuffled_part" --valid-parts dev-clean \
          --probe-train-parts train-clean-100 --test-parts "$eval_parts" --nproc "$nproc"
        ;;
      mvq_kd)
        # MVQ-KD: the small streaming transducer plus a codebook head on HuBERT codebook indexes (--mvq-teacher).
        "$SPEECHKD_ROOT/recipes/mvq_kd.sh" --stage "$stage" --stop-stage "$stop_stage" \
          --config conf/mvq_kd_hubert_xlarge.yaml --overrides "$asr_overrides" --teacher "$mvq_teacher" \
          --exp-dir "$exp_dir/mvq_kd_hubert_xlarge" --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" \
          --train-parts "$train_parts" --valid-parts dev-clean --quantizer-parts train-clean-100 \
          --test-parts "$eval_parts" --methods "$transducer_decode_methods" --chunk-sizes "$chunk_sizes" \
          --avg "$avg" --nproc "$nproc" --num-shards "$mvq_shards"
        ;;
      lm2ctc)
        # LM-to-CTC distillation from --lm2ctc-lm; shallow fusion of exp/asr_ctc_small when it exists.
        baselines=
        [ ! -f "$exp_dir/asr_ctc_small/config.yaml" ] || baselines=$exp_dir/asr_ctc_small
        "$SPEECHKD_ROOT/recipes/lm2ctc.sh" --stage "$stage" --stop-stage "$stop_stage" --exp-dir "$exp_dir/lm2ctc" \
          --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" --train-parts "$train_parts" \
          --valid-parts "dev-clean dev-other" --test-parts "$eval_parts" --lm "$lm2ctc_lm" --lm-device "$lm2ctc_device" \
          --lm-dtype "$lm2ctc_dtype" --num-shards "$nj" --config conf/lm2ctc_small.yaml --overrides "$asr_overrides" --systems "$lm2ctc_systems" \
          --avg "$avg" --baseline-exp-dirs "$baselines" --rtf-part dev-clean --nproc "$nproc"
        ;;
      *) die "unknown method '$method' in --methods (known: asr distilhubert mvq_kd lm2ctc)" ;;
    esac
  done
fi
# ==================================================================================================

log "Done (stages $stage-$stop_stage) in $((SECONDS / 60)) min $((SECONDS % 60)) s; stage times: $SPEECHKD_STAGE_TIMES"
