"""Attacks on waiting (src/wait.rs): a LISTEN connection that goes silent while TCP stays up
(a hung backend, a proxy whose upstream died, a middlebox that forgot the flow but keeps
acknowledging), through the blackholing proxy of tests/nethelpers.py. Real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from conftest import Server
from job_manager import DatabaseUnavailableError, JobManager
from nethelpers import Proxy


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    port = int(server.dsn_for("x").rsplit(":", 1)[1].split("/")[0])
    p = Proxy(port)
    yield p
    p.close()


def via(proxy: Proxy, dsn: str) -> str:
    head, tail = dsn.rsplit("@", 1)
    return f"{head}@127.0.0.1:{proxy.port}/{tail.split('/', 1)[1]}"


def test_a_silent_listen_connection_does_not_deafen_the_waits(
    proxy: Proxy, dsn: str, db: psycopg.Connection
) -> None:
    """The kept LISTEN connection goes silent (new connections still work). A job committed
    during the next wait must be claimed within a few io_timeouts, not only when a wait
    starts again: otherwise every later wait (the silent connection is kept and reused) hears
    nothing for its whole timeout, and a worker looping on wait_and_lock_job(timeout=300)
    takes a job only every 300 s."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=1.0, io_timeout=1.0)
    try:
        assert jm.wait_for_job("IMAGE_TEST", 0.2) is False  # the LISTEN connection, kept
        proxy.blackhole()  # it (and the pooled one) go silent; new connections work
        inserter = threading.Timer(
            2.5,
            lambda: db.execute(
                "INSERT INTO jobs (prompt_text, job_type) VALUES ('late', 'IMAGE_TEST')"
            ),
        )
        inserter.start()
        started = time.monotonic()
        job = jm.wait_and_lock_job("IMAGE_TEST", 20)
        elapsed = time.monotonic() - started
        inserter.join()
        assert job is not None
        assert job["prompt_text"] == "late"
        assert elapsed < 2.5 + 4 * 1.0, elapsed
    finally:
        jm.close()


@pytest.mark.parametrize("timeout", [0, 0.5, 3.0])
def test_a_silent_server_bounds_every_wait(proxy: Proxy, dsn: str, timeout: float) -> None:
    """Everything through the proxy goes silent, open and new connections alike, while a
    LISTEN connection is kept: each wait ends (DatabaseUnavailableError or nothing found)
    within timeout + io_timeout + connect_timeout and a little, never hangs."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=1.0, io_timeout=1.0)
    try:
        assert jm.wait_for_job("IMAGE_TEST", 0.2) is False  # pooled + LISTEN connections
        proxy.blackhole(new_connections=True)
        for call in (
            lambda: jm.wait_for_job("IMAGE_TEST", timeout),
            lambda: jm.wait_and_lock_job("IMAGE_TEST", timeout),
            lambda: jm.wait_and_lock_jobs("IMAGE_TEST", 5, timeout),
        ):
            started = time.monotonic()
            with contextlib.suppress(DatabaseUnavailableError):
                call()
            elapsed = time.monotonic() - started
            assert elapsed < timeout + 1.0 + 1.0 + 1.5, elapsed
    finally:
        jm.close()
