"""Maintenance and monitoring: log cleanup on real trees, table upkeep, the health report."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import scalar
from job_manager import InvalidArgumentError, JobManager, cleanup_old_logs

DAY = 86_400


def touch(path: Path, age_s: float, data: bytes = b"log line\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def airflow_log(root: Path, dag: str, run: str, task: str, attempt: int) -> Path:
    return root / f"dag_id={dag}" / f"run_id={run}" / f"task_id={task}" / f"attempt={attempt}.log"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """An Airflow 3 log tree with old, new and boundary files, symlinks and other files."""
    root = tmp_path / "logs"
    for i in range(3):
        touch(airflow_log(root, "etl", f"old_{i}", "extract", 1), 10 * DAY, b"x" * 100)
    touch(airflow_log(root, "etl", "mixed", "extract", 1), 10 * DAY, b"x" * 100)
    touch(airflow_log(root, "etl", "mixed", "load", 1), 1 * DAY)
    touch(root / "dag_processor" / "2026-11-01" / "etl.py.log", 9 * DAY)
    touch(root / "scheduler" / "latest.txt", 30 * DAY)  # not a *.log
    touch(root / "boundary" / "just_younger.log", 7 * DAY - 60)
    touch(root / "boundary" / "just_older.log", 7 * DAY + 60)
    outside = tmp_path / "outside"
    touch(outside / "precious.log", 100 * DAY)
    (root / "link_to_outside").symlink_to(outside, target_is_directory=True)
    (root / "etl_link.log").symlink_to(outside / "precious.log")
    (root / "empty_already" / "nested").mkdir(parents=True)
    # Directories are as old as what they hold (mtime changes when an entry is added)...
    for d in [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]:
        t = time.time() - 10 * DAY
        os.utime(d, (t, t))
    # ...except one Airflow has just created for a running task: empty, young, it must stay.
    (root / "dag_id=etl" / "run_id=running" / "task_id=extract").mkdir(parents=True)
    return root


def test_cleanup_old_logs(tree: Path, tmp_path: Path) -> None:
    r = cleanup_old_logs(tree, 7)
    deleted = sorted(Path(p).relative_to(tree).as_posix() for p in r.paths)
    assert deleted == [
        "boundary/just_older.log",
        "dag_id=etl/run_id=mixed/task_id=extract/attempt=1.log",
        "dag_id=etl/run_id=old_0/task_id=extract/attempt=1.log",
        "dag_id=etl/run_id=old_1/task_id=extract/attempt=1.log",
        "dag_id=etl/run_id=old_2/task_id=extract/attempt=1.log",
        "dag_processor/2026-11-01/etl.py.log",
    ]
    assert r.files == 6
    assert r.bytes == 4 * 100 + 2 * len(b"log line\n")
    assert r.errors == []
    assert r.dry_run is False
    # Newer files, other names, the links and everything outside stay.
    assert (tree / "boundary" / "just_younger.log").exists()
    assert airflow_log(tree, "etl", "mixed", "load", 1).exists()
    assert (tree / "scheduler" / "latest.txt").exists()
    assert (tree / "link_to_outside").is_symlink()
    assert (tree / "etl_link.log").is_symlink()
    assert (tmp_path / "outside" / "precious.log").exists()
    # Directories emptied by the sweep go; one that still holds a file stays; the root stays.
    assert not (tree / "dag_id=etl" / "run_id=old_0").exists()
    assert not (tree / "dag_processor").exists()
    assert not (tree / "empty_already").exists()
    assert (tree / "dag_id=etl" / "run_id=mixed" / "task_id=load").is_dir()
    assert not (tree / "dag_id=etl" / "run_id=mixed" / "task_id=extract").exists()
    # Empty but young (created a moment ago, as Airflow does for a running task): stays.
    assert (tree / "dag_id=etl" / "run_id=running" / "task_id=extract").is_dir()
    # run_id=old_i/task_id=extract (2 each), mixed/task_id=extract, dag_processor/2026-11-01,
    # empty_already/nested.
    assert r.dirs_removed == 3 * 2 + 1 + 2 + 2
    assert tree.is_dir()
    json.dumps(r.to_dict())


def test_dry_run_deletes_nothing(tree: Path) -> None:
    before = sorted(p.as_posix() for p in tree.rglob("*"))
    r = cleanup_old_logs(tree, 7, dry_run=True)
    assert r.dry_run is True
    assert r.files == 6
    assert r.dirs_removed == 3 * 2 + 1 + 2 + 2  # exactly what the real run removes
    assert sorted(p.as_posix() for p in tree.rglob("*")) == before
    real = cleanup_old_logs(tree, 7)
    assert (real.files, real.bytes, real.dirs_removed) == (r.files, r.bytes, r.dirs_removed)
    assert sorted(real.paths) == sorted(r.paths)


def test_zero_days_never_removes_a_young_directory(tree: Path) -> None:
    """max_age_days=0 deletes every matching file, but a directory younger than a day stays."""
    r = cleanup_old_logs(tree, 0)
    assert r.files == 8
    assert (tree / "dag_id=etl" / "run_id=running" / "task_id=extract").is_dir()
    # Old directories emptied by the sweep go (their age is read before the sweep).
    assert not (tree / "boundary").exists()
    assert not (tree / "dag_id=etl" / "run_id=mixed").exists()


@pytest.mark.parametrize("days", [1e300, float("inf"), float("nan"), -1, 36_501, 10**400, "7"])
def test_numbers_out_of_range_are_invalid_arguments(tree: Path, days: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_age_days"):
        cleanup_old_logs(tree, days)  # type: ignore[arg-type]


def test_refuses_root_and_trees_that_are_not_log_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="root directory"):
        cleanup_old_logs("/", 7, dry_run=True)
    docs = tmp_path / "docs"
    touch(docs / "old.log", 30 * DAY)
    with pytest.raises(InvalidArgumentError, match="not look like an Airflow log folder"):
        cleanup_old_logs(docs, 7)
    assert (docs / "old.log").exists()
    # Named by the operator: swept.
    env = dict(os.environ, JOB_MANAGER_LOG_DIRS=f"/nonexistent:{docs}")
    code = f"import job_manager; print(job_manager.cleanup_old_logs({str(docs)!r}, 7).files)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "1"


DEEP = """
import os, resource, sys, threading, time, job_manager
root, depth = sys.argv[1], int(sys.argv[2])
fd = os.open(os.path.join(root, "dag_id=deep"), os.O_RDONLY | os.O_DIRECTORY)
for _ in range(depth):
    os.mkdir("d", dir_fd=fd)
    nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = nxt
f = os.open("attempt=1.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
os.utime(f, (1, 1))
os.close(f)
os.close(fd)
# Few descriptors and a small stack: the sweep must do with them.
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
threading.stack_size(256 * 1024)
out = {}
def sweep():
    t = time.perf_counter()
    out["r"] = job_manager.cleanup_old_logs(root, 7).to_dict()
    out["s"] = time.perf_counter() - t
th = threading.Thread(target=sweep)
th.start()
th.join()
r = out["r"]
print(r["files"], r["error_count"], r["dirs_removed"], f"{out['s']:.2f}")
# Remove the chain without recursion (shutil.rmtree would hit Python's recursion limit).
top = os.path.join(root, "dag_id=deep")
while os.path.isdir(os.path.join(top, "d")):
    d = os.path.join(top, "d")
    for name in os.listdir(d):
        if name == "d":
            os.rename(os.path.join(d, name), os.path.join(top, "next"))
        else:
            os.unlink(os.path.join(d, name))
    os.rmdir(d)
    if os.path.isdir(os.path.join(top, "next")):
        os.rename(os.path.join(top, "next"), d)
"""


def test_deep_tree_small_stack_few_descriptors(tmp_path: Path) -> None:
    """10,000 levels, swept in a thread with a 256 KiB stack and RLIMIT_NOFILE=64 (the old
    recursive sweep crashed a 4 MiB-stack thread with SIGSEGV at 9,000 levels)."""
    root = tmp_path / "logs"
    (root / "dag_id=deep").mkdir(parents=True)
    out = subprocess.run(
        [sys.executable, "-c", DEEP, str(root), "10000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    files, errors, dirs, _seconds = out.stdout.split()
    assert (files, errors, dirs) == ("1", "0", "0")  # the directories are young: they stay


def test_report_lists_a_bounded_sample(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    for i in range(250):
        touch(root / "dag_id=many" / f"attempt={i}.log", 10 * DAY)
    r = cleanup_old_logs(root, 7, dry_run=True)
    assert r.files == 250
    assert len(r.paths) == 100
    assert r.to_dict()["sample_limit"] == 100


def test_patterns_and_keeping_directories(tree: Path) -> None:
    r = cleanup_old_logs(tree, 7, patterns=["*.txt"], remove_empty_dirs=False)
    assert [Path(p).name for p in r.paths] == ["latest.txt"]
    assert (tree / "scheduler").is_dir()
    assert (tree / "empty_already" / "nested").is_dir()
    assert cleanup_old_logs(tree, 0, patterns=["attempt=?.log"]).files == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_age_days": -1}, "max_age_days"),
        ({"patterns": []}, "patterns is empty"),
        ({"patterns": ["[unclosed"]}, "invalid pattern"),
    ],
)
def test_bad_arguments(tree: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        cleanup_old_logs(tree, **kwargs)


def test_missing_or_odd_log_dir(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot be read"):
        cleanup_old_logs(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        cleanup_old_logs(tmp_path / "file")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InvalidArgumentError, match="symlink is not followed"):
        cleanup_old_logs(tmp_path / "link")


def sweep_as_nobody(root: Path) -> dict:
    """cleanup_old_logs in a forked child that dropped root (the module is loaded: no exec)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read)
            if os.geteuid() == 0:
                nobody = pwd.getpwnam("nobody")
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            report = cleanup_old_logs(root, 7).to_dict()
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_unreadable_directory_is_reported_and_the_sweep_goes_on() -> None:
    """As an unprivileged user: root reads everything, so the sweep runs as nobody."""
    base = Path(tempfile.mkdtemp(prefix="jm-logs-", dir="/tmp"))
    try:
        root = base / "logs"
        touch(root / "dag_id=a" / "old.log", 10 * DAY)
        touch(root / "dag_id=locked" / "old.log", 10 * DAY)
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for p in [base, *base.rglob("*")]:
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        (root / "dag_id=locked").chmod(0)
        try:
            r = sweep_as_nobody(root)
        finally:
            (root / "dag_id=locked").chmod(0o755)
        assert r["files"] == 1
        assert len(r["errors"]) == 1
        assert "dag_id=locked" in r["errors"][0]
        assert (root / "dag_id=locked" / "old.log").exists()
        assert (root / "dag_id=locked").is_dir()
    finally:
        shutil.rmtree(base)


def test_read_only_file_is_deleted_like_find_would(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    f = touch(root / "dag_id=ro" / "old.log", 10 * DAY)
    f.chmod(0o400)
    assert cleanup_old_logs(root, 7).files == 1


def test_table_upkeep(jm: JobManager, db: psycopg.Connection) -> None:
    jm.add_jobs([f"p{i}" for i in range(500)], "IMAGE_TEST")
    assert jm.analyze_tables() == ["jobs", "download_queue", "job_manager_schema_history"]
    assert jm.vacuum_tables() == ["jobs", "download_queue", "job_manager_schema_history"]
    assert jm.vacuum_tables(full=True) == ["jobs", "download_queue", "job_manager_schema_history"]
    size = jm.database_size()
    assert size == scalar(db, "SELECT pg_database_size(current_database())")

    def index_scans() -> dict[str, int]:
        db.execute("SELECT pg_stat_clear_snapshot()")
        return dict(
            db.execute(
                "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'jobs'"
            ).fetchall()
        )

    scans_before = index_scans()
    stats = {t["table"]: t for t in jm.table_stats(exact=True)}
    scans_after = index_scans()
    assert set(stats) == {"jobs", "download_queue", "job_manager_schema_history"}
    jobs = stats["jobs"]
    assert jobs["rows_exact"] == 500
    assert jobs["rows_estimate"] == 500
    assert jobs["total_bytes"] >= jobs["table_bytes"] + jobs["index_bytes"] > 0
    assert jobs["last_analyze"] is not None
    # Every index of jobs, each with PostgreSQL's own scan count at the time it was read.
    reported = {i["name"]: i["scans"] for i in jobs["indexes"]}
    assert set(reported) == set(scans_after)
    assert {"idx_jobs_claim", "jobs_pkey", "jobs_prompt_text_key"} <= set(reported)
    for name, scans in reported.items():
        assert scans_before[name] <= scans <= scans_after[name], (name, scans)
    assert jm.table_stats()[0]["rows_exact"] is None


def test_health_report(jm: JobManager, db: psycopg.Connection, tmp_path: Path) -> None:
    healthy = jm.health_report()
    json.dumps(healthy)
    assert healthy["problems"] == []
    assert healthy["backup"] is None
    assert healthy["schema"] == {
        "version": job_manager.SCHEMA_VERSION,
        "latest": job_manager.SCHEMA_VERSION,
        "pending_migrations": [],
    }
    # Make trouble: an old pending job, stuck jobs, exhausted downloads, no backups.
    ids = [jm.add_job(f"h{i}", "VIDEO_PROD") for i in range(4)]
    jm.get_and_lock_job("VIDEO_PROD")
    jm.get_and_lock_job("VIDEO_PROD")
    db.execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
    db.execute(
        "UPDATE jobs SET updated_at = LOCALTIMESTAMP - interval '3 hours' "
        "WHERE status = 'processing'"
    )
    db.execute(
        "UPDATE jobs SET created_at = LOCALTIMESTAMP - interval '2 days' WHERE id = %s", (ids[3],)
    )
    db.execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")
    d = jm.add_download_task(ids[0], "u", "/p", "video")
    db.execute("UPDATE download_queue SET attempts = 3, status = 'failed' WHERE id = %s", (d,))
    report = jm.health_report(tmp_path / "no-backups-here")
    json.dumps(report)
    assert report["jobs"] == {"VIDEO_PROD": {"pending": 2, "processing": 2}}
    assert report["stuck_processing"] == 2
    assert report["oldest_pending_age_s"] > 2 * DAY - 60
    assert report["downloads"] == {"pending": 0, "failed": 1, "exhausted": 1}
    problems = "\n".join(report["problems"])
    assert "2 jobs have been processing for more than 1.0h" in problems
    assert "the oldest pending job has waited 48.0h" in problems
    assert "1 downloads used all their attempts" in problems
    assert "no backup directory" in problems
    # Thresholds can be raised: the same state, fewer problems.
    relaxed = jm.health_report(
        thresholds={
            "stuck_after_s": 5 * 3600,
            "max_pending_age_s": 3 * DAY,
            "max_exhausted_downloads": 5,
        }
    )
    assert relaxed["problems"] == []
    with pytest.raises(InvalidArgumentError, match="unknown threshold"):
        jm.health_report(thresholds={"nope": 1})


def test_health_report_backups(jm: JobManager, tmp_path: Path) -> None:
    d = tmp_path / "backups"
    info = jm.backup_database(d)
    report = jm.health_report(d)
    assert report["backup"]["newest"] == info.path
    assert report["backup"]["verified"] is True
    assert report["backup"]["age_s"] < 60
    assert report["problems"] == []
    # A newer file that does not verify is the newest: flagged.
    (d / "airflow_backup_29990101_000000.sql").write_text("-- job_manager backup\n")
    report = jm.health_report(d, thresholds={"max_backup_age_s": 10 * 365 * DAY})
    assert any("does not verify" in p for p in report["problems"])


def test_health_on_an_empty_database(bare_jm: JobManager) -> None:
    report = bare_jm.health_report()
    assert report["schema"]["version"] is None
    assert any("run init_database" in p for p in report["problems"])


def run_cli(dsn: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "job_manager", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, JOB_MANAGER_DSN=dsn, **(env or {})),
        timeout=120,
        check=False,
    )


def test_maintenance_cli(dsn: str, jm: JobManager, tree: Path, tmp_path: Path) -> None:
    r = run_cli(dsn, "cleanup-logs", "--log-dir", str(tree), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == 6
    r = run_cli(dsn, "cleanup-logs", env={"AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(tree)})
    assert r.stdout.startswith("deleted 6 log files")
    jm.backup_database(tmp_path / "b")
    r = run_cli(dsn, "maintain", "--log-dir", str(tree), "--dir", str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["reset_stuck_jobs"] == 0
    assert summary["analyze_tables"] == ["jobs", "download_queue", "job_manager_schema_history"]
    assert summary["cleanup_backups"] == []
    r = run_cli(dsn, "maintain", "--log-dir", str(tree), "--dir", str(tmp_path / "b"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("dry run: nothing was changed"), r.stdout
    r = run_cli(dsn, "health", "--dir", str(tmp_path / "b"))
    assert r.returncode == 0
    assert "problems: none" in r.stdout
    r = run_cli(dsn, "health", "--dir", str(tmp_path / "none"), "--fail-on-problems", "--json")
    assert r.returncode == 3
    assert json.loads(r.stdout)["problems"]
    r = run_cli(dsn, "health", "--threshold", "oops")
    assert r.returncode == 2
    r = run_cli(dsn, "size")
    assert r.stdout.startswith("database: ")
    assert "jobs: " in r.stdout


@pytest.mark.parametrize("value", [10**400, float("nan"), float("inf"), 1e300, -1, "7", None])
def test_health_thresholds_are_invalid_arguments_never_overflow(value: object) -> None:
    """Checked before any connection is made: no server is needed to refuse them."""
    jm = JobManager("postgresql://u:pw@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(InvalidArgumentError, match="threshold stuck_after_s must be a number"):
        jm.health_report(None, thresholds={"stuck_after_s": value})  # type: ignore[dict-item]
