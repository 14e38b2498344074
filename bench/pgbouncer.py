"""What `prepared_statements=False` (the PgBouncer transaction-pooling switch) costs.

    python bench/pgbouncer.py            # writes bench/PGBOUNCER.md
    python bench/pgbouncer.py --quick    # small counts, prints only

Starts a throwaway cluster (scripts/pgcluster.py) and Debian's pgbouncer in front of it twice
(pool_mode=transaction and pool_mode=session), then times the hot calls, one caller, warm pool:

- direct to PostgreSQL, prepared statements (the default);
- direct to PostgreSQL, prepared_statements=False (the switch alone);
- PgBouncer session pooling, prepared statements (the fast path is kept);
- PgBouncer transaction pooling, prepared_statements=False (the configuration it needs).

Each case runs in rounds interleaved with the others; the report gives the median per call.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from job_manager import JobManager
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import pgcluster  # noqa: E402
from nethelpers import start_pgbouncer  # noqa: E402

CALLS = ("get_and_lock_job", "get_job_by_id", "mark_job_as_completed", "add_job")


def per_call_us(jm: JobManager, call: str, n: int, state: dict[str, int]) -> float:
    started = time.perf_counter()
    if call == "get_and_lock_job":
        for _ in range(n):
            jm.get_and_lock_job("IMAGE_TEST")
    elif call == "get_job_by_id":
        for i in range(n):
            jm.get_job_by_id(1 + i % 1000)
    elif call == "mark_job_as_completed":
        for i in range(n):
            jm.mark_job_as_completed(1 + i % 1000, "/tmp/x")
    else:
        for _ in range(n):
            state["added"] += 1
            jm.add_job(f"bench add {state['added']}", "VIDEO_PROD")
    return (time.perf_counter() - started) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rounds = (200, 3) if args.quick else (2000, 7)
    base = Path(tempfile.mkdtemp(prefix="jm-bench-bouncer-"))
    base.chmod(0o755)
    cluster = pgcluster.start(base / "cluster")
    bouncers = []
    try:
        params = conninfo_to_dict(cluster.dsn)
        user, password = params["user"], params.get("password") or ""
        for mode in ("transaction", "session"):
            bouncers.append(
                start_pgbouncer(base / f"bouncer-{mode}", cluster.port, user, password, mode)
            )
        dsn = cluster.dsn_for("postgres")

        def at(port: int) -> str:
            return f"postgresql://{user}:{password}@127.0.0.1:{port}/postgres"

        setup = JobManager(dsn)
        setup.init_database()
        setup.add_jobs([f"bench {i}" for i in range(n * rounds * 4 + 1000)], "IMAGE_TEST")
        setup.close()
        cases = {
            "direct, prepared (default)": JobManager(dsn, pool_size=1),
            "direct, prepared_statements=False": JobManager(
                dsn, pool_size=1, prepared_statements=False
            ),
            "PgBouncer session pooling, prepared": JobManager(at(bouncers[1].port), pool_size=1),
            "PgBouncer transaction pooling, prepared_statements=False": JobManager(
                at(bouncers[0].port), pool_size=1, prepared_statements=False
            ),
        }
        state = {"added": 0}
        for jm in cases.values():  # warm: connect, prepare
            for call in CALLS:
                per_call_us(jm, call, 20, state)
        results: dict[tuple[str, str], list[float]] = {}
        names = list(cases)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for call in CALLS:
                for name in order:
                    results.setdefault((name, call), []).append(
                        per_call_us(cases[name], call, n, state)
                    )
        for jm in cases.values():
            jm.close()
    finally:
        for b in bouncers:
            b.stop()
        pgcluster.stop(base / "cluster")

    lines = [
        "# The PgBouncer switch: what `prepared_statements=False` costs",
        "",
        f"`python bench/pgbouncer.py{' --quick' if args.quick else ''}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, Python "
        f"{platform.python_version()}, {platform.machine()}, pgbouncer and PostgreSQL on "
        f"127.0.0.1. One caller, warm pool of one connection, {n} calls per round, {rounds} "
        "rounds interleaved; median microseconds per call (lower is better).",
        "",
        "| case | " + " | ".join(CALLS) + " |",
        "| --- | " + " | ".join("---:" for _ in CALLS) + " |",
    ]
    for name in names:
        cells = [f"{statistics.median(results[(name, c)]):.0f}" for c in CALLS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base_name = names[0]
    lines += ["", "Ratio to the default (direct, prepared), per call:", ""]
    for name in names[1:]:
        ratios = [
            statistics.median(results[(name, c)]) / statistics.median(results[(base_name, c)])
            for c in CALLS
        ]
        lines.append(
            f"- {name}: " + ", ".join(f"{c} x{r:.2f}" for c, r in zip(CALLS, ratios, strict=True))
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.quick:
        (ROOT / "bench" / "PGBOUNCER.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
