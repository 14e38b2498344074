"""Backup, verify, restore and retention: nothing partial, nothing half-restored, nothing lost."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import FIXTURES, Server, content, scalar
from job_manager import (
    BackupCorruptError,
    BackupError,
    JobManager,
    cleanup_old_backups,
    list_backups,
    verify_backup,
)
from test_schema import OLDEST_LAYOUT

NAME = re.compile(r"^airflow_backup_\d{8}_\d{6}\.sql(\.gz|\.zst)?$")


def load_history(server: Server, dbname: str, jm: JobManager, db: psycopg.Connection) -> None:
    """The 42 real historical jobs in their oldest layout (extra columns, a prompt ending in a
    tab, long Chinese text, NULLs), migrated, plus downloads and an awkward prompt: 43 jobs."""
    db.execute(OLDEST_LAYOUT)
    server.psql(dbname, "-f", str(FIXTURES / "historical_jobs.sql"))
    jm.init_database()
    jm.add_download_task(29, "gs://test-bucket/test789.png", "/out/29.png", "image")
    d = jm.add_download_task(32, "gs://b/\t\\weird\n.png", "/out/32.png", "image", priority=3)
    jm.update_download_status(d, "completed", file_size=12345)
    jm.add_job("back\\slash \\N and \\. and \t tab", "VIDEO_PROD")


@pytest.fixture
def loaded(server: Server, dbname: str, bare_jm: JobManager, db: psycopg.Connection) -> JobManager:
    load_history(server, dbname, bare_jm, db)
    return bare_jm


def backup_names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if NAME.match(p.name) and p.is_file())


def _plain_bytes(path: Path) -> bytes:
    """The file as written before compression, decompressed by gzip and the zstd tool."""
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return path.read_bytes()


@pytest.mark.parametrize("compress", [False, True, "gzip"])
def test_round_trip_restores_every_value(
    loaded: JobManager, db: psycopg.Connection, tmp_path: Path, compress: bool | str
) -> None:
    before = content(db)
    assert "NULL" not in before
    info = loaded.backup_database(tmp_path / "b", compress=compress)
    assert info.rows == {"jobs": 43, "download_queue": 2}
    assert info.verified
    assert info.compressed is bool(compress)
    assert info.compression == {False: None, True: "zstd", "gzip": "gzip"}[compress]
    assert Path(info.path).suffix == {False: ".sql", True: ".zst", "gzip": ".gz"}[compress]
    assert info.schema_version == job_manager.SCHEMA_VERSION
    # The checksum is that of the bytes themselves (hashlib's, on the file decompressed by the
    # standard tools), as the trailer line records it, and verify finds the same.
    plain = _plain_bytes(Path(info.path))
    body, trailer = plain.rstrip(b"\n").rsplit(b"\n", 1)
    assert trailer == b"-- sha256: " + info.sha256.encode()
    assert info.sha256 == hashlib.sha256(body + b"\n").hexdigest()
    assert info.sha256 == verify_backup(info.path).sha256
    assert Path(info.path).name == backup_names(tmp_path / "b")[0]
    # Change everything: delete, update, add.
    deleted = db.execute("DELETE FROM jobs WHERE id < 20").rowcount
    db.execute("UPDATE jobs SET prompt_text = prompt_text || ' (edited)'")
    loaded.add_job("added after the backup", "IMAGE_TEST")
    assert content(db) != before
    result = loaded.restore_database(info.path, backup_dir=tmp_path / "safety")
    assert result.rows == {"jobs": 43, "download_queue": 2}
    assert content(db) == before
    # The oldest layout's extra columns travelled with their values.
    assert scalar(db, "SELECT count(*) FROM jobs WHERE submitted_at IS NOT NULL") > 0
    # The safety backup holds what was there just before the restore.
    assert result.safety_backup is not None
    assert verify_backup(result.safety_backup).rows["jobs"] == 43 - deleted + 1
    # Sequences continue after the largest restored id.
    assert loaded.add_job("after restore", "IMAGE_TEST") > int(
        scalar(db, "SELECT max(id) FROM jobs WHERE prompt_text <> 'after restore'")  # type: ignore[arg-type]
    )


def test_backup_file_and_directory_modes(loaded: JobManager, tmp_path: Path) -> None:
    d = tmp_path / "new" / "backups"
    info = loaded.backup_database(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(info.path).stat().st_mode) == 0o600
    assert info.created_at is not None
    assert info.created_at.tzinfo is not None
    assert Path(info.path).name == info.created_at.strftime("airflow_backup_%Y%m%d_%H%M%S.sql") or (
        NAME.match(Path(info.path).name)
    )
    assert info.to_dict()["verified"] is True


@pytest.mark.parametrize("compress", [False, True, "gzip"])
def test_psql_restores_our_file(
    server: Server,
    loaded: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    compress: bool | str,
) -> None:
    """The documented psql restores: `psql -X -v ON_ERROR_STOP=1 -f FILE`, and for compressed
    files one pipe, `zstd -dc FILE | psql ...` or `gzip -dc FILE | psql ...`."""
    before = content(db)
    info = loaded.backup_database(tmp_path, compress=compress)
    sql = subprocess.run(
        {False: ["cat"], True: ["zstd", "-dc"], "gzip": ["gzip", "-dc"]}[compress] + [info.path],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    target = server.create_database()
    try:
        server.psql(target, "-f", "-", input=sql)
        with psycopg.connect(server.dsn_for(target), autocommit=True) as other:
            assert content(other) == before
            # ... and a JobManager on it finds the schema current.
            assert JobManager(server.dsn_for(target)).init_database() == []
        # Running it again replaces the rows instead of failing on duplicates.
        server.psql(target, "-f", "-", input=sql)
    finally:
        server.drop_database(target)


def test_restore_into_an_empty_database_creates_the_schema(
    server: Server, loaded: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    before = content(db)
    info = loaded.backup_database(tmp_path)
    target = server.create_database()
    try:
        empty = JobManager(server.dsn_for(target))
        assert empty.check_table_exists() is False
        empty.restore_database(info.path, safety_backup=False)
        with psycopg.connect(server.dsn_for(target), autocommit=True) as other:
            assert content(other) == before
        empty.close()
    finally:
        server.drop_database(target)


def test_legacy_pg_dump_restores(
    server: Server, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """The replaced system's real pg_dump: its jobs rows, read from the COPY blocks in Rust."""
    db.execute("CREATE TABLE dag (dag_id text PRIMARY KEY)")
    db.execute("INSERT INTO dag VALUES ('mine')")
    jm.add_job("will be replaced", "IMAGE_TEST")
    legacy = FIXTURES / "airflow_backup_20250721_205159.sql"
    info = verify_backup(legacy)
    assert info.format == "pg_dump"
    assert info.rows == {"jobs": 3}
    result = jm.restore_database(legacy, backup_dir=tmp_path)
    assert result.rows == {"jobs": 3}
    assert result.format == "pg_dump"
    rows = db.execute("SELECT id, prompt_text, status, job_type FROM jobs ORDER BY id").fetchall()
    assert rows == [
        (1, "测试PostgreSQL作业", "pending", "IMAGE_TEST"),
        (2, "第二个测试作业", "pending", "VIDEO_PROD"),
        (3, "第三个测试作业", "pending", "IMAGE_TEST"),
    ]
    # Only the owned tables were touched: none of the dump's Airflow tables were created.
    assert jm.check_table_exists("dag_run") is False
    assert db.execute("SELECT dag_id FROM dag").fetchall() == [("mine",)]
    assert jm.add_job("next", "IMAGE_TEST") == 4


def test_legacy_dump_of_the_oldest_layout_keeps_extra_columns_and_maps_statuses(
    server: Server, dbname: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    # Build a pg_dump of the oldest layout with pg_dump itself.
    source = server.create_database()
    try:
        with psycopg.connect(server.dsn_for(source), autocommit=True) as src:
            src.execute(OLDEST_LAYOUT)
        server.psql(source, "-f", str(FIXTURES / "historical_jobs.sql"))
        with psycopg.connect(server.dsn_for(source), autocommit=True) as src:
            src.execute(
                "INSERT INTO jobs (prompt_text, status, job_type, submitted_at) VALUES "
                "('old submitted', 'submitted', 'VIDEO_PROD', '2025-07-01 10:00:00')"
            )
        dump = server.pg_dump(source, tmp_path / "airflow_backup_20250701_000000.sql")
    finally:
        server.drop_database(source)
    result = jm.restore_database(dump, safety_backup=False)
    assert result.rows == {"jobs": 43}
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 1
    assert scalar(
        db, "SELECT submitted_at::text FROM jobs WHERE prompt_text = 'old submitted'"
    ) == ("2025-07-01 10:00:00")
    tab = scalar(db, "SELECT prompt_text FROM jobs WHERE id = 23")
    assert isinstance(tab, str)
    assert tab.endswith("\t")


def test_a_data_only_dump_adds_its_unknown_columns_with_the_types_their_values_fit(
    server: Server, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """`pg_dump -a` says nothing of a column's type: each column the schema lacks is added with
    the type of its own values (not a neighbour's), and the values load as they were."""
    source = server.create_database()
    try:
        with psycopg.connect(server.dsn_for(source), autocommit=True) as src:
            src.execute(OLDEST_LAYOUT)
            src.execute(
                "ALTER TABLE jobs ADD COLUMN attempts integer, ADD COLUMN note text, "
                "ADD COLUMN seen_on date"
            )
            src.execute(
                "INSERT INTO jobs (prompt_text, job_type, attempts, note, seen_on, submitted_at) "
                "VALUES ('a', 'IMAGE_TEST', 3, 'first', '2025-07-01', '2025-07-01 10:00:00'), "
                "('b', 'VIDEO_PROD', 12, '42', '2025-07-02', NULL)"
            )
        dump = server.pg_dump(
            source, tmp_path / "airflow_backup_20250701_000000.sql", "-a", "-t", "jobs"
        )
    finally:
        server.drop_database(source)
    assert b"CREATE TABLE" not in dump.read_bytes()
    assert jm.restore_database(dump, safety_backup=False).rows == {"jobs": 2}
    types = dict(
        db.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'jobs' AND column_name IN "
            "('attempts', 'note', 'seen_on', 'submitted_at')"
        ).fetchall()
    )
    assert types == {
        "attempts": "bigint",
        "note": "text",
        "seen_on": "date",
        "submitted_at": "timestamp without time zone",
    }
    assert db.execute(
        "SELECT attempts, note, seen_on::text, submitted_at::text FROM jobs ORDER BY prompt_text"
    ).fetchall() == [
        (3, "first", "2025-07-01", "2025-07-01 10:00:00"),
        (12, "42", "2025-07-02", None),
    ]


def corrupt_variants(path: Path, tmp_path: Path) -> dict[str, Path]:
    data = path.read_bytes()
    out = {}

    def put(name: str, b: bytes) -> None:
        p = tmp_path / f"airflow_backup_20200101_00000{len(out)}.sql"
        p.write_bytes(b)
        out[name] = p

    put("truncated", data[: len(data) // 2])
    put("no trailer", data[: data.rindex(b"-- sha256")])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x01
    put("flipped byte", bytes(flipped))
    put("empty", b"")
    put("binary", bytes(range(256)) * 64)
    put("custom pg_dump", b"PGDMP\x01\x0e\x00" + b"\x00" * 1000)
    put("text", b"hello world\n")
    return out


def test_corrupt_files_are_refused_and_change_nothing(
    loaded: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    info = loaded.backup_database(tmp_path / "good")
    loaded.add_job("present before the failed restores", "IMAGE_TEST")
    before = content(db)
    for name, path in corrupt_variants(Path(info.path), tmp_path).items():
        with pytest.raises(BackupCorruptError):
            verify_backup(path)
        with pytest.raises(BackupCorruptError) as caught:
            loaded.restore_database(path, backup_dir=tmp_path / "safety")
        assert isinstance(caught.value, BackupError)
        assert content(db) == before, name
    # Refused before anything ran: no safety backup was even taken.
    assert not (tmp_path / "safety").exists()


def test_a_failing_restore_changes_nothing(
    loaded: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A file that verifies but whose rows the server refuses: the one transaction rolls back."""
    info = loaded.backup_database(tmp_path)
    text = Path(info.path).read_text("utf-8")
    # Duplicate the first jobs row (a primary key violation), keep counts and checksum right.
    head, rest = text.split('"claim_token") FROM stdin;\n', 1)
    first_row = rest.split("\n", 1)[0]
    body = head + '"claim_token") FROM stdin;\n' + first_row + "\n" + rest
    body = body.replace("-- rows: jobs 43", "-- rows: jobs 44")
    body = body[: body.rindex("-- sha256: ")]
    body += "-- sha256: " + hashlib.sha256(body.encode()).hexdigest() + "\n"
    bad = tmp_path / "airflow_backup_20200101_000000.sql"
    bad.write_text(body, "utf-8")
    assert verify_backup(bad).rows["jobs"] == 44
    loaded.add_job("must survive", "IMAGE_TEST")
    before = content(db)
    with pytest.raises(job_manager.DatabaseError, match=r"duplicate|is duplicated"):
        loaded.restore_database(bad, safety_backup=False)
    assert content(db) == before


def test_rotation_keeps_the_newest_verified_and_ignores_others(
    loaded: JobManager, tmp_path: Path
) -> None:
    d = tmp_path / "rot"
    d.mkdir()
    good = Path(loaded.backup_database(d, keep=None).path).read_bytes()
    os.remove(next(d.iterdir()))
    # Ten older good backups (each written when its name says), two broken ones among the
    # newest, and unrelated files.
    for i in range(10):
        stamp = f"2020-01-{10 + i:02d}T00:00:00.000000Z"
        (d / f"airflow_backup_202001{10 + i:02d}_000000.sql").write_bytes(dated(good, stamp))
    (d / "airflow_backup_20300101_000000.sql").write_bytes(good[:100])
    (d / "airflow_backup_20300102_000000.sql.gz").write_bytes(gzip.compress(good[:-10]))
    unrelated = ["notes.txt", "airflow_backup_20000101_000000.sql.bak", "airflow_backup_x.sql"]
    for name in unrelated:
        (d / name).write_bytes(b"keep me")
    (d / "airflow_backup_19990101_000000.sql").mkdir()  # a directory under a backup name
    newest = loaded.backup_database(d, keep=3)
    names = backup_names(d)
    # Kept: the one just made + the two newest good ones; broken newer ones left alone.
    assert Path(newest.path).name in names
    assert "airflow_backup_20200119_000000.sql" in names
    assert "airflow_backup_20200118_000000.sql" in names
    assert "airflow_backup_20300101_000000.sql" in names
    assert "airflow_backup_20300102_000000.sql.gz" in names
    assert len([n for n in names if verify_ok(d / n)]) == 3
    for name in unrelated:
        assert (d / name).read_bytes() == b"keep me"
    assert (d / "airflow_backup_19990101_000000.sql").is_dir()
    # list_backups reports them newest first, with the broken ones unverified.
    listed = list_backups(d)
    assert [Path(b.path).name for b in listed][:2] == [
        "airflow_backup_20300102_000000.sql.gz",
        "airflow_backup_20300101_000000.sql",
    ]
    assert [b.verified for b in listed] == [False, False, True, True, True]
    assert listed[0].problem
    # cleanup_old_backups alone: keep 1 deletes the older verified ones only.
    deleted = cleanup_old_backups(d, keep=1)
    assert sorted(Path(p).name for p in deleted) == [
        "airflow_backup_20200118_000000.sql",
        "airflow_backup_20200119_000000.sql",
    ]
    with pytest.raises(job_manager.InvalidArgumentError):
        cleanup_old_backups(d, keep=0)


def dated(backup: bytes, created_at: str) -> bytes:
    """A backup whose header says it was written at `created_at` (SHA-256 recomputed)."""
    body = backup[: backup.index(b"\n-- sha256: ") + 1]
    body = re.sub(
        rb"-- created_at: [^\n]*", b"-- created_at: " + created_at.encode(), body, count=1
    )
    return body + b"-- sha256: " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def verify_ok(p: Path) -> bool:
    try:
        verify_backup(p)
    except BackupCorruptError:
        return False
    return True


def test_backup_without_schema_says_what_to_do(bare_jm: JobManager, tmp_path: Path) -> None:
    with pytest.raises(job_manager.SchemaError, match="init_database"):
        bare_jm.backup_database(tmp_path / "b")
    assert backup_names(tmp_path / "b") == []


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 64 KiB tmpfs (root only): a backup directory that fills up or turns read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_backup_that_cannot_fit_is_refused_before_writing(
    loaded: JobManager, tiny_fs: Path
) -> None:
    loaded.add_jobs([f"{i} " + "y" * 400 for i in range(1000)], "IMAGE_TEST")
    (tiny_fs / "notes.txt").write_text("keep me")
    with pytest.raises(
        BackupError, match=r"not enough space for the backup in .*Nothing was written"
    ):
        loaded.backup_database(tiny_fs)
    assert [p.name for p in tiny_fs.iterdir()] == ["notes.txt"]


def test_backup_into_a_full_filesystem_leaves_nothing(loaded: JobManager, tiny_fs: Path) -> None:
    """A backup that passes the free-space check and still fills the disk (the tables are
    smaller than the text of their rows): it stops at the failed write, leaving nothing."""
    loaded.add_jobs([f"{i} y" for i in range(800)], "IMAGE_TEST")
    (tiny_fs / "notes.txt").write_text("keep me")
    with pytest.raises(BackupError, match="No space left on device"):
        loaded.backup_database(tiny_fs)
    # No partial file under any name; the unrelated file is intact.
    assert [p.name for p in tiny_fs.iterdir()] == ["notes.txt"]
    assert (tiny_fs / "notes.txt").read_text() == "keep me"


def test_backup_into_a_read_only_directory_is_a_clear_error(
    loaded: JobManager, tmp_path: Path
) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(d)], check=True)
    else:
        d.chmod(0o500)
    try:
        with pytest.raises(BackupError, match="cannot create a file"):
            loaded.backup_database(d)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(d)], check=True)


def test_backup_into_a_file_path_is_a_clear_error(loaded: JobManager, tmp_path: Path) -> None:
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    with pytest.raises(BackupError, match="not a directory"):
        loaded.backup_database(f)
    with pytest.raises(BackupError, match="cannot open backup"):
        verify_backup(tmp_path / "missing.sql")
