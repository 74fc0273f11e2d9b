#!/usr/bin/env bash
# One prepared GPU check, at most ~8 minutes on one CUDA GPU. Needs only kpid_core's own dependencies
# (torch, torchvision, torch-pruning, numpy, pyyaml, pandas) — no Ray, no Optuna — and no network.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # on a CUDA machine
#   KPID_CHECK_DEVICE=cpu bash bench/gpu_check.sh --dry [OUT_DIR]   # the same steps, tiny, on CPU (tests)
#
# Steps (each under its own timeout, figures printed and written to OUT_DIR):
#   1. a trial on the bundled digits data on the GPU with AMP + channels_last (train.amp=on,
#      train.channels_last=on), its dense and pruned latency measured there (latency.*);
#   2. `prune --cost latency --device cuda --amp`: a latency table measured with CUDA events under
#      fp16 autocast + channels_last, and mobilenet_v3_large pruned to half its measured latency;
#   3. the latency benchmarks with --device cuda: bench/latency_budget.py (cost=latency beside
#      cost=macs, measured ratio vs target) and bench/latency.py (efficiency of MAC budgets).
# Exit status: 0 when every step ran, else the first failing step's status.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry" ]; then DRY=1; shift; fi
OUT=${1:-$(mktemp -d -t kpid_gpu_check.XXXXXX)}
DEVICE=${KPID_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export KPID_CACHE_DIR="$OUT/cache"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

case "$DEVICE" in
  cuda) ;;
  cpu) [ "$DRY" = 1 ] || { echo "error: KPID_CHECK_DEVICE=cpu only with --dry (the check is for a GPU)" >&2; exit 2; } ;;
  *) echo "error: KPID_CHECK_DEVICE=$DEVICE: allowed values: cuda, cpu" >&2; exit 2 ;;
esac
if [ "$DEVICE" = cuda ]; then
  $PY - <<'EOF' || exit 2
import sys, torch
if not torch.cuda.is_available():
    print(f"error: CUDA is not available (torch {torch.__version__}); run on a GPU machine", file=sys.stderr)
    sys.exit(2)
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
fi

if [ "$DRY" = 1 ]; then
  # tiny: step 2's table at 64 px, batch 8, 1 round per layer, 2 ms samples, one landing re-prune at most
  # (at batch 2 per-call overhead is ~60 % of this net's time on an idle CPU and was 85 % under a loaded
  # test run, which put budget 0.8 below the floors' cost; at batch 8 it is ~40 % idle); the trial with
  # two candidates, three timing rounds and 2 ms samples; step 3b on the small MobileNetV3 at one budget
  EPOCHS=1; TEACHER_EPOCHS=1; LAT_BATCH=2; PRUNE_BATCH=8; SIZE=64; PRUNE_MODEL=mobilenet_v3_small; BUDGET=0.9
  AMP=""; PRUNE_ARGS="--table-repeats 1 --land-rounds 1 --min-sample-s 0.002"; TRIAL_AMP=off; BENCH_ARGS="--dry --land-rounds 1"
  TRIAL_ARGS="--set prune.candidates=2 --set prune.candidate_batches=1 --set latency.repeats=3 --set latency.min_sample_s=0.002"
  LAT_ARGS="--dry --models mobilenet_v3_small --budgets 0.5"
else
  EPOCHS=3; TEACHER_EPOCHS=10; LAT_BATCH=64; PRUNE_BATCH=64; SIZE=224; PRUNE_MODEL=mobilenet_v3_large; BUDGET=0.5
  AMP="--amp"; PRUNE_ARGS=""; TRIAL_AMP=on; TRIAL_ARGS="--set latency.repeats=11"
  BENCH_ARGS="--batch 32 --repeats 15 --amp"
  LAT_ARGS="--device cuda --amp fp16 --models resnet50,mobilenet_v3_large --budgets 0.5,0.3 --repeats 15"
fi
status=0
step() {  # step NAME TIMEOUT_S CMD...: run, report its time, remember the first failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
}

step "1. trial on $DEVICE (AMP+channels_last: $TRIAL_AMP)" 120 \
  $PY -m kpid_core trial --quiet --out "$OUT/trial" --set train.device="$DEVICE" --set train.amp=$TRIAL_AMP \
  --set train.channels_last=$TRIAL_AMP --set epochs=$EPOCHS --set teacher.epochs=$TEACHER_EPOCHS --set budget=0.5 \
  --set latency.measure=on --set latency.batch=$LAT_BATCH $TRIAL_ARGS
if [ -f "$OUT/trial/metrics.json" ]; then
  $PY - "$OUT/trial/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"trial: test accuracy {m['accuracy']:.4f} (teacher {m['teacher_accuracy']:.4f}), MACs ratio {m['macs_ratio']:.3f}, "
      f"latency {m.get('latency_dense_ms', float('nan')):.3f} -> {m.get('latency_ms', float('nan')):.3f} ms "
      f"(ratio {m.get('latency_ratio', float('nan')):.3f}, batch {m.get('latency_batch')}, {m.get('latency_device')}), "
      f"fine-tune {m['times']['finetune_s']:.1f} s")
EOF
fi

step "2. prune --cost latency --device $DEVICE $AMP" 90 \
  $PY -m kpid_core prune --model $PRUNE_MODEL --input $SIZE --budget $BUDGET --metric l1 --cost latency \
  --device "$DEVICE" --batch $PRUNE_BATCH $AMP $PRUNE_ARGS --out "$OUT/pruned" --json

step "3a. bench/latency_budget.py --device $DEVICE" 150 \
  $PY bench/latency_budget.py --device "$DEVICE" $BENCH_ARGS --md "$OUT/BENCHMARKS.latency_budget.$DEVICE.md"

if [ "$DRY" = 1 ]; then
  step "3b. bench/latency.py (dry, cpu)" 90 $PY bench/latency.py $LAT_ARGS --md "$OUT/BENCHMARKS.latency.$DEVICE.md"
else
  step "3b. bench/latency.py --device cuda --amp fp16" 120 \
    $PY bench/latency.py $LAT_ARGS --md "$OUT/BENCHMARKS.latency.$DEVICE.md"
fi
echo "figures in $OUT (exit $status)"
exit $status
