#!/usr/bin/env bash
# Checks the Slurm scripts on a one-node Slurm started on this machine: a search on the tiny model
# submitted as a 3-shard array plus its report job must give exactly the samples.jsonl,
# report.json and figures of the same search run whole.
# Installs Debian's slurm-wlm and munge with apt-get when missing (needs root or sudo), runs
# munged, slurmctld and slurmd from a private temporary configuration (one node, no cgroups,
# no accounting) and stops them at the end. Exit 0: passed; 1: failed; 2: could not set up.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "selftest: needs root (or passwordless sudo) to run the Slurm daemons" >&2
        exit 2
    fi
fi
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    echo "installing slurm-wlm and munge with apt-get"
    if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge || {
        $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; }; } >/tmp/cola-slurm-apt.log 2>&1; then
        echo "selftest: apt-get could not install slurm-wlm and munge (see /tmp/cola-slurm-apt.log)" >&2
        exit 2
    fi
fi

echo "building the binary and the tiny fixture"
cargo build -q -p xtask -p cola-tests --bin xtask --bin tiny_fixture
target=${CARGO_TARGET_DIR:-$repo/target}
bin=$target/debug/xtask

work=$(mktemp -d /tmp/cola-slurm.XXXXXX)
chmod 755 "$work"
conf=$work/slurm.conf
keep_work=1
cleanup() {
    for d in slurmd slurmctld munged; do
        if [ -f "$work/$d.pid" ]; then $sudo kill "$(cat "$work/$d.pid")" 2>/dev/null || true; fi
    done
    # The daemons' leftovers (slurmscriptd) by their config path.
    $sudo pkill -f "$work/" 2>/dev/null || true
    # slurmctld saves its state while it shuts down: wait for every daemon to be gone before
    # removing their directory (else the removal races with the last writes).
    for _ in $(seq 1 100); do
        pgrep -f "$work/" >/dev/null || break
        sleep 0.1
    done
    if [ "$keep_work" = 0 ]; then
        # The verdict is already printed; a leftover file must not turn it into a failure.
        rm -rf "$work" || echo "could not remove $work (a daemon still writing?)"
    else
        echo "logs and runs kept in $work"
    fi
}
trap cleanup EXIT
"$target/debug/tiny_fixture" "$work" 9 >/dev/null

# munge: a private key and socket, so that nothing of the machine's own setup is touched.
mkdir -p "$work/munge"
$sudo dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
$sudo chmod 700 "$work/munge"
$sudo chmod 400 "$work/munge/munge.key"
socket=$work/munge/munge.socket
$sudo munged --force --key-file="$work/munge/munge.key" --socket="$socket" \
    --pid-file="$work/munged.pid" --log-file="$work/munged.log" --seed-file="$work/munge/seed"
$sudo chmod 755 "$work/munge"

node=$(hostname -s)
cpus=$(nproc)
cat >"$conf" <<CONF
ClusterName=colaselftest
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${COLA_SLURMCTLD_PORT:-16817}
SlurmdPort=${COLA_SLURMD_PORT:-16818}
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
NodeName=$node CPUs=$cpus State=UNKNOWN
PartitionName=selftest Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p "$work/state" "$work/spool"
export SLURM_CONF=$conf
$sudo env SLURM_CONF="$conf" slurmctld -f "$conf"
$sudo env SLURM_CONF="$conf" slurmd -f "$conf"
for _ in $(seq 1 60); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 0.5
done
if [ "${state:-}" != "idle" ]; then
    echo "selftest: the Slurm node did not come up (state \`${state:-none}\`); logs in $work" >&2
    tail -5 "$work/slurmctld.log" "$work/slurmd.log" >&2 || true
    exit 2
fi
echo "one-node Slurm is up ($node, $cpus CPUs)"

search=(--model "$work/model" --data "$work/tiny.jsonl" --sims 25 --batch 2 --seed 3)
cd "$work"
ids=$(COLA_BIN=$bin "$repo/scripts/slurm/submit.sh" 3 "$work/runs" --cpus-per-task=1 -- "${search[@]}")
echo "$ids"
jobs=$(echo "$ids" | grep -o 'job [0-9]*' | awk '{print $2}' | paste -sd,)
started=$(date +%s)
while [ -n "$(squeue -h -j "$jobs" 2>/dev/null)" ]; do
    if [ $(( $(date +%s) - started )) -gt 300 ]; then
        echo "selftest: the jobs did not finish in 5 minutes" >&2
        squeue >&2
        exit 1
    fi
    sleep 1
done
"$bin" search "${search[@]}" --run-dir "$work/whole" >/dev/null 2>&1

status=0
for f in samples.jsonl report.json best_chain_lengths.svg layer_skip_repeat.svg; do
    if [ ! -f "$work/runs/merged/$f" ]; then
        echo "FAIL: $f missing from the merged report (job output: $(cat "$work"/cola-*.out 2>/dev/null | tail -5))"
        status=1
    elif cmp -s "$work/runs/merged/$f" "$work/whole/$f"; then
        echo "ok: $f of the 3 merged shards equals the run done whole"
    else
        echo "FAIL: $f differs between the merged shards and the run done whole"
        status=1
    fi
done
echo "records: $(wc -l <"$work/whole/samples.jsonl") samples; shards: $(for i in 0 1 2; do printf '%s ' "$(wc -l <"$work/runs/shard-$i/samples.jsonl")"; done)"
if [ $status -eq 0 ]; then
    echo "selftest passed"
    keep_work=0
fi
exit $status
