"""
### job_manager: daily backup, verify, rotate

Every day at 02:00 UTC (once the DAG is unpaused: DAGs start paused): back up `jobs`,
`download_queue` and the schema history from one consistent snapshot (`backup_database`), read
the file back in full (`verify_backup`), then keep the newest `keep` backups that verify
(`cleanup_old_backups`). Any failing step fails the task and the run, with the reason in the
task log; a failed backup never leaves a partial file.

Params are checked before anything is touched, whatever a run's conf says:

- `backup_dir`: empty for `$JOB_MANAGER_BACKUP_DIR` (docker-compose.yml mounts `./backups`
  there), else a folder that resolves (symlinks included) inside it;
- `keep`: 3 to 1000 backups;
- `conn_id`: one of `$JOB_MANAGER_ALLOWED_CONN_IDS` (default: the deployment's connection).
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)
MIN_KEEP, MAX_KEEP = 3, 1000


def checked(params) -> dict:
    """The params this DAG acts on, validated (InvalidArgumentError otherwise)."""
    from job_manager.airflow import allowed_conn_id, backup_root, boolean, confined_path, whole

    root = backup_root()
    return {
        "conn_id": allowed_conn_id(params.get("conn_id")),
        "backup_dir": str(confined_path(params.get("backup_dir") or root, root, "backup_dir")),
        "keep": whole(params, "keep", MIN_KEEP, MAX_KEEP),
        "compress": boolean(params, "compress"),
    }


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
            "", type="string", description="empty: $JOB_MANAGER_BACKUP_DIR; else a folder in it"
        ),
        "keep": Param(
            10, type="integer", minimum=MIN_KEEP, maximum=MAX_KEEP, description="backups to keep"
        ),
        "compress": Param(False, type="boolean", description="compress with zstd (.sql.zst)"),
    },
)
def job_manager_backup():
    @task
    def backup(params=None) -> dict:
        """One consistent backup of the owned tables, written atomically."""
        from job_manager.airflow import manager_for

        p = checked(params)
        with manager_for(p) as jm:
            info = jm.backup_database(p["backup_dir"], keep=None, compress=p["compress"])
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
    def rotate(verified: dict, params=None) -> dict:
        """Keeps the newest `keep` backups that verify; never touches other files. XCom gets
        the count and at most 100 of the deleted paths."""
        from job_manager import cleanup_old_backups

        p = checked(params)
        deleted = cleanup_old_backups(p["backup_dir"], p["keep"])
        log.info("rotation kept %s backups, deleted %d: %s", p["keep"], len(deleted), deleted)
        return {"deleted": len(deleted), "paths": deleted[:100]}

    rotate(verify(backup()))


dag = job_manager_backup()

if __name__ == "__main__":
    dag.test()
