#!/usr/bin/env bash
# The Fashion-MNIST quality benchmarks on one CUDA GPU as one prepared script (no Ray, no Optuna, no
# network), many small trainings at once (--jobs):
#   1. the allocation search on seeds 0-2 (winner chosen on validation accuracy), and beside it the
#      methods that do not depend on the winner (Torch-Pruning, uniform, from-scratch baselines) on
#      seeds 3-7;
#   2. then ours / no_kd / logits_kd with the winner's settings on seeds 3-7 (held out from the search).
# Each step has a time limit; every finished (seed, budget, method) is cached at once, so a step cut
# short still reports what it has. Needs the Fashion-MNIST IDX files and torch-pruning.
#   bash bench/gpu_quality.sh OUT_DIR [SEARCH_S] [FINAL_S] [TOTAL_S]
# (KPID_BENCH_CACHE: cache folder, default OUT_DIR/cache; SETTING, DEVICE: default gpu, cuda.)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/gpu_quality.sh OUT_DIR [SEARCH_S] [FINAL_S] [TOTAL_S]}
search_s=${2:-230}
final_s=${3:-200}
total_s=${4:-450}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ "${DEVICE:-cuda}" = cuda ]; then
  python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" || exit 2
fi
cache=${KPID_BENCH_CACHE:-$out/cache}
common=(--setting "${SETTING:-gpu}" --device "${DEVICE:-cuda}" --cache "$cache")
timeout "$total_s" python3 bench/quality.py "${common[@]}" --seeds 3-7 --jobs 8 \
    --methods mnv3_small,effnet_b0,mnv3_large,tp_plain,tp_kd,uniform_kd > "$out/baselines.log" 2>&1 &
timeout "$search_s" python3 bench/allocation_search.py "${common[@]}" --seeds 0-2 --jobs 10 \
    --json "$out/search.json" > "$out/search.log" 2>&1
python3 bench/allocation_search.py "${common[@]}" --seeds 0-2 --no-run --json "$out/search.json" --md "$out/search.md"
timeout "$final_s" python3 bench/quality.py "${common[@]}" --seeds 3-7 --jobs 10 --winner "$out/search.json" \
    --methods ours,no_kd,logits_kd > "$out/final.log" 2>&1
wait
python3 bench/quality.py "${common[@]}" --seeds 3-7 --no-run --md "$out/quality.md" > /dev/null
python3 bench/ablation.py "${common[@]}" --seeds 3-7 --no-run --md "$out/ablation.md" > /dev/null
tar czf "$out/results.tgz" --exclude='*.pt' -C "$(dirname "$cache")" "$(basename "$cache")"
ls -la "$out"
