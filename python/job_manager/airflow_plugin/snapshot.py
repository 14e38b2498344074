"""What the page and the metrics show, read from the database and the backup folder.

Every read goes through job_manager's own read-only API (``health_report``,
``download_counts``, ``throughput``, ``list_backups``); each statement is served by an
index (V3, V7). The JobManager is one per process: its pool is the only place a connection
lives between requests.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from job_manager import JobManager, list_backups
from job_manager.exceptions import ConfigurationError, JobManagerError

log = logging.getLogger("job_manager.airflow_plugin")

#: Backups shown on the page, newest first.
SHOWN_BACKUPS = 5
#: The newest backup should be younger than this (as the health report's default).
MAX_BACKUP_AGE_S = 26 * 3600.0
#: Connections the page's pool may hold (the API server has several workers, each its own).
POOL_SIZE = 2

_lock = threading.Lock()
_manager: JobManager | None = None
# list_backups reads every file in full; the listing is kept while no file changed.
_backups_cache: tuple[tuple[Any, ...], list[Any]] | None = None


def manager() -> JobManager:
    """The process's JobManager: the Airflow connection ``$JOB_MANAGER_CONN_ID`` (default
    ``job_manager_db``), else ``$JOB_MANAGER_DSN``. Created on first use; no I/O here."""
    global _manager
    with _lock:
        if _manager is None:
            conn_id = os.environ.get("JOB_MANAGER_CONN_ID") or "job_manager_db"
            try:
                _manager = JobManager.from_airflow_connection(conn_id, pool_size=POOL_SIZE)
            except Exception as e:  # Airflow's not-found error differs between versions
                if not os.environ.get("JOB_MANAGER_DSN"):
                    if isinstance(e, JobManagerError):
                        raise
                    # job_manager's error, so the page says it (503) rather than a bare 500;
                    # the reason, which may name the connection's host, goes to the log only.
                    log.warning("job queue page: Airflow connection %r: %s", conn_id, e)
                    raise ConfigurationError(
                        f"the Job queue page reads the queue through the Airflow connection "
                        f"{conn_id!r} ($JOB_MANAGER_CONN_ID) or $JOB_MANAGER_DSN, and neither "
                        f"is usable ({type(e).__name__}): add the connection"
                    ) from None
                log.info("no Airflow connection %r (%s); using $JOB_MANAGER_DSN", conn_id, e)
                _manager = JobManager(pool_size=POOL_SIZE)
        return _manager


def backup_dir() -> Path:
    """``$JOB_MANAGER_BACKUP_DIR`` (as the backup DAG), default ``/opt/airflow/backups``."""
    return Path(os.environ.get("JOB_MANAGER_BACKUP_DIR") or "/opt/airflow/backups")


#: The names list_backups reads (``airflow_backup_YYYYMMDD_HHMMSS.sql[.gz|.zst]``).
_BACKUP_NAME = re.compile(r"airflow_backup_[0-9]{8}_[0-9]{6}\.sql(\.gz|\.zst)?")


def _listing_key(folder: Path) -> tuple[Any, ...]:
    """The backup files' names, sizes and times: only the files list_backups reads, so a
    backup in progress (its hidden temporary file growing) or any other file does not make
    every request verify every backup again."""
    entries = []
    with os.scandir(folder) as it:
        for e in it:
            if _BACKUP_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                entries.append((e.name, st.st_size, st.st_mtime_ns))
    return (str(folder), *sorted(entries))


def backups(folder: Path) -> list[Any]:
    """``list_backups(folder)``, newest first, read again only when a file changed."""
    global _backups_cache
    if not folder.is_dir():
        return []
    key = _listing_key(folder)
    cached = _backups_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    listed = list_backups(folder)
    _backups_cache = (key, listed)
    return listed


@dataclass
class Problem:
    text: str
    action: str
    #: The DAG that fixes it (the page links to it), if one does.
    dag_id: str | None = None


@dataclass
class Snapshot:
    generated_at: dt.datetime
    jobs: dict[str, dict[str, int]]
    jobs_total: int
    stuck: int
    stuck_after_s: float
    oldest_pending_age_s: float | None
    downloads: dict[str, int]
    schema_version: int | None
    backup_dir: str
    backups: list[dict[str, Any]]
    backup_count: int
    newest_backup: dict[str, Any] | None
    newest_verified_backup: dict[str, Any] | None
    problems: list[Problem]
    hourly: list[dict[str, Any]] = field(default_factory=list)
    daily: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at.isoformat(),
            "jobs": self.jobs,
            "jobs_total": self.jobs_total,
            "stuck": self.stuck,
            "stuck_after_s": self.stuck_after_s,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "downloads": self.downloads,
            "schema_version": self.schema_version,
            "backup_dir": self.backup_dir,
            "backups": self.backups,
            "backup_count": self.backup_count,
            "problems": [p.__dict__ for p in self.problems],
            "throughput": {"hour": self.hourly, "day": self.daily},
        }


def _action_for(problem: str) -> tuple[str, str | None]:
    """The fix for one of the health report's problems, and the DAG that applies it."""
    if "reset_stuck_jobs" in problem or "vacuum_tables" in problem:
        return "Trigger job_manager_maintenance (resets stuck jobs, vacuums)", (
            "job_manager_maintenance"
        )
    if "init_database" in problem:
        return "Trigger job_manager_init (applies the pending migrations)", "job_manager_init"
    if "backup" in problem:
        return "Trigger job_manager_backup (backs up, verifies, rotates)", "job_manager_backup"
    if "oldest pending" in problem:
        return "Check that the workers run (the DAGs that claim jobs are unpaused)", None
    if "downloads" in problem:
        return "Inspect the failed downloads' error_message, then re-queue or delete them", None
    return "See the health report in the job_manager_maintenance logs", "job_manager_maintenance"


def _backup_row(b: Any, now: dt.datetime) -> dict[str, Any]:
    created = b.created_at
    return {
        "name": Path(b.path).name,
        "size_bytes": b.size_bytes,
        "created_at": created.isoformat() if created else None,
        "age_s": (now - created).total_seconds() if created else None,
        "rows": dict(b.rows),
        "verified": bool(b.verified),
        "problem": b.problem,
    }


def take(*, throughput: bool = True) -> Snapshot:
    """Reads everything once. Raises job_manager's errors (the page shows them)."""
    jm = manager()
    # The reads are independent and release the GIL: run them side by side on the pool's
    # connections (two), which about halves the page's time on a large queue.
    with ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="job-queue") as ex:
        report_f = ex.submit(jm.health_report)
        downloads_f = ex.submit(jm.download_counts)
        daily_f = ex.submit(jm.throughput, "day") if throughput else None
        hourly_f = ex.submit(jm.throughput, "hour") if throughput else None
        report = report_f.result()
        downloads = downloads_f.result()
        daily = daily_f.result()["buckets"] if daily_f else []
        hourly = hourly_f.result()["buckets"] if hourly_f else []
    folder = backup_dir()
    now = dt.datetime.now(dt.timezone.utc)
    backup_fix = _action_for("backup")
    unreadable: Problem | None = None
    try:
        listed = backups(folder)
    except (OSError, JobManagerError) as e:
        # The queue's numbers still show; the folder's trouble is one of the problems.
        log.warning("job queue page: reading backups in %s failed: %s", folder, e)
        listed = []
        unreadable = Problem(f"the backup folder {folder} cannot be read: {e}", *backup_fix)
    rows = [_backup_row(b, now) for b in listed]
    newest = rows[0] if rows else None
    newest_verified = next((r for r in rows if r["verified"]), None)
    problems = [Problem(p, *_action_for(p)) for p in report["problems"]]
    # The backup half of the health report, from the cached listing (health_report(dir)
    # would read every backup in full on each request).
    if unreadable is not None:
        problems.append(unreadable)
    elif not folder.is_dir():
        problems.append(Problem(f"no backup folder {folder}: no backups taken yet", *backup_fix))
    elif newest is None:
        problems.append(Problem(f"no backups in {folder}", *backup_fix))
    else:
        if not newest["verified"]:
            problems.append(
                Problem(
                    f"the newest backup {newest['name']} does not verify: {newest['problem']}",
                    *backup_fix,
                )
            )
        if newest["age_s"] is not None and newest["age_s"] > MAX_BACKUP_AGE_S:
            problems.append(
                Problem(
                    f"the newest backup is {newest['age_s'] / 3600:.1f}h old "
                    f"(more than {MAX_BACKUP_AGE_S / 3600:.0f}h)",
                    *backup_fix,
                )
            )
    thresholds = report["thresholds"]
    snap = Snapshot(
        generated_at=now,
        jobs=report["jobs"],
        jobs_total=int(report["jobs_total"]),
        stuck=int(report["stuck_processing"]),
        stuck_after_s=float(thresholds["stuck_after_s"]),
        oldest_pending_age_s=report["oldest_pending_age_s"],
        downloads=downloads,
        schema_version=report["schema"]["version"],
        backup_dir=str(folder),
        backups=rows[:SHOWN_BACKUPS],
        backup_count=len(rows),
        newest_backup=newest,
        newest_verified_backup=newest_verified,
        problems=problems,
    )
    snap.hourly, snap.daily = hourly, daily
    return snap
