"""The backup file on disk: its name, never overwriting another, and durability.

A backup is written to a hidden temporary file, synced, hard-linked under its UTC-stamped name
(a link never replaces an existing name) and the directory synced: these tests check each
promise by its effect, and the order of the system calls by reading them (strace).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from job_manager import BackupError, JobManager, verify_backup


def _name(at: dt.datetime) -> str:
    return at.strftime("airflow_backup_%Y%m%d_%H%M%S.sql")


def _occupy(d: Path, seconds: int) -> dict[Path, bytes]:
    """Files under the backup names of this second and the next `seconds - 1`, in UTC."""
    now = dt.datetime.now(dt.timezone.utc)
    taken = {}
    for s in range(seconds):
        p = d / _name(now + dt.timedelta(seconds=s))
        p.write_bytes(f"someone else's file {s}\n".encode())
        taken[p] = p.read_bytes()
    return taken


def test_a_taken_name_is_never_overwritten(jm: JobManager, tmp_path: Path) -> None:
    """The names of the next three seconds are taken: the backup waits for a free one."""
    jm.add_jobs(["kept"], "IMAGE_TEST")
    d = tmp_path / "b"
    d.mkdir()
    taken = _occupy(d, 3)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    info = jm.backup_database(d, keep=None)
    after = dt.datetime.now(dt.timezone.utc)
    for p, data in taken.items():
        assert p.read_bytes() == data, p
    made = Path(info.path)
    assert made not in taken
    stamp = dt.datetime.strptime(made.name, "airflow_backup_%Y%m%d_%H%M%S.sql")
    assert before <= stamp.replace(tzinfo=dt.timezone.utc) <= after
    assert verify_backup(made).rows == {"jobs": 1, "download_queue": 0}
    assert sorted(p.name for p in d.iterdir()) == sorted([made.name, *(p.name for p in taken)])


def test_no_free_name_is_a_clear_error_and_leaves_nothing(jm: JobManager, tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    taken = _occupy(d, 12)  # more seconds than the backup waits for
    with pytest.raises(BackupError, match="could not find a free backup name"):
        jm.backup_database(d, keep=None)
    assert {p: p.read_bytes() for p in d.iterdir()} == taken  # no temporary file either


@pytest.mark.skipif(shutil.which("strace") is None, reason="scripts/bootstrap.sh installs strace")
def test_the_file_and_its_directory_are_synced_around_the_link(dsn: str, tmp_path: Path) -> None:
    """Order of the system calls of one backup: the temporary file is fsynced before it is
    linked under its name, and the directory is fsynced after the link (and after the
    temporary name is removed), so a crash never leaves a name pointing at unsynced data."""
    JobManager(dsn).init_database()
    d = tmp_path / "b"
    d.mkdir()
    trace = tmp_path / "trace"
    code = (
        "import sys, job_manager\n"
        "job_manager.JobManager(sys.argv[1]).backup_database(sys.argv[2], keep=None)"
    )
    subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-o",
            str(trace),
            "-e",
            "trace=openat,fsync,fdatasync,linkat,link,unlink,unlinkat,close",
            sys.executable,
            "-c",
            code,
            dsn,
            str(d),
        ],
        check=True,
        timeout=120,
    )
    calls = trace.read_text().splitlines()
    fds: dict[str, str] = {}  # descriptor -> path, as opened
    events = []
    for line in calls:
        m = re.search(r'openat\(AT_FDCWD, "([^"]+)", [^)]*\)\s+=\s+(\d+)', line)
        if m:
            fds[m.group(2)] = m.group(1)
            continue
        m = re.search(r"\b(fsync|fdatasync)\((\d+)\)\s+=\s+0", line)
        if m:
            events.append(("sync", fds.get(m.group(2), "?")))
            continue
        m = re.search(r'\blinkat?\((?:AT_FDCWD, )?"([^"]+)", (?:AT_FDCWD, )?"([^"]+)"', line)
        if m:
            events.append(("link", m.group(1), m.group(2)))
            continue
        m = re.search(r'\bunlink(?:at)?\((?:AT_FDCWD, )?"([^"]+)"', line)
        if m:
            events.append(("unlink", m.group(1)))
    links = [e for e in events if e[0] == "link"]
    assert len(links) == 1, events
    _, tmp, final = links[0]
    assert Path(tmp).parent == d, tmp
    assert Path(tmp).name.startswith("."), tmp
    assert Path(final).parent == d, final
    assert not Path(final).name.startswith("."), final
    i = events.index(links[0])
    assert ("sync", tmp) in events[:i], events  # the data is on disk before it has a name
    after = events[i + 1 :]
    assert ("unlink", tmp) in after, events
    assert ("sync", str(d)) in after[after.index(("unlink", tmp)) :], events
    assert [p.name for p in d.iterdir()] == [Path(final).name]
