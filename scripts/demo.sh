#!/usr/bin/env bash
# The main job, end to end: `bash scripts/demo.sh`.
#
# Builds and installs the wheel, then runs a short demo (init, add jobs, claim one, complete it,
# show_stats) against $JOB_MANAGER_DSN, or, when that is not set, against a throwaway
# PostgreSQL that this script starts under .tmp/ and stops at the end.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

if [[ -z ${JOB_MANAGER_DSN:-} ]]; then
    base="$ROOT/.tmp/demo-pg"
    rm -rf "$base"
    say "no JOB_MANAGER_DSN: starting a throwaway PostgreSQL in $base"
    JOB_MANAGER_DSN=$(python scripts/pgcluster.py start "$base")
    export JOB_MANAGER_DSN
    trap 'python scripts/pgcluster.py stop "$base"' EXIT
fi
python scripts/demo.py
