"""
### job_manager: daily maintenance and health report

Every day at 03:30 UTC (once the DAG is unpaused: DAGs start paused): put jobs stuck in
`processing` back to `pending`, delete completed downloads older than `download_days`, delete
Airflow task logs older than `log_days` under the base log folder (and directories left empty
that are as old), VACUUM (ANALYZE) each of job_manager's tables whose dead rows pass the health
report's threshold (more than `max_dead_ratio` of its rows and at least `min_dead_tuples`) and
ANALYZE the others, and finish with a health report (same thresholds): pushed to XCom, each
problem logged once as a warning. With `dry_run`, nothing is changed or deleted: each step
returns what the real run would do now. XCom carries counts and a sample of at most 100 paths.

`check_params` runs first and fails the run before anything is touched unless, whatever a
run's conf says:

- `stuck_after_s` >= 300 (a job claimed a moment ago is never reset), `download_days` >= 1,
  `log_days` >= 1;
- `log_dir` is empty (Airflow's base log folder) or resolves, symlinks included, inside it,
  and is a log folder the sweep accepts (Airflow's layout at its top, or named by the operator);
- `backup_dir` is empty (`$JOB_MANAGER_BACKUP_DIR`) or resolves inside it;
- `conn_id` is one of `$JOB_MANAGER_ALLOWED_CONN_IDS` (default: the deployment's connection).
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)
MIN_STUCK_S, MIN_DOWNLOAD_DAYS, MIN_LOG_DAYS = 300, 1, 1
MAX_DAYS = 36_500
# The health report's defaults: a table over both wants VACUUM.
MAX_DEAD_RATIO, MIN_DEAD_TUPLES = 0.2, 1000
OWNED_TABLES = ("jobs", "download_queue", "job_manager_schema_history")


def checked(params) -> dict:
    """The params this DAG acts on, validated (InvalidArgumentError otherwise)."""
    from job_manager import InvalidArgumentError
    from job_manager.airflow import (
        allowed_conn_id,
        at_least,
        backup_root,
        base_log_folder,
        boolean,
        confined_path,
        is_log_folder,
        whole,
    )

    logs, backups = base_log_folder(), backup_root()
    log_dir = confined_path(params.get("log_dir") or logs, logs, "log_dir")
    if not is_log_folder(log_dir):
        raise InvalidArgumentError(
            f"log_dir {log_dir} is not a log folder (no dag_id=*, dag_processor or scheduler "
            "directory in it, not named in $AIRFLOW__LOGGING__BASE_LOG_FOLDER or "
            "$JOB_MANAGER_LOG_DIRS): the sweep would refuse it"
        )
    return {
        "conn_id": allowed_conn_id(params.get("conn_id")),
        "stuck_after_s": at_least(params, "stuck_after_s", MIN_STUCK_S, MAX_DAYS * 86_400),
        "download_days": whole(params, "download_days", MIN_DOWNLOAD_DAYS, MAX_DAYS),
        "log_days": at_least(params, "log_days", MIN_LOG_DAYS, MAX_DAYS),
        "log_dir": str(log_dir),
        "backup_dir": str(
            confined_path(params.get("backup_dir") or backups, backups, "backup_dir")
        ),
        "max_dead_ratio": at_least(params, "max_dead_ratio", 0, 1),
        "min_dead_tuples": whole(params, "min_dead_tuples", 0, 2**62),
        "dry_run": boolean(params, "dry_run"),
    }


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
        "stuck_after_s": Param(3600, type="number", minimum=MIN_STUCK_S),
        "download_days": Param(7, type="integer", minimum=MIN_DOWNLOAD_DAYS, maximum=MAX_DAYS),
        "log_days": Param(7, type="number", minimum=MIN_LOG_DAYS, maximum=MAX_DAYS),
        "log_dir": Param("", type="string", description="empty: Airflow's base log folder"),
        "backup_dir": Param("", type="string", description="empty: $JOB_MANAGER_BACKUP_DIR"),
        "max_dead_ratio": Param(MAX_DEAD_RATIO, type="number", minimum=0, maximum=1),
        "min_dead_tuples": Param(MIN_DEAD_TUPLES, type="integer", minimum=0),
        "dry_run": Param(False, type="boolean"),
    },
)
def job_manager_maintenance():
    @task
    def check_params(params=None) -> dict:
        """Fails the run before any step touches anything when a param is not acceptable."""
        p = checked(params)
        log.info("params: %s", p)
        return p

    @task
    def reset_stuck_jobs(_checked: dict, params=None) -> int:
        from job_manager.airflow import manager_for

        p = checked(params)
        with manager_for(p) as jm:
            n = jm.reset_stuck_jobs(older_than_seconds=p["stuck_after_s"], dry_run=p["dry_run"])
        verb = "would reset (dry run)" if p["dry_run"] else "reset"
        log.info("%s %d jobs stuck in processing for more than %ss", verb, n, p["stuck_after_s"])
        return n

    @task
    def cleanup_old_downloads(_checked: dict, params=None) -> int:
        from job_manager.airflow import manager_for

        p = checked(params)
        with manager_for(p) as jm:
            n = jm.cleanup_old_downloads(p["download_days"], dry_run=p["dry_run"])
        verb = "would delete (dry run)" if p["dry_run"] else "deleted"
        log.info("%s %d completed downloads older than %d days", verb, n, p["download_days"])
        return n

    @task
    def cleanup_logs(_checked: dict, params=None) -> dict:
        """Counts and a bounded sample of paths to XCom, never the whole list."""
        from job_manager import cleanup_old_logs

        p = checked(params)
        report = cleanup_old_logs(p["log_dir"], p["log_days"], dry_run=p["dry_run"])
        log.info("log cleanup under %s: %s", p["log_dir"], report)
        for error in report.errors:
            log.warning("log cleanup: %s", error)
        return report.to_dict()

    @task
    def vacuum_or_analyze(_checked: dict, params=None) -> dict:
        """VACUUM (ANALYZE) the tables the health report would flag for dead rows, ANALYZE
        the rest: ``{"vacuumed": [...], "analyzed": [...]}``."""
        from job_manager.airflow import manager_for

        p = checked(params)
        with manager_for(p) as jm:
            bloated = [
                t["table"]
                for t in jm.table_stats()
                if t["dead_tuples"] >= p["min_dead_tuples"]
                and t["dead_tuples"] > p["max_dead_ratio"] * (t["live_tuples"] + t["dead_tuples"])
            ]
            vacuumed = jm.vacuum_tables(tables=bloated, dry_run=p["dry_run"]) if bloated else []
            others = [t for t in OWNED_TABLES if t not in vacuumed]
            analyzed = jm.analyze_tables(tables=others, dry_run=p["dry_run"])
        return {"vacuumed": vacuumed, "analyzed": analyzed}

    @task
    def health_report(*_done, params=None) -> dict:
        """The state after maintenance: to XCom, problems as warnings."""
        from job_manager.airflow import manager_for

        p = checked(params)
        with manager_for(p) as jm:
            report = jm.health_report(
                p["backup_dir"],
                thresholds={
                    "stuck_after_s": p["stuck_after_s"],
                    "max_dead_ratio": p["max_dead_ratio"],
                    "min_dead_tuples": p["min_dead_tuples"],
                },
            )
        # job_manager's logger has warned of each problem once ("health: ..."); say no more.
        log.info("health: %d problem(s)", len(report["problems"]))
        return report

    ok = check_params()
    steps = [
        reset_stuck_jobs(ok),
        cleanup_old_downloads(ok),
        cleanup_logs(ok),
        vacuum_or_analyze(ok),
    ]
    health_report(*steps)


dag = job_manager_maintenance()

if __name__ == "__main__":
    dag.test()
