"""Parallel snapshot backups (#17): N connections share the backup's one snapshot and read the
tables in page ranges; the file is the single-stream file, and a failed stream leaves none."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import Server, content, scalar
from job_manager import BackupError, InvalidArgumentError, JobManager, verify_backup
from test_cli import run

FILLER = "lorem ipsum dolor sit amet, 一只可爱的小猫, tab\t backslash \\ " * 3


def fill(jm: JobManager, n: int, tag: str = "bulk") -> None:
    """`n` jobs with ~250-byte prompts (about 25 per 8 kB page) and a download for every 10th."""
    for start in range(0, n, 20_000):
        jm.add_jobs(
            [f"{tag} {i} {FILLER}" for i in range(start, min(n, start + 20_000))], "VIDEO_PROD"
        )


def data_section(path: str) -> bytes:
    """The file from its data section to the end marker: everything but the header, which
    records when the backup was written."""
    raw = Path(path).read_bytes()
    return raw[raw.index(b"\n-- data\n") : raw.rindex(b"\n-- sha256: ")]


def test_streams_write_the_same_file_and_it_restores(
    jm: JobManager, db: psycopg.Connection, server: Server, tmp_path: Path
) -> None:
    fill(jm, 6_000)
    db.execute(
        "INSERT INTO download_queue (job_id, remote_url, local_path, file_type) "
        "SELECT id, 'gs://b/' || id, '/out/' || id, 'video' FROM jobs WHERE id % 10 = 0"
    )
    # Holes: a table whose pages are not all full reads the same.
    db.execute(
        "DELETE FROM jobs WHERE id % 7 = 0 AND id NOT IN (SELECT job_id FROM download_queue)"
    )
    pages = scalar(db, "SELECT pg_relation_size('jobs') / 8192")
    assert isinstance(pages, int)
    assert pages > 40
    before = content(db)
    one = jm.backup_database(tmp_path / "1", keep=None, streams=1)
    for n in (2, 4):
        info = jm.backup_database(tmp_path / str(n), keep=None, streams=n)
        assert info.rows == one.rows
        assert data_section(info.path) == data_section(one.path)
        assert verify_backup(info.path).sha256 == info.sha256
    # verify + restore round trip of the 4-stream file, into the emptied tables.
    db.execute("TRUNCATE download_queue, jobs")
    jm.restore_database(info.path, safety_backup=False)
    assert content(db) == before
    # psql restores it too (plain SQL, one COPY block per table).
    target = server.create_database()
    try:
        server.psql(target, "-X", "-v", "ON_ERROR_STOP=1", "-f", info.path)
        with psycopg.connect(server.dsn_for(target), autocommit=True) as t:
            assert content(t) == before
    finally:
        server.drop_database(target)


def test_small_and_empty_tables(jm: JobManager, db: psycopg.Connection, tmp_path: Path) -> None:
    """Tables smaller than one range (3 jobs on one page) and an empty one (no downloads)."""
    jm.add_jobs(["a", "b \\N", "c\twith tab"], "IMAGE_TEST")
    before = content(db)
    info = jm.backup_database(tmp_path / "b", keep=None, streams=4)
    assert info.rows == {"jobs": 3, "download_queue": 0}
    one = jm.backup_database(tmp_path / "one", keep=None, streams=1)
    assert data_section(info.path) == data_section(one.path)
    db.execute("TRUNCATE download_queue, jobs")
    jm.restore_database(info.path, safety_backup=False)
    assert content(db) == before


def test_rows_committed_during_the_backup_never_appear_partially(
    jm: JobManager, dsn: str, tmp_path: Path
) -> None:
    """A writer commits batches of 200 jobs while a 4-stream backup runs: every batch is in
    the file whole or not at all, and the file's counts are those of one snapshot."""
    fill(jm, 30_000)
    stop = threading.Event()
    committed: list[int] = []

    def writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as w:
            k = 0
            while not stop.is_set():
                with w.transaction():
                    w.execute(
                        "INSERT INTO jobs (prompt_text, job_type) "
                        "SELECT 'writer batch ' || %s || ' row ' || g, 'VIDEO_PROD' "
                        "FROM generate_series(1, 200) g",
                        (k,),
                    )
                committed.append(k)
                k += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        info = jm.backup_database(tmp_path / "b", keep=None, streams=4)
        by_then = len(committed)
    finally:
        stop.set()
        t.join()
    text = Path(info.path).read_text()
    per_batch: dict[str, int] = {}
    for m in re.finditer(r"writer batch (\d+) row ", text):
        per_batch[m.group(1)] = per_batch.get(m.group(1), 0) + 1
    assert per_batch, "no batch committed before the backup"
    assert all(n == 200 for n in per_batch.values()), per_batch
    # Batches committed while the backup ran are not in it: the snapshot is the start's.
    assert by_then > len(per_batch)
    assert info.rows["jobs"] == 30_000 + 200 * len(per_batch)
    assert verify_backup(info.path).rows == info.rows


def test_a_killed_stream_fails_the_backup_and_leaves_no_file(
    jm: JobManager, db: psycopg.Connection, server: Server, tmp_path: Path
) -> None:
    fill(jm, 60_000)
    out = tmp_path / "b"
    result: list[BaseException | object] = []

    def backup() -> None:
        try:
            result.append(jm.backup_database(out, keep=None, streams=2))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=backup)
    t.start()
    killed = 0
    deadline = time.monotonic() + 30
    with server.admin() as admin:
        while t.is_alive() and not killed and time.monotonic() < deadline:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM ("
                " SELECT pid FROM pg_stat_activity"
                " WHERE application_name LIKE 'job_manager backup stream %%' AND datname = %s"
                # A stream killed while it copies: one killed while it imports the snapshot
                # is set aside and the backup goes on with fewer streams (as it should).
                " AND state = 'active' AND query LIKE 'COPY%%'"
                " LIMIT 1) s",
                (db.info.dbname,),
            ).fetchone()[0]
    t.join(60)
    assert killed == 1, "no backup stream was seen to kill"
    assert len(result) == 1
    assert isinstance(result[0], BackupError), result
    assert "stream" in str(result[0])
    assert "nothing was written" in str(result[0])
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("bad", [0, -1, 17, 10**6, 2**70])
def test_invalid_streams_are_refused(jm: JobManager, tmp_path: Path, bad: int) -> None:
    with pytest.raises(
        InvalidArgumentError, match=r"streams must be between 1 and 16|out of range"
    ):
        jm.backup_database(tmp_path / "b", keep=None, streams=bad)
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_pgbouncer_mode_falls_back_to_one_stream_and_says_so(
    jm: JobManager, dsn: str, tmp_path: Path, caplog_jm: pytest.LogCaptureFixture
) -> None:
    jm.add_jobs(["x", "y"], "IMAGE_TEST")
    pooled = JobManager(dsn, prepared_statements=False, connect_timeout=5)
    try:
        info = pooled.backup_database(tmp_path / "b", keep=None, streams=4)
    finally:
        pooled.close()
    assert info.rows["jobs"] == 2
    assert any(
        "backing up with 1 stream instead of 4" in r.getMessage() and "PgBouncer" in r.getMessage()
        for r in caplog_jm.records
    ), [r.getMessage() for r in caplog_jm.records]


def test_the_default_backs_up(jm: JobManager, tmp_path: Path) -> None:
    jm.add_jobs(["x"], "IMAGE_TEST")
    info = jm.backup_database(tmp_path / "b", keep=None)
    assert info.rows == {"jobs": 1, "download_queue": 0}
    assert verify_backup(info.path).sha256 == info.sha256


def test_cli_streams(jm: JobManager, dsn: str, tmp_path: Path) -> None:
    jm.add_jobs(["x"], "IMAGE_TEST")
    ok = run(dsn, "backup", "--dir", str(tmp_path / "b"), "--streams", "2")
    assert ok.returncode == 0, ok.stderr
    assert "jobs 1 " in ok.stdout, ok.stdout
    bad = run(dsn, "backup", "--dir", str(tmp_path / "c"), "--streams", "0")
    assert bad.returncode == 2
    assert "--streams" in bad.stderr
