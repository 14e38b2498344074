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
print(json.dumps({"dsn": dsn, "sslmode": jm.sslmode, "redacted": jm.dsn}))
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
    assert result["redacted"] == "postgresql://airflow:***@db.example:5432/queue?sslmode=require"
