#!/usr/bin/env bash
# Every check and every test: `bash scripts/test.sh` (extra arguments go to pytest).
#
# Builds and installs the wheel, installs Airflow (at the Dockerfile's version) into
# .venv-airflow, then: cargo fmt --check, cargo clippy -D warnings, cargo test, ruff, pytest
# against a real PostgreSQL and real Airflow (tests/, tests/reliability/), and bench --quick. Without $JOB_MANAGER_TEST_DSN (a superuser DSN
# that may CREATE DATABASE) the tests start a throwaway cluster of their own.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"

# Real Apache Airflow for the DAG tests, in its own venv, at the version the Dockerfile pins.
AIRFLOW_VERSION=$(sed -n 's/^ARG AIRFLOW_VERSION=//p' Dockerfile)
if ! .venv-airflow/bin/python -c "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')" 2>/dev/null; then
    say "installing apache-airflow==$AIRFLOW_VERSION into .venv-airflow (uv)"
    rm -rf .venv-airflow
    "$VENV/bin/uv" venv -q --python "$(readlink -f "$PY")" .venv-airflow
    "$VENV/bin/uv" pip install -q --python .venv-airflow/bin/python \
        "apache-airflow==$AIRFLOW_VERSION" apache-airflow-providers-postgres
fi
# The providers the official image ships and docker-compose.yml uses: CeleryExecutor (the celery
# profile) and the FAB auth manager (tests/test_airflow_stack.py runs both), at versions resolved
# beside Airflow $AIRFLOW_VERSION. Celery 5.7 removed celery.backends.database.retry, which the
# celery provider 3.26.0 imports: hence celery<5.7.
if ! .venv-airflow/bin/python -c "import airflow.providers.celery.executors.celery_executor, airflow.providers.fab" 2>/dev/null; then
    say "installing the celery and fab providers into .venv-airflow (uv)"
    "$VENV/bin/uv" pip install -q --python .venv-airflow/bin/python "apache-airflow==$AIRFLOW_VERSION" \
        apache-airflow-providers-celery==3.26.0 apache-airflow-providers-fab==3.10.2 "celery<5.7"
fi
"$VENV/bin/uv" pip install -q --python .venv-airflow/bin/python --reinstall --no-deps dist/job_manager-*.whl
# The wheel's one dependency (the UI plugin's metrics), installed beside it since --no-deps skips it.
"$VENV/bin/uv" pip install -q --python .venv-airflow/bin/python "prometheus-client>=0.21,<1"
export JOB_MANAGER_AIRFLOW_PYTHON="$ROOT/.venv-airflow/bin/python"

say "cargo fmt --check"
cargo fmt --check
say "cargo clippy -- -D warnings"
cargo clippy --all-targets -- -D warnings
say "cargo test (the core, without Python)"
cargo test --no-default-features
say "ruff"
ruff check .
ruff format --check .
say "bench --quick (keeps the harness working; the timings live in BENCHMARKS.md)"
"$VENV/bin/uv" pip install -q --python "$PY" -r bench/requirements.txt
python bench/run.py --quick --no-write > /dev/null
python bench/queue_waits.py --quick > /dev/null
python bench/restore_profile.py --quick --rounds 1 > /dev/null
say "pytest (unit, integration, DAGs in Airflow, reliability)"
python -m pytest "$@"
