"""Backups and restores against unusual databases and hostile surroundings: names and types
that must round-trip, session settings that must not matter, a backup key, rotation that a
planted file cannot fool, tables job_manager does not own, a file swapped during a restore."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from conftest import (
    FIXTURES,
    ROOT,
    Server,
    content,
    counted,
    lines_changed,
    row_changes,
    rows_of,
    whole_database,
)
from job_manager import (
    BackupCorruptError,
    BackupError,
    ConfigurationError,
    InvalidArgumentError,
    JobManager,
    cleanup_old_backups,
    list_backups,
    verify_backup,
)

KEY = "k" * 16 + "-0123456789abcdef"

UNUSUAL_COLUMNS = (
    "ALTER TABLE jobs"
    ' ADD COLUMN "reviewed by" text,'
    " ADD COLUMN 备注 text,"
    ' ADD COLUMN "say ""hi""" character varying(20),'
    " ADD COLUMN score numeric(10,2),"
    " ADD COLUMN tags text[],"
    " ADD COLUMN meta jsonb,"
    " ADD COLUMN due timestamptz,"
    " ADD COLUMN span interval,"
    " ADD COLUMN ratio double precision,"
    " ADD COLUMN day date"
)


def fill_unusual(db: psycopg.Connection) -> None:
    db.execute(
        'UPDATE jobs SET "reviewed by" = \'ana\', 备注 = \'检查过\', "say ""hi""" = \'a"b\'\'c\','
        " score = 12.34, tags = ARRAY['x', 'y z', NULL], meta = '{\"k\": [1, \"two\"]}',"
        " due = '2026-11-05 10:00:00+01', span = '1 day 02:03:04.5', ratio = 0.1,"
        " day = '2026-11-05', created_at = '2026-11-05 10:00:00'"
    )


def normalised(db: psycopg.Connection) -> Counter[str]:
    """rows_of() in a session whose own settings cannot change the text of any value."""
    db.execute(
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
        "SET extra_float_digits = 3"
    )
    return rows_of(db)


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY", KEY)
    monkeypatch.delenv("JOB_MANAGER_BACKUP_KEY_FILE", raising=False)


# -- names, types and settings ----------------------------------------------------------------


def test_unusual_column_names_and_types_round_trip(
    server: Server, jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"unusual {i}" for i in range(5)], "IMAGE_TEST")
    db.execute(UNUSUAL_COLUMNS)
    fill_unusual(db)
    before = normalised(db)
    info = jm.backup_database(tmp_path, keep=None)
    text = Path(info.path).read_text()
    assert '-- column: jobs "reviewed by" text' in text
    assert '-- column: jobs "say ""hi""" character varying(20)' in text
    assert verify_backup(info.path).rows["jobs"] == 5
    db.execute("DELETE FROM jobs")
    jm.restore_database(info.path, safety_backup=False)
    in_place = normalised(db)
    # Into a fresh database: the columns are created from the parsed types.
    target = server.create_database()
    try:
        other = JobManager(server.dsn_for(target))
        other.restore_database(info.path, safety_backup=False)
        other.close()
        with psycopg.connect(server.dsn_for(target), autocommit=True) as c:
            fresh = normalised(c)
    finally:
        server.drop_database(target)
    changes = Counter(row_changes(before, in_place)) + Counter(row_changes(before, fresh))
    faults.record(
        "unusual columns: spaces, quotes, non-ASCII names; numeric(10,2), text[], jsonb, timestamptz, interval, float8, date",
        f"backup, restore in place and into a fresh database; every value of "
        f"{text.count('-- column: jobs ')} columns compared (jobs)",
        5,
        counted(**{k: changes[k] for k in ("rows_lost_or_changed", "rows_appeared")}),
    )
    assert in_place == before
    assert fresh == before


def test_a_column_no_fresh_database_could_recreate_is_refused_when_backing_up(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_job("with a mood", "IMAGE_TEST")
    db.execute("CREATE TYPE mood AS ENUM ('calm', 'angry')")
    db.execute("ALTER TABLE jobs ADD COLUMN feeling mood DEFAULT 'calm'")
    with pytest.raises(
        BackupError,
        match=r'cannot back up jobs\."feeling": the column type "mood" is not a built-in type',
    ):
        jm.backup_database(tmp_path / "b", keep=None)
    assert list((tmp_path / "b").iterdir()) == []
    db.execute("ALTER TABLE jobs DROP COLUMN feeling")
    db.execute('ALTER TABLE jobs ADD COLUMN "two\nlines" text')
    with pytest.raises(BackupError, match=r"a column name with a control character"):
        jm.backup_database(tmp_path / "b", keep=None)
    assert list((tmp_path / "b").iterdir()) == []


def odd_database(server: Server, name: str, datestyle: str, tz: str, interval: str) -> None:
    with server.admin() as c:
        c.execute(f"ALTER DATABASE \"{name}\" SET DateStyle = '{datestyle}'")
        c.execute(f"ALTER DATABASE \"{name}\" SET TimeZone = '{tz}'")
        c.execute(f"ALTER DATABASE \"{name}\" SET IntervalStyle = '{interval}'")
        c.execute(f'ALTER DATABASE "{name}" SET extra_float_digits = 0')


def test_round_trips_are_exact_whatever_the_databases_settings(
    server: Server, dbname: str, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    """A job created on 5 Nov stays on 5 Nov: backup under 'SQL, DMY' in New York, restore
    under 'German, DMY' in Kathmandu, by job_manager and by psql."""
    odd_database(server, dbname, "SQL, DMY", "America/New_York", "sql_standard")
    jm = JobManager(server.dsn_for(dbname))
    jm.init_database()
    jm.add_jobs([f"dated {i}" for i in range(3)], "VIDEO_PROD")
    with psycopg.connect(server.dsn_for(dbname), autocommit=True) as db:
        db.execute(UNUSUAL_COLUMNS)
        fill_unusual(db)
        before = normalised(db)
    info = jm.backup_database(tmp_path, keep=None)
    jm.close()
    assert "\t2026-11-05 10:00:00" in Path(info.path).read_text()
    changes: Counter[str] = Counter()
    for how in ("job_manager", "psql"):
        target = server.create_database()
        try:
            odd_database(server, target, "German, DMY", "Asia/Kathmandu", "iso_8601")
            if how == "job_manager":
                other = JobManager(server.dsn_for(target))
                other.restore_database(info.path, safety_backup=False)
                other.close()
            else:
                server.psql(target, "-f", info.path)
            with psycopg.connect(server.dsn_for(target), autocommit=True) as c:
                after = normalised(c)
                changes.update(row_changes(before, after))
                assert after == before, how
                day = c.execute(
                    "SELECT extract(day FROM created_at), extract(month FROM created_at) "
                    "FROM jobs LIMIT 1"
                ).fetchone()
                assert day == (5, 11), how
        finally:
            server.drop_database(target)
    faults.record(
        "source DateStyle 'SQL, DMY', New York, sql_standard intervals, extra_float_digits 0; target German, Kathmandu, iso_8601",
        "backup, then restore by job_manager and by psql; a job of 5 November read back",
        2,
        counted(
            "5 November stays 5 November",
            **{k: changes[k] for k in ("rows_lost_or_changed", "rows_appeared")},
        ),
    )


def test_format_1_files_of_the_previous_release_still_verify_and_restore(
    jm: JobManager, db: psycopg.Connection
) -> None:
    old = ROOT / "tests" / "fixtures" / "backups" / "format1_airflow_backup_20261124_081940.sql"
    info = verify_backup(old)
    assert info.rows == {"jobs": 1, "download_queue": 1}
    assert info.signed is False
    jm.add_job("replaced", "IMAGE_TEST")
    result = jm.restore_database(old, safety_backup=False)
    assert result.rows == {"jobs": 1, "download_queue": 1}
    assert db.execute("SELECT prompt_text, job_type FROM jobs").fetchall() == [
        ("hello\tworld \\ x", "VIDEO_PROD")
    ]


# -- the backup key ----------------------------------------------------------------------------


def resign_sha(data: bytes) -> bytes:
    """An attacker's edit: change a row and recompute the SHA-256, keep the HMAC line."""
    body_end = data.index(b"\n-- sha256: ") + 1
    body = data[:body_end].replace(b"\tpending\t", b"\tcompleted\t", 1)
    rest = data[body_end:].split(b"\n", 1)[1]
    return body + b"-- sha256: " + hashlib.sha256(body).hexdigest().encode() + b"\n" + rest


def test_a_backup_key_signs_and_only_signed_files_are_accepted(
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    keyed: None,
    monkeypatch: pytest.MonkeyPatch,
    faults,
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"signed {i}" for i in range(3)], "IMAGE_TEST")
    before = content(db)
    rows_before = rows_of(db)
    info = jm.backup_database(tmp_path / "b", keep=None)
    assert info.signed
    assert info.authenticated
    data = Path(info.path).read_bytes()
    assert data.splitlines()[-1].startswith(b"-- hmac-sha256: ")
    assert KEY.encode() not in data
    checked = verify_backup(info.path)
    assert checked.signed
    assert checked.authenticated

    forged = tmp_path / "forged.sql"
    forged.write_bytes(resign_sha(data))
    with pytest.raises(BackupCorruptError, match=r"HMAC does not match the configured backup key"):
        verify_backup(forged)
    stripped = tmp_path / "stripped.sql"
    stripped.write_bytes(b"\n".join(resign_sha(data).split(b"\n")[:-2]) + b"\n")
    with pytest.raises(BackupCorruptError, match=r"carries no HMAC"):
        verify_backup(stripped)
    with pytest.raises(BackupCorruptError, match=r"carries no HMAC"):
        jm.restore_database(stripped, safety_backup=False)
    with pytest.raises(BackupCorruptError, match=r"carries no HMAC"):
        jm.restore_database(FIXTURES / "airflow_backup_20250721_205159.sql", safety_backup=False)
    after_refusals = rows_of(db)
    assert content(db) == before
    # The operator's explicit choice for a file they trust (no HMAC at all): accepted.
    jm.restore_database(stripped, safety_backup=False, allow_unsigned=True)
    assert content(db) != before
    # ... but never a file whose HMAC is wrong.
    with pytest.raises(BackupCorruptError, match=r"HMAC does not match"):
        jm.restore_database(forged, safety_backup=False, allow_unsigned=True)

    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY", "another-key-of-16-bytes")
    with pytest.raises(BackupCorruptError, match=r"HMAC does not match"):
        verify_backup(info.path)
    monkeypatch.delenv("JOB_MANAGER_BACKUP_KEY")
    unchecked = verify_backup(info.path)
    assert unchecked.signed
    assert not unchecked.authenticated
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY_FILE", str(key_file))
    assert verify_backup(info.path).authenticated
    jm.restore_database(info.path, safety_backup=False)
    assert content(db) == before
    faults.record(
        "backup key set: a row edited and the SHA-256 recomputed, the HMAC line stripped, another key, a legacy pg_dump",
        "verify and restore each; then allow_unsigned for the stripped file",
        5,
        counted(
            "forged, stripped and other-key files refused; only the operator's explicit choice "
            "loads an unsigned file",
            **row_changes(rows_before, after_refusals),
        ),
    )


def test_a_short_backup_key_is_a_configuration_error(
    jm: JobManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY", "short")
    with pytest.raises(ConfigurationError, match=r"at least 16") as e:
        jm.backup_database(tmp_path, keep=None)
    assert "short" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_with_a_key_rotation_counts_only_signed_backups(
    jm: JobManager, tmp_path: Path, keyed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    jm.add_job("rotated", "IMAGE_TEST")
    signed = jm.backup_database(tmp_path, keep=None).path
    monkeypatch.delenv("JOB_MANAGER_BACKUP_KEY")
    unsigned = jm.backup_database(tmp_path, keep=None).path
    monkeypatch.setenv("JOB_MANAGER_BACKUP_KEY", KEY)
    newest = jm.backup_database(tmp_path, keep=2).path
    # keep=2: the new one and the older signed one; the unsigned one is not a kept backup,
    # and as it is newer than the second kept one, it is left alone (and reported).
    assert Path(newest).exists()
    assert Path(signed).exists()
    assert Path(unsigned).exists()
    listed = {i.path: i for i in list_backups(tmp_path)}
    assert listed[unsigned].verified is False
    assert "carries no HMAC" in (listed[unsigned].problem or "")


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_never_deletes_the_backup_it_just_wrote(
    jm: JobManager, tmp_path: Path, log_records, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_job("rotation", "IMAGE_TEST")
    previous = jm.backup_database(tmp_path, keep=None).path
    # Two verifying files named in the future: a clock that was ahead, or copied files.
    future = [f"airflow_backup_{stamp}.sql" for stamp in ("20991231_235959", "20991231_235958")]
    for name in future:
        shutil.copy(previous, tmp_path / name)
    time.sleep(1.1)
    info = jm.backup_database(tmp_path, keep=2)
    assert Path(info.path).exists()
    assert Path(previous).exists()
    assert (tmp_path / "airflow_backup_20991231_235959.sql").exists()
    warnings = [r.getMessage() for r in log_records if "in the future" in r.getMessage()]
    assert len(warnings) == 2
    # A third backup with keep=2: the oldest real one goes, the future ones stay.
    time.sleep(1.1)
    third = jm.backup_database(tmp_path, keep=2)
    should_stay = [third.path, info.path, *(str(tmp_path / f) for f in future)]
    faults.record(
        "two verifying backups named in the year 2099 in the folder, keep=2",
        "two backups with rotation; the future-dated files reported, not counted",
        2,
        counted(
            f"{len(warnings)} future-dated files reported",
            files_wrongly_deleted=sum(not Path(p).exists() for p in should_stay),
            files_wrongly_kept=int(Path(previous).exists()),
        ),
    )
    assert all(Path(p).exists() for p in should_stay)
    assert not Path(previous).exists()


@pytest.mark.parametrize("keep", [0, -1, 2**70])
def test_keep_out_of_range_is_an_invalid_argument(
    jm: JobManager, tmp_path: Path, keep: int
) -> None:
    with pytest.raises(InvalidArgumentError, match=r"keep must be at least 1|out of range"):
        jm.backup_database(tmp_path, keep=keep)
    with pytest.raises(InvalidArgumentError, match=r"keep must be at least 1|out of range"):
        cleanup_old_backups(tmp_path, keep)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds", [1e300, float("inf"), float("nan"), -1.0, 0.0])
def test_lock_timeout_out_of_range_is_an_invalid_argument(jm: JobManager, seconds: float) -> None:
    with pytest.raises(InvalidArgumentError, match=r"lock_timeout must be a positive number"):
        jm.init_database(lock_timeout=seconds)


# -- tables and triggers job_manager does not own ----------------------------------------------


@pytest.mark.parametrize("kind", ["job_manager", "pg_dump"])
def test_restore_refuses_when_another_table_refers_to_jobs(
    server: Server,
    dbname: str,
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    kind: str,
    faults,
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"referenced {i}" for i in range(3)], "IMAGE_TEST")
    path = (
        jm.backup_database(tmp_path, keep=None).path
        if kind == "job_manager"
        else FIXTURES / "airflow_backup_20250721_205159.sql"
    )
    db.execute("CREATE TABLE audit (job_id integer CONSTRAINT audit_job_fk REFERENCES jobs (id))")
    db.execute("INSERT INTO audit SELECT id FROM jobs")
    baseline = whole_database(server, dbname)
    with pytest.raises(
        BackupError, match=r"restore refused, nothing was changed: .*audit_job_fk on audit"
    ):
        jm.restore_database(path, backup_dir=tmp_path / "safety")
    after = whole_database(server, dbname)
    faults.record(
        f"a table outside job_manager with a foreign key to jobs ({kind} file)",
        "restore (refused naming the constraint); whole-database pg_dump compared line by line",
        1,
        counted(
            dump_lines_changed=lines_changed(baseline, after),
            safety_files_left=int((tmp_path / "safety").exists()),
        ),
    )
    assert after == baseline
    assert not (tmp_path / "safety").exists()


def test_restore_refuses_a_trigger_it_would_fire(
    server: Server, dbname: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    jm.add_job("triggered", "IMAGE_TEST")
    path = jm.backup_database(tmp_path, keep=None).path
    db.execute("CREATE TABLE audit (note text)")
    db.execute(
        "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES ('x'); RETURN NEW; END$$"
    )
    db.execute(
        "CREATE TRIGGER audit_insert AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION note()"
    )
    baseline = whole_database(server, dbname)
    with pytest.raises(
        BackupError, match=r"triggers that job_manager did not create \(audit_insert on jobs\)"
    ):
        jm.restore_database(path, backup_dir=tmp_path / "safety")
    assert whole_database(server, dbname) == baseline


# -- the file changes while a restore runs -------------------------------------------------------


def during_safety_backup(safety: Path, action) -> tuple[threading.Thread, dict[str, bool]]:  # type: ignore[no-untyped-def]
    """Runs `action` once, the moment the restore's safety backup starts being written (after
    the restore verified the file, before it loads it)."""
    seen = {"done": False}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if safety.exists() and any(
                p.name.startswith(".airflow_backup_") for p in safety.iterdir()
            ):
                action()
                seen["done"] = True
                return
            time.sleep(0.0002)

    t = threading.Thread(target=watch)
    t.start()
    return t, seen


def test_a_file_swapped_during_the_restore_is_not_the_one_loaded(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"original {i} " + "x" * 200 for i in range(30_000)], "IMAGE_TEST")
    verified = jm.backup_database(tmp_path / "a", keep=None).path
    expected = rows_of(db)
    db.execute("DELETE FROM jobs WHERE id % 2 = 0")
    other = jm.backup_database(tmp_path / "b", keep=None).path
    path = tmp_path / "restore-me.sql"
    shutil.copy(verified, path)
    safety = tmp_path / "safety"
    safety.mkdir()
    t, seen = during_safety_backup(safety, lambda: os.replace(other, path))
    result = jm.restore_database(path, backup_dir=safety)
    t.join()
    assert seen["done"], "the swap did not happen while the safety backup was written"
    loaded = rows_of(db)
    faults.record(
        "the backup file replaced by another valid backup (rename) while the restore wrote its safety backup",
        "restore of 30,000 jobs; the rows loaded compared with the verified file's",
        1,
        counted(
            f"{result.rows['jobs']:,} jobs loaded; the swapped-in file has 15,000",
            **row_changes(expected, loaded),
        ),
    )
    assert result.rows["jobs"] == 30_000
    assert loaded == expected


def test_a_file_rewritten_in_place_during_the_restore_is_refused(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    jm.add_jobs([f"in place {i} " + "y" * 200 for i in range(30_000)], "IMAGE_TEST")
    path = Path(jm.backup_database(tmp_path / "a", keep=None).path)
    db.execute("DELETE FROM jobs WHERE id > 10")
    before = rows_of(db)
    data = path.read_bytes()
    body_end = data.index(b"\n-- sha256: ") + 1
    body = data[:body_end].replace(b"in place 7 ", b"in place Z ", 1)
    rewritten = body + b"-- sha256: " + hashlib.sha256(body).hexdigest().encode() + b"\n"
    assert len(rewritten) == len(data)

    def rewrite() -> None:
        with open(path, "r+b") as f:  # the same inode, consistent and re-signed
            f.write(rewritten)

    safety = tmp_path / "safety"
    safety.mkdir()
    t, seen = during_safety_backup(safety, rewrite)
    with pytest.raises(
        BackupCorruptError, match=r"the file changed between verification and restore"
    ):
        jm.restore_database(path, backup_dir=safety)
    t.join()
    assert seen["done"]
    after = rows_of(db)
    faults.record(
        "the backup file rewritten in place (same inode, one prompt changed, SHA-256 recomputed) during the restore",
        "restore of 30,000 jobs: refused before COMMIT (the bytes differ from those verified)",
        1,
        counted(**row_changes(before, after)),
    )
    assert after == before
