"""Attacks on ``get_connection()`` (python/job_manager/_dbapi.py): what one ``with`` block
leaves on its session must not reach the next borrower of the pooled connection. The replaced
system opened a new connection per call, so code written for it never expected a session
(its SETs, advisory locks, held cursors, role) to outlive the block. Real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import psycopg2
import pytest
from conftest import Server
from job_manager import JobManager


@pytest.fixture
def one(dsn: str) -> Iterator[JobManager]:
    """A JobManager whose get_connection() pool holds one connection: every block reuses it."""
    jm = JobManager(
        dsn,
        connect_timeout=5,
        io_timeout=12.5,
        dbapi_pool_size=1,
        application_name="jm-attack-" + uuid.uuid4().hex[:8],
    )
    yield jm
    jm.close()


def backend(jm: JobManager) -> int:
    with jm.get_connection() as conn:
        return conn.get_backend_pid()


def show(jm: JobManager, setting: str) -> str:
    with jm.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting(%s)", (setting,))
        return cur.fetchone()[0]


def test_a_blocks_set_does_not_reach_the_next_borrower(one: JobManager) -> None:
    first = backend(one)
    # A borrower turns off the statement_timeout the pool promises (io_timeout) and points
    # search_path elsewhere, committing normally.
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
        cur.execute("SET search_path = pg_catalog")
        cur.execute("SET work_mem = '77MB'")
    assert backend(one) == first  # the same connection was lent again
    assert show(one, "statement_timeout") == "12500ms"
    assert show(one, "search_path") == '"$user", public'
    assert show(one, "work_mem") == "4MB"


def test_a_session_advisory_lock_is_not_kept_by_the_pool(
    one: JobManager, db: psycopg.Connection
) -> None:
    # The replaced code's connection went away with its block, and its session lock with it.
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(4242)")
    (got,) = db.execute("SELECT pg_try_advisory_lock(4242)").fetchone()
    assert got, "the idle pooled connection still holds the block's session advisory lock"


def test_a_held_cursor_does_not_outlive_its_block(one: JobManager) -> None:
    with one.get_connection() as conn:
        cur = conn.cursor("report", withhold=True)
        cur.execute("SELECT generate_series(1, 1000)")
        cur.fetchmany(10)  # the block ends before the cursor is read to the end
    # The next borrower uses the same (legacy) cursor name.
    with one.get_connection() as conn:
        cur = conn.cursor("report", withhold=True)
        cur.execute("SELECT 1")
        assert cur.fetchall() == [(1,)]
        cur.close()


def test_a_blocks_role_does_not_reach_the_next_borrower(
    one: JobManager, db: psycopg.Connection
) -> None:
    role = "jm_attack_" + uuid.uuid4().hex[:8]
    db.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        with one.get_connection() as conn, conn.cursor() as cur:
            cur.execute(f"GRANT {role} TO current_user")
            cur.execute(f"SET ROLE {role}")
        assert show(one, "role") == "none"
        with one.get_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_user = session_user")
            assert cur.fetchone() == (True,)
    finally:
        one.close()
        db.execute(f"DROP ROLE {role}")


def test_a_blocks_temp_table_and_listen_do_not_follow(one: JobManager) -> None:
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE scratch (id int)")
        cur.execute("LISTEN job_manager_jobs")
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_listening_channels()")
        assert cur.fetchone() == (0,)
        # The legacy code creates its scratch table each time.
        cur.execute("CREATE TEMP TABLE scratch (id int)")


def test_a_transaction_psycopg2_did_not_open_is_discarded(one: JobManager) -> None:
    """A BEGIN sent in autocommit mode leaves the session in a transaction: closed, not lent."""
    first = backend(one)
    with one.get_connection() as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("BEGIN")  # an open transaction psycopg2 does not know about
    second = backend(one)
    assert second != first
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_a_blocks_client_encoding_does_not_follow(one: JobManager) -> None:
    with one.get_connection() as conn:
        conn.set_client_encoding("LATIN1")
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT %s::text", ("小山",))
        assert cur.fetchone() == ("小山",)


def test_a_blocks_typecasters_do_not_follow(one: JobManager) -> None:
    with one.get_connection() as conn:
        text_as_upper = psycopg2.extensions.new_type((25,), "UPPER", lambda v, c: v and v.upper())
        psycopg2.extensions.register_type(text_as_upper, conn)
    with one.get_connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'abc'::text")
        assert cur.fetchone() == ("abc",)


def test_libpq_environment_does_not_redirect_the_connection(
    server: Server, dbname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is made from the JobManager's settings, not from whatever PG* variables
    the process has (libpq reads them for every keyword it is not given; the queue's own
    driver reads none). A DSN without a database means the user's name for both."""
    dsn = server.dsn_for(dbname).rsplit("/", 1)[0]  # no database: the driver uses "postgres"
    monkeypatch.setenv("PGDATABASE", dbname)
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "standby")
    jm = JobManager(dsn, connect_timeout=5)
    try:
        assert jm.dsn.endswith("/postgres")  # what the queue's own connections use
        with jm.get_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT current_database()")
            assert cur.fetchone() == ("postgres",)
    finally:
        jm.close()


def test_ctrl_c_while_a_connection_is_being_reset_does_not_leak_it(
    one: JobManager, db: psycopg.Connection
) -> None:
    """Ctrl-C that lands while the pool resets a returned connection (the reset waits on a lock
    here, so the signal is pending when it returns): the connection is closed, not left open
    outside the pool, where it would break the dbapi_pool_size bound."""
    app = show(one, "application_name")

    def count() -> int:
        return db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()[0]

    def interrupt_when_blocked(pid: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (waiting,) = db.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if waiting:
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        db.execute("ROLLBACK")  # releases the lock: the reset finishes

    def block_whose_reset_waits() -> None:
        with one.get_connection() as conn, conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE scratch (id int)")
            cur.execute("SELECT pg_my_temp_schema()::regnamespace::text")
            (schema,) = cur.fetchone()
            pid = conn.get_backend_pid()
            conn.commit()
            db.execute("BEGIN")
            db.execute(f'LOCK TABLE "{schema}".scratch IN ACCESS EXCLUSIVE MODE')
            threading.Thread(target=interrupt_when_blocked, args=(pid,), daemon=True).start()
        # Not reached when the KeyboardInterrupt is raised by the reset, as it is here.
        time.sleep(5)

    with pytest.raises(KeyboardInterrupt):
        block_whose_reset_waits()
    # The pool lends at most dbapi_pool_size (1) connections, lent or idle: after one more
    # block there is one session, not the interrupted one plus a new one.
    assert backend(one) > 0
    assert count() == 1, "the connection being reset was left open, outside the pool"
