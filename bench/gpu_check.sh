#!/usr/bin/env bash
# One GPU check (under 8 minutes on one GPU; parts 1-3 took 38 s on an H200): the CUDA tests, the RNN-T loss
# benchmark on CUDA, training throughput at the recipes' batch sizes, LM-to-CTC soft-label and DistilHuBERT forward
# throughput. Every figure goes to one file.
#
#   bash bench/gpu_check.sh                       # writes bench/gpu_check.txt
#   bash bench/gpu_check.sh --out /tmp/gpu.txt
#
# Without CUDA the CUDA parts are skipped with the reason (in the file and on stdout); the script still
# exits 0 so that it can be run anywhere. Parts:
#   1 pytest -m cuda tests/cuda: RNN-T losses (portable, and k2 when installed) and CTC on CUDA against CPU,
#     streaming == chunk-masked forward on CUDA, bf16 autocast loss == fp32 within 2%, a 2-process NCCL DDP
#     step (skipped with its reason when fewer than 2 GPUs).
#   2 bench/bench_rnnt_loss.py on CUDA, V=500 and V=2000: portable vs k2 (when importable), seconds and peak MB.
#   3 bench/bench_train_step.py: `small` preset, bf16, batches of 32 utterances of up to 15 s: audio seconds
#     trained per second, peak MB.
#   4 the same at the recipes' batch sizes: `small` transducer and CTC at egs/librispeech's 600 s batches (bf16),
#     `mini` transducer and CTC at egs/minilibri's 40 s batches (fp32).
#   5 bench/bench_soft_labels.py: LM-to-CTC soft labels from a bert-base-sized masked LM, masked sequences per
#     second and the projected hours for LibriSpeech 960 h's transcripts.
#   6 bench/bench_distilhubert.py: HuBERT-base teacher and DistilHuBERT student forward times on CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/gpu_check.txt
python=${PYTHON:-}
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python; fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$(dirname "$out")"
: >"$out"
say() { echo "$*" | tee -a "$out"; }

say "# speechkd GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
cuda=$("$python" - <<'EOF'
import torch
if torch.cuda.is_available():
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"yes torch {torch.__version__}, CUDA {torch.version.cuda}, {len(names)} GPU(s): {', '.join(names)}")
else:
    print(f"no torch {torch.__version__}: torch.cuda.is_available() is False (CPU-only build or no device)")
EOF
)
say "device: ${cuda#* }"
k2=$("$python" -c "from speechkd.losses.rnnt import k2_available; print('installed' if k2_available() else 'not installed')")
say "k2: $k2"

say ""
say "## 1 CUDA tests (pytest -m cuda tests/cuda)"
start=$SECONDS
set +e
"$python" -m pytest -q -rs -m cuda tests/cuda -p no:cacheprovider 2>&1 | tail -n 25 | tee -a "$out"
rc=${PIPESTATUS[0]}
set -e
say "pytest exit status $rc ($((SECONDS - start)) s)"

if [ "${cuda%% *}" != yes ]; then
  say ""
  say "## 2 RNN-T loss benchmark on CUDA: skipped (${cuda#* })"
  say "## 3 training throughput, small transducer, bf16: skipped (${cuda#* })"
  say "## 4-6 training steps at the recipes' batch sizes, soft labels, DistilHuBERT on CUDA: skipped (${cuda#* })"
  exit 0
fi

say ""
say "## 2 RNN-T loss benchmark on CUDA (bench/bench_rnnt_loss.py, V=500 and 2000; portable vs k2 when installed)"
start=$SECONDS
timeout 240 "$python" bench/bench_rnnt_loss.py --devices cuda --vocab 500 2000 --repeats 3 2>&1 | tee -a "$out" || \
  say "rnnt benchmark failed or timed out (exit $?)"
say "($((SECONDS - start)) s)"

say ""
say "## 3 training throughput: small transducer, bf16 (bench/bench_train_step.py)"
start=$SECONDS
timeout 150 "$python" bench/bench_train_step.py --preset small --device cuda --amp bf16 --batch 32 --seconds 15 \
  --steps 10 --warmup 3 2>&1 | tail -n 1 | tee -a "$out" || say "throughput benchmark failed or timed out (exit $?)"
say "($((SECONDS - start)) s)"

say ""
say "## 4 training steps at the recipes' batch sizes (bench/bench_train_step.py; random inputs, no data loading)"
say "# small: egs/librispeech's 600 s batches (40 x up to 15 s), bf16; mini: egs/minilibri's 40 s batches, fp32"
start=$SECONDS
ctc_only=(--set model.use_transducer=false --set loss.transducer_weight=0.0 --set loss.ctc_weight=1.0)
step_bench() { timeout 120 "$python" bench/bench_train_step.py --device cuda --steps 10 --warmup 3 "$@" 2>&1 | \
  tail -n 1 | tee -a "$out" || say "train-step benchmark failed or timed out (exit $?): $*"; }
step_bench --preset small --amp bf16 --batch 40 --seconds 15
step_bench --preset small --amp bf16 --batch 40 --seconds 15 "${ctc_only[@]}"
step_bench --preset mini --batch 8 --seconds 5 --steps 20
step_bench --preset mini --batch 8 --seconds 5 --steps 20 "${ctc_only[@]}"
say "($((SECONDS - start)) s)"

say ""
say "## 5 LM-to-CTC soft labels: bert-base-sized masked LM, float32 and bfloat16 (bench/bench_soft_labels.py)"
start=$SECONDS
timeout 180 "$python" bench/bench_soft_labels.py --device cuda --utts 400 --batch-sizes 64 256 1024 \
  --dtypes float32 bfloat16 2>/dev/null | \
  tee -a "$out" || say "soft-label benchmark failed or timed out (exit $?)"
say "($((SECONDS - start)) s)"

say ""
say "## 6 DistilHuBERT: HuBERT-base teacher vs student forward, 8 x 15 s (bench/bench_distilhubert.py)"
start=$SECONDS
timeout 120 "$python" bench/bench_distilhubert.py --device cuda --batch 8 --seconds 15 --rounds 5 2>&1 | \
  tail -n 4 | tee -a "$out" || say "DistilHuBERT benchmark failed or timed out (exit $?)"
say "($((SECONDS - start)) s)"
exit "$rc"
