"""
### job_manager: create or migrate the queue's schema

Runs once after deploy (`@once`, once the DAG is unpaused: DAGs start paused) and on demand.
Checks which of job_manager's tables exist and which migrations are pending, and runs
`init_database()` only when something is missing, reporting what it applied. `init_database()`
is additive (it never drops a table, a column or a row) and safe when several runs overlap.

The database is the Airflow Connection `job_manager_db` (param `conn_id`, which must be one of
`$JOB_MANAGER_ALLOWED_CONN_IDS`; any other is an error) when it is defined; only the
deployment's default connection falls back to the environment (`JOB_MANAGER_DSN` or
`POSTGRES_*`) when it is not defined.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)


@dag(
    dag_id="job_manager_init",
    schedule="@once",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["job_manager"],
    doc_md=__doc__,
    params={
        "conn_id": Param(
            os.environ.get("JOB_MANAGER_CONN_ID", "job_manager_db"),
            type="string",
            description="Airflow Connection of the queue's database (from the allow-list)",
        )
    },
)
def job_manager_init():
    @task
    def inspect_schema(params=None) -> dict:
        """Which tables exist and which migrations are pending."""
        from job_manager.airflow import manager_for

        with manager_for(params) as jm:
            state = {
                "tables": {t: jm.check_table_exists(t) for t in ("jobs", "download_queue")},
                "pending": jm.pending_migrations(),
            }
        log.info("schema state: %s", state)
        return state

    @task
    def apply_missing(state: dict, params=None) -> list[str]:
        """init_database() only when a table or a migration is missing."""
        if all(state["tables"].values()) and not state["pending"]:
            log.info("every table exists and the schema is current: nothing to do")
            return []
        from job_manager.airflow import manager_for

        with manager_for(params) as jm:
            applied = jm.init_database()
        log.info("applied migrations: %s", ", ".join(applied) or "none (another run did it)")
        return applied

    apply_missing(inspect_schema())


dag = job_manager_init()

if __name__ == "__main__":
    dag.test()
