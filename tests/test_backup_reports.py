"""What backups say about themselves, as README states it: progress logged while a long backup
runs, rotation reporting every file it leaves alone, and `verify --for-psql` refusing files
psql must not run. Each observed from the records and output of a real run."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FIXTURES
from job_manager import BackupCorruptError, JobManager, verify_backup
from nethelpers import Proxy, via
from test_backup import dated

PROGRESS = re.compile(
    r"^backup in progress: (jobs|download_queue) (\d+) rows, (\d+) MiB written in (\d+)s$"
)


def progress_of(records: list[logging.LogRecord]) -> list[tuple[logging.LogRecord, re.Match]]:
    return [(r, m) for r in records if (m := PROGRESS.match(r.getMessage()))]


@pytest.mark.parametrize("streams", [1, 2])
def test_a_long_backup_logs_its_progress(
    jm: JobManager,
    dsn: str,
    proxy: Proxy,
    tmp_path: Path,
    log_records: list[logging.LogRecord],
    streams: int,
) -> None:
    """The same 30,000 jobs backed up twice: at full speed (well under the 5 s between progress
    lines) nothing is logged; through a link slowed so that the file takes ~6.3 s, the backup
    logs where it is, from inside the COPY (one stream) or as the streams' rows are written
    (two: each connection is slowed, so the link's rate is split between them), and the file
    is whole."""
    rows = 30_000
    jm.add_jobs([f"progress {i:05d} " + "p" * 100 for i in range(rows)], "IMAGE_TEST")
    fast = jm.backup_database(tmp_path / "fast", keep=None, streams=streams)
    assert fast.duration_s is not None
    assert fast.duration_s < 4, fast.duration_s
    assert progress_of(log_records) == []

    size = Path(fast.path).stat().st_size
    slow_jm = JobManager(via(proxy, dsn))
    try:
        slow_jm.get_job_stats()  # the login and pool, before the link slows
        # ~4,800 rows a second: the first check after 5 s (every 4,096 rows) is at row 24,576.
        proxy.throttle(size / 6.3 / streams)
        started = time.monotonic()
        slow = slow_jm.backup_database(tmp_path / "slow", keep=None, streams=streams)
        took = time.monotonic() - started
    finally:
        slow_jm.close()
    assert took > 5.5, f"the throttled backup took {took:.1f} s: too fast to need progress"
    lines = progress_of(log_records)
    assert lines, f"a {took:.1f} s backup logged no progress"
    for record, m in lines:
        assert record.levelno == logging.INFO
        assert record.name.startswith("job_manager"), record.name
        table, done, mib, seconds = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        assert table == "jobs"  # download_queue is empty here
        if streams == 1:
            # Checked every 4,096 rows, once 5 s have passed since the last line.
            assert done % 4096 == 0, done
        assert 0 < done < rows
        assert 0 < mib <= size >> 20
        assert 5 <= seconds <= took + 1
    assert len(lines) <= took // 5
    assert verify_backup(slow.path).rows == {"jobs": rows, "download_queue": 0}


def test_rotation_reports_what_it_leaves_alone(
    jm: JobManager, tmp_path: Path, log_records: list[logging.LogRecord]
) -> None:
    """Rotation to keep=2 in a folder with two good old backups, a newer one that does not
    verify, a verifying copy named in the future and a file not named like a backup: it keeps
    the new backup and the newest good one, deletes the oldest, and reports exactly the two
    files it leaves alone, each with why."""
    jm.add_job("rotation report", "IMAGE_TEST")
    d = tmp_path / "backups"
    good = Path(jm.backup_database(d, keep=None).path)
    data = good.read_bytes()
    good.unlink()
    old = d / "airflow_backup_20200110_000000.sql"
    kept = d / "airflow_backup_20200111_000000.sql"
    broken = d / "airflow_backup_20200112_000000.sql"
    future = d / "airflow_backup_20991231_235959.sql"
    old.write_bytes(dated(data, "2020-01-10T00:00:00.000000Z"))
    kept.write_bytes(dated(data, "2020-01-11T00:00:00.000000Z"))
    broken.write_bytes(data[: len(data) // 2])
    shutil.copy(kept, future)
    (d / "notes.txt").write_text("not a backup")
    with pytest.raises(BackupCorruptError) as why:
        verify_backup(broken)
    log_records.clear()

    new = Path(jm.backup_database(d, keep=2).path)

    assert sorted(p.name for p in d.iterdir()) == sorted(
        [new.name, kept.name, broken.name, future.name, "notes.txt"]
    )
    reported = [
        r.getMessage()
        for r in log_records
        if r.name.startswith("job_manager") and r.levelno >= logging.WARNING
    ]
    assert sorted(reported) == [
        f"leaving {broken} alone and not counting it as a kept backup: {why.value}",
        f"leaving {future} alone: its name is dated 2099-12-31 23:59:59, in the future (a clock "
        "that was ahead, or a copied file); it is not counted as a kept backup",
    ]
    deleted = [r.getMessage() for r in log_records if r.getMessage().startswith("deleted old")]
    assert deleted == [f"deleted old backup {old}"]


def verify_for_psql(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "job_manager", "verify", "--for-psql", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_verify_for_psql_refuses_what_psql_must_not_run(jm: JobManager, tmp_path: Path) -> None:
    """A pg_dump and a CSV verify (restore reads them), but `--for-psql` refuses them: only a
    job_manager backup is checked line by line. Our own backup passes."""
    jm.add_job("for psql", "IMAGE_TEST")
    ours = jm.backup_database(tmp_path, keep=None).path
    r = verify_for_psql(Path(ours))
    assert r.returncode == 0, r.stderr
    for path, kind in (
        (FIXTURES / "airflow_backup_20250721_205159.sql", "pg_dump"),
        (FIXTURES / "historical_jobs.csv", "csv"),
    ):
        assert verify_backup(path).format == kind
        r = verify_for_psql(path)
        assert r.returncode == 1, (path, r.stdout, r.stderr)
        assert f"is a {kind} file, not a job_manager backup" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
