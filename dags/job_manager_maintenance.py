"""
### job_manager: daily maintenance and health report

Every day at 03:30 UTC: put jobs stuck in `processing` back to `pending`, delete completed
downloads older than `download_days`, delete Airflow task logs older than `log_days` under the
base log folder, ANALYZE job_manager's tables, and finish with a health report: pushed to XCom,
with each problem logged as a warning. With `dry_run`, nothing is changed or deleted: the
report says what would be.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)


def _base_log_folder() -> str:
    """Airflow's base log folder, read inside the task (never at parse time)."""
    configured = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER")
    if configured:
        return configured
    try:
        from airflow.configuration import conf

        return conf.get("logging", "base_log_folder")
    except Exception:  # configuration not importable in this process
        return os.path.join(os.environ.get("AIRFLOW_HOME", "/opt/airflow"), "logs")


@dag(
    dag_id="job_manager_maintenance",
    schedule="30 3 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["job_manager", "maintenance"],
    doc_md=__doc__,
    params={
        "conn_id": Param(os.environ.get("JOB_MANAGER_CONN_ID", "job_manager_db"), type="string"),
        "stuck_after_s": Param(3600, type="number", minimum=0),
        "download_days": Param(7, type="integer", minimum=0),
        "log_days": Param(7, type="number", minimum=0),
        "log_dir": Param("", type="string", description="empty: Airflow's base log folder"),
        "backup_dir": Param(
            os.environ.get("JOB_MANAGER_BACKUP_DIR", "/opt/airflow/backups"), type="string"
        ),
        "dry_run": Param(False, type="boolean"),
    },
)
def job_manager_maintenance():
    @task
    def reset_stuck_jobs(params=None) -> int:
        from job_manager.airflow import manager_for

        if params["dry_run"]:
            log.info("dry run: not resetting stuck jobs")
            return 0
        with manager_for(params) as jm:
            n = jm.reset_stuck_jobs(older_than_seconds=params["stuck_after_s"])
        log.info("reset %d jobs stuck in processing for more than %ss", n, params["stuck_after_s"])
        return n

    @task
    def cleanup_old_downloads(params=None) -> int:
        from job_manager.airflow import manager_for

        if params["dry_run"]:
            log.info("dry run: not deleting old downloads")
            return 0
        with manager_for(params) as jm:
            n = jm.cleanup_old_downloads(params["download_days"])
        log.info("deleted %d completed downloads older than %d days", n, params["download_days"])
        return n

    @task
    def cleanup_logs(params=None) -> dict:
        from job_manager import cleanup_old_logs

        log_dir = params["log_dir"] or _base_log_folder()
        report = cleanup_old_logs(log_dir, params["log_days"], dry_run=params["dry_run"])
        log.info("log cleanup under %s: %s", log_dir, report)
        for error in report.errors:
            log.warning("log cleanup: %s", error)
        return report.to_dict()

    @task
    def analyze(params=None) -> list[str]:
        from job_manager.airflow import manager_for

        with manager_for(params) as jm:
            return jm.analyze_tables()

    @task
    def health_report(*_done, params=None) -> dict:
        """The state after maintenance: to XCom, problems as warnings."""
        from job_manager.airflow import manager_for

        with manager_for(params) as jm:
            report = jm.health_report(params["backup_dir"] or None)
        for problem in report["problems"]:
            log.warning("health: %s", problem)
        if not report["problems"]:
            log.info("health: no problems")
        return report

    steps = [reset_stuck_jobs(), cleanup_old_downloads(), cleanup_logs(), analyze()]
    health_report(*steps)


dag = job_manager_maintenance()

if __name__ == "__main__":
    dag.test()
