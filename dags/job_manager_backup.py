"""
### job_manager: daily backup, verify, rotate

Every day at 02:00 UTC: back up `jobs`, `download_queue` and the schema history from one
consistent snapshot (`backup_database`), read the file back in full (`verify_backup`), then keep
the newest `keep` backups that verify (`cleanup_old_backups`). Any failing step fails the task
and the run, with the reason in the task log; a failed backup never leaves a partial file.

Backups go to param `backup_dir` (default `$JOB_MANAGER_BACKUP_DIR`, else
`/opt/airflow/backups`, which docker-compose.yml mounts from `./backups`).
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)


@dag(
    dag_id="job_manager_backup",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["job_manager", "backup"],
    doc_md=__doc__,
    params={
        "conn_id": Param(os.environ.get("JOB_MANAGER_CONN_ID", "job_manager_db"), type="string"),
        "backup_dir": Param(
            os.environ.get("JOB_MANAGER_BACKUP_DIR", "/opt/airflow/backups"), type="string"
        ),
        "keep": Param(10, type="integer", minimum=1, description="backups to keep"),
        "compress": Param(False, type="boolean", description="write .sql.gz"),
    },
)
def job_manager_backup():
    @task
    def backup(params=None) -> dict:
        """One consistent backup of the owned tables, written atomically."""
        from job_manager.airflow import manager_for

        with manager_for(params) as jm:
            info = jm.backup_database(params["backup_dir"], keep=None, compress=params["compress"])
        log.info("backup written: %s", info)
        return info.to_dict()

    @task
    def verify(made: dict) -> dict:
        """Reads the new file in full: header, row counts, checksum."""
        from job_manager import verify_backup

        info = verify_backup(made["path"])
        if info.rows != made["rows"] or info.sha256 != made["sha256"]:
            raise RuntimeError(f"backup {made['path']} changed after it was written: {info}")
        log.info("backup verified: %s", info)
        return info.to_dict()

    @task
    def rotate(verified: dict, params=None) -> list[str]:
        """Keeps the newest `keep` backups that verify; never touches other files."""
        from job_manager import cleanup_old_backups

        deleted = cleanup_old_backups(params["backup_dir"], params["keep"])
        log.info("rotation kept %s backups, deleted %d: %s", params["keep"], len(deleted), deleted)
        return deleted

    rotate(verify(backup()))


dag = job_manager_backup()

if __name__ == "__main__":
    dag.test()
