"""scripts/job_manager_grants.sql: a role with exactly those grants runs every job_manager call
the DAGs and the queue commands make, on a real server, after a superuser created the schema;
what it cannot do is what README's security model says it cannot."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
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
        # Only the owner may ANALYZE (PostgreSQL <= 16): skipped, and not reported as done.
        assert app.analyze_tables() == []
        assert app.vacuum_tables() == []
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


def test_compose_db_setup_end_to_end(server: Server) -> None:
    """What docker-compose.yml runs (scripts/compose_db_setup.sh with psql, job_manager init as
    the superuser in between), against the real server: the role then works the queue and
    can do nothing more."""
    if server.cluster is None:
        pytest.skip("needs the throwaway cluster's psql")
    params = psycopg.conninfo.conninfo_to_dict(server.admin_dsn)
    role = "jm_role_" + uuid.uuid4().hex[:8]
    db = "jm_queue_" + uuid.uuid4().hex[:8]
    password = secrets.token_urlsafe(24)
    env = {
        "PATH": f"{server.cluster.bindir}:{os.environ['PATH']}",
        "PGHOST": str(params.get("host")),
        "PGPORT": str(params.get("port")),
        "PGUSER": str(params.get("user")),
        "PGPASSWORD": str(params.get("password")),
        "PGDATABASE": "postgres",
        "JOB_MANAGER_DB": db,
        "JOB_MANAGER_ROLE": role,
        "JOB_MANAGER_DB_PASSWORD": password,
    }
    script = str(ROOT / "scripts" / "compose_db_setup.sh")

    def setup(step: str) -> None:
        r = subprocess.run(
            ["bash", script, step], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr

    try:
        setup("before-init")
        setup("before-init")  # every `docker compose up` runs it again
        owner = dict(params, dbname=db)
        r = subprocess.run(
            [sys.executable, "-m", "job_manager", "init"],
            env={**os.environ, "JOB_MANAGER_DSN": psycopg.conninfo.make_conninfo(**owner)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        setup("after-init")
        app_params = dict(params, dbname=db, user=role, password=password)
        app = psycopg.conninfo.make_conninfo(**app_params)
        with JobManager(app, connect_timeout=5) as jm:
            assert jm.init_database() == []
            jm.add_job("from the role", "IMAGE_TEST")
            assert jm.get_and_lock_job("IMAGE_TEST") is not None
        with (
            psycopg.connect(app, autocommit=True) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            c.execute("CREATE TABLE intruder (x int)")
        # Other databases are closed to it (PUBLIC's CONNECT was revoked on the queue's only,
        # so check the role's attributes instead).
        with server.admin() as c:
            attrs = c.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                (role,),
            ).fetchone()
            assert attrs == (False, False, False)
            example_owner = c.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = "
                "'job_queue_example'"
            ).fetchone()
            assert example_owner == (role,)
    finally:
        with server.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            c.execute("DROP DATABASE IF EXISTS job_queue_example WITH (FORCE)")
            c.execute(f'DROP ROLE IF EXISTS "{role}"')
