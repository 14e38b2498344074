"""The defaults README promises, pinned: a test with ages far from the default (2 h, 0 s) would
pass whatever the default was."""

from __future__ import annotations

import inspect
import os
import socket
import threading
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


def test_constructor_defaults_are_the_documented_ones() -> None:
    params = inspect.signature(JobManager).parameters
    assert {name: p.default for name, p in params.items()} == {
        "dsn": None,
        "pool_size": 4,
        "connect_timeout": 10.0,
        "io_timeout": 30.0,
        "long_io_timeout": 3600.0,
        "application_name": None,
        "prepared_statements": True,
        "dbapi_pool_size": None,
    }


def test_pool_size_default_is_four(jm: JobManager, dsn: str, db: psycopg.Connection) -> None:
    """Six threads call at once while jobs is locked: the default pool opens four connections
    to the server (seen in pg_stat_activity), the other two calls wait for one of them."""
    manager = JobManager(dsn, application_name="jm-pool-default")
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            manager.add_job(f"pool {i}", "IMAGE_TEST")
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    try:
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            waiting = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                waiting = scalar(
                    db,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'jm-pool-default' AND wait_event_type = 'Lock'",
                )
                if waiting == 4:
                    break
                time.sleep(0.05)
            time.sleep(0.3)  # a fifth connection, if the pool were larger, would show by now
            opened = scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'jm-pool-default'",
            )
            locker.rollback()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
        assert (waiting, opened) == (4, 4)
        assert manager.pool_status().max_size == 4
    finally:
        manager.close()
    assert scalar(db, "SELECT count(*) FROM jobs WHERE starts_with(prompt_text, 'pool ')") == 6


def pool_sockets(db: psycopg.Connection, application_name: str) -> list[socket.socket]:
    """This process's TCP sockets that are a JobManager's connections to the test database
    (matched by the client ports the server sees), as duplicates to read options from."""
    ports = {
        port
        for (port,) in db.execute(
            "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            (application_name,),
        )
    }
    found = []
    for name in os.listdir("/proc/self/fd"):
        dup = os.dup(int(name)) if name.isdigit() else -1
        if dup < 0:
            continue
        try:
            s = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)
            continue
        port = s.getsockname()[1] if s.family == socket.AF_INET else None
        if port in ports and all(f.getsockname()[1] != port for f in found):
            found.append(s)  # one per connection (a socket may have several descriptors)
        else:
            s.close()
    return found


@pytest.mark.parametrize(("io_timeout", "user_timeout_ms"), [(None, 30_000), (7.0, 7_000)])
def test_tcp_keepalive_defaults(
    jm: JobManager,
    dsn: str,
    db: psycopg.Connection,
    io_timeout: float | None,
    user_timeout_ms: int,
) -> None:
    """README's keepalive row: 10 s idle, 5 s between probes, 3 probes, and a TCP user timeout
    of io_timeout, read back from the pooled connection's own socket."""
    name = "jm-keepalive"
    manager = (
        JobManager(dsn, application_name=name)
        if io_timeout is None
        else JobManager(dsn, application_name=name, io_timeout=io_timeout)
    )
    try:
        manager.get_job_stats()
        sockets = pool_sockets(db, name)
        try:
            assert len(sockets) == 1
            s = sockets[0]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == user_timeout_ms
        finally:
            for s in sockets:
                s.close()
    finally:
        manager.close()
