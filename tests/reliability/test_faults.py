"""Faults and hostile input: nothing lost, every failure typed, no password anywhere."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import (
    ROOT,
    SecretLogin,
    Server,
    content,
    counted,
    row_changes,
    rows_of,
    scalar,
)
from job_manager import (
    BackupCorruptError,
    BackupError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    JobManager,
    verify_backup,
)
from nethelpers import closed_port

sys.path.insert(0, str(ROOT / "scripts"))
import pgcluster


def assert_secret_absent(secret: str, *texts: str, records: list[logging.LogRecord]) -> None:
    for text in texts:
        assert secret not in text
    for r in records:
        assert secret not in r.getMessage()


# -- server restart -----------------------------------------------------------------------------


def postmaster_pid(cluster: pgcluster.Cluster) -> int:
    """The running server's PID, from its data directory (postmaster.pid, first line)."""
    return int((cluster.data / "postmaster.pid").read_text().split("\n", 1)[0])


def test_server_restart_under_load(server: Server, dsn: str, jm: JobManager, faults) -> None:  # type: ignore[no-untyped-def]
    """4 threads add and claim while the server restarts. Proven, not assumed: each restart
    gave a new server process (its PID changed); calls failed only while a restart was under
    way, and only with DatabaseUnavailableError (any other exception fails the test); after
    every restart, adds succeeded again before the next one."""
    if server.cluster is None:
        pytest.skip("restarts the server: needs the throwaway cluster")
    cluster = server.cluster
    restarts = faults.n(3, 20)
    added: list[tuple[float, int]] = []  # (when, id)
    claimed: list[int] = []
    errors: list[tuple[float, str]] = []
    unexpected: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                job_id = jm.add_job(f"restart w{w} #{i}", "IMAGE_TEST")
                with lock:
                    added.append((time.monotonic(), job_id))
                job = jm.get_and_lock_job("IMAGE_TEST")
                if job is not None:
                    with lock:
                        claimed.append(job["id"])
            except DatabaseUnavailableError as e:
                with lock:
                    errors.append((time.monotonic(), str(e)))
                time.sleep(0.05)
            except BaseException as e:  # any other exception fails the test
                with lock:
                    unexpected.append(f"worker {w}: {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    windows: list[tuple[float, float]] = []  # (restart began, server back)
    pids = [postmaster_pid(cluster)]
    try:
        for _ in range(restarts):
            # Restart only once adds have succeeded since the last restart ended.
            deadline = time.monotonic() + 30
            since = windows[-1][1] if windows else 0.0
            while not any(t > since for t, _ in added[-50:]):
                assert time.monotonic() < deadline, "no add succeeded after the last restart"
                assert not unexpected, unexpected
                time.sleep(0.05)
            time.sleep(0.3)
            began = time.monotonic()
            cluster.restart()
            windows.append((began, time.monotonic()))
            pids.append(postmaster_pid(cluster))
        # And once more after the last one.
        deadline = time.monotonic() + 30
        while not any(t > windows[-1][1] for t, _ in added[-50:]):
            assert time.monotonic() < deadline, "no add succeeded after the last restart"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not [t for t in threads if t.is_alive()], "a worker thread hung"
    assert unexpected == [], unexpected
    assert len(set(pids)) == restarts + 1, f"each restart must start a new server: {pids}"
    # A failure may come only from a call that overlapped a restart: the server was going down
    # or not yet accepting (a call can take up to connect_timeout to give up).
    grace = 6.0
    stray = [
        (t, e) for t, e in errors if not any(b - 1.0 <= t <= done + grace for b, done in windows)
    ]
    assert stray == [], stray
    # The same JobManager works again, on new connections.
    assert jm.add_job("after the restarts", "VIDEO_PROD") > 0
    assert jm.get_and_lock_job("VIDEO_PROD") is not None
    ids = [i for _, i in added]
    with psycopg.connect(dsn, autocommit=True) as fresh:
        missing = scalar(
            fresh,
            "SELECT count(*) FROM unnest(%s::int[]) AS a(id) WHERE NOT EXISTS "
            "(SELECT 1 FROM jobs j WHERE j.id = a.id)",
            ids,
        )
    assert missing == 0, "every add that returned an id is in the table"
    assert len(claimed) == len(set(claimed)), "no job claimed twice"
    faults.record(
        "server restart (`pg_ctl restart -m fast`) under 4 threads adding and claiming",
        f"{restarts} restarts, each a new server process (PIDs {len(set(pids))} distinct); "
        f"{len(ids)} adds and {len(claimed)} claims; {len(errors)} calls failed with "
        "DatabaseUnavailableError, all during a restart; adds succeeded again after every "
        "restart; no other exception",
        restarts,
        counted(acknowledged_adds_missing=missing, double_claims=len(claimed) - len(set(claimed))),
    )


# -- fork -------------------------------------------------------------------------------------
# Before each os.fork() job_manager closes the process's pools and waits for their threads
# (parking_lot, which r2d2 uses, is not fork-safe). See RELIABILITY.md, "known limits".


def _claim_one(dsn_or_jm) -> str:  # type: ignore[no-untyped-def]
    jm = JobManager(dsn_or_jm) if isinstance(dsn_or_jm, str) else dsn_or_jm
    job = jm.get_and_lock_job("IMAGE_TEST")
    return "ok" if job else "empty"


def _claim_into(jm: JobManager, out) -> None:  # type: ignore[no-untyped-def]
    out.put(_claim_one(jm))


def test_fork(dsn: str, jm: JobManager, db: psycopg.Connection, faults) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"fork {i}" for i in range(100)], "IMAGE_TEST")
    assert jm.get_and_lock_job("IMAGE_TEST") is not None
    rounds = faults.n(2, 10)
    children = 0
    for _ in range(rounds):
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = 0 if jm.get_and_lock_job("IMAGE_TEST") else 3
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        children += 4
        # multiprocessing: a forked child inherits the JobManager (a Process: nothing is
        # pickled); a spawned one gets the DSN and builds its own.
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        procs = [ctx.Process(target=_claim_into, args=(jm, out)) for _ in range(2)]
        for p in procs:
            p.start()
        assert sorted(out.get(timeout=60) for _ in procs) == ["ok", "ok"]
        for p in procs:
            p.join()
        with mp.get_context("spawn").Pool(2) as pool:
            assert pool.map(_claim_one, [dsn, dsn]) == ["ok", "ok"]
        children += 4
        assert jm.get_and_lock_job("IMAGE_TEST") is not None
    claimed = scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'")
    expected = 1 + rounds * (4 + 4 + 1)
    faults.record(
        "fork: a JobManager used in the parent, then os.fork() x4 and multiprocessing fork and spawn",
        f"{children} children claimed with the inherited (or a new) JobManager; the parent "
        "closed its pool before each fork and reopened it on its next call",
        rounds,
        counted(claims_missing=max(0, expected - claimed), claims_extra=max(0, claimed - expected)),
    )
    assert claimed == expected


# -- server gone ----------------------------------------------------------------------------------


def test_server_gone(
    server: Server, secret_login: SecretLogin, tmp_path: Path, faults, log_records
) -> None:  # type: ignore[no-untyped-def]
    with closed_port() as port:
        _server_gone(server, secret_login, tmp_path, port, faults, log_records)


def _server_gone(server, login, tmp_path, closed_port, faults, log_records) -> None:  # type: ignore[no-untyped-def]
    secret = "reliability-secret-pw"
    stopped = pgcluster.start(tmp_path / "stopped")
    stopped_dsn = f"postgresql://postgres:{secret}@127.0.0.1:{stopped.port}/postgres"
    pgcluster.stop(tmp_path / "stopped")
    cases = {
        "stopped server": (stopped_dsn, DatabaseUnavailableError),
        "wrong port": (
            f"postgresql://u:{secret}@127.0.0.1:{closed_port}/db",
            DatabaseUnavailableError,
        ),
        "wrong password": (
            server.dsn_for("postgres", user=login.user, password=secret),
            ConfigurationError,
        ),
        # The real password here (the login must succeed to learn the database is missing).
        "missing database": (
            server.dsn_for("no_such_db", user=login.user, password=login.password),
            ConfigurationError,
        ),
        "unresolvable host": (
            f"postgresql://u:{secret}@no-such-host.invalid:5432/db",
            DatabaseUnavailableError,
        ),
    }
    rounds = faults.n(3, 20)
    slowest = 0.0
    hung = 0
    for name, (dsn, expected) in cases.items():
        for _ in range(rounds):
            jm = JobManager(dsn, connect_timeout=2)
            started = time.monotonic()
            with pytest.raises(expected) as info:
                jm.get_and_lock_job("IMAGE_TEST")
            elapsed = time.monotonic() - started
            slowest = max(slowest, elapsed)
            hung += elapsed >= 2.5
            assert elapsed < 2.5, (name, elapsed)
            pw = login.password if name == "missing database" else secret
            assert_secret_absent(
                pw, str(info.value), repr(info.value), repr(jm), records=log_records
            )
    faults.record(
        "server gone: stopped, wrong port, wrong password, missing database, unresolvable host",
        f"every call raised DatabaseUnavailableError or ConfigurationError within connect_timeout "
        f"(2 s; slowest {slowest:.2f} s); the password was in no message, repr or log record",
        rounds * len(cases),
        counted(calls_past_connect_timeout=hung, password_leaks=0),
    )


def test_unresponsive_server(faults, log_records) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        rounds = faults.n(3, 10)
        waits = []
        for _ in range(rounds):
            jm = JobManager(f"postgresql://u:silent-secret@127.0.0.1:{port}/db", connect_timeout=1)
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError) as info:
                jm.get_job_stats()
            waits.append(time.monotonic() - started)
            assert waits[-1] < 1.5
            assert_secret_absent("silent-secret", str(info.value), records=log_records)
    faults.record(
        "a server that accepts TCP and never answers",
        f"DatabaseUnavailableError at connect_timeout (1 s; slowest {max(waits):.2f} s)",
        rounds,
        counted(calls_that_hung=sum(w >= 1.5 for w in waits)),
    )


# -- concurrency ----------------------------------------------------------------------------------


def _init_once(args):  # type: ignore[no-untyped-def]
    dsn, barrier = args
    try:
        jm = JobManager(dsn)
        barrier.wait(timeout=60)
        return ("ok", jm.init_database())
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}")


def test_concurrent_init(server: Server, faults) -> None:  # type: ignore[no-untyped-def]
    rounds = faults.n(3, 20)
    ctx = mp.get_context("spawn")
    errors = extra_history_rows = 0
    with ctx.Manager() as manager, ctx.Pool(16) as pool:
        for _ in range(rounds):
            name = server.create_database()
            try:
                barrier = manager.Barrier(16)
                outcomes = pool.map(_init_once, [(server.dsn_for(name), barrier)] * 16)
                errors += sum(o[0] != "ok" for o in outcomes)
                assert [o for o in outcomes if o[0] != "ok"] == []
                applied = [o[1] for o in outcomes if o[1]]
                assert len(applied) == 1, "one process applied, 15 found it done"
                migrations = sorted(
                    (ROOT / "src" / "schema" / "migrations").glob("V*__*.sql"),
                    key=lambda m: int(m.name[1:].split("__")[0]),
                )
                assert applied[0] == [m.stem for m in migrations], applied
                with psycopg.connect(server.dsn_for(name), autocommit=True) as c:
                    history = scalar(c, "SELECT count(*) FROM job_manager_schema_history")
                    extra_history_rows += abs(history - job_manager.SCHEMA_VERSION)
                    assert history == job_manager.SCHEMA_VERSION
                    assert (
                        scalar(c, "SELECT count(DISTINCT version) FROM job_manager_schema_history")
                        == job_manager.SCHEMA_VERSION
                    )
                    assert scalar(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'jobs'") == 1
            finally:
                server.drop_database(name)
    faults.record(
        "16 processes call init_database() at the same moment on an empty database",
        "no error, one schema, one history row per migration, every round",
        rounds,
        counted(errors=errors, history_rows_wrong=extra_history_rows),
    )


def _drain(dsn: str) -> list[int]:
    jm = JobManager(dsn)
    ids = []
    while (job := jm.get_and_lock_job("IMAGE_TEST")) is not None:
        ids.append(job["id"])
    return ids


def test_concurrent_claims(dsn: str, jm: JobManager, db: psycopg.Connection, faults) -> None:  # type: ignore[no-untyped-def]
    n = faults.n(20_000, 100_000)
    jm.add_jobs([f"drain {i}" for i in range(n)], "IMAGE_TEST")
    ctx = mp.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.map(_drain, [dsn] * 8)
    claimed = [i for r in results for i in r]
    left = scalar(db, "SELECT count(*) FROM jobs WHERE status = 'pending'")
    faults.record(
        "8 processes drain the queue with get_and_lock_job",
        f"{n:,} pending jobs; each claimed exactly once (per process: "
        f"{', '.join(str(len(r)) for r in results)}), none left behind",
        n,
        counted(double_claims=len(claimed) - len(set(claimed)), jobs_left_pending=left),
    )
    assert len(claimed) == n
    assert len(set(claimed)) == n
    assert sum(1 for r in results if r) > 1, "the work was shared"
    assert left == 0


# -- backups under faults -----------------------------------------------------------------------


def _writer(dsn: str, seconds: float) -> int:
    jm = JobManager(dsn)
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        job_id = jm.add_job(f"load {os.getpid()} {i}", "IMAGE_TEST")
        if i % 2 == 0:
            jm.add_download_task(job_id, f"gs://b/{i}", f"/o/{i}", "image")
        if i % 3 == 0:
            jm.get_and_lock_job("IMAGE_TEST")
        if i % 5 == 0:
            jm.mark_job_as_completed(job_id, f"/o/{i}")
        i += 1
    return i


def test_backup_under_write_load(
    server: Server, dsn: str, jm: JobManager, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    backups = faults.n(4, 20)
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        writing = pool.apply_async(_writer, (dsn, 2.0 + backups * 0.6))
        time.sleep(1.0)
        infos = []
        for _ in range(backups):
            infos.append(jm.backup_database(tmp_path, keep=None))
            time.sleep(0.3)
        writes = writing.get(timeout=300)
    assert infos[-1].rows["jobs"] > infos[0].rows["jobs"], "the writer wrote between backups"
    target = server.create_database()
    rows_missing = orphans = 0
    try:
        other = JobManager(server.dsn_for(target))
        with psycopg.connect(server.dsn_for(target), autocommit=True) as c:
            for info in infos:
                assert other.restore_database(info.path, safety_backup=False).rows == info.rows
                jobs = scalar(c, "SELECT count(*) FROM jobs")
                rows_missing += abs(info.rows["jobs"] - jobs)
                assert jobs == info.rows["jobs"]
                orphans += scalar(
                    c,
                    "SELECT count(*) FROM download_queue d WHERE NOT EXISTS "
                    "(SELECT 1 FROM jobs j WHERE j.id = d.job_id)",
                )
                assert orphans == 0
                for t in ("jobs", "download_queue"):
                    last, top = c.execute(
                        f"SELECT (SELECT last_value FROM {t}_id_seq), (SELECT coalesce(max(id), 0) FROM {t})"
                    ).fetchone()
                    assert last >= top
        other.close()
    finally:
        server.drop_database(target)
    faults.record(
        "backups taken while a writer inserts, claims and completes at full speed",
        f"{backups} backups during {writes} write cycles, each restored: foreign keys hold, "
        "sequences >= max ids, row counts = the header's",
        backups,
        counted(rows_missing=rows_missing, orphan_downloads=orphans),
    )


BACKUP = "import sys\nfrom job_manager import JobManager\nJobManager(sys.argv[1]).backup_database(sys.argv[2], keep=None)"
RESTORE = "import sys\nfrom job_manager import JobManager\nJobManager(sys.argv[1]).restore_database(sys.argv[2], safety_backup=False)"


def test_sigkill_during_backup_and_restore(
    dsn: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"{i} " + "k" * 1500 for i in range(50_000)], "VIDEO_PROD")
    old_file = jm.backup_database(tmp_path / "old", keep=None).path
    old = content(db)
    db.execute("UPDATE jobs SET prompt_text = prompt_text || ' v2' WHERE id % 2 = 0")
    jm.add_jobs([f"new {i}" for i in range(1000)], "IMAGE_TEST")
    new_file = jm.backup_database(tmp_path / "new", keep=None).path
    new = content(db)
    JobManager(dsn).restore_database(old_file, safety_backup=False)
    assert content(db) == old
    kills = faults.n(8, 20)
    rng = random.Random(20261124)
    d = tmp_path / "killed"
    d.mkdir()
    size = Path(new_file).stat().st_size
    landed = published_partial = 0
    for _ in range(kills):
        # Killed by what is observed, not after a guessed sleep: once the hidden temp file
        # holds a chosen share of the backup (0: as soon as it exists).
        at = int(size * rng.uniform(0.0, 0.8))
        p = subprocess.Popen([sys.executable, "-c", BACKUP, dsn, str(d)])
        deadline = time.monotonic() + 120
        while True:
            tmp = [f for f in d.iterdir() if f.name.endswith(".tmp")]
            if tmp and tmp[0].stat().st_size >= at:
                break
            assert p.poll() is None, "the backup ended before the chosen moment"
            assert time.monotonic() < deadline, "the backup never got there"
            time.sleep(0.001)
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL, "the kill must land while the backup runs"
        landed += 1
        names = [f.name for f in d.iterdir()]
        published_partial += sum(n.startswith("airflow_backup_") for n in names)
        assert not [n for n in names if n.startswith("airflow_backup_")], names
        for f in d.iterdir():
            assert f.name.startswith(".airflow_backup_")
            assert f.name.endswith(".tmp")
            f.unlink()
    outcomes = {"old": 0}
    rows = scalar(db, "SELECT count(*) FROM jobs")
    for _ in range(kills):
        # Killed inside the restore's open transaction, mid-COPY: once the server's COPY
        # progress shows a chosen share of the rows loaded.
        at = int(rows * rng.uniform(0.0, 0.6))
        p = subprocess.Popen([sys.executable, "-c", RESTORE, dsn, new_file])
        deadline = time.monotonic() + 120
        while True:
            row = db.execute(
                "SELECT a.xact_start IS NOT NULL, p.tuples_processed FROM pg_stat_progress_copy p "
                "JOIN pg_stat_activity a USING (pid) WHERE p.datname = current_database() "
                "AND p.command = 'COPY FROM' AND p.relid = 'jobs'::regclass"
            ).fetchone()
            if row is not None and row[1] >= at:
                break
            assert p.poll() is None, "the restore ended before the chosen moment"
            assert time.monotonic() < deadline, "the restore never got there"
            time.sleep(0.001)
        in_transaction, loaded = row
        assert in_transaction, "the COPY runs inside the restore's transaction"
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL, "the kill must land while the restore runs"
        # The server notices the dead client and rolls back.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'",
            )
            if active == 0:
                break
            time.sleep(0.05)
        now = content(db)
        # Killed before COMMIT: nothing of the new content may show.
        assert now == old, f"killed after {loaded} of {rows} rows: the table changed"
        outcomes["old"] += 1
    # The restore that was killed does give the new content when left alone.
    JobManager(dsn).restore_database(new_file, safety_backup=False)
    assert content(db) == new
    faults.record(
        "SIGKILL of a running backup, at a random share (0-80%) of its temp file written",
        f"{landed} kills landed while it ran (exit -9 each); never a file under a backup name, "
        "only the hidden .tmp",
        kills,
        counted(partial_files_under_a_backup_name=published_partial),
    )
    faults.record(
        "SIGKILL of a running restore (50,000 jobs, 80 MB) inside its open transaction, at a "
        "random share (0-60%) of the rows COPYed (pg_stat_progress_copy)",
        f"{outcomes['old']} kills landed mid-COPY (exit -9 each); the content checksum was the "
        "old content every time: never a half-restored table",
        kills,
        counted(half_restored_tables=kills - outcomes["old"]),
    )


def test_corrupt_input(
    server: Server, dbname: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"corrupt {i}\twith\ttabs \\ and \n newlines" for i in range(500)], "IMAGE_TEST")
    good = Path(jm.backup_database(tmp_path, keep=None).path)
    data = good.read_bytes()
    jm.add_job("changed after the backup", "VIDEO_PROD")
    before = content(db)
    rng = random.Random(7)
    n = faults.n(20, 100)
    bad = tmp_path / "bad"
    bad.mkdir()
    variants: list[tuple[str, bytes | None]] = []
    for _ in range(n):
        variants.append(("truncation", data[: rng.randrange(0, len(data) - 1)]))
    for _ in range(n):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        variants.append(("byte flip", bytes(flipped)))
    variants += [("empty", b""), ("binary", os.urandom(65536))]
    custom = tmp_path / "custom.dump"
    subprocess.run(
        [
            str(
                Path(server.cluster.bindir if server.cluster else pgcluster.find_bindir())
                / "pg_dump"
            ),
            "-Fc",
            "-f",
            str(custom),
            server.dsn_for(dbname),
        ],
        check=True,
    )
    variants.append(("pg_dump custom format", custom.read_bytes()))
    variants.append(("2 GB sparse file", None))
    rows_before = rows_of(db)
    for i, (kind, blob) in enumerate(variants):
        path = bad / f"airflow_backup_2020{i:04d}_000000.sql"
        if blob is None:
            with open(path, "wb") as f:
                f.truncate(2 * 1024**3)
        else:
            path.write_bytes(blob)
        with pytest.raises(BackupCorruptError):
            verify_backup(path)
        with pytest.raises(BackupError):
            jm.restore_database(path, safety_backup=False)
        assert content(db) == before, kind
        path.unlink()
    # The 2 GB file is refused at its first line (no newline in 4 KiB) without reading on: its
    # peak RSS in a fresh process. (Memory on large valid files: tests/reliability/test_memory.py.)
    sparse = bad / "airflow_backup_20990101_000000.sql"
    with open(sparse, "wb") as f:
        f.truncate(2 * 1024**3)
    code = (
        "import sys, job_manager\ntry:\n    job_manager.verify_backup(sys.argv[1])\nexcept job_manager.BackupCorruptError:\n    pass\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    hwm_kb = int(
        subprocess.run(
            [sys.executable, "-c", code, str(sparse)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert hwm_kb < 100 * 1024
    faults.record(
        "corrupt backups: truncations, single-bit flips, empty, random binary, pg_dump custom format, 2 GB sparse file",
        f"every one refused by verify and restore with a BackupError; the tables unchanged; "
        f"the 2 GB sparse file refused at its first line (longer than 4 KiB), in a process of "
        f"{hwm_kb // 1024} MiB (memory on large valid files: the row on valid backups)",
        len(variants),
        counted(**row_changes(rows_before, rows_of(db))),
    )


# -- hostile strings ------------------------------------------------------------------------------


def hostile_values() -> list[str]:
    base = [
        "'; DROP TABLE jobs; --",
        "' OR '1'='1",
        '" OR ""="',
        "'); DELETE FROM jobs; --",
        "$1",
        "$$ LANGUAGE plpgsql $$",
        "\\",
        "\\\\",
        "\\.",
        "\\N",
        "\\x00",
        "%s",
        "%(x)s",
        "{}",
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\u202e\u202d mixed RTL",
        "\u200f\u200e marks",
        "",
        " ",
        "\t",
        "\n",
        "\r\n",
        "一只可爱的小猫" * 50,
        "🐱" * 100,
        "null",
        "NULL",
        "None",
        "COPY jobs TO PROGRAM 'id'",
        "\\copy jobs to '/tmp/x'",
        "E'\\047'",
        "-- comment",
        "/* open comment",
        "1; SELECT pg_sleep(10)",
        "x" * 10 * 1024 * 1024,
    ]
    values = list(base)
    i = 0
    while len(values) < 100:
        values.append(f"{base[i % len(base)][:200]}{i}'\\\t{i}")
        i += 1
    return values[:100]


def unstorable(v: str) -> bool:
    """What PostgreSQL text cannot hold and the API therefore refuses: NUL, unpaired surrogates."""
    return "\x00" in v or any(0xD800 <= ord(c) <= 0xDFFF for c in v)


def test_hostile_strings(jm: JobManager, db: psycopg.Connection, faults) -> None:  # type: ignore[no-untyped-def]
    """Every free-text argument stores any value byte for byte unless PostgreSQL text cannot hold
    it (then InvalidArgumentError, nothing else); every closed-vocabulary argument refuses them all.
    A value that should be accepted and is refused fails the test, as does one that comes back
    different."""
    tables_before = scalar(db, "SELECT count(*) FROM pg_class")
    anchor = jm.add_job("anchor job", "VIDEO_PROD")
    dl = jm.add_download_task(anchor, "gs://anchor", "/anchor", "video")

    def remote_url(v: str) -> bool:
        new = jm.add_download_task(anchor, v, "/p", "image")
        return scalar(db, "SELECT remote_url FROM download_queue WHERE id = %s", new) == v

    def download_error(v: str) -> bool:
        assert jm.update_download_status(dl, "failed", v)
        return scalar(db, "SELECT error_message FROM download_queue WHERE id = %s", dl) == v

    # name -> (call returning True when the value came back exactly, free text?)
    calls: list[tuple[str, Callable[[str], object], bool]] = [
        (
            "add_job prompt",
            lambda v: jm.get_job_by_id(jm.add_job(v, "IMAGE_TEST"))["prompt_text"] == v,
            True,
        ),
        ("add_job job_type", lambda v: jm.add_job("jt", v), False),
        (
            "error_message",
            lambda v: (
                jm.mark_job_as_failed(anchor, v) and jm.get_job_by_id(anchor)["error_message"] == v
            ),
            True,
        ),
        (
            "local_path",
            lambda v: (
                jm.mark_job_as_completed(anchor, v) and jm.get_job_by_id(anchor)["local_path"] == v
            ),
            True,
        ),
        (
            "gcs_uri",
            lambda v: jm.update_job_gcs_uri(anchor, v) and jm.get_job_by_id(anchor)["gcs_uri"] == v,
            True,
        ),
        (
            "operation_id",
            lambda v: (
                jm.update_job_operation_info(anchor, v) and jm.get_job_operation_id(anchor) == v
            ),
            True,
        ),
        ("remote_url", remote_url, True),
        ("download error", download_error, True),
        ("file_type", lambda v: jm.add_download_task(anchor, "u", "/p", v), False),
        ("download status", lambda v: jm.update_download_status(dl, v), False),
        ("pending file_type", lambda v: jm.get_pending_downloads(file_type=v), False),
        ("reset job_type", lambda v: jm.reset_stuck_jobs(v), False),
    ]
    values = hostile_values()
    must_accept = [v for v in values if not unstorable(v) and v.strip()]
    assert len(must_accept) >= 80, "the pinned list of values every text argument must take"
    stored = refused = changed = 0
    for name, call, free_text in calls:
        for v in values:
            refuse = not free_text or unstorable(v) or (name == "add_job prompt" and not v.strip())
            if refuse:
                with pytest.raises(InvalidArgumentError):
                    call(v)
                refused += 1
            elif name in ("add_job prompt", "operation_id") and len(v.encode()) > 2700:
                # Indexed columns (the replaced schema's UNIQUE (prompt_text), the operation id's
                # index) hold what fits in an index row (docs/MIGRATING.md): stored exactly or
                # refused saying so.
                try:
                    came_back = call(v)
                except InvalidArgumentError as e:
                    message = str(e)
                    came_back = None
                if came_back is None:
                    assert "too large for the database" in message, message
                    refused += 1
                else:
                    changed += not came_back
                    assert came_back, f"{name}: {v[:60]!r} did not come back byte for byte"
                    stored += 1
            else:
                came_back = call(v)
                changed += not came_back
                assert came_back, f"{name}: {v[:60]!r} did not come back byte for byte"
                stored += 1
    # check_table_exists answers False for every such name and runs nothing.
    for v in values:
        if unstorable(v):
            with pytest.raises(InvalidArgumentError):
                jm.check_table_exists(v)
        else:
            assert jm.check_table_exists(v) is False, v[:60]
    # No statement ran that was not ours: the catalog and the anchor rows are intact.
    relations_changed = abs(scalar(db, "SELECT count(*) FROM pg_class") - tables_before)
    assert relations_changed == 0
    assert jm.get_job_by_id(anchor) is not None
    assert jm.check_table_exists("jobs")
    faults.record(
        "hostile strings: SQL fragments, quotes, backslashes, NUL, unpaired surrogates, 10 MB text, RTL marks",
        f"{len(values)} values through {len(calls) + 1} text arguments: {stored} stored and read back "
        f"byte for byte, {refused} refused with InvalidArgumentError exactly where expected (NUL or "
        "unpaired surrogate in free text, a prompt too large for the unique index; any value for a "
        "closed vocabulary); no other error, "
        "no SQL executed",
        len(values) * (len(calls) + 1),
        counted(values_changed_on_the_way=changed, relations_created_or_dropped=relations_changed),
    )


# -- filesystem traps -----------------------------------------------------------------------------


def test_log_tree_changing_under_the_sweep(tmp_path: Path, faults) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    old = time.time() - 30 * 86400
    precious = []
    for i in range(50):
        f = outside / f"precious_{i}.log"
        f.write_text("keep")
        os.utime(f, (old, old))
        precious.append(f)
    rounds = faults.n(10, 50)
    outside_deleted = 0
    errors_seen = 0
    for r in range(rounds):
        root = tmp_path / f"logs{r}"
        for i in range(600):
            f = root / f"dag_id=d{i % 6}" / f"run_id=r{i % 30}" / f"attempt={i}.log"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("x")
            os.utime(f, (old, old))
        stop = threading.Event()

        def saboteur(root: Path = root, r: int = r, stop: threading.Event = stop) -> None:
            rng = random.Random(r)
            while not stop.is_set():
                victim = root / f"dag_id=d{rng.randrange(6)}"
                moved = victim.with_name(victim.name + ".moved")
                try:
                    victim.rename(moved)
                    victim.symlink_to(outside, target_is_directory=True)
                    time.sleep(0.0005)
                    victim.unlink()
                    moved.rename(victim)
                except OSError:
                    pass

        t = threading.Thread(target=saboteur)
        t.start()
        try:
            report = job_manager.cleanup_old_logs(root, 7)
        finally:
            stop.set()
            t.join()
        errors_seen += len(report.errors)
        outside_deleted += sum(not f.exists() for f in precious)
        for f in precious:
            assert f.exists(), "a file outside the tree was deleted through a swapped-in symlink"
        shutil.rmtree(root)
    faults.record(
        "log cleanup while directories are swapped for symlinks out of the tree",
        f"{rounds} sweeps of 600 files racing a thread that replaces directories with symlinks "
        f"to a directory of old logs; {errors_seen} entries reported as unreadable",
        rounds,
        counted(
            "all 50 old files outside the tree still exist",
            files_outside_the_tree_deleted=outside_deleted,
        ),
    )


def test_backup_into_full_and_read_only_filesystems(jm: JobManager, tmp_path: Path, faults) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    # Small rows: the tables look as if they fit (the early free-space check passes), the text
    # of their rows does not, so the write itself fails.
    jm.add_jobs([f"{i} z" for i in range(800)], "IMAGE_TEST")
    rounds = faults.n(3, 10)
    left_behind = 0
    for _ in range(rounds):
        for options, match in (
            ("size=64k", "No space left"),
            ("size=64k,ro", "cannot create a file"),
        ):
            mnt = tmp_path / "mnt"
            mnt.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
            try:
                with pytest.raises(BackupError, match=match):
                    jm.backup_database(mnt)
                left_behind += len(list(mnt.iterdir()))
                assert list(mnt.iterdir()) == []
            finally:
                subprocess.run(["umount", str(mnt)], check=True)
    faults.record(
        "backup into a full (64 KiB tmpfs) or read-only file system",
        "a BackupError saying why; no file left behind, partial or hidden",
        rounds * 2,
        counted(files_left_behind=left_behind),
    )


def test_lock_held_by_another_session(
    dsn: str, jm: JobManager, db: psycopg.Connection, faults
) -> None:  # type: ignore[no-untyped-def]
    rounds = faults.n(3, 10)
    slowest = 0.0
    for _ in range(rounds):
        db.execute(
            "DELETE FROM job_manager_schema_history WHERE version = %s",
            (job_manager.SCHEMA_VERSION,),
        )
        locker = psycopg.connect(dsn)
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        try:
            started = time.monotonic()
            with pytest.raises(job_manager.SchemaError, match="locked by another session"):
                JobManager(dsn).init_database(lock_timeout=0.3)
            slowest = max(slowest, time.monotonic() - started)
            assert time.monotonic() - started < 3
        finally:
            locker.rollback()
            locker.close()
        assert JobManager(dsn).init_database() != []
    faults.record(
        "init_database() while another session holds a lock on jobs",
        "SchemaError within lock_timeout (0.3 s; slowest "
        f"{slowest:.2f} s) naming the cause, instead of queueing every later query",
        rounds,
        counted(waits_past_3_s=int(slowest >= 3)),
    )


def test_password_never_leaks(
    server: Server, secret_login: SecretLogin, faults, log_records
) -> None:  # type: ignore[no-untyped-def]
    dsn, password = secret_login.dsn, secret_login.password
    dbname = dsn.rsplit("/", 1)[1]
    jm = JobManager(dsn)
    jm.init_database()
    texts = [repr(jm), jm.dsn, str(jm.pool_status())]
    for bad in (
        server.dsn_for(dbname, user=secret_login.user, password=password + "x"),
        server.dsn_for("nope", user=secret_login.user, password=password),
    ):
        try:
            JobManager(bad, connect_timeout=2).get_job_stats()
        except job_manager.JobManagerError as e:
            texts += [str(e), repr(e)]
    leaks = sum(password in t for t in texts) + sum(password in r.getMessage() for r in log_records)
    faults.record(
        "the password in repr(JobManager), dsn, errors and every log record",
        f"{len(texts)} texts and {len(log_records)} log records checked",
        len(texts) + len(log_records),
        counted(texts_or_records_with_the_password=leaks),
    )
    assert_secret_absent(password, *texts, records=log_records)
