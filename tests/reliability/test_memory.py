"""Memory stays flat while large valid files are backed up, verified and restored.

Each operation runs in a fresh process, whose peak resident set (VmHWM) the kernel reports when it
is done. The same operations on 4x the data must not need more memory: what grows with the file
is the disk and the server's work, never job_manager's buffers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from conftest import counted, row_changes, rows_of
from job_manager import JobManager

CHILD = """
import json, sys, job_manager
op, dsn, path = sys.argv[1:4]
jm = job_manager.JobManager(dsn)
if op == "idle":
    jm.get_job_stats()
elif op == "backup":
    path = jm.backup_database(path, keep=None).path
elif op == "backup-zstd":
    path = jm.backup_database(path, keep=None, compress="zstd").path
elif op == "verify":
    job_manager.verify_backup(path)
elif op == "restore":
    jm.restore_database(path, safety_backup=False)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]
print(json.dumps({"path": str(path), "hwm_kib": int(hwm)}))
"""


def _in_a_child(op: str, dsn: str, path: Path | str) -> tuple[str, int]:
    """Runs `op` in a fresh Python process: the file it made or read, and its peak RSS in KiB."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, op, dsn, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    return r["path"], r["hwm_kib"]


def _add_rows(db: psycopg.Connection, first: int, last: int) -> None:
    """Jobs of about 1.1 KB each (a 960-byte path), one download for every fourth."""
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type, status, local_path, gcs_uri) "
        "SELECT 'memory ' || i, 'IMAGE_TEST', 'completed', repeat(md5(i::text), 30), "
        "'gs://bucket/' || i FROM generate_series(%s::int, %s::int) i",
        (first, last),
    )
    db.execute(
        "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, status) "
        "SELECT id, 'https://example.invalid/' || id, '/data/' || id, 'video', 'completed' "
        "FROM jobs WHERE id %% 4 = 0 AND id BETWEEN %s AND %s",
        (first, last),
    )


@pytest.mark.slow
def test_memory_is_flat_in_the_size_of_valid_backups(
    jm: JobManager, dsn: str, db: psycopg.Connection, tmp_path: Path, faults
) -> None:  # type: ignore[no-untyped-def]
    small_rows = 50_000
    sizes = {"small": small_rows, "large": 4 * small_rows}
    _, idle = _in_a_child("idle", dsn, tmp_path)
    peaks: dict[str, dict[str, int]] = {}
    file_mb: dict[str, float] = {}
    changes: Counter[str] = Counter()
    done = 0
    for label, rows in sizes.items():
        _add_rows(db, done + 1, rows)
        done = rows
        before = rows_of(db)
        d = tmp_path / label
        d.mkdir()
        plain, peaks.setdefault("backup", {})[label] = _in_a_child("backup", dsn, d)
        zst, peaks.setdefault("backup (zstd)", {})[label] = _in_a_child("backup-zstd", dsn, d)
        _, peaks.setdefault("verify", {})[label] = _in_a_child("verify", dsn, plain)
        _, peaks.setdefault("restore", {})[label] = _in_a_child("restore", dsn, plain)
        changes.update(row_changes(before, rows_of(db)))
        _, peaks.setdefault("restore (zstd)", {})[label] = _in_a_child("restore", dsn, zst)
        changes.update(row_changes(before, rows_of(db)))
        file_mb[label] = Path(plain).stat().st_size / 1e6
    assert file_mb["large"] > 3.5 * file_mb["small"], file_mb
    assert changes["rows_lost_or_changed"] == changes["rows_appeared"] == 0, changes
    added_kib = (file_mb["large"] - file_mb["small"]) * 1e6 / 1024
    for op, p in peaks.items():
        # The larger file adds about 170 MB: the peak may move by allocator noise and zstd's
        # workers settling into their working set (a few MiB), never by a share of the data
        # (a tenth of it is about 17 MB; buffering rows or a batch per row would be far more).
        assert p["large"] - p["small"] < added_kib / 10, (op, p, file_mb)
        assert p["large"] < 100 * 1024, (op, p)
    mib = {op: f"{p['small'] // 1024} -> {p['large'] // 1024}" for op, p in peaks.items()}
    faults.record(
        f"valid backups of {small_rows:,} and {4 * small_rows:,} jobs with downloads "
        f"({file_mb['small']:.0f} MB and {file_mb['large']:.0f} MB plain)",
        "backup (plain and zstd), verify and restore (both files), each in a fresh process; "
        "peak RSS in MiB, smaller -> 4x larger file: "
        + "; ".join(f"{op} {v}" for op, v in mib.items())
        + f" (an idle process with a connection: {idle // 1024})",
        2 * len(peaks),
        counted(
            "memory flat in the file's size",
            **{k: changes[k] for k in ("rows_lost_or_changed", "rows_appeared")},
        ),
    )
