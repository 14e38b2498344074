"""The Job queue page (Airflow UI plugin) and /job-manager/metrics on 1,000,000 jobs.

    python bench/dashboard.py            # 1,000,000 jobs; writes bench/DASHBOARD.md
    python bench/dashboard.py --quick    # 50,000 jobs, prints only

Starts a throwaway cluster (scripts/pgcluster.py; $JOB_MANAGER_BENCH_DSN: a superuser DSN
instead), loads jobs spread over 90 days (1% pending, 0.2% processing, 5% failed, the rest
completed) and one download per two jobs, then measures:

- V7 (the two dashboard indexes) applied by init_database() on the full table: how long the
  migration holds the lock that blocks writes to jobs;
- each read the page makes, warm, median of 7: health_report(), download_counts(),
  throughput("hour"), throughput("day"), and the whole page (snapshot + HTML) and metrics;
- the same throughput("day") and oldest-pending reads without the V7 indexes (dropped), to
  show what they buy;
- EXPLAIN (ANALYZE, BUFFERS) of the two statements V7 serves.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from job_manager import JobManager
from job_manager.airflow_plugin import metrics, render, snapshot
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pgcluster  # noqa: E402

ROUNDS = 7
V7_INDEXES = ("idx_jobs_finished_updated_at", "idx_jobs_pending_created_at")


def median_ms(fn, rounds: int = ROUNDS) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def load(db: psycopg.Connection, n: int) -> None:
    # 90 days back from now, evenly; the newest jobs are the pending and processing ones.
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type, status, created_at, updated_at) "
        "SELECT 'bench ' || i, CASE WHEN i %% 3 = 0 THEN 'VIDEO_PROD' ELSE 'IMAGE_TEST' END, "
        "CASE WHEN i <= %(n)s / 100 THEN 'pending' WHEN i <= %(n)s / 100 + %(n)s / 500 "
        "THEN 'processing' WHEN i %% 20 = 0 THEN 'failed' ELSE 'completed' END, "
        "LOCALTIMESTAMP - make_interval(secs => i * 7776000.0 / %(n)s), "
        "LOCALTIMESTAMP - make_interval(secs => i * 7776000.0 / %(n)s) + interval '3 minutes' "
        "FROM generate_series(1, %(n)s) i",
        {"n": n},
    )
    db.execute(
        "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, status) "
        "SELECT id, 'https://example.invalid/' || id, '/data/' || id, 'image', "
        "CASE WHEN id % 50 = 0 THEN 'failed' WHEN id % 9 = 0 THEN 'pending' ELSE 'completed' END "
        "FROM jobs WHERE id % 2 = 0"
    )
    db.execute("VACUUM (ANALYZE) jobs")
    db.execute("VACUUM (ANALYZE) download_queue")


def explain(db: psycopg.Connection, sql: str) -> str:
    return "\n".join(r[0] for r in db.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql).fetchall())


FINISHED_DAY = (
    "SELECT date_trunc('day', updated_at), count(*) FILTER (WHERE status = 'completed'), "
    "count(*) FILTER (WHERE status = 'failed') FROM jobs "
    "WHERE status IN ('completed', 'failed') "
    "AND updated_at >= date_trunc('day', LOCALTIMESTAMP) - interval '29 day' GROUP BY 1"
)
OLDEST = "SELECT min(created_at) FROM jobs WHERE status = 'pending'"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "DASHBOARD.md")
    args = parser.parse_args()
    n = 50_000 if args.quick else 1_000_000
    with pgcluster.bench_server("jm-bench-dash-") as (admin, _, _):
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute("DROP DATABASE IF EXISTS jm_bench_dashboard")
            a.execute("CREATE DATABASE jm_bench_dashboard")
            server_version = a.execute("SHOW server_version").fetchone()[0]
        params = conninfo_to_dict(admin)
        params["dbname"] = "jm_bench_dashboard"
        dsn = make_conninfo(**params)
        jm = JobManager(dsn, pool_size=2)
        jm.init_database()
        db = psycopg.connect(dsn, autocommit=True)
        t = time.perf_counter()
        load(db, n)
        load_s = time.perf_counter() - t
        print(f"loaded {n:,} jobs in {load_s:.1f} s", file=sys.stderr)

        # V7 on the full table, as an upgrade would run it.
        for name in V7_INDEXES:
            db.execute(f"DROP INDEX {name}")
        db.execute("DELETE FROM job_manager_schema_history WHERE version = 7")
        without = {
            'throughput("day")': median_ms(lambda: jm.throughput("day"), 3),
            "oldest pending (health_report's query)": median_ms(
                lambda: db.execute(OLDEST).fetchone(), 3
            ),
        }
        plan_without = explain(db, FINISHED_DAY)
        t = time.perf_counter()
        applied = jm.init_database()
        v7_s = time.perf_counter() - t
        assert applied == ["V7__dashboard_indexes"], applied
        db.execute("VACUUM (ANALYZE) jobs")

        os.environ["JOB_MANAGER_DSN"] = dsn
        os.environ["JOB_MANAGER_CONN_ID"] = "absent_in_the_bench"
        os.environ["JOB_MANAGER_BACKUP_DIR"] = str(Path(tempfile.mkdtemp()))
        snapshot._manager = jm
        reads = {
            "health_report()": median_ms(jm.health_report),
            "download_counts()": median_ms(jm.download_counts),
            'throughput("hour")': median_ms(lambda: jm.throughput("hour")),
            'throughput("day")': median_ms(lambda: jm.throughput("day")),
            "the page: snapshot + HTML": median_ms(
                lambda: render.page(snapshot.take(), base="", static="/job-manager/static")
            ),
            "the metrics: snapshot + text": median_ms(
                lambda: metrics.render(snapshot.take(throughput=False))
            ),
        }
        with_idx = {
            'throughput("day")': reads['throughput("day")'],
            "oldest pending (health_report's query)": median_ms(
                lambda: db.execute(OLDEST).fetchone(), 3
            ),
        }
        plan_finished = explain(db, FINISHED_DAY)
        plan_oldest = explain(db, OLDEST)
        size = {
            name: db.execute(
                "SELECT pg_size_pretty(pg_relation_size(%s::regclass))", (name,)
            ).fetchone()[0]
            for name in V7_INDEXES
        }
        jm.close()
        db.close()

    lines = [
        "# The Job queue page on 1,000,000 jobs",
        "",
        f"`python bench/dashboard.py{' --quick' if args.quick else ''}`, "
        f"{datetime.date.today().isoformat()}, PostgreSQL {server_version}, "
        f"{platform.machine()}, on a **shared 2-core box** (other engineers' builds and tests "
        "ran at the same time: read the numbers as an order of magnitude).",
        "",
        f"{n:,} jobs over 90 days (1% pending, 0.2% processing, 5% failed, the rest "
        f"completed), {n // 2:,} downloads, vacuumed and analyzed; loading took {load_s:.0f} s.",
        "",
        "## V7 on the full table",
        "",
        f"`init_database()` applying V7 (two `CREATE INDEX`, plain, in the migration's "
        f"transaction): **{v7_s:.2f} s**, during which writes to `jobs` wait (reads do not). "
        f"Index sizes: " + ", ".join(f"`{k}` {v}" for k, v in size.items()) + ".",
        "",
        "## Each read, warm (median of 7)",
        "",
        "| read | ms |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in reads.items()),
        "",
        "## What V7 buys (median of 3)",
        "",
        "| read | without V7 (ms) | with V7 (ms) |",
        "|---|---:|---:|",
        *(f"| {k} | {without[k]:.1f} | {with_idx[k]:.1f} |" for k in without),
        "",
        "## Plans",
        "",
        "Jobs finished per day over 30 days, with V7:",
        "",
        "```",
        plan_finished,
        "```",
        "",
        "The same without V7:",
        "",
        "```",
        plan_without,
        "```",
        "",
        "The oldest pending job, with V7:",
        "",
        "```",
        plan_oldest,
        "```",
        "",
    ]
    text = "\n".join(lines)
    if args.quick:
        print(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
