"""The defaults README promises, pinned: a test with ages far from the default (2 h, 0 s) would
pass whatever the default was."""

from __future__ import annotations

import inspect
import time

import job_manager
import psycopg
import pytest
from conftest import scalar
from job_manager import JobManager


def age_processing(db: psycopg.Connection, minutes: dict[int, float]) -> None:
    """Makes each job (id -> minutes) look claimed that many minutes ago."""
    db.execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
    for job_id, m in minutes.items():
        db.execute(
            "UPDATE jobs SET updated_at = LOCALTIMESTAMP - make_interval(mins => %s) WHERE id = %s",
            (m, job_id),
        )
    db.execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")


def test_reset_stuck_jobs_default_is_one_hour(jm: JobManager, db: psycopg.Connection) -> None:
    ids = [jm.add_job(f"claimed {i}", "IMAGE_TEST") for i in range(2)]
    for _ in ids:
        jm.get_and_lock_job("IMAGE_TEST")
    # 59 minutes: still being worked on; 61 minutes: stuck.
    age_processing(db, {ids[0]: 59, ids[1]: 61})
    assert jm.reset_stuck_jobs(dry_run=True) == 1
    assert jm.reset_stuck_jobs() == 1
    assert scalar(db, "SELECT status FROM jobs WHERE id = %s", ids[0]) == "processing"
    assert scalar(db, "SELECT status FROM jobs WHERE id = %s", ids[1]) == "pending"
    sig = inspect.signature(JobManager.reset_stuck_jobs)
    assert sig.parameters["older_than_seconds"].default == 3600.0


def test_init_database_lock_timeout_default_is_five_seconds(
    dsn: str, jm: JobManager, db: psycopg.Connection
) -> None:
    """A migration that needs a table another session holds gives up after 5 s by default
    (not at once, and not after waiting forever behind it)."""
    db.execute(
        "DELETE FROM job_manager_schema_history WHERE version = %s", (job_manager.SCHEMA_VERSION,)
    )
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(job_manager.SchemaError, match="locked by another session"):
            JobManager(dsn).init_database()
        waited = time.monotonic() - started
        locker.rollback()
    assert 4.5 <= waited < 9, waited
    assert inspect.signature(JobManager.init_database).parameters["lock_timeout"].default == 5.0
