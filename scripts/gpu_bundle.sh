#!/usr/bin/env bash
# Prepares a run on the GPU machine (../shared/gpu.md): builds the CUDA executables here for
# the H100 (sm_90) and gathers them, the shared libraries the GPU machine lacks (OpenBLAS and
# its Fortran runtime, toml++) and Fashion-MNIST into .gpu/ (git-ignored, under 64 MiB; apps
# read it with --set data.root=.gpu/data/fashion-mnist), so a
# run there only needs the working tree plus .gpu/. Then, on the GPU machine, from the repo
# root:  bash scripts/gpu_check.sh tests|sanitize|bench|all
#
#   scripts/gpu_bundle.sh [--arch 90] [--build build-gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=90
build=build-gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "gpu_bundle.sh: unknown argument '$1' (expected --arch N or --build DIR)" >&2; exit 2 ;;
  esac
done
command -v nvcc >/dev/null || { echo "gpu_bundle.sh: nvcc not found: the CUDA toolkit is needed to build for the GPU" >&2; exit 1; }
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$arch" -DSIAM_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j "$(nproc)" --target siam siam_tests siam_cuda_tests siam_bench siam_bench_cuda
rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib .gpu/data/fashion-mnist
for exe in siam siam_tests siam_cuda_tests siam_bench siam_bench_cuda; do
  cp "$build/$exe" .gpu/bin/
  strip --strip-unneeded .gpu/bin/$exe 2>/dev/null || true
done
# Libraries the GPU machine (Ubuntu 24.04 + CUDA 13 + cuDNN) does not have.
for exe in .gpu/bin/*; do
  ldd "$exe" | awk '/=> \//{print $1, $3}' | while read -r name path; do
    case "$name" in
      libopenblas*|libgfortran*|libquadmath*|libtomlplusplus*) cp -L "$path" ".gpu/lib/$name" ;;
    esac
  done
done
if [ -d /usr/share/datasets/fashion-mnist ]; then
  cp /usr/share/datasets/fashion-mnist/*.gz .gpu/data/fashion-mnist/
else
  echo "gpu_bundle.sh: Fashion-MNIST not installed (scripts/deps.sh data); .gpu/data left empty" >&2
fi
du -sh .gpu
echo "carry .gpu to the GPU machine and run: bash scripts/gpu_check.sh all"
