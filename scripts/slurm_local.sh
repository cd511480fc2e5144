#!/usr/bin/env bash
# Runs one command inside a throwaway single-node Slurm cluster, then tears it down.
#
#   scripts/slurm_local.sh -- srun -n 2 --mpi=pmix build/siam pretrain ...
#
# Exists so CI can check that siam behaves the same under `srun --mpi=pmix` (direct
# launch through Slurm's PMIx server) as under mpirun, on a machine that has no Slurm
# running. Everything the cluster needs (config, munge key, state, logs, sockets) lives
# in one mktemp directory, so several runs can coexist and nothing is left behind.
#
# Exit status: the command's own, or 2 when the cluster cannot be set up (missing
# packages while not root, daemons that do not come up).
#
# Environment knobs (all optional):
#   SLURM_LOCAL_CPUS     CPUs the node advertises (default: nproc). Raising it lets
#                        `srun -n N` start more tasks than cores without -O/--overcommit,
#                        and turns CPU binding off (see TaskPlugin below).
#   SLURM_LOCAL_TIMEOUT  seconds to wait for the node to become idle (default 30).
#   SLURM_LOCAL_KEEP=1   keep the temp dir (logs) after exit, for debugging.
set -euo pipefail

me=slurm_local.sh
die() { echo "$me: $*" >&2; exit 2; }

# ---------------------------------------------------------------- arguments
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || die "usage: scripts/slurm_local.sh -- COMMAND [ARGS...]"

# ---------------------------------------------------------------- packages
# slurmctld/slurmd/slurm-client are the pieces of the slurm-wlm metapackage we use;
# --no-install-recommends skips ~30 optional plugin packages (HDF5, ROCm, IPMI...).
# libpmix2 and libpmix-dev are not optional although no Slurm package depends on
# them: Debian's mpi/pmix plugin dlopen()s the *unversioned* pmix2/lib/libpmix.so,
# which only the -dev package ships; without it `srun --mpi=pmix` has no PMIx server.
want=(slurmctld slurmd slurm-client munge libpmix2 libpmix-dev)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "$me: missing Debian packages. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 2
  fi
  echo "$me: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# slurmd must be root to switch to the job's user and to own the step daemons; a
# rootless Slurm is possible in theory but not something this script tries.
[ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs as root)"

# ---------------------------------------------------------------- teardown
# Declared before anything is started so a failure half-way still cleans up.
tmp=$(mktemp -d /tmp/slurm_local.XXXXXX)
# munged wants every parent of its socket traversable by all (else it warns) and none
# of them writable by others (else it refuses); 711 satisfies both without listing.
chmod 711 "$tmp"
pids=()            # daemons we started, in start order
names=()           # their names, same order, for messages
cmd_pid=""         # the user's command while it runs
watchdog=""
stopped=()         # every PID teardown signalled, to wait for their /proc entries

# Everything this cluster spawned carries our SLURM_CONF (a unique temp path) in its
# environment: the daemons, slurmstepd (which double-forks away from slurmd, so it is
# not our child) and the job's tasks (which slurmstepd leaves orphaned if it is killed
# first). That makes stray processes findable by PID without matching names. This
# shell and its subshells are excluded: their environ is the one bash started with.
our_procs() {
  local f p
  # One grep over all environ files (-z: NUL-separated entries); a tr|grep per
  # process costs seconds here, where forks are slow.
  # shellcheck disable=SC2013  # /proc paths have no spaces
  for f in $(grep -lsxzF "SLURM_CONF=$tmp/slurm.conf" /proc/[0-9]*/environ); do
    p=${f#/proc/}
    p=${p%/environ}
    [ "$p" = $$ ] || [ "$p" = "$BASHPID" ] || echo "$p"
  done
  return 0
}

# True while PID runs. kill -0 alone is not enough: a process that died after its
# parent (us) was killed stays a zombie until init reaps it, which can take a while.
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }          # the state letter follows the parenthesised command name
  [ "${st%% *}" != Z ]
}

# True while any of the PIDs runs.
any_alive() {
  local p
  for p in "$@"; do alive "$p" && return 0; done
  return 1
}

# stop_pids [-w TENTHS] PID...: optionally wait TENTHS/10 s for the PIDs to exit on
# their own, then TERM them, give them up to 5 s, then KILL what is left.
stop_pids() {
  local grace=0 i
  [ "${1:-}" = -w ] && { grace=$2; shift 2; }
  [ $# -gt 0 ] || return 0
  stopped+=("$@")
  for ((i = 0; i < grace; i++)); do any_alive "$@" || return 0; sleep 0.1; done
  kill -TERM "$@" 2>/dev/null
  for _ in $(seq 50); do any_alive "$@" || return 0; sleep 0.1; done
  kill -KILL "$@" 2>/dev/null
  return 0
}

# our_procs minus the daemons and their direct children (slurmctld's slurmscriptd
# ignores TERM and is stopped by slurmctld itself; killing it first makes slurmctld's
# shutdown hang): step daemons, tasks, helpers.
strays() {
  local p q st
  for p in $(our_procs); do
    st=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    st=${st##*) }       # "S PPID ..."
    st=${st#* }
    for q in "${pids[@]}"; do [ "$p" = "$q" ] || [ "${st%% *}" = "$q" ] && continue 2; done
    echo "$p"
  done
}

# The whole teardown, shared by the EXIT trap and the watchdog below.
teardown() {
  local i p order=()
  # A command still running (we were interrupted) goes first, while slurmctld is
  # still there to cancel its step; srun otherwise retries the controller for ever.
  [ -n "$cmd_pid" ] && stop_pids "$cmd_pid"
  # slurmstepd outlives srun by a moment while it reports the step's end to slurmd
  # and slurmctld; let it, since a slurmd stopped under it hangs in shutdown for
  # seconds. Anything still there after 3 s (tasks of a cancelled step) is stopped.
  # shellcheck disable=SC2046
  stop_pids -w 30 $(strays)
  # Daemons in reverse start order (slurmd, slurmctld, munged), so none spends its
  # grace period retrying a peer that is already gone.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do order+=("${pids[i]}"); done
  stop_pids "${order[@]}"
  # Whatever slipped through (e.g. forked while we were stopping things).
  # shellcheck disable=SC2046
  stop_pids $(our_procs)
  # Orphans (slurmstepd) linger as zombies until init reaps them, which this sandbox's
  # init does lazily; wait up to 3 s so a `pgrep slurm` right after us finds nothing.
  for _ in $(seq 30); do
    for p in "${stopped[@]}"; do [ -e "/proc/$p" ] && { sleep 0.1; continue 2; }; done
    break
  done
  [ "${SLURM_LOCAL_KEEP:-0}" = 1 ] || rm -rf "$tmp"
}

# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  [ -n "$watchdog" ] && kill -KILL "$watchdog" 2>/dev/null
  teardown
  for p in "${pids[@]}" $cmd_pid; do wait "$p" 2>/dev/null; done
  [ "${SLURM_LOCAL_KEEP:-0}" = 1 ] && echo "$me: kept $tmp" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show_logs [LINES [DAEMONS]]: prints the tail of each daemon log, for "why did it
# not come up" messages. The *.out files hold what a daemon printed before it opened
# its log file (bad config, port in use), so they are shown only when the log is empty.
show_logs() {
  local d f
  for d in ${2:-munged slurmctld slurmd}; do
    f=$tmp/log/$d.log
    [ -s "$f" ] || f=$tmp/log/$d.out
    [ -s "$f" ] || continue
    echo "---- ${f##*/} (last ${1:-20} lines)" >&2
    tail -n "${1:-20}" "$f" >&2
  done
}
fail() { echo "$me: $*" >&2; show_logs; exit 2; }

# ---------------------------------------------------------------- free ports
# TCP ports currently bound on this machine, from /proc (no ss/netstat needed).
used_ports() {
  local _sl local_addr _rest
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
    while read -r _sl local_addr _rest; do
      [ "$_sl" = sl ] || echo $((16#${local_addr##*:}))   # header line starts with "sl"
    done | sort -un
}
# Picks N distinct unused ports from a range away from the usual service ports and the
# kernel's ephemeral range (32768-60999), so a later outgoing connection cannot steal
# one between the check and the daemon's bind.
pick_ports() {
  local n=$1 used port picked=()
  used=" $(used_ports | tr '\n' ' ') "
  while [ ${#picked[@]} -lt "$n" ]; do
    port=$((20000 + RANDOM % 12000))
    case "$used ${picked[*]} " in *" $port "*) continue ;; esac
    picked+=("$port")
  done
  echo "${picked[*]}"
}
read -r ctld_port slurmd_port < <(pick_ports 2)

# ---------------------------------------------------------------- config
node=$(hostname -s)
# nproc counts OMP_NUM_THREADS as a limit; the node has the cores the process may run on.
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
cpus=${SLURM_LOCAL_CPUS:-$cores}
# Binding cannot place more tasks than real cores (slurmd fails the launch with
# "Unable to layout tasks"), so advertising extra CPUs means no binding, which is
# also what mpirun --oversubscribe does.
task_plugin=task/affinity
[ "$cpus" -gt "$cores" ] && task_plugin=task/none
# A little under MemTotal: slurmd measures memory itself, and a node that reports less
# than RealMemory is drained.
mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.95 }' /proc/meminfo)
mkdir -p "$tmp"/{state,spool,log,run,munge,tmpfs}

# Throwaway job ids far from 1 make log lines from concurrent clusters easy to tell apart.
first_job=$((1000 + RANDOM % 9000))
cat >"$tmp/slurm.conf" <<EOF
# Generated by scripts/slurm_local.sh for one run; deleted afterwards.
ClusterName=siamlocal
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root

# Munge with a private daemon: the socket path is passed to libmunge through AuthInfo
# (used by both the auth and the cred plugin), so nothing touches /run/munge.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket

StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/run/slurmctld.pid
SlurmdPidFile=$tmp/run/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# PMIx puts per-step client directories under TmpFS; a private one keeps two clusters
# (e.g. parallel ctest jobs) from colliding on /tmp/spmix_appdir_*.
TmpFS=$tmp/tmpfs

# Containers here have no cgroup delegation: track processes through /proc and
# confine nothing, so Slurm never touches /sys/fs/cgroup. task/affinity only calls
# sched_setaffinity (no cgroups) and binds each task to its own core, as mpirun does
# for -np <= cores; without it every rank sees all cores and sizes its thread pool
# to match, which makes an srun run differ from the mpirun run it is compared with.
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=pmix
LaunchType=launch/slurm
MailProg=/bin/true

# Let jobs share cores (FORCE:4) and never leave the node DOWN after a restart/timeout.
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Trust this file over what slurmd detects (hwloc may see a different topology than
# nproc inside a sandbox, and SLURM_LOCAL_CPUS may advertise more than exist), so the
# node is never drained for "low CPUs".
SlurmdParameters=config_overrides
FirstJobId=$first_job
MinJobAge=5
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
SlurmctldTimeout=60
# Reject at submission what can never run here (e.g. srun -n 3 on 2 CPUs) instead of
# leaving it pending for ever with Reason=PartitionConfig.
EnforcePartLimits=ALL

NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF

# slurmd loads its cgroup plugin at start whatever the config (it only reads
# /sys/fs/cgroup then). Constrain* already default to no; spelled out so this
# cluster never asks for confinement the container cannot give.
cat >"$tmp/cgroup.conf" <<EOF
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
export SLURM_CONF=$tmp/slurm.conf

# ---------------------------------------------------------------- daemons
t0=$(date +%s.%N)

# Own key, so this cluster cannot talk to (or be confused with) any system munged.
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
# --force: munged declines to run as root without it. -F keeps it our child so $! is
# its real PID; in the foreground it logs to stderr only. Its "Unauthorized credential
# for client UID=0" lines during start-up are Slurm probing munge, not a failure.
munged -F --force \
  --socket="$tmp/munge/munge.socket" \
  --key-file="$tmp/munge/munge.key" \
  --pid-file="$tmp/run/munged.pid" \
  --seed-file="$tmp/munge/munged.seed" \
  </dev/null >>"$tmp/log/munged.log" 2>&1 &
pids+=($!) names+=(munged)
for _ in $(seq 50); do [ -S "$tmp/munge/munge.socket" ] && break; sleep 0.1; done
[ -S "$tmp/munge/munge.socket" ] || fail "munged did not create its socket"

# -D: foreground (we own the PID); -i: ignore (nonexistent) saved state.
slurmctld -D -i </dev/null >>"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!) names+=(slurmctld)
slurmd -D -N "$node" </dev/null >>"$tmp/log/slurmd.out" 2>&1 &
pids+=($!) names+=(slurmd)

# Up means: the controller answers and has seen slurmd register (state idle).
deadline=$(($(date +%s) + ${SLURM_LOCAL_TIMEOUT:-30}))
state=""
while :; do
  state=$(sinfo -h -n "$node" -o %t 2>/dev/null | head -n1 || true)
  [ "$state" = idle ] && break
  for i in "${!pids[@]}"; do
    alive "${pids[i]}" || fail "${names[i]} exited during start-up"
  done
  [ "$(date +%s)" -lt "$deadline" ] || fail "node '$node' not idle after ${SLURM_LOCAL_TIMEOUT:-30}s (state: '${state:-no answer}')"
  sleep 0.2
done
echo "$me: Slurm up on $node ($cpus CPUs, ports $ctld_port/$slurmd_port) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s" >&2

# ---------------------------------------------------------------- the command
# Run in the background and wait, so a TERM/INT to this script is acted on at once
# (bash defers traps until a foreground child exits). Its stdin becomes /dev/null,
# which is what srun gets under ctest anyway.
set +e
"$@" &
cmd_pid=$!

# A watchdog that matters only if we are SIGKILLed (e.g. a harness timeout that kills
# just this PID) and no trap runs: it then stops the command (first, while slurmctld
# is still there to cancel the step; srun otherwise retries for ever) and the daemons.
(
  trap '' INT TERM
  while alive $$; do sleep 1; done
  teardown
) </dev/null >/dev/null 2>&1 &
watchdog=$!
disown "$watchdog"   # so bash prints no "Killed" notice when cleanup ends it

wait "$cmd_pid"
rc=$?
set -e
cmd_pid=""
if [ $rc -ne 0 ]; then
  # Short on purpose: tests may fail on purpose. SLURM_LOCAL_KEEP=1 keeps full logs.
  echo "$me: command exited $rc; daemon log tails follow" >&2
  show_logs 5 "slurmctld slurmd"
fi
exit $rc
