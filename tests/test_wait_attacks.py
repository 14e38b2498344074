"""Attacks on waiting (src/wait.rs): a LISTEN connection that goes silent while TCP stays up
(a hung backend, a proxy whose upstream died, a middlebox that forgot the flow but keeps
acknowledging), through the blackholing proxy of tests/nethelpers.py. Real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from job_manager import DatabaseUnavailableError, JobManager
from nethelpers import Proxy, via


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


WAITER = """
import json, os, sys, job_manager
dsn, limit, done = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jm = job_manager.JobManager(dsn, pool_size=1)
got = []
print("ready", flush=True)
while True:
    jobs = jm.wait_and_lock_jobs("IMAGE_TEST", limit, 1.0)
    if jobs:
        got.extend(j["id"] for j in jobs)
    elif os.path.exists(done):
        break
jm.close()
print(json.dumps(got), flush=True)
"""


@pytest.mark.slow
def test_six_waiting_processes_claim_each_job_exactly_once(
    dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """Six processes (LISTEN connections of their own) wait and claim in batches of 1 to 10
    while jobs arrive singly and in batches: every job is claimed by exactly one of them."""
    setup = JobManager(dsn)
    setup.init_database()
    done = tmp_path / "done"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WAITER, dsn, str(limit), str(done)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for limit in (1, 1, 2, 3, 5, 10)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        rng = random.Random(16)
        n = 0
        while n < 600:
            size = rng.choice([1, 1, 1, 2, 7, 25])
            if size == 1:
                setup.add_job(f"mp {n}", "IMAGE_TEST")
            else:
                setup.add_jobs([f"mp {n + i}" for i in range(size)], "IMAGE_TEST")
            n += size
            time.sleep(rng.choice([0, 0.001, 0.01]))
        done.write_text("done")
        claimed: list[int] = []
        for p in procs:
            out, _ = p.communicate(timeout=60)
            assert p.returncode == 0
            claimed.extend(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        setup.close()
    ids = [r[0] for r in db.execute("SELECT id FROM jobs ORDER BY id").fetchall()]
    assert len(claimed) == len(set(claimed)), "a job was claimed twice"
    assert sorted(claimed) == ids
    (pending,) = db.execute("SELECT count(*) FROM jobs WHERE status <> 'processing'").fetchone()
    assert pending == 0


CTRL_C_SCRIPT = """
import sys, job_manager
jm = job_manager.JobManager(sys.argv[1], connect_timeout=5, io_timeout=float(sys.argv[2]))
jm.wait_for_job("IMAGE_TEST", 0.1)
print("waiting", flush=True)
jm.wait_for_job("IMAGE_TEST", 120)
"""


def test_ctrl_c_while_the_listen_connection_is_silent(proxy: Proxy, dsn: str) -> None:
    """Ctrl-C ends a wait within about a second (the documented 0.2 s, plus at most a probe's
    bound) also when the LISTEN connection has gone silent and the wait is checking it."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.close()
    io_timeout = 6.0
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, via(proxy, dsn), str(io_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "waiting\n"
        time.sleep(0.5)  # past the wait's first checks, listening on the kept connection
        proxy.blackhole(new_connections=True)
        # The LISTEN connection was opened before "waiting": it is probed from about
        # io_timeout - 0.5 s from now, and the probe fails no sooner than a second later.
        # Interrupt in between (or before it: either way while the wait listens or probes).
        time.sleep(io_timeout - 0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        ended = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert "KeyboardInterrupt" in err
    assert ended < 1.5, ended


PENDING_CTRL_C_SCRIPT = """
import os, signal, socket, sys, threading, job_manager
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(8)  # the kernel accepts; nothing ever answers
port = silent.getsockname()[1]
jm = job_manager.JobManager(f"postgresql://u:p@127.0.0.1:{port}/db", connect_timeout=1.5)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    jm.{call}
except job_manager.DatabaseUnavailableError:
    print("DatabaseUnavailableError", flush=True)
"""


@pytest.mark.parametrize(
    "call",
    ["wait_for_job('IMAGE_TEST', 5)", "wait_and_lock_job('IMAGE_TEST', 5)", "get_job_stats()"],
)
def test_ctrl_c_during_a_call_that_then_fails_stays_a_ctrl_c(call: str) -> None:
    """Ctrl-C pressed while a call blocks on a server that does not answer, and the call then
    fails: the user gets the typed error and the KeyboardInterrupt (it interrupts the
    handler), never a RuntimeError that swallowed both (job_manager.exceptions imported while
    the signal was pending: "SystemError: __import__ returned a result with an exception
    set")."""
    out = subprocess.run(
        [sys.executable, "-c", PENDING_CTRL_C_SCRIPT.replace("{call}", call)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "RuntimeError" not in out.stderr, out.stderr[-2000:]
    assert "could not be loaded" not in out.stderr
    assert "KeyboardInterrupt" in out.stderr, out.stderr[-2000:]
    assert out.returncode != 0


LOGGED_CTRL_C_SCRIPT = """
import os, signal, sys, threading, job_manager
jm = job_manager.JobManager(sys.argv[1], connect_timeout=1, io_timeout=1)
jm.{call}
print("ready", flush=True)
sys.stdin.readline()
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    jm.{call}
except job_manager.DatabaseUnavailableError:
    print("DatabaseUnavailableError", flush=True)
"""


@pytest.mark.parametrize("call", ["get_job_stats()", "wait_for_job('IMAGE_TEST', 0.5)"])
def test_ctrl_c_while_a_silent_call_logs_its_retry(proxy: Proxy, dsn: str, call: str) -> None:
    """As above, with the pooled connection gone silent: the call logs (through Python's
    logging) that it runs again on a new connection while the Ctrl-C is pending."""
    setup = JobManager(dsn)
    setup.init_database()
    setup.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOGGED_CTRL_C_SCRIPT.replace("{call}", call), via(proxy, dsn)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proxy.blackhole(new_connections=True)
        _, err = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert "RuntimeError" not in err, err[-2000:]
    assert "could not be loaded" not in err
    assert "KeyboardInterrupt" in err, err[-2000:]
