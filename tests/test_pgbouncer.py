"""Every API call through a real PgBouncer (Debian's package) in front of the test cluster:
`pool_mode=transaction` with `prepared_statements=False`, and `pool_mode=session` with the
prepared fast path."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Server, counted, scalar
from job_manager import JobManager, verify_backup
from nethelpers import Bouncer, find_pgbouncer, start_pgbouncer
from psycopg.conninfo import conninfo_to_dict

pytestmark = pytest.mark.skipif(
    find_pgbouncer() is None, reason="pgbouncer is not installed (scripts/bootstrap.sh installs it)"
)


def _start(server: Server, mode: str) -> Bouncer:
    params = conninfo_to_dict(server.admin_dsn)
    base = Path(tempfile.mkdtemp(prefix=f"jm-bouncer-{mode}-"))
    base.chmod(0o755)
    return start_pgbouncer(
        base, int(params["port"]), params["user"], params.get("password") or "", mode
    )


@pytest.fixture(scope="module")
def transaction_bouncer(server: Server) -> Iterator[Bouncer]:
    b = _start(server, "transaction")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def session_bouncer(server: Server) -> Iterator[Bouncer]:
    b = _start(server, "session")
    yield b
    b.stop()


def through(bouncer: Bouncer, dsn: str) -> str:
    head, tail = dsn.rsplit("@", 1)
    return f"{head}@127.0.0.1:{bouncer.port}/{tail.split('/', 1)[1]}"


def exercise(jm: JobManager, db: psycopg.Connection, tmp: Path) -> None:
    """Every kind of call: init (advisory lock), adds (one, COPY, ON CONFLICT), claims, status
    changes, downloads, stats, maintenance reads, backup and restore."""
    assert jm.init_database() != []
    assert jm.init_database() == []
    assert jm.pending_migrations() == []
    assert jm.check_table_exists("jobs") is True
    first = jm.add_job("one", "IMAGE_TEST")
    assert jm.add_job("one", "IMAGE_TEST") == first
    assert jm.add_jobs([f"bulk {i}" for i in range(3000)], "IMAGE_TEST") == 3000
    assert jm.add_jobs(["bulk 1", "new a", "new b"], "IMAGE_TEST") == 2
    assert jm.add_test_jobs(["t1", "t2"]) == 2
    claimed = [jm.get_and_lock_job("IMAGE_TEST") for _ in range(20)]
    ids = [c["id"] for c in claimed if c]
    assert len(set(ids)) == 20
    assert jm.mark_job_as_completed(ids[0], "/tmp/a", "gs://a") is True
    assert jm.mark_job_as_failed(ids[1], "boom") is True
    assert jm.mark_job_as_awaiting_retry(ids[2]) is True
    assert jm.mark_job_as_generation_successful(ids[3], "gs://b") is True
    assert jm.update_job_operation_info(ids[4], "op-1") is True
    assert jm.update_job_gcs_uri(ids[4], "gs://c") is True
    assert jm.get_job_operation_id(ids[4]) == "op-1"
    assert jm.get_job_by_id(ids[4])["status"] == "processing"
    assert jm.reset_stuck_jobs("IMAGE_TEST", 0) >= 15
    d = jm.add_download_task(ids[3], "https://x/b", "/tmp/b", "image", 5)
    assert [p["id"] for p in jm.get_pending_downloads(10)] == [d]
    assert jm.update_download_status(d, "downloading") is True
    assert jm.update_download_status(d, "completed", file_size=10) is True
    assert jm.get_download_stats()["summary"]["total_files"] == 1
    assert jm.cleanup_old_downloads(0) in (0, 1)
    stats = jm.get_job_stats()
    assert sum(stats["IMAGE_TEST"].values()) == 3005
    assert isinstance(jm.health_report(), dict)
    assert "jobs" in jm.analyze_tables()
    assert "jobs" in jm.vacuum_tables()
    assert jm.database_size() is not None
    assert jm.table_stats() is not None
    assert jm.show_stats() is None
    info = jm.backup_database(tmp / "backups")
    assert verify_backup(info.path).rows["jobs"] == 3005
    jm.add_job("after the backup", "IMAGE_TEST")
    jm.restore_database(info.path, safety_backup=True, backup_dir=tmp / "safety")
    assert scalar(db, "SELECT count(*) FROM jobs") == 3005
    assert jm.get_and_lock_job("IMAGE_TEST") is not None


def test_transaction_pooling_with_prepared_statements_off(
    transaction_bouncer: Bouncer, dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm = JobManager(through(transaction_bouncer, dsn), prepared_statements=False)
    exercise(jm, db, tmp_path)
    jm.close()


def test_transaction_pooling_shared_by_many_clients(
    transaction_bouncer: Bouncer, dsn: str, db: psycopg.Connection, faults: object
) -> None:
    """Several managers share PgBouncer's few server connections: claims stay exclusive and no
    session setting leaks from one client to another."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.add_jobs([f"j{i}" for i in range(200)], "IMAGE_TEST")
    setup.close()
    managers = [
        JobManager(through(transaction_bouncer, dsn), prepared_statements=False, pool_size=2)
        for _ in range(4)
    ]
    claimed: list[int] = []
    for _ in range(25):
        for jm in managers:
            job = jm.get_and_lock_job("IMAGE_TEST")
            assert job is not None
            claimed.append(job["id"])
    assert len(claimed) == len(set(claimed)) == 100
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 100
    # init_database's SET LOCAL lock_timeout and advisory lock are transaction-scoped.
    for jm in managers:
        assert jm.init_database() == []
    with psycopg.connect(through(transaction_bouncer, dsn), autocommit=True) as c:
        leaked_setting = c.execute("SHOW lock_timeout").fetchone()[0] != "0"
        leaked_locks = c.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ).fetchone()[0]
    for jm in managers:
        jm.close()
    assert not leaked_setting
    assert leaked_locks == 0
    faults.record(  # type: ignore[attr-defined]
        "PgBouncer 1.18 in pool_mode=transaction between 4 clients and the server",
        "100 claims interleaved across the clients (prepared_statements=False), then "
        "init_database from each; SHOW lock_timeout and pg_locks through PgBouncer after",
        1,
        counted(
            "100 distinct jobs claimed",
            settings_left_on_a_server_connection=int(leaked_setting),
            advisory_locks_left=leaked_locks,
        ),
    )


def test_transaction_pooling_under_concurrency(
    transaction_bouncer: Bouncer, dsn: str, db: psycopg.Connection, faults: object
) -> None:
    """Eight threads, each with its own manager, calling everything at once: the calls whose
    statements the driver prepares by name (schema history, maintenance reads) run on
    whichever server connection PgBouncer picks, so they must not depend on a statement
    prepared in an earlier exchange. Without the rewrite to unnamed statements this failed
    about 1000 times in 1200 ("prepared statement s100 does not exist")."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.add_jobs([f"c{i}" for i in range(400)], "IMAGE_TEST")
    setup.close()
    errors: list[str] = []
    claimed: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        jm = JobManager(through(transaction_bouncer, dsn), prepared_statements=False, pool_size=1)
        for _ in range(40):
            try:
                assert jm.pending_migrations() == []
                jm.health_report()
                jm.get_job_stats()
                job = jm.get_and_lock_job("IMAGE_TEST")
                if job is not None:
                    with lock:
                        claimed.append(job["id"])
            except Exception as e:  # every failure is collected and asserted below
                with lock:
                    errors.append(repr(e)[:300])
        jm.close()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    processing = scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'")
    faults.record(  # type: ignore[attr-defined]
        "PgBouncer transaction pooling: 8 clients at once, each exchange on any server connection",
        "schema history reads, health reports, stats and claims, 40 rounds per client "
        "(the driver's named statements rewritten to unnamed ones)",
        320,
        counted(
            calls_failed=len(errors),
            double_claims=len(claimed) - len(set(claimed)),
            claims_missing=320 - processing,
        ),
    )
    assert errors == []
    assert len(claimed) == len(set(claimed)) == 320
    assert processing == 320


def test_session_pooling_keeps_the_prepared_fast_path(
    session_bouncer: Bouncer, dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm = JobManager(through(session_bouncer, dsn))
    assert jm.prepared_statements is True
    exercise(jm, db, tmp_path)
    jm.close()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_get_connection_through_pgbouncer(
    request: pytest.FixtureRequest, mode: str, dsn: str, db: psycopg.Connection
) -> None:
    """#21: get_connection()'s psycopg2 connections through PgBouncer: the replaced code's
    claim runs; in transaction pooling no session SET is made (it would follow the server
    connection to other clients), in session pooling statement_timeout is io_timeout."""
    bouncer = request.getfixturevalue(f"{mode}_bouncer")
    transaction = mode == "transaction"
    jm = JobManager(through(bouncer, dsn), prepared_statements=not transaction, io_timeout=20)
    jm.init_database()
    job = jm.add_job(f"through {mode}", "VIDEO_PROD")
    claim = (
        "UPDATE jobs SET status = 'processing' WHERE id = (SELECT id FROM jobs WHERE status = "
        "'pending' AND job_type = %s ORDER BY created_at ASC LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING id, prompt_text, job_type, created_at"
    )
    for _ in range(3):
        with jm.get_connection() as conn, conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            assert cur.fetchone() == ("0" if transaction else "20s",)
    with jm.get_connection() as conn, conn.cursor() as cur:
        cur.execute(claim, ("VIDEO_PROD",))
        assert cur.fetchone()[:3] == (job, f"through {mode}", "VIDEO_PROD")
    assert scalar(db, "SELECT status FROM jobs WHERE id = %s", job) == "processing"
    jm.close()
