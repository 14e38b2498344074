#!/usr/bin/env bash
# The benchmarks: `bash bench/run.sh` (default sizes, writes BENCHMARKS.md) or
# `bash bench/run.sh --quick` (small sizes; CI runs it with --no-write to keep it working).
# Builds the release wheel, installs the baselines' drivers, starts a throwaway PostgreSQL
# unless $JOB_MANAGER_BENCH_DSN is set, and runs every case side by side.
set -euo pipefail
source "$(dirname "$0")/../scripts/bootstrap.sh"
"$VENV/bin/uv" pip install -q --python "$PY" -r bench/requirements.txt
exec python bench/run.py "$@"
