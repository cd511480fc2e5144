#!/usr/bin/env bash
# The demo (`make demo`): SimCLR pretraining on Fashion-MNIST, then the linear-probe and kNN
# accuracy of the pretrained backbone beside the same probes on a randomly initialised
# backbone of the same architecture and on raw pixels, with the wall time.
#
#   scripts/demo.sh [BUILD_DIR]     (default: $BUILD, else build)
#
# With a GPU (`siam info` lists one) it runs the full recipe on it; without, the CPU recipe.
# On a machine where siam is already built (the GPU machine, see scripts/gpu_bundle.sh):
#   SIAM=.gpu/bin/siam DATA_ROOT=.gpu/data/fashion-mnist scripts/demo.sh
#
# Trying another recipe: DEMO_CONFIG=path.toml and DEMO_SET="key=value key=value" (overrides
# for pretraining only; the probes stay the same).
#
# Writes runs/demo/ (DEMO_OUT overrides): pretrain/ (config, metrics.jsonl, TensorBoard
# events, checkpoint), eval.jsonl (every probe's JSON line), results.md (the table),
# curves.png (siam plot of the pretraining run).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD:-build}}
OUT=${DEMO_OUT:-runs/demo}
SIAM=${SIAM:-$BUILD/siam}
DATA_ROOT=${DATA_ROOT:-}

# The CPU recipe finishes pretraining and evaluation in 8-9 minutes on 2 cores; the GPU
# recipe is the full Fashion-MNIST one with fewer epochs (configs/fashion_mnist/simclr_gpu.toml).
CPU_RECIPE=configs/fashion_mnist/simclr_cpu.toml
GPU_RECIPE=configs/fashion_mnist/simclr_gpu.toml
# The probes' protocol, the same for the three feature sets: the first EVAL_TRAIN training
# images (all 10,000 test images are scored), kNN with k = 20, a linear layer trained with SGD.
EVAL_TRAIN=${EVAL_TRAIN:-10000}
PROBE_FLAGS=(--epochs 30 --probe-batch 1024 --lr 0.5)

if [ "$SIAM" = "$BUILD/siam" ]; then
  scripts/deps.sh build data
  [ -f "$BUILD/build.ninja" ] || cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD" --target siam
fi
DATA_SET=()
[ -n "$DATA_ROOT" ] && DATA_SET=(--set "data.root=\"$DATA_ROOT\"")

CONFIG=$CPU_RECIPE
WHERE="the CPU"
if grep -q '^GPU cuda:' <<<"$("$SIAM" info)"; then
  CONFIG=$GPU_RECIPE
  WHERE="$(grep -m1 '^GPU cuda:' <<<"$("$SIAM" info)" | cut -d, -f1)"
fi
CONFIG=${DEMO_CONFIG:-$CONFIG}
PRETRAIN_SET=()
for kv in ${DEMO_SET:-}; do PRETRAIN_SET+=(--set "$kv"); done
echo "demo: pretraining with $CONFIG on $WHERE"

rm -rf "$OUT"
mkdir -p "$OUT"
t0=$(date +%s)
"$SIAM" pretrain "$CONFIG" --output "$OUT/pretrain" "${DATA_SET[@]}" "${PRETRAIN_SET[@]}"
t1=$(date +%s)

CKPT=$OUT/pretrain/checkpoint.safetensors
declare -A LINEAR KNN
for features in backbone random pixels; do
  "$SIAM" knn "$CKPT" --features "$features" --k 20 --set data.limit="$EVAL_TRAIN" "${DATA_SET[@]}" | tee -a "$OUT/eval.log" |
    grep '^{' >>"$OUT/eval.jsonl"
  KNN[$features]=$(tail -n 1 "$OUT/eval.jsonl" | sed -n 's/.*"top1":{"20":\([0-9.]*\).*/\1/p')
  "$SIAM" linear "$CKPT" --features "$features" "${PROBE_FLAGS[@]}" --set data.limit="$EVAL_TRAIN" "${DATA_SET[@]}" |
    tee -a "$OUT/eval.log" | grep '^{' >>"$OUT/eval.jsonl"
  LINEAR[$features]=$(tail -n 1 "$OUT/eval.jsonl" | sed -n 's/.*"top1":\([0-9.]*\).*/\1/p')
done
t2=$(date +%s)

# The method's name as the run's own config gives it (a DEMO_SET may have changed it).
METHOD=$(awk '/^\[/{m=($0=="[method]")} m && /^name *=/{gsub(/[" ]/,""); sub(/^name=/,""); print; exit}' \
  "$OUT/pretrain/config.toml")
case "$METHOD" in
  simclr) METHOD=SimCLR ;; moco) METHOD="MoCo v2" ;; byol) METHOD=BYOL ;; simsiam) METHOD=SimSiam ;;
  dino) METHOD=DINO ;; vicreg) METHOD=VICReg ;; barlow) METHOD="Barlow Twins" ;;
esac
{
  echo "## siam demo: $METHOD on Fashion-MNIST ($CONFIG, on $WHERE)"
  echo
  echo "Probes on the frozen features: linear layer (SGD, ${PROBE_FLAGS[*]}) and weighted kNN (k = 20,"
  echo "T = 0.07), trained on the first $EVAL_TRAIN training images, scored on the 10,000 test images."
  echo
  echo "| features | linear probe top-1 | kNN top-1 |"
  echo "|---|---|---|"
  printf '| %s-pretrained backbone | %s%% | %s%% |\n' "$METHOD" "${LINEAR[backbone]}" "${KNN[backbone]}"
  printf '| randomly initialised backbone (same architecture) | %s%% | %s%% |\n' "${LINEAR[random]}" "${KNN[random]}"
  printf '| raw pixels | %s%% | %s%% |\n' "${LINEAR[pixels]}" "${KNN[pixels]}"
  echo
  echo "Wall time: pretraining $((t1 - t0)) s, evaluation $((t2 - t1)) s, total $((t2 - t0)) s" \
       "($(nproc) cores, $(uname -m))."
} >"$OUT/results.md"
echo
cat "$OUT/results.md"
echo
"$SIAM" plot "$OUT/pretrain" --output "$OUT/curves.png" >/dev/null
echo "demo: results in $OUT/results.md and $OUT/eval.jsonl; training curves in $OUT/curves.png" \
     "(loss, lr, kNN monitor) and for TensorBoard: tensorboard --logdir $OUT/pretrain"
