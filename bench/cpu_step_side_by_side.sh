#!/usr/bin/env bash
# The CPU SimCLR step of issue #4, siam beside PyTorch in one run: a small-input ResNet-18 on
# 1x28x28 views, batch 64 pairs, projector 2048-2048(BN, ReLU)-128, NT-Xent, SGD
# (configs/bench/simclr_resnet18_28px.toml and its twin bench/simclr_step_torch.py).
# The two are run alternately ROUNDS times (siam, torch, siam, torch, ...) so that a busy
# machine slows both alike; each run times 10 steps after 3 warm-up steps. Prints every
# run's JSON line, then the median over rounds of each run's median ms/step, the best
# run's, and the ratio siam / PyTorch (below 1: siam is faster).
#
#   bench/cpu_step_side_by_side.sh [ROUNDS=3] [THREADS=2]
#   BUILD=build-other bench/cpu_step_side_by_side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${2:-2}
BUILD=${BUILD:-build}
SIAM=${SIAM:-$BUILD/siam}
PY=${PYTHON:-/usr/bin/python3}
[[ -x $SIAM ]] || { echo "cpu_step_side_by_side: $SIAM not found; run 'make build' first (or set SIAM=)" >&2; exit 1; }
$PY -c "import torch" 2>/dev/null || { echo "cpu_step_side_by_side: PyTorch is not importable by $PY; install python3-torch (scripts/deps.sh reference)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "# machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds, $THREADS threads"
for ((r = 1; r <= ROUNDS; ++r)); do
  "$SIAM" bench configs/bench/simclr_resnet18_28px.toml --set run.threads="$THREADS" | grep '^{' | tail -1 | tee -a "$log"
  OMP_NUM_THREADS=$THREADS $PY bench/simclr_step_torch.py --threads "$THREADS" | grep '^{' | tail -1 | tee -a "$log"
done
$PY - "$log" <<'PYEOF'
import json, statistics, sys
runs = {"siam": [], "pytorch": []}
for line in open(sys.argv[1]):
    j = json.loads(line)
    runs[j["impl"]].append(j)
med = {k: statistics.median(r["ms_per_step"] for r in v) for k, v in runs.items()}
best = {k: min(r["ms_min"] for r in v) for k, v in runs.items()}
tv = runs["pytorch"][0].get("torch_version", "?")
print(f"siam    ms/step: median of run medians {med['siam']:.0f}, best step {best['siam']:.0f}")
print(f"PyTorch ms/step: median of run medians {med['pytorch']:.0f}, best step {best['pytorch']:.0f} (torch {tv})")
print(f"ratio siam / PyTorch: {med['siam'] / med['pytorch']:.3f} (medians), {best['siam'] / best['pytorch']:.3f} (best steps)")
PYEOF
