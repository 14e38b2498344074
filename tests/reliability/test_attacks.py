"""What an independent attacker of backups, restores and imports found, each kept as a test
that failed before its fix: unusual but legal databases (children, row security, rules, event
triggers, replica identities), races, sequences, dumps written with other settings, files made
to exhaust time or memory, and replayed signed backups."""

from __future__ import annotations

import datetime
import gzip
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import (
    FIXTURES,
    Server,
    content,
    counted,
    row_changes,
    rows_of,
    scalar,
    whole_database,
)
from job_manager import (
    BackupCorruptError,
    BackupError,
    DatabaseError,
    JobManager,
    JobManagerError,
    cleanup_old_backups,
    verify_backup,
)
from psycopg.conninfo import conninfo_to_dict


def test_a_child_table_is_never_emptied(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_job("parent row", "IMAGE_TEST")
    db.execute("CREATE TABLE jobs_archive (archived_note text) INHERITS (jobs)")
    db.execute(
        "INSERT INTO jobs_archive (prompt_text, job_type, archived_note) "
        "VALUES ('archived', 'IMAGE_TEST', 'keep')"
    )
    # Backups count and copy the table's own rows only.
    info = jm.backup_database(tmp_path / "b", keep=None)
    assert info.rows["jobs"] == 1
    before = rows_of(db)
    with pytest.raises(BackupError, match=r"jobs_archive inherits from jobs"):
        jm.restore_database(info.path, backup_dir=tmp_path / "safety")
    child_rows = scalar(db, "SELECT count(*) FROM ONLY jobs_archive")
    faults.record(
        "a table inheriting from jobs, with a row",
        "backup (it counts the parent's rows only), then restore (refused naming the child)",
        1,
        counted(**row_changes(before, rows_of(db)), child_rows_lost=1 - child_rows),
    )
    assert child_rows == 1
    assert rows_of(db) == before


def test_row_security_never_makes_a_short_backup(
    server: Server, dbname: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_job("visible", "IMAGE_TEST")
    jm.add_job("hidden", "IMAGE_TEST")
    role = f"owner_{dbname[-8:]}"
    db.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'owner-pass-123'")
    try:
        db.execute(f"ALTER TABLE jobs OWNER TO {role}")
        db.execute(f"ALTER TABLE download_queue OWNER TO {role}")
        db.execute(f"ALTER TABLE job_manager_schema_history OWNER TO {role}")
        db.execute("ALTER TABLE jobs ENABLE ROW LEVEL SECURITY")
        db.execute("ALTER TABLE jobs FORCE ROW LEVEL SECURITY")
        db.execute("CREATE POLICY p ON jobs USING (prompt_text <> 'hidden') WITH CHECK (true)")
        params = conninfo_to_dict(server.admin_dsn)
        dsn = f"postgresql://{role}:owner-pass-123@{params['host']}:{params.get('port', 5432)}/{dbname}"
        owner = JobManager(dsn)
        with pytest.raises(JobManagerError, match=r"row-level security"):
            owner.backup_database(tmp_path / "b", keep=None)
        owner.close()
        assert not list((tmp_path / "b").glob("airflow_backup_*"))
    finally:
        db.execute("DROP POLICY IF EXISTS p ON jobs")
        db.execute("ALTER TABLE jobs OWNER TO CURRENT_USER")
        db.execute("ALTER TABLE download_queue OWNER TO CURRENT_USER")
        db.execute("ALTER TABLE job_manager_schema_history OWNER TO CURRENT_USER")
        db.execute(f"DROP ROLE {role}")


def test_jobs_added_during_a_restore_are_in_the_safety_backup_or_kept(
    dsn: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_job("seed", "VIDEO_PROD")
    small = jm.backup_database(tmp_path / "small", keep=None)
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type) "
        "SELECT 'bulk ' || g || repeat('x', 200), 'IMAGE_TEST' FROM generate_series(1, 100000) g"
    )
    committed: list[tuple[str, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def producer() -> None:
        w = JobManager(dsn)
        i = 0
        try:
            while not stop.is_set():
                i += 1
                w.add_job(f"live job {i}", "VIDEO_PROD")
                committed.append((f"live job {i}", time.time()))
                time.sleep(0.005)
        except BaseException as e:  # every unexpected error fails the test
            errors.append(e)
        finally:
            w.close()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    result = jm.restore_database(small.path, backup_dir=tmp_path / "safety")
    done = time.time()
    stop.set()
    t.join()
    assert not errors, errors
    assert result.safety_backup is not None
    safety = Path(result.safety_backup).read_text()
    in_db = {p for (p,) in db.execute("SELECT prompt_text FROM jobs").fetchall()}
    during = [p for p, ts in committed if ts < done]
    assert during, "no job was added while the restore ran"
    lost = [p for p in during if p not in in_db and f"\t{p}\t" not in safety]
    faults.record(
        "jobs added every 5 ms by another process while a restore (100,000 rows replaced) ran",
        "restore with its safety backup; each added job looked for in the safety backup or, "
        "added after the restore, in the table",
        len(during),
        counted(added_jobs_in_neither=len(lost)),
    )
    assert lost == []


def test_a_refused_import_moves_no_sequence(
    server: Server, dbname: str, jm: JobManager, tmp_path: Path
) -> None:
    jm.add_job("existing", "IMAGE_TEST")
    baseline = whole_database(server, dbname)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,prompt_text,job_type,status\n2147483647,new prompt,VIDEO_PROD,not_a_status\n"
    )
    for mode in ("merge", "replace"):
        with pytest.raises(DatabaseError, match=r"check constraint|jobs_status_check"):
            jm.import_jobs(bad, mode=mode, safety_backup=False)
        assert whole_database(server, dbname) == baseline, mode
    no_ids = tmp_path / "no_ids.csv"
    no_ids.write_text(
        "prompt_text,job_type,status\n" + "".join(f"p{i},IMAGE_TEST,bad\n" for i in range(1000))
    )
    with pytest.raises(DatabaseError, match=r"check constraint|jobs_status_check"):
        jm.import_jobs(no_ids, mode="replace", safety_backup=False)
    assert whole_database(server, dbname) == baseline
    assert jm.add_job("still works", "IMAGE_TEST") == 2


def test_a_merge_never_moves_the_sequence_backwards(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    for i in range(3):
        jm.add_job(f"job {i}", "IMAGE_TEST")
    db.execute("DELETE FROM jobs WHERE id = 3")
    empty = tmp_path / "nothing_new.csv"
    empty.write_text("id,prompt_text,job_type\n1,job 0,IMAGE_TEST\n")
    info = jm.import_jobs(empty, safety_backup=False)
    assert info.added == {"jobs": 0}
    assert jm.add_job("next", "IMAGE_TEST") == 4


def test_index_settings_survive_a_restore(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_jobs([f"indexed {i}" for i in range(10)], "IMAGE_TEST")
    db.execute("CREATE UNIQUE INDEX jobs_op_uidx ON jobs (id, job_type)")
    db.execute("ALTER TABLE jobs REPLICA IDENTITY USING INDEX jobs_op_uidx")
    db.execute("CLUSTER jobs USING idx_jobs_created_at")
    db.execute("COMMENT ON INDEX jobs_op_uidx IS 'kept'")
    pub = f"pub_{os.getpid()}"
    db.execute(f"CREATE PUBLICATION {pub} FOR TABLE jobs")
    try:
        info = jm.backup_database(tmp_path, keep=None)
        jm.restore_database(info.path, safety_backup=False)
        flags = db.execute(
            "SELECT indexrelid::regclass::text, indisreplident, indisclustered FROM pg_index "
            "WHERE indisreplident OR indisclustered ORDER BY 1"
        ).fetchall()
        assert flags == [("idx_jobs_created_at", False, True), ("jobs_op_uidx", True, False)]
        comment = db.execute("SELECT obj_description('jobs_op_uidx'::regclass)").fetchone()
        assert comment == ("kept",)
        # Updates still work on the published table.
        job = jm.get_and_lock_job("IMAGE_TEST")
        assert job is not None
        assert jm.mark_job_as_completed(job["id"], local_path="/o")
    finally:
        db.execute(f"DROP PUBLICATION {pub}")


def test_rules_and_event_triggers_refuse_restores_and_imports(
    server: Server, dbname: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_job("existing", "IMAGE_TEST")
    info = jm.backup_database(tmp_path, keep=None)
    db.execute("CREATE TABLE audit (note text)")
    db.execute("CREATE RULE jobs_audit AS ON INSERT TO jobs DO ALSO INSERT INTO audit VALUES ('x')")
    baseline = whole_database(server, dbname)
    for call in (
        lambda: jm.restore_database(info.path, safety_backup=False),
        lambda: jm.import_jobs(FIXTURES / "historical_jobs.csv", safety_backup=False),
    ):
        with pytest.raises(
            BackupError, match=r"rules that job_manager did not create \(jobs_audit on jobs\)"
        ):
            call()
        assert whole_database(server, dbname) == baseline
    db.execute("DROP RULE jobs_audit ON jobs")
    db.execute(
        "CREATE FUNCTION note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES ('ddl'); END$$"
    )
    name = f"note_ddl_{os.getpid()}"
    db.execute(f"CREATE EVENT TRIGGER {name} ON ddl_command_end EXECUTE FUNCTION note_ddl()")
    try:
        with pytest.raises(BackupError, match=rf"enabled event triggers \({name}\)"):
            jm.restore_database(info.path, safety_backup=False)
        assert db.execute("SELECT count(*) FROM audit").fetchone() == (0,)
    finally:
        db.execute(f"DROP EVENT TRIGGER {name}")


def test_a_dump_written_with_standard_conforming_strings_off(
    server: Server, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    source = server.create_database()
    try:
        JobManager(server.dsn_for(source)).init_database()
        with server.admin() as c:
            c.execute(f'ALTER DATABASE "{source}" SET standard_conforming_strings = off')
        with psycopg.connect(server.dsn_for(source), autocommit=True) as c:
            c.execute(
                "INSERT INTO jobs (prompt_text, job_type) VALUES (%s, 'IMAGE_TEST')",
                ("C:\\path\\to\\file it's",),
            )
        dump = server.pg_dump(
            source, tmp_path / "scs_off.sql", "--data-only", "--column-inserts", "-t", "jobs"
        )
        assert "standard_conforming_strings = off" in dump.read_text()
        jm.import_jobs(dump, mode="replace", safety_backup=False)
        assert db.execute("SELECT prompt_text FROM jobs").fetchall() == [
            ("C:\\path\\to\\file it's",)
        ]
    finally:
        server.drop_database(source)


def test_plain_inserts_dumps_are_read(
    server: Server, dsn: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_jobs([f"plain {i}" for i in range(5)], "IMAGE_TEST")
    before = content(db)
    for flags in (["--inserts"], ["--inserts", "--rows-per-insert=2"]):
        dump = server.pg_dump(conninfo_to_dict(dsn)["dbname"], tmp_path / "plain.sql", *flags)
        assert verify_backup(dump).rows["jobs"] == 5
        jm.import_jobs(dump, mode="replace", safety_backup=False)
        assert content(db) == before, flags


def test_function_bodies_in_a_dump_are_not_data(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    text = (FIXTURES / "historical_jobs.sql").read_text()
    body = (
        "CREATE FUNCTION public.heartbeat() RETURNS void LANGUAGE sql AS $$\n"
        "INSERT INTO public.jobs (prompt_text, job_type) VALUES ('heartbeat','VIDEO_PROD');\n"
        "COPY public.jobs (prompt_text) FROM stdin;\n"
        "$$;\n\n"
    )
    dump = tmp_path / "with_function.sql"
    dump.write_text(
        text.replace("SET row_security = off;\n", "SET row_security = off;\n\n" + body, 1)
    )
    assert verify_backup(dump).rows == {"jobs": 42}
    jm.import_jobs(dump, mode="replace", safety_backup=False)
    assert db.execute("SELECT count(*) FROM jobs WHERE prompt_text = 'heartbeat'").fetchone() == (
        0,
    )


def test_csv_dates_in_another_datestyle_are_refused(jm: JobManager, tmp_path: Path) -> None:
    csv = tmp_path / "dmy.csv"
    csv.write_text("prompt_text,job_type,created_at\nx,IMAGE_TEST,05/11/2026 10:00:00\n")
    with pytest.raises(BackupCorruptError, match=r"a date that is not ISO"):
        verify_backup(csv)


VERIFY_IN_A_CHILD = (
    "import resource, sys, time, job_manager\n"
    "start = time.perf_counter()\n"
    "try:\n"
    "    job_manager.verify_backup(sys.argv[1])\n"
    "except job_manager.JobManagerError:\n"
    "    pass\n"
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
)


def verify_in_a_child(path: Path) -> tuple[float, int]:
    """Verifies `path` in a child process: its time in seconds and its peak RSS in KiB."""
    out = subprocess.run(
        [sys.executable, "-c", VERIFY_IN_A_CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    return float(out[0]), int(out[1])


def test_crafted_files_cannot_exhaust_time_or_memory(tmp_path: Path, faults) -> None:  # type: ignore[no-untyped-def]
    # 1,600 columns no CREATE TABLE types, 2,000 rows: type guessing was quadratic (9 s).
    cols = ["prompt_text"] + [f"c{'x' * 50}{i:05d}" for i in range(1599)]
    wide = tmp_path / "wide.sql.gz"
    with gzip.open(wide, "wb") as f:
        f.write(b"--\n-- PostgreSQL database dump\n--\n\n")
        f.write(f"COPY public.jobs ({', '.join(cols)}) FROM stdin;\n".encode())
        row = ("\t".join(["1"] * 1599) + "\n").encode()
        for i in range(2000):
            f.write(f"p{i}\t".encode() + row)
        f.write(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n")
    wide_s, _ = verify_in_a_child(wide)
    # One INSERT statement of 16 million tiny rows (62 KB gzipped): all rows were queued at
    # once (1.9 GB); now one row at a time.
    many = tmp_path / "many.sql.gz"
    with gzip.open(many, "wb") as f:
        f.write(b"--\n-- PostgreSQL database dump\n--\n\n")
        f.write(
            b"INSERT INTO public.jobs (prompt_text) VALUES (1)"
            + b",(1)" * (16_000_000 - 1)
            + b";\n"
        )
        f.write(b"\n--\n-- PostgreSQL database dump complete\n--\n\n")
    _, peak_kib = verify_in_a_child(many)
    faults.record(
        "crafted files: 1,600 untyped columns x 2,000 rows (148 KB gzip); one INSERT of 16 million rows (62 KB gzip)",
        "verify each in a child process (budgets: 5 s, 400 MiB)",
        2,
        counted(
            f"{wide_s:.1f} s for the wide file; {peak_kib // 1024} MiB peak for the INSERT, "
            "its statement's size",
            files_over_budget=int(wide_s >= 5) + int(peak_kib >= 400 * 1024),
        ),
    )
    assert wide_s < 5, wide_s
    assert peak_kib < 400 * 1024, peak_kib


def test_replayed_copies_of_an_old_signed_backup_do_not_push_out_new_ones(
    jm: JobManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY", "0123456789abcdef0123456789abcdef")
    jm.add_job("replay", "IMAGE_TEST")
    old = jm.backup_database(tmp_path, keep=None).path
    time.sleep(1.1)
    genuine = [jm.backup_database(tmp_path, keep=None).path]
    time.sleep(1.1)
    genuine.append(jm.backup_database(tmp_path, keep=None).path)
    now = datetime.datetime.now(datetime.timezone.utc)
    for k in range(1, 4):
        name = (
            "airflow_backup_"
            + (now + datetime.timedelta(minutes=k)).strftime("%Y%m%d_%H%M%S")
            + ".sql"
        )
        shutil.copy(old, tmp_path / name)
    cleanup_old_backups(tmp_path, 3)
    assert all(Path(p).exists() for p in genuine)


def test_generated_columns_and_more_builtin_types_back_up(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_job("typed", "IMAGE_TEST")
    db.execute(
        "ALTER TABLE jobs ADD COLUMN prompt_upper text GENERATED ALWAYS AS (upper(prompt_text)) STORED"
    )
    db.execute(
        'ALTER TABLE jobs ADD COLUMN span interval(3), ADD COLUMN "flag" "char", '
        "ADD COLUMN doc xml, ADD COLUMN r int4range, ADD COLUMN p point, ADD COLUMN n numeric(5,-2)"
    )
    db.execute(
        "UPDATE jobs SET span = '1.2345 seconds', flag = 'x', doc = '<a/>', r = '[1,5)', "
        "p = '(1,2)', n = 12345"
    )
    before = db.execute(
        "SELECT span::text, flag::text, doc::text, r::text, p::text, n::text, prompt_upper FROM jobs"
    ).fetchall()
    info = jm.backup_database(tmp_path, keep=None)
    assert "prompt_upper" not in Path(info.path).read_text().split("-- restore:")[0]
    jm.restore_database(info.path, safety_backup=False)
    after = db.execute(
        "SELECT span::text, flag::text, doc::text, r::text, p::text, n::text, prompt_upper FROM jobs"
    ).fetchall()
    assert after == before


@pytest.mark.parametrize(
    "call",
    [
        lambda jm: jm.get_job_by_id(2**64),
        lambda jm: jm.mark_job_as_completed(2**64),
        lambda jm: jm.cleanup_old_downloads(days=2**64),
        lambda jm: jm.cleanup_old_downloads(days=10**9),
        lambda jm: jm.get_pending_downloads(limit=2**64),
        lambda jm: jm.reset_stuck_jobs(older_than_seconds=2**62),
        lambda jm: jm.reset_stuck_jobs(older_than_seconds=float("nan")),
        lambda jm: jm.add_download_task(1, "gs://b/x", "/x", "image", priority=2**40),
        lambda jm: jm.update_download_status(2**70, "completed"),
    ],
)
def test_numbers_out_of_range_are_invalid_arguments(jm: JobManager, call) -> None:  # type: ignore[no-untyped-def]
    from job_manager import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        call(jm)
