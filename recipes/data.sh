#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# LibriSpeech-layout data stages 1-4, shared by every corpus (egs/<corpus>/run.sh does stage 0 itself:
# download or build the corpus, then calls this):
#   1 lhotse manifests, 2 fbank features (+ 0.9/1.1 speed perturbation of --sp-parts), 3 BPE model,
#   4 summary table (hours / utterances / speakers per part), 5 (with --shuffle-parts) one training cuts
#   manifest, <data-dir>/fbank/librispeech_cuts_<shuffled-name>.jsonl.gz, holding those parts (and their
#   speed-perturbed copies) in random order, so that training batches mix the parts from the start.
# Markers live in <data-dir>/.done/; --corpus-key names what the corpus was built from, so a rebuilt corpus
# reruns the stages.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SPEECHKD_ROOT=${SPEECHKD_ROOT:-$(cd "$here/.." && pwd)}
# shellcheck source=lib/env.sh
. "$here/lib/env.sh"  # PYTHONPATH, $python ($PYTHON, else the repo's .venv, else python), lib.sh

stage=1                   # first stage to run
stop_stage=5              # last stage to run
corpus_dir=               # LibriSpeech-layout corpus directory (holding the part directories)
corpus_key=               # what the corpus was built from (part of the stage markers' keys)
data_dir=data             # manifests, features, BPE model, stage markers
parts=                    # space-separated parts to prepare
sp_parts=                 # space-separated parts that get speed-perturbed copies (empty: none)
bpe_part=                 # part whose transcripts train the BPE model
vocab_size=500            # BPE vocabulary size
nj=4                      # parallel jobs (processes)
shuffle_parts=            # stage 5: parts shuffled into one training manifest (empty: skip stage 5)
shuffled_name=train-all-shuf  # stage 5: name of that manifest's part
overwrite=false           # recompute whole stages (true) or resume part by part (false: finished parts kept)
help_message="Usage: $0 [options]   (LibriSpeech-layout data stages 1-5)"

# shellcheck source=lib/parse_options.sh
. "$here/lib/parse_options.sh"

[ -n "$corpus_dir" ] || die "--corpus-dir is required"
[ -n "$parts" ] || die "--parts is required"
[ -n "$bpe_part" ] || die "--bpe-part is required"
read -r -a part_arr <<<"$parts"
read -r -a sp_arr <<<"$sp_parts"
manifest_dir=$data_dir/manifests
fbank_dir=$data_dir/fbank
lang_dir=$data_dir/lang_bpe_$vocab_size
sp_args=()
[ ${#sp_arr[@]} -eq 0 ] || sp_args=(--speed-perturb-parts "${sp_arr[@]}")
overwrite_args=()
[ "$overwrite" = false ] || overwrite_args=(--overwrite)

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: lhotse manifests of $parts"
  require_file "$corpus_dir" -- "build or download the corpus first (stage 0), or fix --corpus-dir"
  key="corpus=$corpus_dir $corpus_key parts=$parts"
  if ! stage_done 1 "$data_dir" "$key"; then
    "$python" -m speechkd data prepare-librispeech --corpus-dir "$corpus_dir" --output-dir "$manifest_dir" \
      --parts "${part_arr[@]}" --num-jobs "$nj" "${overwrite_args[@]}"
    mark_done 1 "$data_dir" "$key"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: fbank features (speed perturbation of: ${sp_parts:-none})"
  key="corpus=$corpus_dir $corpus_key parts=$parts sp=$sp_parts"
  if ! stage_done 2 "$data_dir" "$key"; then
    "$python" -m speechkd data fbank --manifest-dir "$manifest_dir" --output-dir "$fbank_dir" \
      --parts "${part_arr[@]}" --num-jobs "$nj" "${overwrite_args[@]}" "${sp_args[@]}"
    mark_done 2 "$data_dir" "$key"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: BPE model, vocabulary $vocab_size, trained on $bpe_part, in $lang_dir"
  key="corpus=$corpus_dir $corpus_key vocab=$vocab_size bpe_part=$bpe_part"
  if ! stage_done 3 "$data_dir" "$key"; then
    "$python" -m speechkd data bpe --cuts "$fbank_dir/librispeech_cuts_$bpe_part.jsonl.gz" --output-dir "$lang_dir" \
      --vocab-size "$vocab_size" --overwrite
    mark_done 3 "$data_dir" "$key"
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "Stage 4: corpus summary table"
  key="corpus=$corpus_dir $corpus_key parts=$parts"
  if ! stage_done 4 "$data_dir" "$key"; then
    "$python" -m speechkd data summary --manifest-dir "$manifest_dir" --output "$data_dir/summary.tsv"
    mark_done 4 "$data_dir" "$key"
  fi
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && [ -n "$shuffle_parts" ]; then
  log "Stage 5: shuffled training manifest $shuffled_name of $shuffle_parts"
  read -r -a shuffle_arr <<<"$shuffle_parts"
  key="corpus=$corpus_dir $corpus_key parts=$shuffle_parts sp=$sp_parts name=$shuffled_name"
  if ! stage_done 5 "$data_dir" "$key"; then
    "$python" -m speechkd data shuffle-cuts --cuts-dir "$fbank_dir" --parts "${shuffle_arr[@]}" --name "$shuffled_name"
    mark_done 5 "$data_dir" "$key"
  fi
fi
