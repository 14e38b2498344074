#!/usr/bin/env bash
# The main job, end to end: `bash scripts/demo.sh`.
#
# Builds and installs the wheel, then runs a short demo (init, add jobs, claim one, complete it,
# show_stats) against a throwaway PostgreSQL that this script starts under .tmp/ and stops at
# the end, or, when $JOB_MANAGER_DSN is set, against that database: the demo then says what it
# will write there and asks first (JOB_MANAGER_DEMO_YES=1 answers for scripts).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

if [[ -z ${JOB_MANAGER_DSN:-} ]]; then
    base="$ROOT/.tmp/demo-pg"
    rm -rf "$base"
    say "no JOB_MANAGER_DSN: starting a throwaway PostgreSQL in $base"
    JOB_MANAGER_DSN=$(python scripts/pgcluster.py start "$base")
    export JOB_MANAGER_DSN
    export JOB_MANAGER_DEMO_THROWAWAY=1  # ours: the demo may write into it without asking
    trap 'python scripts/pgcluster.py stop "$base"' EXIT
fi
python scripts/demo.py
