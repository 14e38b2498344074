"""``get_connection()``: the replaced system's own SQL, unchanged, through psycopg2 connections
lent by a JobManager, against its migrated data (the legacy fixtures, loaded as
tests/test_import.py loads them). Real PostgreSQL; nothing of psycopg2 or the server is mocked.
"""

from __future__ import annotations

import datetime
import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import psycopg2
import psycopg2.extras
import pytest
from conftest import FIXTURES, ROOT, SecretLogin, Server
from job_manager import (
    ConfigurationError,
    DatabaseUnavailableError,
    JobManager,
    _default,
)
from test_schema import OLDEST_LAYOUT

# The replaced system's claim statement, verbatim.
LEGACY_CLAIM = (
    "UPDATE jobs SET status = 'processing' WHERE id = (SELECT id FROM jobs WHERE status = "
    "'pending' AND job_type = %s ORDER BY created_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED) "
    "RETURNING id, prompt_text, job_type, created_at"
)


@pytest.fixture
def legacy(server: Server, dbname: str, dsn: str) -> str:
    """The 42 jobs of the replaced system in its oldest layout, migrated by job_manager; four
    of them put back to pending for the claim tests."""
    server.psql(dbname, "-c", OLDEST_LAYOUT)
    server.psql(dbname, "-f", str(FIXTURES / "historical_jobs.sql"))
    jm = JobManager(dsn)
    jm.init_database()
    jm.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "UPDATE jobs SET status = 'pending' WHERE id IN "
            "(SELECT id FROM jobs WHERE job_type = 'IMAGE_TEST' ORDER BY id LIMIT 4)"
        )
    return dsn


@pytest.fixture
def app() -> str:
    return "jm-dbapi-" + uuid.uuid4().hex[:8]


@pytest.fixture
def gjm(legacy: str, app: str) -> Iterator[JobManager]:
    jm = JobManager(legacy, application_name=app, connect_timeout=5, dbapi_pool_size=3)
    yield jm
    jm.close()


def use(jm: JobManager) -> None:
    """One empty block."""
    with jm.get_connection():
        pass


def update_then_raise(jm: JobManager) -> None:
    with jm.get_connection() as conn, conn.cursor() as cur:
        cur.execute("UPDATE jobs SET status = 'completed' WHERE id = 5")
        raise KeyError("boom")


def killed_inside(jm: JobManager, db: psycopg.Connection) -> None:
    with jm.get_connection() as conn:
        db.execute("SELECT pg_terminate_backend(%s)", (conn.get_backend_pid(),))
        conn.cursor().execute("SELECT 1")


def sessions(db: psycopg.Connection, app: str) -> list[tuple[str, str]]:
    """(state, query) of every session named `app`, other than `db`'s own."""
    return db.execute(
        "SELECT state, query FROM pg_stat_activity WHERE application_name = %s "
        "AND pid <> pg_backend_pid()",
        (app,),
    ).fetchall()


def test_the_three_cursor_patterns_of_the_replaced_code(gjm: JobManager) -> None:
    # 1: `with conn.cursor() as cursor:`
    with gjm.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM jobs WHERE job_type = %s", ("IMAGE_TEST",))
        (count,) = cursor.fetchone()
        assert isinstance(count, int)
        assert count > 4
        assert [d.name for d in cursor.description] == ["count"]
    # 2: `cursor = conn.cursor(); cursor.execute(...); conn.commit()`
    with gjm.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute(
            "UPDATE jobs SET gcs_uri = %(uri)s WHERE id = %(id)s", {"uri": "gs://b/1", "id": 1}
        )
        assert cursor.rowcount == 1
        conn.commit()
        cursor.close()
    # 3: `conn.cursor(cursor_factory=RealDictCursor)`
    with gjm.get_connection() as conn:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
            cursor.execute("SELECT id, gcs_uri, job_type FROM jobs WHERE id = %s", (1,))
            row = cursor.fetchone()
        assert row == {"id": 1, "gcs_uri": "gs://b/1", "job_type": "IMAGE_TEST"}
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE jobs SET local_path = %s WHERE id = %s", [("/a", 2), ("/b", 3)]
            )
            cursor.execute("SELECT id, local_path FROM jobs WHERE id IN (2, 3) ORDER BY id")
            assert cursor.fetchmany(1) == [(2, "/a")]
            assert cursor.fetchall() == [(3, "/b")]
    # The queue's own API sees what the blocks committed.
    job = gjm.get_job_by_id(3)
    assert job is not None
    assert job["local_path"] == "/b"


def test_the_legacy_claim_statement_verbatim(gjm: JobManager, legacy: str) -> None:
    with psycopg.connect(legacy) as c:
        expected = c.execute(
            "SELECT id, prompt_text, job_type, created_at FROM jobs WHERE status = 'pending' "
            "AND job_type = 'IMAGE_TEST' ORDER BY created_at ASC"
        ).fetchall()
    assert len(expected) >= 4  # the four put back, and any the old system left pending
    claimed = []
    for _ in range(len(expected) + 1):
        with gjm.get_connection() as conn, conn.cursor() as cursor:
            cursor.execute(LEGACY_CLAIM, ("IMAGE_TEST",))
            claimed.append(cursor.fetchone())
    assert claimed == [*expected, None]
    assert isinstance(claimed[0][3], datetime.datetime)
    with psycopg.connect(legacy) as c:
        (n,) = c.execute("SELECT count(*) FROM jobs WHERE status = 'processing'").fetchone()
    assert n == len(expected)
    # Claimed through the pool by four threads at once: each job exactly once.
    with psycopg.connect(legacy, autocommit=True) as c:
        c.execute("UPDATE jobs SET status = 'pending' WHERE status = 'processing'")
    got: list[object] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with gjm.get_connection() as conn, conn.cursor() as cursor:
                cursor.execute(LEGACY_CLAIM, ("IMAGE_TEST",))
                row = cursor.fetchone()
            if row is None:
                return
            with lock:
                got.append(row[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == sorted(r[0] for r in expected)


def test_select_1_and_delete_like_with_commit(gjm: JobManager, legacy: str) -> None:
    with gjm.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    with psycopg.connect(legacy) as c:
        (before,) = c.execute("SELECT count(*) FROM jobs WHERE prompt_text LIKE '%小%'").fetchone()
        (total,) = c.execute("SELECT count(*) FROM jobs").fetchone()
    assert before > 0
    with gjm.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute("DELETE FROM jobs WHERE prompt_text LIKE %s", ("%小%",))
        assert cursor.rowcount == before
        conn.commit()
    with psycopg.connect(legacy) as c:
        (after,) = c.execute("SELECT count(*) FROM jobs").fetchone()
    assert after == total - before


def test_types_come_back_as_psycopg2_gives_them(gjm: JobManager) -> None:
    with gjm.get_connection() as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT id, prompt_text, created_at, gcs_uri, (SELECT avg(id) FROM jobs) "
            "FROM jobs ORDER BY id LIMIT 1"
        )
        row = cursor.fetchone()
    assert [type(v) for v in row] == [int, str, datetime.datetime, type(None), Decimal]


def test_commit_rollback_and_what_a_block_may_do(
    gjm: JobManager, legacy: str, db: psycopg.Connection, app: str
) -> None:
    def status(job_id: int) -> str:
        with psycopg.connect(legacy) as c:
            return c.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]

    # Ends normally: committed, without an explicit commit.
    with gjm.get_connection() as conn, conn.cursor() as cur:
        cur.execute("UPDATE jobs SET status = 'failed' WHERE id = 5")
    assert status(5) == "failed"
    # Raises: rolled back, and the exception is the caller's.
    with pytest.raises(KeyError):
        update_then_raise(gjm)
    assert status(5) == "failed"
    # A driver error passes through as psycopg2's own.
    with pytest.raises(psycopg2.errors.UndefinedTable), gjm.get_connection() as conn:
        conn.cursor().execute("SELECT * FROM no_such_table")
    # psycopg2's `with conn:` commits inside the block and does not close.
    with gjm.get_connection() as conn:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE jobs SET status = 'completed' WHERE id = 5")
        assert status(5) == "completed"
        assert not conn.closed
    # conn.close() inside the block: its work is dropped, the pool carries on.
    with gjm.get_connection() as conn:
        conn.cursor().execute("UPDATE jobs SET status = 'failed' WHERE id = 5")
        conn.close()
    assert status(5) == "completed"
    # A borrower's autocommit and cursor_factory do not follow the connection to the next.
    with gjm.get_connection() as conn:
        conn.autocommit = True
        conn.cursor_factory = psycopg2.extras.RealDictCursor
    for _ in range(3):
        with gjm.get_connection() as conn:
            assert conn.autocommit is False
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    assert len(sessions(db, app)) <= gjm.dbapi_pool_size
    assert all(state == "idle" for state, _ in sessions(db, app))


def test_only_as_a_with_block(gjm: JobManager, secret_login: SecretLogin) -> None:
    with JobManager(secret_login.dsn) as own:
        assert secret_login.password not in repr(own.get_connection())
    lease = gjm.get_connection()
    with pytest.raises(AttributeError, match=r"with jm\.get_connection\(\) as conn"):
        lease.cursor()
    assert not hasattr(lease, "commit")
    with lease as conn:
        assert not conn.closed
    with pytest.raises(RuntimeError, match="entered already"), lease:
        pass


def test_settings_follow_the_jobmanager(legacy: str, app: str) -> None:
    jm = JobManager(legacy, application_name=app, io_timeout=12.5, connect_timeout=3)
    assert jm.dbapi_pool_size == jm.pool_size == 4
    with jm.get_connection() as conn:
        params = conn.get_dsn_parameters()
        cur = conn.cursor()
        cur.execute("SHOW statement_timeout")
        (timeout,) = cur.fetchone()
    jm.close()
    assert params["application_name"] == app
    assert params["connect_timeout"] == "3"
    assert params["keepalives_idle"] == "10"
    assert params["tcp_user_timeout"] == "12500"
    assert "password" not in params or params["password"] != "postgres"
    assert timeout == "12500ms"
    # Behind PgBouncer in transaction pooling no session SET is made.
    jm = JobManager(legacy, application_name=app, prepared_statements=False)
    with jm.get_connection() as conn:
        cur = conn.cursor()
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone() == ("0",)
    jm.close()


@pytest.mark.slow
def test_ten_thousand_blocks_half_raising_leave_no_connection_open(
    gjm: JobManager, db: psycopg.Connection, app: str, legacy: str
) -> None:
    """10,000 blocks from 6 threads sharing dbapi_pool_size=3, every other one raising: the
    server never sees more than 3 sessions, each block's work is committed or rolled back, and
    after close() none is left."""
    threads, per_thread = 6, 10_000 // 6 + 1
    counts: list[int] = []
    raised = [0] * threads
    done = threading.Event()

    def watch() -> None:
        with psycopg.connect(legacy, autocommit=True) as c:
            while not done.is_set():
                counts.append(len(sessions(c, app)))
                time.sleep(0.01)

    def work(t: int) -> None:
        for i in range(per_thread):
            n = t * per_thread + i
            if n >= 10_000:
                return
            try:
                with gjm.get_connection() as conn, conn.cursor() as cur:
                    cur.execute("UPDATE jobs SET local_path = %s WHERE id = %s", (f"/r/{n}", t + 1))
                    if n % 2:
                        raise RuntimeError(n)
            except RuntimeError:
                raised[t] += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    elapsed = time.monotonic() - started
    done.set()
    watcher.join(10)
    assert sum(raised) == 5_000
    assert max(counts) <= gjm.dbapi_pool_size
    assert max(counts) >= 2  # the threads did share the pool
    # Every block ended its transaction: the pool's sessions are idle, none in a transaction.
    assert {state for state, _ in sessions(db, app)} <= {"idle"}
    # Each thread's last even-numbered block is what its job holds: odd ones rolled back.
    for t in range(threads):
        last = min(10_000, (t + 1) * per_thread) - 1
        last -= last % 2
        (path,) = db.execute("SELECT local_path FROM jobs WHERE id = %s", (t + 1,)).fetchone()
        assert path == f"/r/{last}"
    gjm.close()
    deadline = time.monotonic() + 5
    while sessions(db, app) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions(db, app) == []
    print(f"10,000 get_connection() blocks from {threads} threads in {elapsed:.1f}s")


def test_all_connections_in_use_is_a_typed_error_after_the_timeout(legacy: str) -> None:
    jm = JobManager(legacy, dbapi_pool_size=1, connect_timeout=0.5)
    with jm.get_connection():
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="all 1 connections") as info:
            use(jm)
        waited = time.monotonic() - started
    assert 0.4 <= waited < 3
    assert "dbapi_pool_size" in str(info.value)
    assert "postgres:" not in str(info.value).replace("postgres:***", "")
    # Freed: the next block gets the connection.
    with jm.get_connection() as conn:
        conn.cursor().execute("SELECT 1")
    jm.close()


def test_a_broken_connection_is_discarded(
    gjm: JobManager, db: psycopg.Connection, app: str
) -> None:
    def backend() -> int:
        with gjm.get_connection() as conn:
            return conn.get_backend_pid()

    first = backend()
    assert backend() == first  # reused
    # Killed while idle in the pool: noticed without a round trip, replaced.
    db.execute("SELECT pg_terminate_backend(%s)", (first,))
    time.sleep(0.2)
    second = backend()
    assert second != first
    # Killed inside a block: psycopg2's error passes through, the slot is freed.
    for _ in range(gjm.dbapi_pool_size + 1):
        with pytest.raises(psycopg2.OperationalError):
            killed_inside(gjm, db)
    assert backend() not in (first, second)


def test_connection_failures_are_typed_and_never_show_the_password(
    server: Server, dbname: str
) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    url = server.dsn_for(dbname)
    user_host = url.split("://", 1)[1].split("@", 1)
    wrong = f"postgresql://{user_host[0].split(':')[0]}:{secret}@{user_host[1]}"
    jm = JobManager(wrong, connect_timeout=5)
    with pytest.raises(ConfigurationError, match="password authentication failed") as info:
        use(jm)
    assert secret not in str(info.value)
    assert info.value.__cause__ is None
    assert secret not in repr(jm)
    # Nothing listens: DatabaseUnavailableError, quickly.
    jm = JobManager(f"postgresql://u:{secret}@127.0.0.1:1/db", connect_timeout=2)
    with pytest.raises(DatabaseUnavailableError, match="cannot connect") as info2:
        use(jm)
    assert secret not in str(info2.value)


def test_fork_child_never_uses_the_parents_sockets(gjm: JobManager) -> None:
    with gjm.get_connection() as conn:
        parent_pid = conn.get_backend_pid()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            # The parent's connection object, closed here as a finalizer would close it: it
            # must not send its Terminate down the parent's socket.
            conn.close()
            with gjm.get_connection() as mine:
                cur = mine.cursor()
                cur.execute("SELECT pg_backend_pid()")
                (pid,) = cur.fetchone()
            gjm.close()
            gc.collect()
            os.write(w, str(pid).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(child, 0)
    child_pid = int(os.read(r, 100) or b"0")
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid not in (0, parent_pid)
    # The parent's pooled connection survived the child and its exit.
    with gjm.get_connection() as conn:
        assert conn.get_backend_pid() == parent_pid
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_fork_inside_a_block_detaches_the_lent_connection(gjm: JobManager) -> None:
    with gjm.get_connection() as conn:
        parent_pid = conn.get_backend_pid()
        child = os.fork()
        if child == 0:  # pragma: no cover
            ok = False
            try:
                conn.cursor().execute("SELECT 1")
            except psycopg2.InterfaceError:
                ok = True  # closed in the child: it cannot speak on the parent's socket
            except BaseException:
                pass
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone() == (parent_pid,)


def test_db_manager_has_it(legacy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_MANAGER_DSN", legacy)
    monkeypatch.setattr(_default, "_manager", None)
    from job_manager.database import DatabaseManager, db_manager

    try:
        with db_manager.get_connection() as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        with DatabaseManager(legacy).get_connection() as conn:
            assert conn.cursor() is not None
    finally:
        db_manager.close()


def test_without_psycopg2_the_error_says_what_to_install(legacy: str) -> None:
    code = (
        "import sys; sys.modules['psycopg2'] = None\n"
        "from job_manager import JobManager, ConfigurationError\n"
        f"jm = JobManager({legacy!r})\n"
        "try:\n"
        "    jm.get_connection()\n"
        "except ConfigurationError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "pip install 'job_manager[dbapi]'" in out
