#!/usr/bin/env bash
# Issue #8's side-by-side GPU measurement: for each config, `siam bench CONFIG` and its PyTorch
# twin (bench/ssl_step_torch.py) in each mode, on the same GPU in the same run. Every result
# (or error) is one JSON line appended to a results file; a markdown table of all results in
# that file is printed at the end (and written beside it). A failing run is recorded and the
# script goes on. Run it on the GPU machine from the repo root after scripts/gpu_bundle.sh
# (docs/performance.md):
#
#   bash bench/gpu_side_by_side.sh [--siam .gpu/bin/siam] [--results runs/gpu_side_by_side/results.jsonl]
#        [--modes "eager-f32 eager-bf16 compile-bf16"] [--no-siam] [--steps 30] [--warmup 10]
#        [--timeout 600] [--python python3] [--set KEY=VALUE]... [JOB...]
#   bash bench/gpu_side_by_side.sh --table [--results FILE]     # only print the table
#
# A JOB is a config file, optionally with overrides for both programs joined by '+':
#   configs/bench/dino_vit_small16_224px.toml+pairs.local_crops=0
# The default jobs: every configs/bench/*.toml with run.device = "cuda" (the DINO file is
# issue #8's 2 x 224 + 6 x 96 multi-crop step), plus that DINO step with global crops only. Results accumulate across calls (the file is
# appended to), so a long sweep can be split into calls that each fit a time limit: one job,
# or one mode, per call. When $OUT is set, the results, the table and the logs are also
# copied there after each job.
set -uo pipefail
cd "$(dirname "$0")/.."

siam=.gpu/bin/siam
results=runs/gpu_side_by_side/results.jsonl
modes="eager-f32 eager-bf16 compile-bf16"
steps=30
warmup=10
timeout_s=600
python=python3
table_only=0
run_siam=1
sets=()
jobs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --siam) siam="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --set) sets+=("$2"); shift 2 ;;
    --no-siam) run_siam=0; shift ;;
    --table) table_only=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) echo "gpu_side_by_side.sh: unknown option '$1'" >&2; exit 2 ;;
    *) jobs+=("$1"); shift ;;
  esac
done
command -v "$python" >/dev/null || { echo "gpu_side_by_side.sh: $python not found" >&2; exit 1; }
mkdir -p "$(dirname "$results")"
logs="$(dirname "$results")/logs"
mkdir -p "$logs"

# One JSON line for the results file: the program's last JSON line with "config" added, or an
# error record with the last lines of its stderr.
record() {  # impl mode config rc stdout_file stderr_file elapsed_ms
  "$python" - "$@" <<'PY' >>"$results"
import json, sys, time
impl, mode, config, rc, out, err, ms = sys.argv[1:8]
line = None
for l in open(out, errors="replace").read().splitlines():
    l = l.strip()
    if l.startswith("{"):
        try:
            line = json.loads(l)
        except ValueError:
            pass
errs = [l for l in open(err, errors="replace").read().splitlines() if l.strip()]
if line is not None and rc == "0":
    rec = line
else:
    what = {"124": "timed out", "137": "killed (timeout or memory)"}.get(rc, f"exit status {rc}")
    rec = {"bench": "pretrain_step", "impl": impl, "error": (errs[-1] if errs else what), "rc": int(rc),
           "stderr_tail": errs[-6:]}
rec["config"] = config
if impl == "pytorch":
    rec.setdefault("mode", mode)
else:
    rec["mode"] = "siam"
rec["wall_s"] = int(ms) / 1000  # the whole program: start-up, data, compile, FLOP count, steps
rec["recorded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
print(json.dumps(rec))
PY
}

table() {
  "$python" - "$results" <<'PY'
import json, sys
path = sys.argv[1]
rows = {}  # config -> mode -> latest record
for l in open(path, errors="replace"):
    l = l.strip()
    if not l:
        continue
    try:
        r = json.loads(l)
    except ValueError:
        continue
    rows.setdefault(r.get("config", "?"), {})[r.get("mode", "?")] = r
def ms(r):
    return None if r is None or "error" in r else r.get("ms_per_step")
def cell_ms(r):
    if r is None: return "-"
    if "error" in r: return "error"
    return f"{r['ms_per_step']:.1f}"
def cell_mem(r):
    if r is None or "error" in r or r.get("peak_gpu_mib") is None: return "-"
    return f"{r['peak_gpu_mib'] / 1024:.1f}"
def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"
print("| config | siam ms | PyTorch eager-f32 ms | PyTorch eager-bf16 ms | PyTorch compile-bf16 ms "
      "| siam / eager-bf16 | siam / compile | peak GiB siam / eager-bf16 / compile | TFLOP/s siam / eager-bf16 / compile |")
print("|---|---|---|---|---|---|---|---|---|")
errors = []
for cfg in sorted(rows):
    m = rows[cfg]
    s, f32, bf, co = m.get("siam"), m.get("eager-f32"), m.get("eager-bf16"), m.get("compile-bf16")
    flops = next((r.get("flops_per_step") for r in (bf, co, f32) if r and r.get("flops_per_step")), None)
    def tf(r):
        t = ms(r)
        return f"{flops / (t / 1000) / 1e12:.1f}" if flops and t else "-"
    name = cfg.rsplit("/", 1)[-1].replace(".toml", "")
    co_ms = cell_ms(co)
    if co and "error" not in co and not str(co.get("compile_used", "")).startswith("torch.compile"):
        co_ms += " (eager fallback)"
    print(f"| {name} | {cell_ms(s)} | {cell_ms(f32)} | {cell_ms(bf)} | {co_ms} | {ratio(ms(s), ms(bf))} "
          f"| {ratio(ms(s), ms(co))} | {cell_mem(s)} / {cell_mem(bf)} / {cell_mem(co)} | {tf(s)} / {tf(bf)} / {tf(co)} |")
    for mode, r in sorted(m.items()):
        if r and "error" in r:
            errors.append(f"- {name} [{mode}]: {r['error']}")
gpu = next((r.get("gpu") for m in rows.values() for r in m.values() if r.get("gpu")), None)
tv = next((r.get("torch_version") for m in rows.values() for r in m.values() if r.get("torch_version")), None)
print(f"\nGPU: {gpu or '?'}; PyTorch {tv or '?'}; median ms per step; ratio > 1: siam is slower. "
      "TFLOP/s: the twin's FLOP count of the step over each time.")
if errors:
    print("\nErrors (the last stderr line of each failed run):")
    print("\n".join(errors))
PY
}

copy_out() {
  [ -n "${OUT:-}" ] || return 0
  mkdir -p "$OUT"
  cp "$results" "$OUT/" 2>/dev/null
  cp "${results%.jsonl}.md" "$OUT/" 2>/dev/null
  mkdir -p "$OUT/logs" && cp "$logs"/*.log "$OUT/logs/" 2>/dev/null
  return 0
}

if [ "$table_only" = 1 ]; then
  [ -s "$results" ] || { echo "gpu_side_by_side.sh: no results in $results" >&2; exit 1; }
  table | tee "${results%.jsonl}.md"
  copy_out
  exit 0
fi

if [ ${#jobs[@]} -eq 0 ]; then
  for f in configs/bench/*.toml; do
    grep -Eq '^device *= *"cuda"' "$f" && jobs+=("$f")
  done
  [ -f configs/bench/dino_vit_small16_224px.toml ] && jobs+=("configs/bench/dino_vit_small16_224px.toml+pairs.local_crops=0")
fi
configs=()
for job in "${jobs[@]}"; do
  cfg="${job%%+*}"
  [ -f "$cfg" ] || { echo "gpu_side_by_side.sh: config not found: $cfg" >&2; exit 2; }
  configs+=("$cfg")
done

# The configs read generated RGB images (siam has no synthetic data set): 1024 PPM images of
# random 8x8 colour blocks, 64x64, in 4 class folders; resized on load to data.image_size.
if grep -lq 'data-cache/bench-rgb' "${configs[@]}" 2>/dev/null && [ ! -d data-cache/bench-rgb ]; then
  echo "gpu_side_by_side.sh: writing data-cache/bench-rgb (1024 generated RGB images)" >&2
  "$python" - <<'PY'
import os, random
rng = random.Random(0)
root = "data-cache/bench-rgb"
for i in range(1024):
    d = os.path.join(root, f"class{i % 4}")
    os.makedirs(d, exist_ok=True)
    rows = []
    for _ in range(8):
        row = b"".join(bytes(rng.randrange(256) for _ in range(3)) * 8 for _ in range(8))
        rows.append(row * 8)
    with open(os.path.join(d, f"{i:04d}.ppm"), "wb") as f:
        f.write(b"P6\n64 64\n255\n" + b"".join(rows))
PY
fi

# siam (built on the development machine) needs the libraries gpu_bundle.sh gathered and the
# cuDNN 9.19 of PyTorch's wheel; the twin keeps its own environment.
siam_ld="$PWD/.gpu/lib"
for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib; do
  [ -d "$d" ] && siam_ld="$siam_ld:$d"
done
siam_ld="$siam_ld:${LD_LIBRARY_PATH:-}"
set_args=()
for s in "${sets[@]+"${sets[@]}"}"; do set_args+=(--set "$s"); done

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader >&2

for job in "${jobs[@]}"; do
  cfg="${job%%+*}"
  job_sets=()
  if [ "$job" != "$cfg" ]; then
    IFS='+' read -r -a extra <<<"${job#*+}"
    for s in "${extra[@]}"; do job_sets+=(--set "$s"); done
  fi
  name="$(basename "$job" | sed 's/\.toml//; s/[^A-Za-z0-9_.=+-]/_/g')"
  if [ "$run_siam" = 1 ]; then
    log="$logs/${name}_siam"
    echo "== $name: siam bench" >&2
    t0=$(date +%s%N)
    if [ -x "$siam" ]; then
      LD_LIBRARY_PATH="$siam_ld" timeout -k 10 "$timeout_s" "$siam" bench "$cfg" --steps "$steps" --warmup "$warmup" \
        "${set_args[@]+"${set_args[@]}"}" "${job_sets[@]+"${job_sets[@]}"}" >"$log.out" 2>"$log.log"
      rc=$?
    else
      echo "siam executable not found: $siam (run scripts/gpu_bundle.sh and carry .gpu, or pass --siam)" >"$log.log"
      : >"$log.out"
      rc=127
    fi
    record siam siam "$job" "$rc" "$log.out" "$log.log" "$(( ($(date +%s%N) - t0) / 1000000 ))"
    tail -1 "$results" >&2
  fi
  for mode in $modes; do
    log="$logs/${name}_${mode}"
    echo "== $name: PyTorch $mode" >&2
    t0=$(date +%s%N)
    timeout -k 10 "$timeout_s" "$python" bench/ssl_step_torch.py --config "$cfg" --mode "$mode" \
      --steps "$steps" --warmup "$warmup" "${set_args[@]+"${set_args[@]}"}" "${job_sets[@]+"${job_sets[@]}"}" \
      >"$log.out" 2>"$log.log"
    rc=$?
    record pytorch "$mode" "$job" "$rc" "$log.out" "$log.log" "$(( ($(date +%s%N) - t0) / 1000000 ))"
    tail -1 "$results" >&2
  done
  table >"${results%.jsonl}.md"  # kept current, so a call cut short still leaves a table
  copy_out
done

echo >&2
table | tee "${results%.jsonl}.md"
copy_out
