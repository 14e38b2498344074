"""Runs one DAG file with ``dag.test()`` in real Airflow; prints its outcome as JSON.

Used by tests/test_dags.py, in the Airflow venv (``python airflow_runner.py DAG_FILE CONF``;
CONF may be a list of confs: one run each, one RESULT line each).
Prints ``{"state": ..., "tasks": {task_id[map_index]: state}, "xcom": {task_id: value}}``, or
``{"state": "rejected", "error": ...}`` when Airflow refused to start the run (a conf that
fails the DAG's Params).
"""

from __future__ import annotations

import importlib.util
import json
import sys


def main() -> int:
    path, conf = sys.argv[1], json.loads(sys.argv[2])
    spec = importlib.util.spec_from_file_location("dag_under_test", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A list of confs: one run each, in this one process (Airflow starts once).
    for one in conf if isinstance(conf, list) else [conf]:
        run_one(module, one)
    return 0


def run_one(module, conf: dict) -> None:
    try:
        run = module.dag.test(run_conf=conf)
    except Exception as e:  # e.g. ParamValidationError: the run was refused before it started
        print("RESULT " + json.dumps({"state": "rejected", "error": f"{type(e).__name__}: {e}"}))
        return
    tasks = {}
    xcom = {}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for ti in run.get_task_instances(session=session):
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            tasks[key] = str(ti.state)
        rows = session.query(XComModel).filter(
            XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id
        )
        for row in rows:
            key = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            xcom[key] = XComModel.deserialize_value(row)
    print(
        "RESULT " + json.dumps({"state": str(run.state), "tasks": tasks, "xcom": xcom}, default=str)
    )


if __name__ == "__main__":
    sys.exit(main())
