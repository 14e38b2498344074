"""Claims and reads per call, two builds of job_manager side by side (e.g. before and after a
change), each in its own interpreter, against one throwaway cluster, rounds interleaved.

    python bench/compare_wheels.py --a OLD_VENV/bin/python --b .venv/bin/python

Each round gives each build a fresh database with 6,000 pending jobs, then times 5,000 claims
(`get_and_lock_job`) and 5,000 `get_job_by_id` on a warm pool of one connection. Prints the
medians in microseconds per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pgcluster  # noqa: E402

ROUND = """
import json, sys, time
from job_manager import JobManager
jm = JobManager(sys.argv[1], pool_size=1)
jm.init_database()
jm.add_jobs([f"p{i}" for i in range(6000)], "IMAGE_TEST")
n = int(sys.argv[2])
for _ in range(50):
    jm.get_and_lock_job("IMAGE_TEST")
t = time.perf_counter()
for _ in range(n):
    jm.get_and_lock_job("IMAGE_TEST")
claim = (time.perf_counter() - t) / n * 1e6
t = time.perf_counter()
for i in range(n):
    jm.get_job_by_id(1 + i % 1000)
read = (time.perf_counter() - t) / n * 1e6
print(json.dumps({"claim": claim, "get_job_by_id": read}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", required=True, help="python of the first build")
    parser.add_argument("--b", required=True, help="python of the second build")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    with pgcluster.throwaway("jm-compare-") as cluster:
        for r in range(args.rounds):
            for impl in ("a", "b") if r % 2 == 0 else ("b", "a"):
                db = f"round{r}{impl}"
                subprocess.run(
                    [
                        str(Path(cluster.bindir) / "psql"),
                        cluster.dsn,
                        "-qc",
                        f"CREATE DATABASE {db}",
                    ],
                    check=True,
                )
                python = args.a if impl == "a" else args.b
                out = subprocess.run(
                    [python, "-c", ROUND, cluster.dsn_for(db), str(args.calls)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[impl].append(json.loads(out.strip().splitlines()[-1]))
    for impl, python in (("a", args.a), ("b", args.b)):
        rows = results[impl]
        print(
            f"{impl} ({python}): claim {statistics.median(x['claim'] for x in rows):.1f} us, "
            f"get_job_by_id {statistics.median(x['get_job_by_id'] for x in rows):.1f} us "
            f"(median of {len(rows)} rounds of {args.calls})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
