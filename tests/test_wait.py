"""Waiting without polling: wait_for_job / wait_and_lock_job(s), woken by LISTEN/NOTIFY (V6's
triggers), interruptible, bounded, and polling with backoff behind PgBouncer."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Server, scalar
from job_manager import InvalidArgumentError, JobManager
from nethelpers import Bouncer, find_pgbouncer, start_pgbouncer
from psycopg.conninfo import conninfo_to_dict
from test_grants import app_dsn  # noqa: F401


def _later(delay: float, fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_returns_at_once_when_a_job_is_pending(jm: JobManager) -> None:
    jm.add_job("ready", "IMAGE_TEST")
    started = time.monotonic()
    assert jm.wait_for_job("IMAGE_TEST", 10) is True
    job = jm.wait_and_lock_job("IMAGE_TEST", 10)
    assert job is not None
    assert job["prompt_text"] == "ready"
    assert time.monotonic() - started < 1


def test_timeout_without_jobs(jm: JobManager) -> None:
    jm.add_job("other type", "VIDEO_PROD")
    started = time.monotonic()
    assert jm.wait_for_job("IMAGE_TEST", 0.6) is False
    waited = time.monotonic() - started
    assert 0.6 <= waited < 2.0
    assert jm.wait_and_lock_job("IMAGE_TEST", 0) is None
    assert jm.wait_and_lock_jobs("IMAGE_TEST", 10, 0.3) == []
    for bad in (-1, float("nan"), float("inf"), 31 * 86_400):
        with pytest.raises(InvalidArgumentError, match="timeout must be"):
            jm.wait_for_job("IMAGE_TEST", bad)


def test_woken_by_an_insert_and_by_a_requeue(jm: JobManager, dsn: str) -> None:
    producer = JobManager(dsn)
    t = _later(0.3, lambda: producer.add_job("late", "IMAGE_TEST"))
    started = time.monotonic()
    job = jm.wait_and_lock_job("IMAGE_TEST", 20)
    woke = time.monotonic() - started
    t.join()
    assert job is not None
    assert job["prompt_text"] == "late"
    assert 0.25 < woke < 2.0
    # A job put back to pending (reset_stuck_jobs) wakes a waiter too.
    t = _later(0.3, lambda: producer.reset_stuck_jobs("IMAGE_TEST", 0))
    started = time.monotonic()
    again = jm.wait_and_lock_jobs("IMAGE_TEST", 5, 20)
    t.join()
    assert [j["id"] for j in again] == [job["id"]]
    assert time.monotonic() - started < 2.0
    producer.close()


def test_a_batch_insert_wakes_a_batch_waiter(jm: JobManager, dsn: str) -> None:
    producer = JobManager(dsn)
    t = _later(0.2, lambda: producer.add_jobs([f"b{i}" for i in range(50)], "VIDEO_PROD"))
    jobs = jm.wait_and_lock_jobs("VIDEO_PROD", 100, 20)
    t.join()
    assert [j["prompt_text"] for j in jobs] == [f"b{i}" for i in range(50)]
    producer.close()


def _notifications(listener: psycopg.Connection, quiet_for: float = 1.0) -> list[str]:
    """The payloads on 'job_manager_jobs' that reach `listener` until none came for `quiet_for`."""
    return [n.payload for n in listener.notifies(timeout=quiet_for)]


def test_a_restore_notifies_each_pending_job_type_once(
    jm: JobManager, dsn: str, tmp_path: Path
) -> None:
    """A restore loads its rows with V6's insert trigger set aside (it would copy every row into
    a transition table) and sends the notification that trigger would have sent: one per job
    type with pending rows, at COMMIT. The trigger is on again afterwards."""
    jm.add_jobs([f"i{i}" for i in range(30)], "IMAGE_TEST")
    jm.add_jobs([f"v{i}" for i in range(5)], "VIDEO_PROD")
    for _ in range(5):
        jm.mark_job_as_completed(jm.get_and_lock_job("VIDEO_PROD")["id"])
    info = jm.backup_database(tmp_path, keep=None)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN job_manager_jobs")
        jm.restore_database(info.path, safety_backup=False)
        # Only IMAGE_TEST has pending rows: the VIDEO_PROD jobs were all completed.
        assert _notifications(listener) == ["IMAGE_TEST"]
        jm.add_job("after", "VIDEO_PROD")
        assert _notifications(listener) == ["VIDEO_PROD"]
        assert (
            scalar(
                listener,
                "SELECT tgenabled FROM pg_trigger WHERE tgname = 'job_manager_notify_insert'",
            )
            == "O"
        )


def test_a_restore_wakes_a_waiting_consumer(jm: JobManager, dsn: str, tmp_path: Path) -> None:
    jm.add_jobs(["restored 1", "restored 2"], "IMAGE_TEST")
    info = jm.backup_database(tmp_path, keep=None)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM jobs")
    restorer = JobManager(dsn)
    t = _later(0.3, lambda: restorer.restore_database(info.path, safety_backup=False))
    started = time.monotonic()
    jobs = jm.wait_and_lock_jobs("IMAGE_TEST", 10, 20)
    t.join()
    assert sorted(j["prompt_text"] for j in jobs) == ["restored 1", "restored 2"]
    assert time.monotonic() - started < 10
    restorer.close()


def test_a_restore_keeps_a_notify_trigger_the_operator_disabled(
    jm: JobManager, dsn: str, tmp_path: Path
) -> None:
    jm.add_jobs(["a", "b"], "IMAGE_TEST")
    info = jm.backup_database(tmp_path, keep=None)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE jobs DISABLE TRIGGER job_manager_notify_insert")
        c.execute("LISTEN job_manager_jobs")
        jm.restore_database(info.path, safety_backup=False)
        assert _notifications(c) == []
        assert (
            scalar(c, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'job_manager_notify_insert'")
            == "D"
        )


def test_not_woken_before_commit(jm: JobManager, db: psycopg.Connection, dsn: str) -> None:
    committed = []

    def slow_producer() -> None:
        with psycopg.connect(dsn) as c:
            c.execute("INSERT INTO jobs (prompt_text, job_type) VALUES ('tx', 'IMAGE_TEST')")
            time.sleep(0.5)
            c.commit()
            committed.append(time.monotonic())

    t = _later(0.1, slow_producer)
    job = jm.wait_and_lock_job("IMAGE_TEST", 20)
    got = time.monotonic()
    t.join()
    assert job is not None
    assert got >= committed[0]


def test_other_job_types_do_not_end_the_wait(jm: JobManager, dsn: str) -> None:
    producer = JobManager(dsn)
    t = _later(0.1, lambda: producer.add_job("video", "VIDEO_PROD"))
    assert jm.wait_and_lock_job("IMAGE_TEST", 0.8) is None
    t.join()
    assert jm.get_job_stats() == {"VIDEO_PROD": {"pending": 1}}
    producer.close()


def test_no_lost_wake_up(jm: JobManager, dsn: str) -> None:
    """A job committed at any moment of the waiter's start (before, during or after its LISTEN)
    is found well before the timeout: the check after LISTEN closes the gap."""
    producer = JobManager(dsn)
    rng = random.Random(16)
    for i in range(40):
        delay = rng.choice([0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.02])
        t = _later(delay, lambda i=i: producer.add_job(f"race {i}", "IMAGE_TEST"))
        started = time.monotonic()
        job = jm.wait_and_lock_job("IMAGE_TEST", 10)
        t.join()
        assert job is not None, i
        assert job["prompt_text"] == f"race {i}"
        assert time.monotonic() - started < 2, i
    producer.close()


def test_waiters_share_the_jobs(jm: JobManager, dsn: str) -> None:
    producer = JobManager(dsn)
    got: list[int] = []
    lock = threading.Lock()

    def waiter() -> None:
        mine = JobManager(dsn, pool_size=1)
        while job := mine.wait_and_lock_job("IMAGE_TEST", 1.5):
            with lock:
                got.append(job["id"])
        mine.close()

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(60):
        producer.add_job(f"w{i}", "IMAGE_TEST")
        time.sleep(0.005)
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 60
    assert len(set(got)) == 60
    producer.close()


WAIT_SCRIPT = """
import sys, time, job_manager
jm = job_manager.JobManager(sys.argv[1])
print("waiting", flush=True)
jm.wait_for_job("IMAGE_TEST", 120)
"""


def test_ctrl_c_ends_the_wait(jm: JobManager, dsn: str, db: psycopg.Connection) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WAIT_SCRIPT, dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n"
        # Interrupt once the waiter is blocked on its LISTEN connection.
        deadline = time.monotonic() + 10
        while not scalar(
            db, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN job_manager_jobs'"
        ):
            assert time.monotonic() < deadline, "the waiter never listened"
            time.sleep(0.02)
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        ended = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert ended < 1.5, ended


IDLE_SCRIPT = """
import json, resource, sys, threading, time, job_manager
jm = job_manager.JobManager(sys.argv[1], pool_size=8, prepared_statements=sys.argv[3] == "1")
seconds = float(sys.argv[2])
jm.wait_for_job("IMAGE_TEST", 0.05)  # connect first: the wait alone is measured
before = resource.getrusage(resource.RUSAGE_SELF)
threads = [threading.Thread(target=jm.wait_for_job, args=("IMAGE_TEST", seconds))
           for _ in range(8)]
started = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
                  "wall": time.monotonic() - started}))
"""


def idle_cpu(dsn: str, seconds: float, listen: bool = True) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", IDLE_SCRIPT, dsn, str(seconds), "1" if listen else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    )
    return json.loads(out.stdout)


def test_waiting_spends_almost_no_cpu(jm: JobManager, dsn: str) -> None:
    """8 waiters for 3 s: the CPU time of the process over the wait (getrusage), with a
    generous bound (2% of one core); measured on the shared 2-core box at a few ms."""
    r = idle_cpu(dsn, 3.0)
    assert r["wall"] >= 3.0
    assert r["cpu"] < 0.06, r


# -- PgBouncer in transaction pooling: LISTEN cannot work, waits poll with backoff ---------------


@pytest.fixture(scope="module")
def bouncer(server: Server) -> Iterator[Bouncer]:
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (scripts/bootstrap.sh installs it)")
    params = conninfo_to_dict(server.admin_dsn)
    base = Path(tempfile.mkdtemp(prefix="jm-bouncer-wait-"))
    base.chmod(0o755)
    b = start_pgbouncer(
        base, int(params["port"]), params["user"], params.get("password") or "", "transaction"
    )
    yield b
    b.stop()


def through(bouncer: Bouncer, dsn: str) -> str:
    head, tail = dsn.rsplit("@", 1)
    return f"{head}@127.0.0.1:{bouncer.port}/{tail.split('/', 1)[1]}"


def test_pgbouncer_transaction_pooling_polls(
    bouncer: Bouncer, jm: JobManager, dsn: str, db: psycopg.Connection
) -> None:
    via = JobManager(through(bouncer, dsn), prepared_statements=False, pool_size=2)
    assert via.wait_for_job("IMAGE_TEST", 0.3) is False
    t = _later(0.5, lambda: jm.add_job("bounced", "IMAGE_TEST"))
    started = time.monotonic()
    job = via.wait_and_lock_job("IMAGE_TEST", 20)
    woke = time.monotonic() - started
    t.join()
    assert job is not None
    assert job["prompt_text"] == "bounced"
    # Found by polling: at most one capped pause (1 s) after the insert.
    assert 0.45 < woke < 2.0
    # No LISTEN was sent through the bouncer.
    assert not scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%'")
    t = _later(0.2, lambda: jm.add_jobs(["x1", "x2"], "IMAGE_TEST"))
    assert len(via.wait_and_lock_jobs("IMAGE_TEST", 10, 20)) in (1, 2)
    t.join()
    via.close()


def test_polling_waiters_stay_cheap(bouncer: Bouncer, jm: JobManager, dsn: str) -> None:
    """The backoff caps at one check per second per waiter: 8 pollers for 3 s stay cheap."""
    r = idle_cpu(through(bouncer, dsn), 3.0, listen=False)
    assert r["cpu"] < 0.3, r


def test_listen_connection_is_reused_and_closed(jm: JobManager, db: psycopg.Connection) -> None:
    def listening() -> int:
        return int(
            scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN job_manager_jobs'",
            )
        )

    for _ in range(3):
        assert jm.wait_for_job("IMAGE_TEST", 0.05) is False
    assert listening() == 1
    jm.close()
    deadline = time.monotonic() + 5
    while listening():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_forked_child_waits_on_its_own_connection(jm: JobManager, dsn: str) -> None:
    assert jm.wait_for_job("IMAGE_TEST", 0.05) is False  # the parent's LISTEN connection
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            producer = JobManager(dsn)
            t = _later(0.2, lambda: producer.add_job("forked", "IMAGE_TEST"))
            code = 0 if jm.wait_and_lock_job("IMAGE_TEST", 10) else 2
            t.join()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert jm.wait_for_job("IMAGE_TEST", 0.05) is False  # the parent's still works


def test_the_least_privilege_role_waits_and_ends_batches(
    app_dsn: str,  # noqa: F811
) -> None:
    """scripts/job_manager_grants.sql is enough: LISTEN, the V6 trigger firing on the role's
    inserts, batch claims and endings."""
    with JobManager(app_dsn, connect_timeout=5) as app, JobManager(app_dsn) as producer:
        t = _later(0.3, lambda: producer.add_jobs(["g1", "g2", "g3"], "IMAGE_TEST"))
        jobs = app.wait_and_lock_jobs("IMAGE_TEST", 10, 20)
        t.join()
        assert sorted(j["prompt_text"] for j in jobs) == ["g1", "g2", "g3"]
        ids = [j["id"] for j in jobs]
        assert app.mark_jobs_as_failed([(ids[0], "no")]) == [ids[0]]
        assert app.mark_jobs_as_completed([(i, "/x") for i in ids[1:]]) == ids[1:]
