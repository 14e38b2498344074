"""scripts/job_manager_grants.sql: a role with exactly those grants runs every job_manager call
the DAGs and the queue commands make, on a real server, after a superuser created the schema;
what it cannot do is what README's security model says it cannot."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, Server
from job_manager import (
    DatabaseError,
    JobManager,
    cleanup_old_backups,
    list_backups,
    verify_backup,
)

GRANTS = ROOT / "scripts" / "job_manager_grants.sql"


@pytest.fixture
def app_dsn(server: Server, dbname: str, jm: JobManager) -> Iterator[str]:
    """jm (a superuser) ran init; a new login role gets exactly the grants of the file."""
    role = "jm_app_" + uuid.uuid4().hex[:8]
    password = secrets.token_hex(12)
    with server.admin() as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    server.psql(dbname, "-v", f"role={role}", "-v", f"dbname={dbname}", "-f", str(GRANTS))
    params = psycopg.conninfo.conninfo_to_dict(server.dsn_for(dbname))
    params.update(user=role, password=password)
    dsn = psycopg.conninfo.make_conninfo(**params)
    try:
        yield dsn
    finally:
        with server.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            c.execute(f"DROP ROLE {role}")


def test_the_grants_cover_every_call_the_dags_make(app_dsn: str, tmp_path: Path) -> None:
    with JobManager(app_dsn, connect_timeout=5) as app:
        # job_manager_init: inspect, and init after the superuser ran it (nothing pending).
        assert app.check_table_exists("jobs")
        assert app.pending_migrations() == []
        assert app.init_database() == []
        # job_queue_example and the queue API.
        assert app.add_jobs([f"p{i}" for i in range(5)], "IMAGE_TEST") == 5
        job_id = app.add_job("one more", "VIDEO_PROD")
        claimed = app.get_and_lock_job("IMAGE_TEST")
        assert claimed is not None
        assert app.mark_job_as_completed(claimed["id"], local_path="/tmp/x")
        other = app.get_and_lock_job("IMAGE_TEST")
        assert other is not None
        assert app.mark_job_as_failed(other["id"], "no")
        app.show_stats()
        assert app.get_job_stats()["VIDEO_PROD"] == {"pending": 1}
        download = app.add_download_task(job_id, "https://example.com/v", "/tmp/v", "video")
        assert app.get_pending_downloads(10)
        app.update_download_status(download, "completed")
        # job_manager_maintenance.
        assert app.reset_stuck_jobs(older_than_seconds=300) == 0
        assert app.cleanup_old_downloads(1) == 0
        app.analyze_tables()  # PostgreSQL skips it with a warning for a non-owner; no error
        report = app.health_report(str(tmp_path / "b"))
        assert report["jobs_total"] == 6
        assert app.table_stats()
        assert app.database_size() > 0
        # job_manager_backup: backup, verify, rotate.
        made = [app.backup_database(tmp_path / "b", keep=None) for _ in range(2)]
        assert verify_backup(made[-1].path).rows == {"jobs": 6, "download_queue": 1}
        assert len(list_backups(tmp_path / "b")) == 2
        cleanup_old_backups(tmp_path / "b", 3)
        # What it cannot do: restore (it needs the owner: see the SQL file) ...
        with pytest.raises(DatabaseError):
            app.restore_database(made[0].path, safety_backup=False, backup_dir=tmp_path / "s")
        assert app.get_job_stats()["IMAGE_TEST"] == {"pending": 3, "completed": 1, "failed": 1}


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE public.intruder (x int)",
        "DROP TABLE jobs",
        "TRUNCATE jobs",
        "ALTER TABLE jobs ADD COLUMN x int",
        "INSERT INTO job_manager_schema_history (version, name, checksum) VALUES (99, 'x', 'x')",
        "SELECT * FROM pg_authid",
        "CREATE ROLE intruder",
        "CREATE DATABASE intruder",
    ],
)
def test_the_role_has_nothing_more(app_dsn: str, sql: str) -> None:
    with (
        psycopg.connect(app_dsn, autocommit=True) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute(sql)
