"""The deferrable sensor (JobsPendingSensor + JobsPendingTrigger) and the DAG that uses it,
in real Apache Airflow 3: dag.test() runs the trigger inline, as the triggerer would."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from conftest import scalar
from job_manager import JobManager
from test_dags import DAGS, RUNNER, airflow_env, airflow_home, airflow_python  # noqa: F401

pytestmark = pytest.mark.slow

DAG_ID = "job_queue_deferrable_example"


def _run(python: str, home: Path, dsn: str, conf: dict) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [python, str(RUNNER), str(DAGS / f"{DAG_ID}.py"), json.dumps(conf)],
        env=airflow_env(home, None, AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB=dsn),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict:
    out, _ = proc.communicate(timeout=300)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {proc.returncode}):\n{out[-4000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    result["log"] = out
    return result


def test_sensor_defers_until_jobs_arrive_then_batches_are_worked(
    airflow_python: str,  # noqa: F811
    airflow_home: Path,  # noqa: F811
    dsn: str,
    jm: JobManager,
    db: psycopg.Connection,
) -> None:
    jm.add_job("already done", "IMAGE_TEST")
    jm.mark_job_as_completed(1)
    proc = _run(airflow_python, airflow_home, dsn, {"workers": 2, "batch": 7})
    try:
        # The trigger's own connection appears once the sensor has deferred.
        deadline = time.monotonic() + 240
        while not scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'job_manager JobsPendingTrigger'",
        ):
            assert proc.poll() is None, proc.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the sensor never deferred"
            time.sleep(0.1)
        prompts = [f"deferred {i}" for i in range(30)] + ["please fail"]
        jm.add_jobs(prompts, "IMAGE_TEST")
        result = _result(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result["state"] == "success", result["log"][-4000:]
    assert result["tasks"]["wait_for_jobs"] == "success"
    assert "[DAG TEST] running trigger in line" in result["log"]
    assert "waiting in the triggerer for a pending IMAGE_TEST job" in result["log"]
    claimed = [i for k, v in result["xcom"].items() if k.startswith("work[") for i in v]
    assert sorted(claimed) == list(range(2, 33))
    assert result["xcom"]["report"]["stats"] == {"IMAGE_TEST": {"completed": 31, "failed": 1}}
    assert scalar(db, "SELECT error_message FROM jobs WHERE prompt_text = 'please fail'") == (
        "stand-in failure: the prompt asked for it"
    )


def test_sensor_does_not_defer_when_a_job_is_pending(
    airflow_python: str,  # noqa: F811
    airflow_home: Path,  # noqa: F811
    dsn: str,
    jm: JobManager,
) -> None:
    jm.add_jobs([f"ready {i}" for i in range(5)], "VIDEO_PROD")
    result = _result(
        _run(airflow_python, airflow_home, dsn, {"job_type": "VIDEO_PROD", "workers": 1})
    )
    assert result["state"] == "success", result["log"][-4000:]
    assert "running trigger in line" not in result["log"]
    assert "not deferring" in result["log"]
    assert result["xcom"]["report"]["stats"] == {"VIDEO_PROD": {"completed": 5}}


def test_trigger_serializes_and_checks_its_arguments(airflow_python: str) -> None:  # noqa: F811
    code = """
from job_manager.airflow_sensor import JobsPendingTrigger
t = JobsPendingTrigger("job_queue_example_db", "IMAGE_TEST", 2)
path, kwargs = t.serialize()
import importlib
module, name = path.rsplit(".", 1)
again = getattr(importlib.import_module(module), name)(**kwargs)
assert again.serialize() == (path, kwargs), again.serialize()
print(path, sorted(kwargs.items()))
for bad in ({"job_type": "image"}, {"poll_interval": 0}, {"poll_interval": "x"}):
    args = {"conn_id": "c", "job_type": "IMAGE_TEST", "poll_interval": 1, **bad}
    try:
        JobsPendingTrigger(**args)
    except ValueError as e:
        print("refused:", e)
"""
    out = subprocess.run(
        [airflow_python, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "job_manager.airflow_sensor.JobsPendingTrigger" in out
    assert out.count("refused:") == 3
