"""The Airflow Connection's extras reach the DSN (real Airflow, in its own venv)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json
from job_manager import JobManager
from job_manager.airflow import dsn_from_connection
dsn = dsn_from_connection("jm_extras")
jm = JobManager.from_airflow_connection("jm_extras")
forced = JobManager.from_airflow_connection("jm_extras", prepared_statements=True)
print(json.dumps({"dsn": dsn, "sslmode": jm.sslmode, "redacted": jm.dsn,
                  "prepared": jm.prepared_statements, "forced": forced.prepared_statements}))
"""


def test_connection_extras_are_passed_on() -> None:
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(python).exists():
        pytest.fail("no Airflow venv: run bash scripts/test.sh (it installs Airflow with uv)")
    conn = {
        "conn_type": "postgres",
        "host": "db.example",
        "port": 5432,
        "login": "airflow",
        "password": "s3cret pw",
        "schema": "queue",
        "extra": {
            "sslmode": "require",
            "application_name": "from-airflow",
            "keepalives_idle": 15,
            "cursor": "dictcursor",
            # PgBouncer in pool_mode=transaction (as in a URI's query: a string).
            "prepared_statements": "false",
        },
    }
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONWARNINGS": "ignore",
            "AIRFLOW_CONN_JM_EXTRAS": json.dumps(conn),
        }
        out = subprocess.run(
            [python, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dsn"] == (
        "host='db.example' port='5432' dbname='queue' user='airflow' password='s3cret pw' "
        "sslmode='require' application_name='from-airflow' keepalives_idle='15'"
    )
    assert result["sslmode"] == "require"
    # A JobManager setting, not a libpq parameter: not in the DSN, given to the manager;
    # the caller's keyword wins.
    assert result["prepared"] is False
    assert result["forced"] is True
    assert result["redacted"] == "postgresql://airflow:***@db.example:5432/queue?sslmode=require"


BAD = """
from job_manager import ConfigurationError, JobManager
try:
    JobManager.from_airflow_connection("jm_extras")
except ConfigurationError as e:
    print("REFUSED", e)
"""


def test_a_prepared_statements_extra_that_is_not_a_boolean_is_refused() -> None:
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(python).exists():
        pytest.fail("no Airflow venv: run bash scripts/test.sh (it installs Airflow with uv)")
    uri = "postgresql://u:pw@db.example:6432/queue?prepared_statements=maybe"
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONWARNINGS": "ignore",
            "AIRFLOW_CONN_JM_EXTRAS": uri,
        }
        out = subprocess.run(
            [python, "-c", BAD], env=env, capture_output=True, text=True, timeout=120
        )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "REFUSED connection 'jm_extras': extra 'prepared_statements' must be true or false" in (
        out.stdout
    )
