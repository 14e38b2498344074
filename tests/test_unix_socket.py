"""A DSN whose host is a Unix-domain socket directory: connected without TLS, and, since a
broken call cannot then be known unsent, only calls that are safe to repeat are repeated."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from conftest import Server, scalar
from job_manager import DatabaseUnavailableError, JobManager


def end_the_managers_sessions(db: psycopg.Connection, application_name: str) -> None:
    """The server ends the manager's pooled session while it is idle (an admin, a restart)."""
    pids = [
        pid
        for (pid,) in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        )
    ]
    assert pids
    for pid in pids:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and scalar(
        db, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", pids
    ):
        time.sleep(0.02)


def test_a_socket_directory_host(
    server: Server,
    dbname: str,
    db: psycopg.Connection,
    log_records: list[logging.LogRecord],
) -> None:
    if server.cluster is None:
        pytest.skip("needs the throwaway cluster's socket directory")
    name = "jm-unix-socket"
    jm = JobManager(
        f"host={server.cluster.server_dir} port={server.cluster.port} dbname={dbname} "
        f"user=postgres password={server.password} application_name={name}"
    )
    try:
        assert jm.init_database()
        job = jm.add_job("over the socket", "IMAGE_TEST")
        # A local socket: no client address, no TLS.
        assert db.execute(
            "SELECT a.client_addr, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.application_name = %s",
            (name,),
        ).fetchall() == [(None, False)]

        # A read is safe to repeat: it runs again on a new connection.
        end_the_managers_sessions(db, name)
        assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 1}}
        assert any("safe to repeat: running it again" in r.getMessage() for r in log_records)

        # add_job repeats safely (ON CONFLICT DO NOTHING): the same job, once.
        end_the_managers_sessions(db, name)
        assert jm.add_job("over the socket", "IMAGE_TEST") == job
        assert scalar(db, "SELECT count(*) FROM jobs") == 1

        # A write that is not safe to repeat is not repeated: the outcome is unknown.
        end_the_managers_sessions(db, name)
        with pytest.raises(DatabaseUnavailableError, match="whether it took effect is unknown"):
            jm.add_download_task(job, "gs://b/x.png", "/out/x.png", "image")
        assert scalar(db, "SELECT count(*) FROM download_queue") == 0
    finally:
        jm.close()
