#!/usr/bin/env bash
# Installs the Debian packages siam needs, or prints the exact command when not root.
#   scripts/deps.sh build      compiler, CMake, BLAS, GoogleTest, Benchmark, JSON, zlib, gnuplot (siam plot),
#                              OpenMPI (mpirun tests), Fashion-MNIST (the studies' smoke tests)
#   scripts/deps.sh reference  + PyTorch and NumPy, for regenerating fixtures
#   scripts/deps.sh data       + Fashion-MNIST
set -euo pipefail
want=(cmake ninja-build g++ make libopenblas-dev libgtest-dev libbenchmark-dev nlohmann-json3-dev zlib1g-dev libcli11-dev libstb-dev libtomlplusplus-dev gnuplot-nox libopenmpi-dev openmpi-bin dataset-fashion-mnist)
for group in "$@"; do
  case "$group" in
    build) ;;
    reference) want+=(python3 python3-torch python3-torchvision python3-numpy python3-scipy python3-sklearn) ;;
    data) want+=(dataset-fashion-mnist) ;;
    *) echo "deps.sh: unknown group '$group' (expected build, reference or data)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
else
  echo "deps.sh: missing Debian packages. Run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
