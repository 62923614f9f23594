#!/usr/bin/env bash
# Every benchmark at the issue's sizes, one after another, on SQLite and on
# PostgreSQL; each JSON line goes to $OUT/<name>.json, progress to $OUT/progress.log.
# Usage: bench/run_all.sh [OUT] (default bench/results); PG=<server URL> to change it;
# EXPEDITED_RCU=1 (as root) adds the trigger runs with /sys/kernel/rcu_expedited at 1.
# About 45 minutes on 2 cores. Run it on an otherwise quiet machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results}
PG=${PG:-postgresql://postgres@127.0.0.1:5432/postgres}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
# Each run keeps its data directory until all are done: on an ext4 without a
# journal, creating a file steps over every inode deleted in the last one to five
# minutes (bench/README.md, "Deleted files slow down the next run"), so a run right
# after another's cleanup would pay for it.
run() {
    local name=$1; shift
    echo "[$(date +%T)] $name: $*" >> "$OUT/progress.log"
    "$PY" "$@" --keep > "$OUT/$name.json" 2>> "$OUT/progress.log"
    local status=$?  # before $(date) resets it
    echo "[$(date +%T)] $name done, exit $status" >> "$OUT/progress.log"
}
run cron-sqlite bench/cron_lateness.py --templates 1000 --seconds 60 --peer apscheduler
run cron-pg bench/cron_lateness.py --templates 1000 --seconds 60 --peer apscheduler --database-url "$PG"
run herd-sqlite bench/cron_lateness.py --herd 10000 --herd-lead 100 --peer apscheduler
run herd-pg bench/cron_lateness.py --herd 10000 --herd-lead 100 --peer apscheduler --database-url "$PG"
run trigger-sqlite bench/trigger_latency.py --count 1000
run trigger-pg bench/trigger_latency.py --count 1000 --database-url "$PG"
if [ "${EXPEDITED_RCU:-0}" = 1 ] && [ -w /sys/kernel/rcu_expedited ]; then
    # The same, with cgroup joins not waiting for RCU grace periods (docs/resources.md);
    # the host's setting is put back afterwards.
    was=$(cat /sys/kernel/rcu_expedited)
    echo 1 > /sys/kernel/rcu_expedited
    run trigger-sqlite-rcu bench/trigger_latency.py --count 1000
    run trigger-pg-rcu bench/trigger_latency.py --count 1000 --database-url "$PG"
    echo "$was" > /sys/kernel/rcu_expedited
fi
run throughput-sqlite bench/throughput.py --count 10000 --clients 32
run throughput-pg bench/throughput.py --count 10000 --clients 32 --database-url "$PG"
run trigger-floor bench/trigger_floor.py --count 10000 --clients 32
run scale-templates-sqlite bench/scale.py --instances 0 --samples 20
run scale-instances-sqlite bench/scale.py --cron-templates 0 --samples 20
run scale-instances-pg bench/scale.py --cron-templates 0 --samples 20 --database-url "$PG"
run scale-templates-pg bench/scale.py --instances 0 --samples 20 --database-url "$PG"
sed -n 's/^kept //p' "$OUT/progress.log" | xargs -r rm -rf  # the kept data directories
echo "[$(date +%T)] all done" >> "$OUT/progress.log"
