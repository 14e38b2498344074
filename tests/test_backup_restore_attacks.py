"""Found by an independent attacker (session 8), each a failing test first: parallel backups
against server-side timeouts, lock queues, stalls and connection limits; the restore's trigger
check; channel_binding kept by get_connection() and dump_database; a raw '@' in a URL password;
the types a data-only pg_dump's unknown columns are given."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import Server, scalar
from job_manager import BackupError, JobManager, verify_backup
from psycopg.conninfo import conninfo_to_dict

FILLER = "lorem ipsum dolor sit amet, tab\t backslash \\ " * 5


def fill(jm: JobManager, n: int, tag: str = "bulk") -> None:
    for start in range(0, n, 20_000):
        jm.add_jobs(
            [f"{tag} {i} {FILLER}" for i in range(start, min(n, start + 20_000))], "VIDEO_PROD"
        )


# ---------------------------------------------------------------- data-only pg_dump guessing


def data_only_dump(
    server: Server, template: str, tmp_path: Path, column_ddl: str, values: list[str | None]
) -> Path:
    """A `pg_dump -a -t jobs` of a job_manager database whose jobs carry one extra column
    `extra` (declared by `column_ddl`) holding `values`, one job each."""
    source = server.create_database(template=template)
    try:
        with psycopg.connect(server.dsn_for(source), autocommit=True) as src:
            src.execute(f"ALTER TABLE jobs ADD COLUMN extra {column_ddl}")
            for i, v in enumerate(values):
                src.execute(
                    "INSERT INTO jobs (prompt_text, job_type, extra) VALUES (%s, 'IMAGE_TEST', %s)",
                    (f"p{i}", v),
                )
        dump = server.pg_dump(
            source, tmp_path / "airflow_backup_20250701_000000.sql", "-a", "-t", "jobs"
        )
    finally:
        server.drop_database(source)
    return dump


def restored_extra(db: psycopg.Connection) -> list[str | None]:
    return [r[0] for r in db.execute("SELECT extra::text FROM jobs ORDER BY prompt_text")]


@pytest.mark.parametrize(
    "values",
    [
        # Rewritten when guessed numeric or timestamp ('007' -> '7').
        pytest.param(["007", "042", "123"], id="leading-zeros"),
        pytest.param(["-0", "5"], id="minus-zero"),
        pytest.param(["1e5", "2"], id="exponent"),
        pytest.param(["1.", "2"], id="trailing-dot"),
        pytest.param(["2025-01-01 12:00:00.1234567"], id="seven-fraction-digits"),
        pytest.param(["2016-12-31 23:59:60"], id="leap-second"),
        # Refused by PostgreSQL for the guessed type: the restore failed.
        pytest.param(["0000-01-01"], id="year-zero-date"),
        pytest.param(["0000-01-01 00:00:00"], id="year-zero-timestamp"),
        pytest.param(["1e1000000"], id="numeric-overflow"),
    ],
)
def test_data_only_dump_text_values_are_not_mangled_by_the_guessed_type(
    server: Server,
    migrated_template: str,
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    values: list[str],
) -> None:
    """A text column whose values pg_dump wrote in a form no numeric, date or timestamp column
    would print (leading zeros, -0, an exponent, 7 fraction digits, second 60, year 0) is text:
    it is restored as text, value for value."""
    dump = data_only_dump(server, migrated_template, tmp_path, "text", values)
    verify_backup(dump)
    jm.restore_database(dump, safety_backup=False)
    assert restored_extra(db) == values


# ---------------------------------------------------------------- parallel backups


def test_a_restore_is_not_ended_by_a_database_statement_timeout(
    server: Server, jm: JobManager, db: psycopg.Connection, dbname: str, dsn: str, tmp_path: Path
) -> None:
    """A restore's COPY and index builds run longer than a database's short statement_timeout:
    the restore clears it for its transaction, as pg_restore does."""
    fill(jm, 60_000)
    info = jm.backup_database(tmp_path, keep=None, streams=1)
    with server.admin() as a:
        a.execute(f'ALTER DATABASE "{dbname}" SET statement_timeout = 60')
    fresh = JobManager(dsn, connect_timeout=5)
    try:
        assert fresh.restore_database(info.path, safety_backup=False).rows["jobs"] == 60_000
    finally:
        fresh.close()
    assert scalar(db, "SELECT count(*) FROM jobs") == 60_000


def test_parallel_backup_survives_idle_in_transaction_session_timeout(
    server: Server, jm: JobManager, db: psycopg.Connection, dbname: str, dsn: str, tmp_path: Path
) -> None:
    """With streams, the connection holding the exported snapshot sits idle in transaction
    while the streams copy: a database's `idle_in_transaction_session_timeout` (common in
    production) killed it. Backups clear the server-side timeouts for their transactions, as
    pg_dump does."""
    fill(jm, 60_000)
    with server.admin() as a:
        a.execute(f'ALTER DATABASE "{dbname}" SET idle_in_transaction_session_timeout = 50')
    fresh = JobManager(dsn, connect_timeout=5)
    try:
        one = fresh.backup_database(tmp_path / "one", keep=None, streams=1)
        assert one.rows["jobs"] == 60_000
        info = fresh.backup_database(tmp_path / "two", keep=None, streams=2)
        assert info.rows == one.rows
    finally:
        fresh.close()


def test_a_backup_is_not_ended_by_a_database_statement_timeout(
    server: Server, jm: JobManager, dbname: str, dsn: str, tmp_path: Path
) -> None:
    """A database's statement_timeout shorter than the COPY of `jobs` failed a streams=1 backup
    with DatabaseUnavailableError "reading jobs failed: db error". A backup clears it for its
    transaction, as pg_dump does (its waits stay bounded by long_io_timeout)."""
    fill(jm, 60_000)
    with server.admin() as a:
        a.execute(f'ALTER DATABASE "{dbname}" SET statement_timeout = 60')
    fresh = JobManager(dsn, connect_timeout=5)
    try:
        assert fresh.backup_database(tmp_path / "one", keep=None, streams=1).rows == {
            "jobs": 60_000,
            "download_queue": 0,
        }
    finally:
        fresh.close()


def test_stream_that_cannot_start_is_not_reported_as_an_abandoned_backup(
    server: Server,
    jm: JobManager,
    db: psycopg.Connection,
    dbname: str,
    tmp_path: Path,
    caplog_jm: pytest.LogCaptureFixture,
) -> None:
    """Streams refused by a role's CONNECTION LIMIT are set aside and the backup goes on with
    fewer; each was logged as "the backup was abandoned and nothing was written": an operator
    reading the log of a backup that succeeded was told it failed."""
    fill(jm, 2_000)
    role = "lim_" + dbname[-8:]
    with server.admin() as a:
        a.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT 2")
        a.execute(f'ALTER DATABASE "{dbname}" OWNER TO {role}')
    db.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    db.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    try:
        limited = JobManager(server.dsn_for(dbname, user=role, password="pw"), connect_timeout=5)
        try:
            info = limited.backup_database(tmp_path / "b", keep=None, streams=4)
        finally:
            limited.close()
        assert info.rows["jobs"] == 2_000
        assert verify_backup(info.path).rows == info.rows
        wrong = [
            r.getMessage()
            for r in caplog_jm.records
            if "abandoned" in r.getMessage() or "nothing was written" in r.getMessage()
        ]
        assert wrong == [], wrong
    finally:
        with server.admin() as a:
            a.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
            a.execute(f'ALTER DATABASE "{dbname}" OWNER TO CURRENT_USER')
        db.execute(f"DROP OWNED BY {role}")
        with server.admin() as a:
            a.execute(f"DROP ROLE {role}")


def test_parallel_backup_does_not_deadlock_with_a_queued_exclusive_lock(
    server: Server, jm: JobManager, db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    """The snapshot connection holds ACCESS SHARE on download_queue from its count on; the
    streams took theirs only when they reached download_queue. An ACCESS EXCLUSIVE request in
    between (an ALTER TABLE, TRUNCATE, another process's restore) queued behind the snapshot
    connection, the streams behind it, and the snapshot connection waited for the streams in
    Rust, where PostgreSQL's deadlock detector cannot see it. Streams now take every lock they
    need when they start (NOWAIT), so the ALTER waits for the backup, as with streams=1."""
    fill(jm, 80_000)
    db.execute(
        "INSERT INTO download_queue (job_id, remote_url, local_path, file_type) "
        "SELECT id, 'gs://b/' || id, '/out/' || id, 'video' FROM jobs WHERE id % 10 = 0"
    )
    result: list[object] = []

    def backup() -> None:
        try:
            result.append(jm.backup_database(tmp_path / "b", keep=None, streams=2, compress="gzip"))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=backup)
    t.start()
    with psycopg.connect(dsn, autocommit=True) as locker, server.admin() as admin:
        # Wait until a stream copies jobs: the snapshot connection holds its locks by then.
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s"
                " AND query LIKE 'COPY%%FROM ONLY jobs%%'"
                " AND application_name LIKE 'job_manager backup stream%%'",
                (db.info.dbname,),
            ).fetchone()
        ):
            time.sleep(0.005)
        locker_pid = locker.info.backend_pid

        def ddl() -> None:
            # Cancelled below when it is still waiting.
            with contextlib.suppress(psycopg.Error):
                locker.execute("ALTER TABLE download_queue ADD COLUMN IF NOT EXISTS note text")

        alter = threading.Thread(target=ddl)
        alter.start()
        t.join(15)
        hung = t.is_alive()
        # Unblock everything whatever happened.
        admin.execute("SELECT pg_cancel_backend(%s)", (locker_pid,))
        alter.join(10)
        t.join(30)
    assert not hung, "parallel backup still running 15 s later, stuck behind a queued ALTER TABLE"
    assert len(result) == 1, result
    assert not isinstance(result[0], BaseException), result


def test_a_stream_gets_long_io_timeout_not_connect_timeout(
    server: Server, db: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    """A stream's reads were bounded by connect_timeout (the transport re-armed the deadline
    at login and nothing armed it again): a stream's backend silent a little longer than
    connect_timeout (SIGSTOP for 3.5 s with connect_timeout=2 here) failed the backup, while
    streams=1 survived the same pause. Streams wait long_io_timeout, as the snapshot does."""
    import os
    import signal

    jm = JobManager(dsn, connect_timeout=2)
    try:
        jm.init_database()
        fill(jm, 60_000)

        def pause_a_backend(query_like: str, app_like: str) -> None:
            deadline = time.monotonic() + 10
            with server.admin() as admin:
                while time.monotonic() < deadline:
                    row = admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                        " AND query LIKE %s AND application_name LIKE %s LIMIT 1",
                        (db.info.dbname, query_like, app_like),
                    ).fetchone()
                    if row:
                        os.kill(row[0], signal.SIGSTOP)
                        time.sleep(3.5)
                        os.kill(row[0], signal.SIGCONT)
                        paused.append(app_like)
                        return
                    time.sleep(0.002)
            raise AssertionError("no backend to pause")

        outcome: dict[int, object] = {}
        paused: list[str] = []
        for streams, app in ((1, "job_manager"), (2, "job_manager backup stream%")):
            p = threading.Thread(target=pause_a_backend, args=("COPY%jobs%", app))
            p.start()
            try:
                outcome[streams] = jm.backup_database(
                    tmp_path / str(streams), keep=None, streams=streams, compress="gzip"
                ).rows
            except job_manager.exceptions.JobManagerError as e:
                outcome[streams] = f"{type(e).__name__}: {e}"
            p.join()
        assert len(paused) == 2, paused
        assert outcome[1] == {"jobs": 60_000, "download_queue": 0}, outcome
        assert outcome[2] == outcome[1], outcome
    finally:
        jm.close()


# ---------------------------------------------------------------- restore and the insert trigger


def test_a_restore_refused_for_a_foreign_trigger_goes_ahead_once_it_is_disabled_as_told(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A trigger job_manager did not create refuses a restore, saying "drop or disable them
    (ALTER TABLE ... DISABLE TRIGGER ...) first": once disabled as told, it no longer does."""
    jm.add_jobs(["a", "b"], "IMAGE_TEST")
    info = jm.backup_database(tmp_path, keep=None)
    db.execute("ALTER TRIGGER job_manager_notify_insert ON jobs RENAME TO ops_notify")
    with pytest.raises(BackupError, match="disable them"):
        jm.restore_database(info.path, safety_backup=False)
    db.execute("ALTER TABLE jobs DISABLE TRIGGER ops_notify")
    jm.restore_database(info.path, safety_backup=False)
    assert scalar(db, "SELECT count(*) FROM jobs") == 2
    assert scalar(db, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'ops_notify'") == "D"


# ---------------------------------------------------------------- passwords in messages


def test_an_unencoded_at_sign_in_a_url_password_does_not_show_the_rest_of_it() -> None:
    """`postgresql://u:p@ssw0rdXYZ@host/db` (a password with a raw '@', a common copy-paste
    mistake) is split at the first '@' (as libpq does): the rest of the password would be the
    "host", shown in repr() and in every connection error. It is refused up front, saying to
    percent-encode the '@', without showing it."""
    secret_tail = "ssw0rdXYZ"
    with pytest.raises(job_manager.ConfigurationError, match="%40") as err:
        JobManager(f"postgresql://u:p@{secret_tail}@127.0.0.1:1/db", connect_timeout=2)
    assert secret_tail not in str(err.value)
    # Percent-encoded, the same password is accepted, and shown nowhere.
    jm = JobManager(f"postgresql://u:p%40{secret_tail}@127.0.0.1:1/db", connect_timeout=2)
    try:
        assert secret_tail not in repr(jm), repr(jm)
        with pytest.raises(job_manager.exceptions.JobManagerError) as failed:
            jm.get_job_stats()
        assert secret_tail not in str(failed.value)
    finally:
        jm.close()


# ---------------------------------------------------------------- channel_binding elsewhere

from test_tls import TlsServer, tls  # noqa: E402,F401


def test_dump_database_passes_the_connection_as_one_quoted_string(
    server: Server, dsn: str, tmp_path: Path
) -> None:
    """pg_dump gets the pool's libpq keywords as one connection string: values with spaces,
    quotes and backslashes (application_name, options) arrive intact, and the password is in
    its environment, never on its command line."""
    real = Path(server.cluster.bindir) / "pg_dump" if server.cluster else Path("pg_dump")
    seen = tmp_path / "seen.txt"
    wrapper = tmp_path / "pg_dump"
    # printf, not echo: dash's echo would turn the backslash it is shown into something else.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"for a in \"$@\"; do printf 'ARG: %s\\n' \"$a\" >> '{seen}'; done\n"
        f"exec '{real}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    name = "it's a \\ test"
    query = urllib.parse.urlencode(
        {"application_name": name, "options": "-c work_mem=5MB"}, quote_via=urllib.parse.quote
    )
    jm = JobManager(f"{dsn}?{query}", connect_timeout=5)
    try:
        jm.init_database()
        info = jm.dump_database(tmp_path / "dumps", keep=None, pg_dump=wrapper)
    finally:
        jm.close()
    assert info.rows == {"jobs": 0, "download_queue": 0}
    args = seen.read_text()
    password = conninfo_to_dict(dsn)["password"]
    assert password
    assert password not in args
    assert "application_name='it\\'s a \\\\ test'" in args, args
    assert "options='-c work_mem=5MB'" in args, args


def test_dump_database_keeps_channel_binding_require(
    tls: TlsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`channel_binding=require` in the DSN (with sslmode=require and no certificate checks,
    the setting that stops a man in the middle from stripping SCRAM-SHA-256-PLUS) reaches
    pg_dump as PGCHANNELBINDING: it did not, and pg_dump fell back to libpq's "prefer"."""
    real = Path(tls.cluster.bindir) / "pg_dump"
    seen = tmp_path / "env.txt"
    wrapper = tmp_path / "pg_dump"
    wrapper.write_text(
        f"#!/bin/sh\nenv | grep -E '^PG' >> '{seen}'\necho \"ARGS: $*\" >> '{seen}'\n"
        f"exec '{real}' \"$@\"\n"
    )
    wrapper.chmod(0o755)
    jm = JobManager(tls.url(sslmode="require", channel_binding="require"), connect_timeout=5)
    try:
        jm.init_database()
        jm.dump_database(tmp_path / "dumps", keep=None, pg_dump=wrapper)
    finally:
        jm.close()
    text = seen.read_text().replace(tls.cluster.password, "***")
    required = "PGCHANNELBINDING=require" in text or "channel_binding=require" in text
    assert required, text


def test_get_connection_keeps_channel_binding_require(dsn: str) -> None:
    """channel_binding=require without TLS: every job_manager call raises ConfigurationError,
    and get_connection() must not hand out a psycopg2 connection that logged in unbound (it
    did: dbapi_params() left channel_binding out)."""
    pytest.importorskip("psycopg2")
    jm = JobManager(f"{dsn}?sslmode=disable&channel_binding=require", connect_timeout=5)
    try:
        with pytest.raises(job_manager.ConfigurationError, match="channel_binding"):
            jm.get_job_stats()

        def use() -> None:
            with jm.get_connection() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")

        with pytest.raises(job_manager.exceptions.JobManagerError):
            use()
    finally:
        jm.close()
