"""check_table_exists and init_database: only what is missing, concurrently, additively."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

import job_manager
import psycopg
import pytest
from conftest import FIXTURES, ROOT, Server, scalar
from job_manager import JobManager, SchemaError

ALL = [
    "V1__baseline",
    "V2__job_status_values",
    "V3__queue_indexes_and_error_message",
    "V4__queue_autovacuum",
    "V5__claim_token",
    "V6__notify_pending",
    "V7__dashboard_indexes",
]

# psql \d of the oldest production layout (fixtures/veo3-legacy/old_jobs_structure.txt).
OLDEST_LAYOUT = """
CREATE FUNCTION update_updated_at_column() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at = CURRENT_TIMESTAMP; RETURN NEW; END; $$;
CREATE TABLE jobs (
    id serial PRIMARY KEY,
    prompt_text text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'pending',
    job_type text NOT NULL,
    local_path text,
    gcs_uri text,
    created_at timestamp DEFAULT CURRENT_TIMESTAMP,
    updated_at timestamp DEFAULT CURRENT_TIMESTAMP,
    operation_id text,
    submitted_at timestamp,
    completed_at timestamp,
    CONSTRAINT jobs_job_type_check CHECK (job_type = ANY (ARRAY['IMAGE_TEST', 'VIDEO_PROD'])),
    CONSTRAINT jobs_status_check CHECK (status = ANY (ARRAY['pending', 'processing',
        'submitted', 'poll_completed', 'completed', 'failed', 'awaiting_manual_retry']))
);
CREATE INDEX idx_jobs_created_at ON jobs (created_at);
CREATE INDEX idx_jobs_job_type ON jobs (job_type);
CREATE INDEX idx_jobs_status ON jobs (status);
CREATE TRIGGER update_jobs_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
"""


def snapshot(db: psycopg.Connection, table: str = "jobs") -> list[tuple]:
    return db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def columns(db: psycopg.Connection, table: str) -> list[str]:
    rows = db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


def test_check_table_exists(bare_jm: JobManager) -> None:
    assert bare_jm.check_table_exists() is False
    assert bare_jm.check_table_exists("download_queue") is False
    bare_jm.init_database()
    assert bare_jm.check_table_exists() is True
    assert bare_jm.check_table_exists("jobs") is True
    assert bare_jm.check_table_exists("download_queue") is True
    assert bare_jm.check_table_exists("job_manager_schema_history") is True


@pytest.mark.parametrize(
    "name",
    [
        "jobs; DROP TABLE jobs; --",
        "jobs' OR '1'='1",
        'jobs" --',
        "",
        "x" * 10_000,
        "pg_catalog.pg_class",
        "\\",
    ],
)
def test_check_table_exists_hostile_names_are_just_names(jm: JobManager, name: str) -> None:
    assert jm.check_table_exists(name) is False
    assert jm.check_table_exists("jobs") is True


def test_init_creates_everything_then_nothing(bare_jm: JobManager, db: psycopg.Connection) -> None:
    assert bare_jm.pending_migrations() == ALL
    assert bare_jm.init_database() == ALL
    assert bare_jm.init_database() == []
    assert bare_jm.pending_migrations() == []
    options = scalar(db, "SELECT reloptions::text FROM pg_class WHERE relname = 'jobs'")
    assert options == "{autovacuum_vacuum_scale_factor=0.02,autovacuum_analyze_scale_factor=0.02}"
    rows = db.execute(
        "SELECT version, name, length(checksum), execution_ms >= 0 "
        "FROM job_manager_schema_history ORDER BY version"
    ).fetchall()
    assert rows == [
        (1, "baseline", 64, True),
        (2, "job_status_values", 64, True),
        (3, "queue_indexes_and_error_message", 64, True),
        (4, "queue_autovacuum", 64, True),
        (5, "claim_token", 64, True),
        (6, "notify_pending", 64, True),
        (7, "dashboard_indexes", 64, True),
    ]
    assert columns(db, "jobs") == [
        "id",
        "prompt_text",
        "status",
        "job_type",
        "local_path",
        "gcs_uri",
        "operation_id",
        "created_at",
        "updated_at",
        "error_message",
        "claim_token",
    ]
    indexes = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes").fetchall()}
    assert {
        "jobs_prompt_text_key",
        "idx_jobs_status",
        "idx_jobs_job_type",
        "idx_jobs_created_at",
        "idx_jobs_operation_id",
        "idx_jobs_claim",
        "idx_download_queue_pending",
    } <= indexes
    triggers = {r[0] for r in db.execute("SELECT tgname FROM pg_trigger").fetchall()}
    assert {"update_jobs_updated_at", "update_download_queue_updated_at"} <= triggers
    assert job_manager.SCHEMA_VERSION == 7


def test_constraints_of_the_last_layout(jm: JobManager, db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO jobs (prompt_text, job_type) VALUES ('x', 'AUDIO')")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "INSERT INTO jobs (prompt_text, job_type, status) "
            "VALUES ('x', 'IMAGE_TEST', 'submitted')"
        )
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type, status) "
        "VALUES ('y', 'VIDEO_PROD', 'generation_successful')"
    )
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(
            "INSERT INTO download_queue (job_id, remote_url, local_path, file_type) "
            "VALUES (999, 'u', 'p', 'image')"
        )


def test_init_never_touches_other_tables(bare_jm: JobManager, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE dag (dag_id text PRIMARY KEY, is_paused boolean)")
    db.execute("INSERT INTO dag VALUES ('a', true), ('b', false)")
    db.execute("CREATE TABLE log (id serial PRIMARY KEY, event text)")
    db.execute("INSERT INTO log (event) SELECT 'e' || g FROM generate_series(1, 100) g")
    before = db.execute("SELECT * FROM dag ORDER BY 1").fetchall()
    bare_jm.init_database()
    assert db.execute("SELECT * FROM dag ORDER BY 1").fetchall() == before
    assert scalar(db, "SELECT count(*) FROM log") == 100
    assert columns(db, "dag") == ["dag_id", "is_paused"]


def test_changed_migration_is_an_error(jm: JobManager, db: psycopg.Connection) -> None:
    db.execute("UPDATE job_manager_schema_history SET checksum = repeat('0', 64) WHERE version = 2")
    db.execute("DELETE FROM job_manager_schema_history WHERE version >= 3")
    with pytest.raises(SchemaError, match="V2__job_status_values was changed") as err:
        jm.init_database()
    # Both checksums shown, shortened: the recorded one and the embedded file's SHA-256.
    embedded = hashlib.sha256(
        (ROOT / "src/schema/migrations/V2__job_status_values.sql").read_bytes()
    ).hexdigest()
    assert f"(checksum {'0' * 12} recorded, {embedded[:12]} embedded)" in str(err.value)


def test_newer_schema_is_tolerated(jm: JobManager, db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO job_manager_schema_history (version, name, checksum, execution_ms) "
        "VALUES (99, 'from_the_future', 'x', 0)"
    )
    assert jm.init_database() == []
    assert jm.add_job("still works", "IMAGE_TEST") > 0


def test_legacy_pg_dump_is_migrated_in_place(
    server: Server, dbname: str, bare_jm: JobManager, db: psycopg.Connection
) -> None:
    """The real pg_dump of the replaced system: Airflow 2.9 metadata + jobs, no download_queue."""
    with server.admin() as c:
        c.execute("DO $$ BEGIN CREATE ROLE airflow; EXCEPTION WHEN duplicate_object THEN END $$")
    server.psql(dbname, "-f", str(FIXTURES / "airflow_backup_20250721_205159.sql"))
    airflow_tables = {
        r[0]: scalar(db, f'SELECT count(*) FROM "{r[0]}"')
        for r in db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'jobs'"
        ).fetchall()
    }
    assert len(airflow_tables) > 30
    jobs_before = snapshot(db)
    assert len(jobs_before) == 3
    assert bare_jm.check_table_exists("download_queue") is False

    assert bare_jm.init_database() == ALL

    # Every row and value kept; the new column added at the end.
    assert [row[:9] for row in snapshot(db)] == [tuple(r) for r in jobs_before]
    assert columns(db, "jobs")[-2:] == ["error_message", "claim_token"]
    assert bare_jm.check_table_exists("download_queue") is True
    # Airflow's tables are all there, untouched.
    after = {t: scalar(db, f'SELECT count(*) FROM "{t}"') for t in airflow_tables}
    assert after == airflow_tables
    # The queue works on the migrated data, and the sequence continues after the dump's ids.
    job = bare_jm.get_and_lock_job("IMAGE_TEST")
    assert job is not None
    assert job["id"] == 1
    assert bare_jm.add_job("after the migration", "VIDEO_PROD") == 4
    assert bare_jm.mark_job_as_generation_successful(2, "gs://b/v.mp4") is True


def test_oldest_layout_is_migrated_keeping_rows_and_columns(
    server: Server, dbname: str, bare_jm: JobManager, db: psycopg.Connection, caplog_jm
) -> None:
    db.execute(OLDEST_LAYOUT)
    server.psql(dbname, "-f", str(FIXTURES / "historical_jobs.sql"))
    # Rows in the statuses that only the oldest layout allowed.
    db.execute(
        "INSERT INTO jobs (prompt_text, status, job_type, submitted_at) VALUES "
        "('legacy submitted 1', 'submitted', 'VIDEO_PROD', now()),"
        "('legacy submitted 2', 'submitted', 'VIDEO_PROD', now()),"
        "('legacy polled', 'poll_completed', 'VIDEO_PROD', now()),"
        "('legacy retry', 'awaiting_manual_retry', 'IMAGE_TEST', NULL)"
    )
    before = {r[0]: r for r in snapshot(db)}
    assert len(before) == 46
    tab_prompt = scalar(db, "SELECT prompt_text FROM jobs WHERE id = 23")
    assert isinstance(tab_prompt, str)
    assert tab_prompt.endswith("\t")

    assert bare_jm.init_database() == ALL

    cols = columns(db, "jobs")
    assert {"submitted_at", "completed_at", "operation_id", "error_message"} <= set(cols)
    after = {
        r[0]: r
        for r in db.execute(
            "SELECT id, prompt_text, status, job_type, local_path, gcs_uri, created_at, "
            "updated_at, operation_id, submitted_at, completed_at FROM jobs ORDER BY id"
        ).fetchall()
    }
    assert after.keys() == before.keys()
    mapped = {
        "submitted": "processing",
        "poll_completed": "generation_successful",
        "awaiting_manual_retry": "awaiting_retry",
    }
    for job_id, old in before.items():
        new = after[job_id]
        assert new[2] == mapped.get(old[2], old[2])
        # Every other value, the extra columns included, is unchanged.
        assert new[:2] + new[3:] == old[:2] + old[3:]
    assert scalar(db, "SELECT prompt_text FROM jobs WHERE id = 23") == tab_prompt
    messages = [r.getMessage() for r in caplog_jm.records]
    assert "mapped 2 jobs from legacy status 'submitted' to 'processing'" in messages
    assert (
        "mapped 1 jobs from legacy status 'poll_completed' to 'generation_successful'" in messages
    )
    assert (
        "mapped 1 jobs from legacy status 'awaiting_manual_retry' to 'awaiting_retry'" in messages
    )
    # The id sequence continues after the historical ids (setval 43) and the 4 rows above.
    assert bare_jm.add_job("new after migration", "IMAGE_TEST") == 48


def test_unknown_legacy_status_stops_the_migration_and_changes_nothing(
    bare_jm: JobManager, db: psycopg.Connection
) -> None:
    db.execute(
        OLDEST_LAYOUT.replace("'awaiting_manual_retry']", "'awaiting_manual_retry', 'weird']")
    )
    db.execute(
        "INSERT INTO jobs (prompt_text, status, job_type) VALUES ('w', 'weird', 'IMAGE_TEST')"
    )
    with pytest.raises(SchemaError, match=r"'weird' \(1 rows\)"):
        bare_jm.init_database()
    # All or nothing: no history table, no download_queue, the row as it was.
    assert bare_jm.check_table_exists("job_manager_schema_history") is False
    assert bare_jm.check_table_exists("download_queue") is False
    assert scalar(db, "SELECT status FROM jobs") == "weird"


def test_init_fails_fast_when_a_table_is_locked(dsn: str, db: psycopg.Connection) -> None:
    JobManager(dsn).init_database()
    # Pretend the schema is one migration behind, so init has DDL to run on jobs.
    db.execute("DELETE FROM job_manager_schema_history WHERE version >= 3")
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    outcome: list[BaseException | None] = []

    def init() -> None:
        try:
            JobManager(dsn).init_database(lock_timeout=0.5)
            outcome.append(None)
        except BaseException as e:  # judged below, in the test's thread
            outcome.append(e)

    # The test bounds its own wait: an init that ignored lock_timeout would otherwise hang the
    # run (mutation testing found exactly that) instead of failing it.
    started = time.monotonic()
    t = threading.Thread(target=init)
    t.start()
    t.join(10)
    waited = time.monotonic() - started
    locker.rollback()
    locker.close()
    t.join()
    assert waited < 5, f"init_database waited {waited:.1f}s for the lock, past its lock_timeout"
    assert isinstance(outcome[0], SchemaError)
    assert "locked by another session" in str(outcome[0])
    assert JobManager(dsn).init_database() == ALL[2:]


def _longest_pause_of_python_while(busy: threading.Event, waiting: Callable[[], bool]) -> float:
    """Runs Python in this thread until `busy` clears: the longest time, in seconds, this thread
    went without running (a thread holding the GIL while it waits makes this its whole wait;
    without it, a thread yields every 5 ms switch interval). Fails unless `waiting()` was
    observed true meanwhile: the other thread really was waiting."""
    longest, seen_waiting, last = 0.0, False, time.perf_counter()
    checked = last
    while busy.is_set():
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
        if not seen_waiting and now - checked > 0.05:
            seen_waiting, checked = waiting(), now
            last = time.perf_counter()  # the check's own round trip is not a pause
    assert seen_waiting, "the other thread never waited: the test proved nothing"
    return longest


def test_init_releases_the_gil_while_waiting(dsn: str, db: psycopg.Connection) -> None:
    JobManager(dsn).init_database()
    db.execute("DELETE FROM job_manager_schema_history WHERE version >= 3")
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    jm = JobManager(dsn, application_name="gil-init")
    busy = threading.Event()
    busy.set()
    caught: list[BaseException] = []

    def blocked() -> None:
        try:
            jm.init_database(lock_timeout=1.5)
        except SchemaError as e:
            caught.append(e)
        finally:
            busy.clear()

    def waits_on_the_lock() -> bool:
        return bool(
            scalar(
                db,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'gil-init' AND wait_event_type = 'Lock'",
            )
        )

    t = threading.Thread(target=blocked)
    t.start()
    longest = _longest_pause_of_python_while(busy, waits_on_the_lock)
    t.join()
    locker.rollback()
    locker.close()
    assert len(caught) == 1
    # This thread ran Python throughout the 1.5 s the other waited in Rust: holding the GIL
    # would have made one pause of 1.5 s.
    assert longest < 0.3, longest


def test_waiting_for_a_pooled_connection_releases_the_gil(dsn: str, db: psycopg.Connection) -> None:
    """pool_size=1: one thread's add_job holds the only connection (blocked on a lock), another
    waits for that connection in the pool; Python keeps running meanwhile, and both finish."""
    jm = JobManager(dsn, pool_size=1, connect_timeout=10, application_name="gil-pool")
    jm.init_database()
    locker = psycopg.connect(dsn)
    locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    busy = threading.Event()
    busy.set()
    results: dict[str, object] = {}

    def holder() -> None:
        results["added"] = jm.add_job("added while locked", "IMAGE_TEST")

    def pool_waiter() -> None:
        try:
            results["stats"] = jm.get_job_stats()
        finally:
            busy.clear()

    def both_waiting() -> bool:
        # The holder's one connection waits on the lock; the other call has none of its own.
        n = scalar(
            db,
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock') * 10 + count(*) "
            "FROM pg_stat_activity WHERE application_name = 'gil-pool'",
        )
        return n == 11 and waiter.is_alive()

    first = threading.Thread(target=holder)
    first.start()
    waiter = threading.Thread(target=pool_waiter)
    while not scalar(
        db,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'gil-pool' AND wait_event_type = 'Lock'",
    ):
        time.sleep(0.01)
    waiter.start()
    release = threading.Timer(1.5, locker.rollback)
    release.start()
    longest = _longest_pause_of_python_while(busy, both_waiting)
    first.join(10)
    waiter.join(10)
    release.join()
    locker.close()
    assert isinstance(results.get("added"), int), results
    assert results["stats"] == {"IMAGE_TEST": {"pending": 1}}, results
    assert longest < 0.3, longest
