#!/usr/bin/env bash
# The Fashion-MNIST quality benchmarks on one CUDA GPU, as one prepared script (no Ray, no Optuna, no
# network): the allocation search on seeds 0-2, then quality + ablation on seeds 3-7 with the
# product's defaults, many small trainings at once (--jobs). Each phase has its own time limit; every
# finished (seed, budget, method) is cached at once, so a phase cut short still reports what it has.
#   bash bench/gpu_quality.sh OUT_DIR [SEARCH_S] [QUALITY_S]
# Needs the Fashion-MNIST IDX files ($KPID_FASHION_MNIST or Debian's folder) and torch-pruning.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash bench/gpu_quality.sh OUT_DIR [SEARCH_S] [QUALITY_S]}
search_s=${2:-200}
quality_s=${3:-280}
mkdir -p "$out"
cache="$out/cache"
export PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" || exit 2
common=(--setting gpu --device cuda --cache "$cache")
# Both phases share the GPU: the search (6 jobs) and the final benchmark (15 jobs) run side by side.
timeout "$search_s" python3 bench/allocation_search.py "${common[@]}" --seeds 0-2 --jobs 6 \
    --json "$out/search.json" > "$out/search.log" 2>&1 &
timeout "$quality_s" python3 bench/quality.py "${common[@]}" --seeds 3-7 --jobs 15 \
    --methods ours,tp_plain,tp_kd,uniform_kd,no_kd,logits_kd,mnv3_small,effnet_b0,mnv3_large \
    > "$out/quality_run.log" 2>&1 &
wait
# Summaries from the cache (whatever finished), then the result files without the weights.
python3 bench/allocation_search.py "${common[@]}" --seeds 0-2 --no-run --md "$out/search.md" --json "$out/search.json"
python3 bench/quality.py "${common[@]}" --seeds 3-7 --no-run --md "$out/quality.md"
python3 bench/ablation.py "${common[@]}" --seeds 3-7 --no-run --md "$out/ablation.md"
tar czf "$out/results.tgz" --exclude='*.pt' -C "$out" cache
