"""The Job queue page's data (throughput, download counts, the snapshot), its metrics and
its HTML, against a real PostgreSQL; and proof that every read it makes is served by an index
on a realistically sized table. The browser and Airflow tests are in test_airflow_ui.py."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path

import job_manager
import psycopg
import pytest
from job_manager import JobManager
from job_manager.airflow_plugin import metrics, render, snapshot
from nethelpers import closed_port
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def plugin_env(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plugin's process-wide JobManager on the test database; an empty backup folder."""
    backups = tmp_path / "backups"
    backups.mkdir()
    monkeypatch.setenv("JOB_MANAGER_DSN", dsn)
    monkeypatch.setenv("JOB_MANAGER_CONN_ID", "job_manager_test_absent")
    monkeypatch.setenv("JOB_MANAGER_BACKUP_DIR", str(backups))
    snapshot._manager = None
    snapshot._backups_cache = None
    yield backups
    if snapshot._manager is not None:
        snapshot._manager.close()
    snapshot._manager = None


def insert(db: psycopg.Connection, status: str, created_h: float, updated_h: float, n: int = 1):
    """`n` jobs created `created_h` hours ago and last changed `updated_h` hours ago."""
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type, status, created_at, updated_at) "
        "SELECT 'p' || gen_random_uuid(), 'IMAGE_TEST', %s, "
        "LOCALTIMESTAMP - make_interval(secs => %s), LOCALTIMESTAMP - make_interval(secs => %s) "
        "FROM generate_series(1, %s)",
        (status, created_h * 3600, updated_h * 3600, n),
    )


def test_throughput_counts_added_and_finished_per_hour_and_day(
    jm: JobManager, db: psycopg.Connection
) -> None:
    now = db.execute("SELECT date_trunc('hour', LOCALTIMESTAMP)").fetchone()[0]
    minutes = db.execute("SELECT extract(minute FROM LOCALTIMESTAMP)").fetchone()[0]
    if minutes >= 59:  # the hour turns while the test runs: wait for the new one
        time.sleep(61)
        now = db.execute("SELECT date_trunc('hour', LOCALTIMESTAMP)").fetchone()[0]
    insert(db, "pending", 0, 0, 3)  # this hour
    insert(db, "completed", 5, 1, 2)  # added 5 h ago, finished 1 h ago
    insert(db, "failed", 5, 5, 1)
    insert(db, "completed", 30, 30, 4)  # outside the 24 hours, inside the 30 days
    insert(db, "completed", 24 * 40, 24 * 40, 7)  # outside both

    hourly = jm.throughput("hour")
    assert hourly["granularity"] == "hour"
    buckets = hourly["buckets"]
    assert len(buckets) == 24
    starts = [dt.datetime.fromisoformat(b["start"]) for b in buckets]
    assert starts[-1] == now
    assert starts == [now - dt.timedelta(hours=23 - i) for i in range(24)]
    by_start = {dt.datetime.fromisoformat(b["start"]): b for b in buckets}
    assert by_start[now]["added"] == 3
    # created 5 hours ago: the bucket of (now - 5 h) truncated; LOCALTIMESTAMP is within `now`.
    five = db.execute("SELECT date_trunc('hour', LOCALTIMESTAMP - interval '5 hours')").fetchone()[
        0
    ]
    one = db.execute("SELECT date_trunc('hour', LOCALTIMESTAMP - interval '1 hour')").fetchone()[0]
    assert by_start[five] == {"start": five.isoformat(), "added": 3, "completed": 0, "failed": 1}
    assert by_start[one]["completed"] == 2
    assert sum(b["added"] for b in buckets) == 6
    assert sum(b["completed"] for b in buckets) == 2

    daily = jm.throughput("day")["buckets"]
    assert len(daily) == 30
    assert sum(b["added"] for b in daily) == 10  # 3 + 2 + 1 + 4; not the 7 of 40 days ago
    assert sum(b["completed"] for b in daily) == 6
    assert sum(b["failed"] for b in daily) == 1

    with pytest.raises(job_manager.InvalidArgumentError, match="hour"):
        jm.throughput("week")


def test_download_counts(jm: JobManager, db: psycopg.Connection) -> None:
    job = jm.add_job("with downloads", "IMAGE_TEST")
    for i in range(3):
        jm.add_download_task(job, f"https://example.invalid/{i}", f"/tmp/x{i}", "image")
    db.execute(
        "UPDATE download_queue SET status = 'failed' "
        "WHERE id = (SELECT min(id) FROM download_queue)"
    )
    assert jm.download_counts() == {"failed": 1, "pending": 2}


def test_snapshot_metrics_and_page_agree_with_the_database(
    jm: JobManager, db: psycopg.Connection, plugin_env: Path, dsn: str
) -> None:
    insert(db, "pending", 3, 3, 4)
    insert(db, "processing", 2, 2, 2)  # processing for 2 h: stuck (threshold 1 h)
    insert(db, "processing", 0, 0, 1)
    insert(db, "completed", 4, 1, 5)
    insert(db, "failed", 4, 1, 1)
    jm.backup_database(plugin_env)

    snap = snapshot.take()
    assert snap.jobs == {"IMAGE_TEST": {"pending": 4, "processing": 3, "completed": 5, "failed": 1}}
    assert snap.jobs_total == 13
    assert snap.stuck == 2
    assert 3 * 3600 - 60 < snap.oldest_pending_age_s < 3 * 3600 + 60
    assert snap.backup_count == 1
    assert snap.backups[0]["verified"] is True
    assert snap.backups[0]["rows"]["jobs"] == 13
    texts = [p.text for p in snap.problems]
    assert any("processing for more than" in t for t in texts), texts
    stuck = next(p for p in snap.problems if "processing" in p.text)
    assert stuck.dag_id == "job_manager_maintenance"

    families = {f.name: f for f in text_string_to_metric_families(metrics.render(snap).decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("job_manager_up", ())] == 1
    assert samples[("job_manager_jobs", (("job_type", "IMAGE_TEST"), ("status", "pending")))] == 4
    assert samples[("job_manager_stuck_jobs", ())] == 2
    assert samples[("job_manager_problems", ())] == len(snap.problems)
    assert samples[("job_manager_newest_backup_verified", ())] == 1
    assert samples[("job_manager_newest_backup_size_bytes", ())] == snap.backups[0]["size_bytes"]
    assert samples[("job_manager_newest_verified_backup_age_seconds", ())] < 600
    assert samples[("job_manager_oldest_pending_job_age_seconds", ())] > 3 * 3600 - 60
    down = metrics.render(None).decode()
    assert "job_manager_up 0.0" in down
    assert "job_manager_jobs" not in down

    html = render.page(snap, base="/base", static="/base/job-manager/static")
    assert 'data-testid="card-stuck">2<' in html
    assert 'data-testid="jobs-total">13<' in html
    assert 'href="/base/dags/job_manager_backup"' in html
    assert "<title id=" in html  # charts carry a title and description
    assert "<desc id=" in html
    assert "<script>" not in html  # nothing inline (CSP)
    assert "style=" not in html
    assert not re.search(r"https?://", html)  # nothing fetched from elsewhere
    password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    assert password
    assert password not in html
    assert "postgresql://" not in html
    assert "password" not in html.lower()


def test_missing_backups_are_a_problem_with_the_backup_dag_as_fix(
    jm: JobManager, plugin_env: Path
) -> None:
    snap = snapshot.take(throughput=False)
    assert snap.backup_count == 0
    fix = [p for p in snap.problems if "no backups" in p.text]
    assert fix
    assert fix[0].dag_id == "job_manager_backup"
    text = metrics.render(snap).decode()
    assert "job_manager_newest_verified_backup_age_seconds" not in text  # absent(): alert


def test_an_unreadable_backup_folder_is_a_problem_not_an_error(
    jm: JobManager, plugin_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(folder: object) -> list[object]:
        raise job_manager.BackupError(f"cannot list {folder}: permission denied")

    monkeypatch.setattr(snapshot, "list_backups", refuse)
    snap = snapshot.take(throughput=False)
    assert snap.backup_count == 0
    (problem,) = [p for p in snap.problems if "cannot be read" in p.text]
    assert "permission denied" in problem.text
    assert problem.dag_id == "job_manager_backup"


def test_a_database_that_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page and the metrics get job_manager's own error (the app turns it into a 503 page
    naming only the error's kind, and `job_manager_up 0`), quickly, without the password."""
    with closed_port() as port:
        _the_page_without_a_database(tmp_path, monkeypatch, port)


def _the_page_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int
) -> None:
    monkeypatch.setenv("JOB_MANAGER_DSN", f"postgresql://u:hunter2-secret@127.0.0.1:{port}/db")
    monkeypatch.setenv("JOB_MANAGER_CONN_ID", "job_manager_test_absent")
    monkeypatch.setenv("JOB_MANAGER_BACKUP_DIR", str(tmp_path))
    snapshot._manager = None
    started = time.monotonic()
    try:
        with pytest.raises(job_manager.JobManagerError) as caught:
            snapshot.take()
    finally:
        if snapshot._manager is not None:
            snapshot._manager.close()
        snapshot._manager = None
    assert time.monotonic() - started < 30
    assert "hunter2-secret" not in str(caught.value)
    assert b"job_manager_up 0.0" in metrics.render(None)


def _scans(db: psycopg.Connection) -> dict[str, tuple[int, int]]:
    db.execute("SELECT pg_stat_clear_snapshot()")
    return {
        r[0]: (r[1], r[2] or 0)
        for r in db.execute(
            "SELECT relname, seq_scan, idx_scan FROM pg_stat_user_tables "
            "WHERE relname IN ('jobs', 'download_queue')"
        )
    }


@pytest.mark.slow
def test_every_read_of_the_page_is_served_by_an_index(
    jm: JobManager, db: psycopg.Connection, dsn: str, plugin_env: Path
) -> None:
    """300,000 jobs over 60 days and 100,000 downloads: apart from the exact counts per
    status, everything the page and the metrics read is an index scan (PostgreSQL's own
    counters say so), and the V7 indexes serve the statements they were made for."""
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type, status, created_at, updated_at) "
        "SELECT 'p' || i, CASE WHEN i % 3 = 0 THEN 'VIDEO_PROD' ELSE 'IMAGE_TEST' END, "
        "CASE WHEN i % 100 = 0 THEN 'pending' WHEN i % 250 = 0 THEN 'processing' "
        "WHEN i % 20 = 0 THEN 'failed' ELSE 'completed' END, "
        "LOCALTIMESTAMP - make_interval(secs => i * 17.28), "
        "LOCALTIMESTAMP - make_interval(secs => i * 17.28) + interval '5 minutes' "
        "FROM generate_series(1, 300000) i"
    )
    db.execute(
        "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, status) "
        "SELECT i, 'https://example.invalid/' || i, '/tmp/' || i, 'image', "
        # As on a real queue, few downloads are still open (1.2 %): the health check's read of
        # the open ones is then an index scan on any ANALYZE sample. (With one in six open, the
        # planner's choice between an index and a sequential scan depended on ANALYZE's random
        # sample, and CI once saw the sequential one.)
        "CASE WHEN i % 500 = 0 THEN 'failed' WHEN i % 100 = 0 THEN 'pending' ELSE 'completed' END "
        "FROM generate_series(1, 100000) i"
    )
    db.execute("VACUUM (ANALYZE) jobs")
    db.execute("VACUUM (ANALYZE) download_queue")
    # Each parallel worker counts a sequential scan of its own, and how many launch depends on
    # the machine's load: without them the counts below are exact.
    dbname = db.execute("SELECT current_database()").fetchone()[0]
    db.execute(f'ALTER DATABASE "{dbname}" SET max_parallel_workers_per_gather = 0')
    time.sleep(0.6)  # the VACUUMs' own statistics reach the counters

    def scans_of(*reads: str) -> tuple[dict[str, int], dict[str, int], float]:
        """Sequential and index scans per table that these reads cost, and their time."""
        before = _scans(db)
        reader = JobManager(dsn, pool_size=1)
        started = time.perf_counter()
        for read in reads:
            if read.startswith("throughput:"):
                reader.throughput(read.split(":")[1])
            else:
                getattr(reader, read)()
        elapsed = time.perf_counter() - started
        reader.close()  # a backend flushes its statistics when it exits
        # The backend flushes its counters as it exits, shortly after the close: wait until
        # they have moved and then stayed the same for a second.
        deadline = time.monotonic() + 15
        after, stable_since = _scans(db), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = _scans(db)
            if now != after:
                after, stable_since = now, time.monotonic()
            elif after != before and time.monotonic() - stable_since > 1.0:
                break
        seq = {t: after[t][0] - before[t][0] for t in after}
        idx = {t: after[t][1] - before[t][1] for t in after}
        return seq, idx, elapsed

    # The exact counts per status (jobs by type and status, downloads by status) must visit
    # every row: PostgreSQL picks a sequential or an index-only scan for them by cost (measured
    # in bench/DASHBOARD.md), so they are left out here. Every other read of the page and the
    # metrics is an index scan, and PostgreSQL's own counters say so.
    seq, idx, elapsed = scans_of("health_report", "throughput:hour", "throughput:day")
    assert idx["jobs"] > 0, idx
    assert idx["download_queue"] > 0, idx
    assert seq == {"jobs": 0, "download_queue": 0}, seq
    # Generous (the same reads take well under a second here); the counters are the check.
    assert elapsed < 10

    plans = []
    for unit, span in (("hour", 23), ("day", 29)):
        plans.append(
            db.execute(
                "EXPLAIN SELECT date_trunc(%s, updated_at), count(*) FILTER "
                "(WHERE status = 'completed') FROM jobs WHERE status IN ('completed', 'failed') "
                f"AND updated_at >= date_trunc('{unit}', LOCALTIMESTAMP) "
                f"- interval '{span} {unit}' "
                "GROUP BY 1",
                (unit,),
            ).fetchall()
        )
    text = "\n".join(r[0] for p in plans for r in p)
    assert "idx_jobs_finished_updated_at" in text, text
    oldest = "\n".join(
        r[0]
        for r in db.execute(
            "EXPLAIN SELECT min(created_at) FROM jobs WHERE status = 'pending'"
        ).fetchall()
    )
    assert "idx_jobs_pending_created_at" in oldest, oldest
