"""Where a restore's time goes, by the server's own clock: each statement of job_manager's
restore and of `psql --single-transaction` restoring pg_dump's file of the same rows, timed by
`log_min_duration_statement = 0` in a throwaway cluster's log (#17).

    python bench/restore_profile.py [--quick] [--rounds R] [--build LABEL=SITE_DIR ...]

Fills the bench's large dataset (bench/run.py's `prefill_big`), writes job_manager's backup
and pg_dump's file of the same tables once, then restores each R times, order alternated,
`sync` before each. With `--build`, job_manager's restore runs once per build (a directory
holding an unpacked wheel, put first on PYTHONPATH; `current` is the installed one), so two
builds are compared by the same server in the same run. Prints a Markdown table: per kind of
statement, the median over the rounds of the server's time, and the wall time of each restore.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
from job_manager import JobManager

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
import pgcluster  # noqa: E402
from run import Bench  # noqa: E402

RESTORE = """
import sys
from job_manager import JobManager
jm = JobManager(sys.argv[1])
jm.restore_database(sys.argv[2], safety_backup=False)
jm.close()
"""

LOGGED = re.compile(
    r" (?P<app>[\w.-]+): LOG:  duration: (?P<ms>[\d.]+) ms  "
    r"(?:statement|execute [^:]*): (?P<sql>.*)"
)


def kind(sql: str) -> str:
    """A statement's row in the table: what it does and to what, without its details."""
    sql = " ".join(sql.split())
    for pattern, name in (
        (r"^COPY (?:\(SELECT .*? FROM ONLY )?(?:public\.)?(\w+)", r"COPY \1"),
        (r"^CREATE (UNIQUE )?INDEX (\w+)", r"CREATE \1INDEX \2"),
        (r"^ALTER TABLE (?:ONLY )?(?:public\.)?(\w+) ADD CONSTRAINT (\w+)", r"ADD CONSTRAINT \2"),
        (r"^ALTER TABLE (?:ONLY )?(?:public\.)?(\w+) (ENABLE|DISABLE) TRIGGER", r"\2 TRIGGER"),
        (r"^CREATE TRIGGER (\w+)", r"CREATE TRIGGER \1"),
        (r"^INSERT INTO (\w+)", r"INSERT INTO \1"),
        (r"^CREATE TABLE (?:public\.)?(\w+)", r"CREATE TABLE \1"),
        (r"^COMMIT", "COMMIT"),
    ):
        m = re.match(pattern, sql)
        if m:
            return m.expand(name).replace("  ", " ")
    return "other statements"


def server_times(log_text: str, app: str) -> dict[str, float]:
    """Seconds per kind of statement logged for `app`."""
    out: dict[str, float] = defaultdict(float)
    # A statement of several lines is logged as several: the later ones start with a tab.
    entries: list[str] = []
    for line in log_text.splitlines():
        if line.startswith("\t") and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line)
    for line in entries:
        m = LOGGED.search(line)
        if m and m["app"] == app:
            out[kind(m["sql"])] += float(m["ms"]) / 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 jobs instead of 1,000,000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--build",
        action="append",
        default=[],
        metavar="LABEL=SITE_DIR",
        help="a job_manager build to restore with (an unpacked wheel); default: the installed one",
    )
    args = parser.parse_args()
    builds = dict(b.split("=", 1) for b in args.build) or {"current": ""}
    with pgcluster.throwaway("jm-restore-profile-") as cluster:
        base = Path(cluster.base).parent
        with psycopg.connect(cluster.dsn, autocommit=True) as c:
            c.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
            c.execute("ALTER SYSTEM SET log_line_prefix = '%m [%p] %a: '")
            c.execute("SELECT pg_reload_conf()")
        bench = Bench(cluster.dsn, args.quick, Path(cluster.bindir))
        dsn, n = bench.prefill_big()
        files = base / "files"
        ours = Path(JobManager(dsn).backup_database(files, keep=None).path)
        dump = files / "pg_dump.sql"
        bench.pg_dump_tables("bench_big", dump)
        target = bench.fresh_db("bench_restore")
        JobManager(target).init_database()
        log_path = cluster.home / "server.log"
        server: dict[str, list[dict[str, float]]] = defaultdict(list)
        wall: dict[str, list[float]] = defaultdict(list)

        def measured(label: str, app: str, cmd: list[str], env: dict[str, str]) -> None:
            os.sync()
            start_at = log_path.stat().st_size
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            wall[label].append(time.perf_counter() - t)
            time.sleep(0.5)  # the server's log lines of the last statements
            with log_path.open() as f:
                f.seek(start_at)
                server[label].append(server_times(f.read(), app))

        for rnd in range(args.rounds):
            steps = []
            for label, site in builds.items():
                app = f"jm_{label}"
                env = dict(os.environ, PGAPPNAME=app)
                if site:
                    env["PYTHONPATH"] = site + os.pathsep + env.get("PYTHONPATH", "")
                dsn_app = f"{target}{'&' if '?' in target else '?'}application_name={app}"
                steps.append(
                    (
                        f"job_manager ({label})",
                        app,
                        [sys.executable, "-c", RESTORE, dsn_app, str(ours)],
                        env,
                    )
                )
            bench.fresh_db_for_pg_dump_of(dsn, "bench_restore_psql")
            steps.append(
                (
                    "psql --single-transaction (pg_dump's file)",
                    "psql_restore",
                    [
                        *(bench.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"),
                        *("--single-transaction", "-f", str(dump), "-d", "bench_restore_psql"),
                    ],
                    dict(bench.pgenv, PGAPPNAME="psql_restore"),
                )
            )
            # The job_manager builds restore into one database: each after a TRUNCATE.
            for label, app, cmd, env in steps if rnd % 2 == 0 else steps[::-1]:
                if label.startswith("job_manager"):
                    with psycopg.connect(target, autocommit=True) as c:
                        c.execute("TRUNCATE download_queue, jobs")
                measured(label, app, cmd, env)
        labels = list(wall)
        kinds = sorted({k for runs in server.values() for r in runs for k in r})
        print(f"\n{n:,} jobs, {args.rounds} rounds, medians in seconds (server's log)\n")
        print("| statement | " + " | ".join(labels) + " |")
        print("| --- |" + " ---: |" * len(labels))
        for k in kinds:
            cells = [
                f"{statistics.median(r.get(k, 0.0) for r in server[lb]):.3f}"
                if any(k in r for r in server[lb])
                else "-"
                for lb in labels
            ]
            print(f"| {k} | " + " | ".join(cells) + " |")
        totals = [f"{statistics.median(sum(r.values()) for r in server[lb]):.2f}" for lb in labels]
        print("| **all statements (server)** | " + " | ".join(totals) + " |")
        walls = [f"{statistics.median(wall[lb]):.2f}" for lb in labels]
        print("| **wall time of the restore** | " + " | ".join(walls) + " |")
        per_round = [" / ".join(f"{v:.2f}" for v in wall[lb]) for lb in labels]
        print("| wall time per round | " + " | ".join(per_round) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
