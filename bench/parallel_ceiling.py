"""What any client can reach here: 1, 2 and 4 parallel COPY streams under one snapshot.

    python bench/parallel_ceiling.py            # 1,000,000 jobs (the bench's big database)
    python bench/parallel_ceiling.py --quick    # 50,000 jobs, proves the script runs

On the bench's database (`bench/run.py`'s `prefill_big`), times reading `jobs` and
`download_queue` with N `psql` processes, each one `COPY (SELECT * FROM jobs WHERE ctid >=
'(a,0)' AND ctid < '(b,0)') TO STDOUT` of a page range (a TID Range Scan, PostgreSQL >= 14)
inside a snapshot exported by one coordinating connection (`pg_export_snapshot()` /
`SET TRANSACTION SNAPSHOT`), output discarded; side by side with `pg_dump -t` of the same
tables and the single-stream `psql \\copy` to /dev/null floor. No job_manager code is timed:
this is the ceiling a parallel backup can hope for on this machine. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Bench, pgcluster

TABLES = ("jobs", "download_queue", "job_manager_schema_history")


def psql(bench: Bench, *commands: str, dbname: str = "bench_big") -> None:
    args = [bench.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname]
    for c in commands:
        args += ["-c", c]
    subprocess.run(args, env=bench.pgenv, check=True, stdout=subprocess.DEVNULL)


def parallel(bench: Bench, dsn: str, streams: int, pages: int) -> None:
    """`jobs` in `streams` page ranges plus `download_queue`, on `streams` psql processes
    sharing one exported snapshot."""
    with psycopg.connect(dsn) as coordinator:
        coordinator.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = coordinator.execute("SELECT pg_export_snapshot()").fetchone()[0]
        step = -(-pages // streams)
        tasks = [
            f"COPY (SELECT * FROM jobs WHERE ctid >= '({a},0)' AND ctid < '({a + step},0)') "
            "TO STDOUT"
            for a in range(0, pages, step)
        ]
        tasks.append("COPY download_queue TO STDOUT")
        lock = threading.Lock()
        failures: list[BaseException] = []

        def worker() -> None:
            while True:
                with lock:
                    if not tasks:
                        return
                    task = tasks.pop(0)
                try:
                    psql(
                        bench,
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                        f"SET TRANSACTION SNAPSHOT '{snapshot}'; {task}; COMMIT",
                    )
                except BaseException as e:
                    failures.append(e)
                    return

        threads = [threading.Thread(target=worker) for _ in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        coordinator.execute("COMMIT")
        if failures:
            raise failures[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with pgcluster.bench_server("jm-ceiling-pg-") as (dsn, bindir, _):
        bench = Bench(dsn, args.quick, bindir)
        big = bench.db_dsn("bench_big")
        try:
            with psycopg.connect(big) as c:
                have = c.execute(
                    "SELECT to_regclass('jobs') IS NOT NULL AND (SELECT count(*) FROM jobs) = %s",
                    (50_000 if args.quick else 1_000_000,),
                ).fetchone()[0]
        except psycopg.OperationalError:
            have = False  # no bench_big yet
        if not have:
            bench.prefill_big()
        with psycopg.connect(big) as c:
            pages = c.execute(
                "SELECT pg_relation_size('jobs') / current_setting('block_size')::int"
            ).fetchone()[0]
            server = c.execute("SHOW server_version").fetchone()[0]
            size = c.execute("SELECT pg_size_pretty(pg_total_relation_size('jobs'))").fetchone()[0]

        def pg_dump() -> None:
            subprocess.run(
                [
                    bench.tool("pg_dump"),
                    *(a for t in TABLES for a in ("-t", t)),
                    *("-f", "/dev/null", "bench_big"),
                ],
                env=bench.pgenv,
                check=True,
            )

        def floor() -> None:
            for table in ("jobs", "download_queue"):
                psql(bench, f"\\copy {table} to /dev/null")

        steps = {
            "psql \\copy to /dev/null (single stream, the floor)": floor,
            "pg_dump -t (same tables) to /dev/null": pg_dump,
            **{
                f"{n} snapshot-sharing COPY stream(s), TID ranges": (
                    lambda n=n: parallel(bench, big, n, pages)
                )
                for n in (1, 2, 4)
            },
        }
        wall: dict[str, list[float]] = {k: [] for k in steps}
        cpu: dict[str, list[float]] = {k: [] for k in steps}
        names = list(steps)
        for rnd in range(args.rounds):
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                os.sync()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                steps[name]()
                wall[name].append(time.perf_counter() - t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                )
        floor_s = statistics.median(wall[names[0]])
        print(
            f"PostgreSQL {server}, `jobs` {size} ({pages:,} pages), {os.cpu_count()} cores, "
            f"{args.rounds} rounds, order rotated, `sync` before each step.\n"
        )
        print("| reader | median s | per round | client CPU s (median) | floor / it |")
        print("| --- | ---: | --- | ---: | ---: |")
        for name in names:
            m = statistics.median(wall[name])
            rounds = " / ".join(f"{v:.2f}" for v in wall[name])
            print(
                f"| {name} | {m:.2f} | {rounds} | {statistics.median(cpu[name]):.2f} | "
                f"{floor_s / m:.2f}x |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
