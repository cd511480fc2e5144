#!/usr/bin/env bash
# Runs every command of docs/tutorial.md, in order, as written: the lines of its ```sh blocks
# (a line ending in \ continues on the next). Stops at the first command that fails and names it.
#
#   scripts/run_tutorial.sh [--smoke] [BUILD_DIR]
#
# Skipped: `make ...` (the build the tutorial starts with; the caller has built) and
# `tensorboard ...` (a viewer, not installed by siam).
# --smoke (the test `tutorial` in `make test`) shrinks the runs to seconds and writes to a
# temporary folder instead of runs/tutorial:
#   siam pretrain  + --set data.limit=256 run.epochs=1 run.batch_size=32 data.heldout=64 data.knn_bank=128
#   siam knn       + --set data.limit=256 data.test_limit=256
#   siam linear    + the same, and --epochs 2
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
DOC=docs/tutorial.md
[ -f "$DOC" ] || { echo "run_tutorial.sh: $DOC not found" >&2; exit 2; }
WORK=runs/tutorial
if [ $SMOKE = 1 ]; then
  WORK=$(mktemp -d /tmp/siam-tutorial.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"

# The commands: inside ```sh fences, continuation lines joined, comments and blanks dropped.
mapfile -t COMMANDS < <(awk '
  /^```sh[[:space:]]*$/ { inside = 1; next }
  /^```/ { inside = 0; next }
  inside {
    line = $0
    if (cont != "") { line = cont " " line; cont = "" }
    if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); cont = line; next }
    if (line ~ /^[[:space:]]*(#|$)/) next
    print line
  }' "$DOC")
[ ${#COMMANDS[@]} -gt 0 ] || { echo "run_tutorial.sh: no commands in $DOC" >&2; exit 2; }

n=0
for cmd in "${COMMANDS[@]}"; do
  n=$((n + 1))
  case "$cmd" in
    make\ *|tensorboard\ *) echo "[$n/${#COMMANDS[@]}] skipped: $cmd"; continue ;;
  esac
  run=${cmd//build\//$BUILD/}
  run=${run//runs\/tutorial/$WORK}
  if [ $SMOKE = 1 ]; then
    case "$run" in
      *"/siam pretrain "*)
        run+=" --set data.limit=256 --set run.epochs=1 --set run.batch_size=32 --set data.heldout=64 --set data.knn_bank=128" ;;
      *"/siam knn "*) run+=" --set data.limit=256 --set data.test_limit=256" ;;
      *"/siam linear "*)
        run+=" --set data.limit=256 --set data.test_limit=256"
        [[ "$run" == *"--epochs"* ]] || run+=" --epochs 2" ;;
    esac
  fi
  echo "[$n/${#COMMANDS[@]}] $cmd"
  if ! bash -c "set -eo pipefail; $run"; then
    echo "run_tutorial.sh: command $n of $DOC failed: $cmd" >&2
    exit 1
  fi
done
echo "run_tutorial.sh: all ${#COMMANDS[@]} commands of $DOC ran"
