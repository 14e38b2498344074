"""Bad networks, through a real TCP proxy in front of the test cluster: a server that goes
silent, replies lost after the server committed, pool exhaustion, and what the errors say."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import Server, counted, scalar
from job_manager import ConfigurationError, DatabaseUnavailableError, JobManager
from nethelpers import Proxy, via

# -- arguments that used to panic or overflow -----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connect_timeout": 1e300}, "connect_timeout"),
        ({"connect_timeout": float("inf")}, "connect_timeout"),
        ({"connect_timeout": float("nan")}, "connect_timeout"),
        ({"connect_timeout": -1}, "connect_timeout"),
        ({"connect_timeout": 10**400}, "connect_timeout"),
        ({"connect_timeout": "5"}, "connect_timeout"),
        ({"pool_size": -1}, "pool_size"),
        ({"pool_size": 2**40}, "pool_size"),
        ({"pool_size": 2**200}, "pool_size"),
        ({"pool_size": 0}, "pool_size"),
        ({"pool_size": 2.5}, "pool_size"),
        ({"pool_size": True}, "pool_size"),
        ({"io_timeout": 0}, "io_timeout"),
        ({"io_timeout": 1e300}, "io_timeout"),
        ({"io_timeout": -0.5}, "io_timeout"),
        ({"long_io_timeout": float("inf")}, "long_io_timeout"),
        ({"long_io_timeout": 10**400}, "long_io_timeout"),
        ({"application_name": "a\x00b"}, "application_name"),
    ],
)
def test_bad_numbers_are_configuration_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        JobManager("postgresql://u:pw@h/db", **kwargs)


def test_good_numbers_are_kept() -> None:
    jm = JobManager(
        "postgresql://u:pw@h/db", pool_size=7, connect_timeout=2, io_timeout=1.5, long_io_timeout=60
    )
    assert (jm.pool_size, jm.connect_timeout, jm.io_timeout, jm.long_io_timeout) == (
        7,
        2.0,
        1.5,
        60.0,
    )
    assert jm.sslmode == "prefer"
    assert jm.prepared_statements is True


# -- redaction by structure ---------------------------------------------------------------------


def test_default_airflow_credentials_are_redacted_by_structure() -> None:
    """airflow/airflow/airflow: only the password is hidden, not every 'airflow'."""
    jm = JobManager("postgresql://airflow:airflow@127.0.0.1:1/airflow", connect_timeout=1)
    assert jm.dsn == "postgresql://airflow:***@127.0.0.1:1/airflow"
    with pytest.raises(DatabaseUnavailableError) as info:
        jm.get_job_stats()
    message = str(info.value)
    assert "airflow:***@127.0.0.1:1/airflow" in message
    assert "***:***" not in message


def test_a_short_password_does_not_mark_other_words() -> None:
    jm = JobManager("postgresql://bob:o@127.0.0.1:1/photo?sslmode=disable", connect_timeout=1)
    with pytest.raises(DatabaseUnavailableError) as info:
        jm.get_job_stats()
    assert "bob:***@127.0.0.1:1/photo" in str(info.value)
    assert "ph***t***" not in str(info.value)


def test_missing_password_is_a_configuration_error(server: Server, dbname: str) -> None:
    dsn = server.dsn_for(dbname)
    head, tail = dsn.split("://", 1)
    user = tail.split(":", 1)[0]
    no_password = f"{head}://{user}@{tail.split('@', 1)[1]}"
    jm = JobManager(no_password, connect_timeout=5)
    with pytest.raises(ConfigurationError, match="asks for a password") as info:
        jm.get_job_stats()
    assert f"{user}@127.0.0.1" in str(info.value)


def test_connection_errors_name_user_host_port_database(server: Server) -> None:
    jm = JobManager("postgresql://someone:s3cr3t-pw@127.0.0.1:1/somedb", connect_timeout=1)
    with pytest.raises(DatabaseUnavailableError) as info:
        jm.add_job("x", "IMAGE_TEST")
    message = str(info.value)
    assert "someone:***@127.0.0.1:1/somedb" in message
    assert "s3cr3t" not in message


# -- application_name ---------------------------------------------------------------------------


def app_names(db: psycopg.Connection, dbname: str) -> set[str]:
    rows = db.execute(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return {r[0] for r in rows}


def test_application_name_default_and_overrides(
    jm: JobManager, dsn: str, dbname: str, db: psycopg.Connection
) -> None:
    jm.get_job_stats()
    assert "job_manager" in app_names(db, dbname)
    jm.close()
    other = JobManager(dsn, application_name="nightly-loader")
    other.get_job_stats()
    assert "nightly-loader" in app_names(db, dbname)
    other.close()
    from_dsn = JobManager(dsn + "?application_name=from-dsn")
    from_dsn.get_job_stats()
    assert "from-dsn" in app_names(db, dbname)
    from_dsn.close()


# -- pool exhaustion ----------------------------------------------------------------------------


def test_pool_exhaustion_names_the_pool_size_and_the_wait(dsn: str, db: psycopg.Connection) -> None:
    jm = JobManager(dsn, pool_size=1, connect_timeout=1)
    jm.init_database()
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    busy = threading.Thread(target=jm.get_job_stats)
    busy.start()
    try:
        deadline = time.monotonic() + 10
        while jm.pool_status().in_use < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        with pytest.raises(DatabaseUnavailableError) as info:
            jm.get_job_by_id(1)
        message = str(info.value)
        assert "pool_size=1" in message
        assert "busy" in message
        assert "is the server running" not in message
    finally:
        blocker.rollback()
        blocker.close()
        busy.join(timeout=30)
    jm.close()


# -- a silent server ----------------------------------------------------------------------------


CALLS = {
    "get_job_stats": lambda jm: jm.get_job_stats(),
    "get_and_lock_job": lambda jm: jm.get_and_lock_job("IMAGE_TEST"),
    "add_job": lambda jm: jm.add_job("b", "IMAGE_TEST"),
    "mark_job_as_completed": lambda jm: jm.mark_job_as_completed(1),
    "add_download_task": lambda jm: jm.add_download_task(1, "https://x/1", "/tmp/1", "image"),
}


def prepared(proxy: Proxy, dsn: str) -> JobManager:
    setup = JobManager(dsn)
    setup.init_database()
    setup.add_jobs(["a", "a2", "a3"], "IMAGE_TEST")
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=1.0, io_timeout=1.0)
    jm.get_job_stats()  # a warm pooled connection
    return jm


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_silent_server_ends_every_call_within_its_bound(
    proxy: Proxy, dsn: str, call: str, faults: object
) -> None:
    """Everything through the proxy goes silent, open and new connections alike: each call
    fails with DatabaseUnavailableError after at most io_timeout + connect_timeout."""
    jm = prepared(proxy, dsn)
    proxy.blackhole(new_connections=True)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        CALLS[call](jm)
    elapsed = time.monotonic() - started
    jm.close()
    faults.record(  # type: ignore[attr-defined]
        f"server silent (blackholing proxy, open and new connections): {call}",
        "io_timeout=1s, connect_timeout=1s",
        1,
        counted(
            f"DatabaseUnavailableError after {elapsed:.1f}s",
            waits_past_both_timeouts=int(elapsed >= 3.5),
        ),
    )
    assert 0.9 <= elapsed < 1.0 + 1.0 + 1.5, elapsed


@pytest.mark.parametrize(
    "call", ["get_job_stats", "get_and_lock_job", "add_job", "mark_job_as_completed"]
)
def test_a_silent_connection_is_replaced_for_calls_safe_to_repeat(
    proxy: Proxy, dsn: str, db: psycopg.Connection, call: str
) -> None:
    """Only the pooled connection goes silent (a NAT forgot it): reads, idempotent writes and
    claims (which find their token) succeed on a new connection after one io_timeout."""
    jm = prepared(proxy, dsn)
    proxy.blackhole()
    started = time.monotonic()
    CALLS[call](jm)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 1.0 + 2.0, elapsed
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == (
        1 if call == "get_and_lock_job" else 0
    )
    jm.close()


def test_a_blackholed_write_is_an_error_that_says_outcome_unknown(proxy: Proxy, dsn: str) -> None:
    setup = JobManager(dsn)
    setup.init_database()
    job = setup.add_job("a", "IMAGE_TEST")
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=2, io_timeout=1.0)
    jm.add_download_task(job, "https://x/warm", "/tmp/warm", "image")
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"io_timeout.*unknown"):
        jm.add_download_task(job, "https://x/1", "/tmp/1", "image")
    assert time.monotonic() - started < 3
    jm.close()


def test_a_silent_server_at_login_is_bounded_by_connect_timeout(proxy: Proxy) -> None:
    """A listener that accepts and never answers."""
    proxy.blackhole(new_connections=True)
    jm = JobManager(f"postgresql://u:p@127.0.0.1:{proxy.port}/db", connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="connect_timeout"):
        jm.get_job_stats()
    assert time.monotonic() - started < 2.5


# -- lost replies -------------------------------------------------------------------------------


def processing_ids(db: psycopg.Connection) -> set[int]:
    return {r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'processing'").fetchall()}


@pytest.mark.slow
def test_claims_whose_reply_is_lost_are_handed_to_their_caller(
    proxy: Proxy, dsn: str, db: psycopg.Connection, faults: object
) -> None:
    setup = JobManager(dsn)
    setup.init_database()
    setup.add_jobs([f"p{i}" for i in range(40)], "IMAGE_TEST")
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=2, io_timeout=0.5)
    handed: list[int] = []
    rounds = 6
    for _ in range(rounds):
        first = jm.get_and_lock_job("IMAGE_TEST")  # warm: the statement is prepared
        assert first is not None
        handed.append(first["id"])
        proxy.lose_next_reply()
        lost = jm.get_and_lock_job("IMAGE_TEST")
        assert lost is not None
        handed.append(lost["id"])
    orphaned = processing_ids(db) - set(handed)
    jm.close()
    faults.record(  # type: ignore[attr-defined]
        "reply to a committed claim lost (proxy drops it after the server commits)",
        "get_and_lock_job; the claim is found again by its token on a new connection",
        rounds,
        counted(
            jobs_handed_out_twice=len(handed) - len(set(handed)),
            claimed_jobs_handed_to_no_one=len(orphaned),
        ),
    )
    assert len(handed) == len(set(handed)), handed
    assert processing_ids(db) == set(handed)
    assert scalar(db, "SELECT count(*) FROM jobs") == 40


def test_lost_replies_never_duplicate_rows(
    proxy: Proxy, dsn: str, db: psycopg.Connection, faults: object
) -> None:
    setup = JobManager(dsn)
    setup.init_database()
    job = setup.add_job("owner", "IMAGE_TEST")
    setup.close()
    jm = JobManager(via(proxy, dsn), connect_timeout=2, io_timeout=0.5)
    jm.add_download_task(job, "https://x/warm", "/tmp/warm", "image")
    jm.add_job("warm", "IMAGE_TEST")

    proxy.lose_next_reply()
    with pytest.raises(DatabaseUnavailableError, match="unknown"):
        jm.add_download_task(job, "https://x/1", "/tmp/1", "image")
    downloads = scalar(db, "SELECT count(*) FROM download_queue WHERE remote_url = 'https://x/1'")
    assert downloads == 1

    # add_job: INSERT ... ON CONFLICT DO NOTHING, safe to repeat: the caller gets the id.
    jm.add_job("warm", "IMAGE_TEST")  # a new warm connection (the last one was lost)
    proxy.lose_next_reply()
    new_id = jm.add_job("lost-reply", "IMAGE_TEST")
    jobs = scalar(db, "SELECT count(*) FROM jobs WHERE prompt_text = 'lost-reply'")
    assert jobs == 1
    assert scalar(db, "SELECT id FROM jobs WHERE prompt_text = 'lost-reply'") == new_id

    # update_download_status(downloading) counts an attempt: not repeated.
    download = scalar(db, "SELECT id FROM download_queue WHERE remote_url = 'https://x/warm'")
    jm.update_download_status(download, "downloading")  # warm (prepared), attempt 1
    jm.update_download_status(download, "pending")
    proxy.lose_next_reply()
    with pytest.raises(DatabaseUnavailableError, match="unknown"):
        jm.update_download_status(download, "downloading")
    attempts = scalar(db, "SELECT attempts FROM download_queue WHERE id = %s", download)
    assert attempts == 2

    # add_jobs: all or nothing; the caller is told the outcome is unknown.
    jm.get_job_stats()  # a new warm connection
    proxy.lose_next_reply()
    with pytest.raises(DatabaseUnavailableError, match="unknown"):
        jm.add_jobs(["m1", "m2", "m3"], "IMAGE_TEST")
    batch = scalar(db, "SELECT count(*) FROM jobs WHERE prompt_text LIKE 'm_'")
    jm.close()
    faults.record(  # type: ignore[attr-defined]
        "reply to a committed write lost",
        "add_download_task, add_job, update_download_status(downloading), add_jobs: add_job "
        "repeats safely, the others say the outcome is unknown",
        4,
        counted(
            rows_duplicated=(downloads - 1) + (jobs - 1) + (attempts - 2),
            partial_batches=int(batch not in (0, 3)),
        ),
    )
    assert batch in (0, 3)


def test_a_restart_before_the_call_is_sent_is_still_retried(server: Server, dsn: str) -> None:
    """A pooled connection the server closed while idle: the call had not been sent, so it
    runs again on a new connection (as before), even for a write."""
    if server.cluster is None:
        pytest.skip("needs the suite's own cluster")
    jm = JobManager(dsn)
    jm.init_database()
    job = jm.add_job("before restart", "IMAGE_TEST")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'job_manager' AND pid <> pg_backend_pid()"
        )
    time.sleep(0.2)
    assert jm.add_download_task(job, "https://x/after", "/tmp/after", "image") > 0
    jm.close()


def test_exceptions_are_in_the_tree() -> None:
    assert issubclass(DatabaseUnavailableError, job_manager.JobManagerError)


def test_a_statement_past_io_timeout_is_cancelled_on_the_server(
    dsn: str, dbname: str, db: psycopg.Connection
) -> None:
    """A read stuck behind a lock: the call gives up after io_timeout (once more on a new
    connection, as reads are repeated) and the server is asked to cancel what it was running,
    so no backend is left waiting for the lock."""
    jm = JobManager(dsn, pool_size=1, io_timeout=0.5, application_name="jm-cancel-test")
    jm.init_database()
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="io_timeout"):
            jm.get_job_stats()
        assert time.monotonic() - started < 0.5 * 2 + 1.5
        deadline = time.monotonic() + 5
        waiting = -1
        while time.monotonic() < deadline:
            waiting = scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jm-cancel-test' "
                "AND wait_event_type = 'Lock'",
            )
            if waiting == 0:
                break
            time.sleep(0.05)
        assert waiting == 0
    finally:
        blocker.rollback()
        blocker.close()
    jm.close()


def test_backups_and_restores_use_long_io_timeout(dsn: str, tmp_path: Path) -> None:
    """io_timeout bounds ordinary calls only: with io_timeout=0.05 s a restore of 60,000 jobs
    (silent while the server rebuilds indexes and commits) still succeeds, because restores run
    with long_io_timeout; with long_io_timeout=0.05 s too, the same restore is cut off."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.add_jobs([f"restore me {i} " + "x" * 200 for i in range(60_000)], "IMAGE_TEST")
    info = setup.backup_database(tmp_path / "b")
    setup.close()
    short = JobManager(dsn, io_timeout=0.05)
    assert short.restore_database(info.path, safety_backup=False) is not None
    assert short.backup_database(tmp_path / "b2").rows["jobs"] == 60_000
    short.close()
    # The server's silence made certain, not left to the machine's speed: another session holds
    # a lock on jobs for 1 s, so the restore's first statement on it waits that long unanswered.
    both_short = JobManager(dsn, io_timeout=0.05, long_io_timeout=0.05)
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE jobs IN ACCESS SHARE MODE")
        release = threading.Timer(1.0, locker.rollback)
        release.start()
        try:
            with pytest.raises(DatabaseUnavailableError, match="long_io_timeout"):
                both_short.restore_database(info.path, safety_backup=False)
        finally:
            release.join()
    both_short.close()
