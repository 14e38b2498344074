"""Batch claims and waiting consumers: job_manager vs pgqueuer vs pooled psycopg 3.

    python bench/queue_waits.py            # writes bench/QUEUE_WAITS.md (a few minutes)
    python bench/queue_waits.py --quick    # small counts, prints only (CI keeps it working)

Starts a throwaway cluster (scripts/pgcluster.py). pgqueuer (PyPI, with asyncpg, its
documented driver) gets its own schema (`Queries.install()`); job_manager and the pooled
psycopg 3 baseline share the `jobs` table (truncated before each run). Cases:

1. claims per second at batch sizes 1, 10, 100: one consumer, warm connection, N queued jobs
   claimed until none is left (job_manager `get_and_lock_job` / `get_and_lock_jobs`; pgqueuer
   `Queries.dequeue(batch_size)`; pooled: the same UPDATE ... LIMIT b statement as job_manager
   over psycopg_pool with prepared statements). Rounds interleaved.
2. end to end: enqueue M no-op jobs in one call, then C consumers (threads, or asyncio tasks for
   pgqueuer, each on its own connection) claim batches of 10 and complete them until none is
   left; jobs per second over the whole (enqueue + claim + complete).
3. wake-up latency: one waiting consumer; a producer commits one job at a time (psycopg,
   autocommit); latency = the consumer holding the job minus the producer's COMMIT returning.
   job_manager: `wait_and_lock_job`; pgqueuer: its `QueueManager` (LISTEN, batch_size=1).
4. idle CPU: 8 waiting consumers in one process, nothing queued, for S seconds: the process's
   CPU time (getrusage) over the wait. job_manager: 8 threads in `wait_for_job`; pgqueuer: 8
   `QueueManager`s (one connection each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import psycopg
from job_manager import JobManager
from pgqueuer import Queries
from pgqueuer.qm import QueueManager
from pgqueuer.queries import EntrypointExecutionParameter
from psycopg_pool import ConnectionPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pgcluster  # noqa: E402

T = "IMAGE_TEST"
EP = "noop"
BATCHES = (1, 10, 100)
CLAIM_BATCH = """
    UPDATE jobs SET status = 'processing'
    WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' AND job_type = %s
                 ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at"""
COMPLETE = "UPDATE jobs SET status = 'completed' WHERE id = ANY(%s)"


def log(msg: str) -> None:
    print(f"[queue bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pg_version() -> str:
    import importlib.metadata as md

    return md.version("pgqueuer")


# -- loading ----------------------------------------------------------------------------------


def reset_jobs(dsn: str, n: int, tag: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE jobs CASCADE")
        with c.cursor().copy("COPY jobs (prompt_text, job_type) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((f"{tag} {i}", T))
        c.execute("VACUUM ANALYZE jobs")


async def pgq_reset(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        q = Queries.from_asyncpg_connection(conn)
        await q.clear_queue()
        for start in range(0, n, 10_000):
            k = min(10_000, n - start)
            await q.enqueue([EP] * k, [None] * k, [0] * k)
        await conn.execute("VACUUM ANALYZE pgqueuer")
    finally:
        await conn.close()


# -- 1. claims per second -----------------------------------------------------------------------


def jm_claims(jm: JobManager, batch: int) -> int:
    n = 0
    if batch == 1:
        while jm.get_and_lock_job(T) is not None:
            n += 1
    else:
        while got := jm.get_and_lock_jobs(T, batch):
            n += len(got)
    return n


def pooled_claims(pool: ConnectionPool, batch: int) -> int:
    n = 0
    while True:
        with pool.connection() as conn:
            rows = conn.execute(CLAIM_BATCH, (T, batch)).fetchall()
        if not rows:
            return n
        n += len(rows)


async def pgq_claims(dsn: str, batch: int) -> tuple[int, float]:
    import uuid

    conn = await asyncpg.connect(dsn)
    try:
        q = Queries.from_asyncpg_connection(conn)
        eps = {EP: EntrypointExecutionParameter(concurrency_limit=0)}
        qm_id = uuid.uuid4()
        n = 0
        started = time.perf_counter()
        while jobs := await q.dequeue(batch, eps, qm_id, None, datetime.timedelta(seconds=300)):
            n += len(jobs)
        return n, time.perf_counter() - started
    finally:
        await conn.close()


def case_claims(dsn: str, n: int, rounds: int) -> dict[tuple[str, int], list[float]]:
    jm = JobManager(dsn, pool_size=1)
    pool = ConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True, "prepare_threshold": 0}
    )
    out: dict[tuple[str, int], list[float]] = {}
    impls = ["job_manager", "pooled-psycopg3", "pgqueuer"]
    for r in range(rounds):
        order = impls[r % 3 :] + impls[: r % 3]
        for batch in BATCHES:
            for impl in order:
                if impl == "pgqueuer":
                    asyncio.run(pgq_reset(dsn, n))
                    got, secs = asyncio.run(pgq_claims(dsn, batch))
                else:
                    reset_jobs(dsn, n, f"claims {r} {batch}")
                    started = time.perf_counter()
                    got = (
                        jm_claims(jm, batch)
                        if impl == "job_manager"
                        else pooled_claims(pool, batch)
                    )
                    secs = time.perf_counter() - started
                assert got == n, (impl, batch, got)
                out.setdefault((impl, batch), []).append(n / secs)
                log(f"claims {impl} batch {batch}: {n / secs:,.0f}/s")
    jm.close()
    pool.close()
    return out


# -- 2. end to end ------------------------------------------------------------------------------


def jm_end_to_end(dsn: str, m: int, consumers: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE jobs CASCADE")
    producer = JobManager(dsn, pool_size=1)
    managers = [JobManager(dsn, pool_size=1) for _ in range(consumers)]
    for jm in managers:
        jm.get_job_stats()  # connect
    prompts = [f"e2e {i}" for i in range(m)]
    done = [0] * consumers

    def consume(k: int) -> None:
        jm = managers[k]
        while batch := jm.get_and_lock_jobs(T, 10):
            jm.mark_jobs_as_completed([(j["id"], None) for j in batch])
            done[k] += len(batch)

    started = time.perf_counter()
    producer.add_jobs(prompts, T)
    threads = [threading.Thread(target=consume, args=(k,)) for k in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - started
    assert sum(done) == m, done
    for jm in [producer, *managers]:
        jm.close()
    return m / secs


def pooled_end_to_end(dsn: str, m: int, consumers: int) -> float:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE jobs CASCADE")
    pool = ConnectionPool(
        dsn,
        min_size=consumers + 1,
        max_size=consumers + 1,
        kwargs={"autocommit": True, "prepare_threshold": 0},
    )
    pool.wait()
    done = [0] * consumers

    def consume(k: int) -> None:
        with pool.connection() as conn:
            while rows := conn.execute(CLAIM_BATCH, (T, 10)).fetchall():
                conn.execute(COMPLETE, ([r[0] for r in rows],))
                done[k] += len(rows)

    started = time.perf_counter()
    with (
        pool.connection() as conn,
        conn.transaction(),
        conn.cursor().copy("COPY jobs (prompt_text, job_type) FROM STDIN") as cp,
    ):
        for i in range(m):
            cp.write_row((f"e2e {i}", T))
    threads = [threading.Thread(target=consume, args=(k,)) for k in range(consumers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - started
    assert sum(done) == m, done
    pool.close()
    return m / secs


async def pgq_end_to_end(dsn: str, m: int, consumers: int) -> float:
    import uuid

    producer = await asyncpg.connect(dsn)
    conns = [await asyncpg.connect(dsn) for _ in range(consumers)]
    pq = Queries.from_asyncpg_connection(producer)
    await pq.clear_queue()
    eps = {EP: EntrypointExecutionParameter(concurrency_limit=0)}
    done = [0] * consumers

    async def consume(k: int) -> None:
        q = Queries.from_asyncpg_connection(conns[k])
        qm_id = uuid.uuid4()
        while jobs := await q.dequeue(10, eps, qm_id, None, datetime.timedelta(seconds=300)):
            await q.log_jobs([(j, "successful", None) for j in jobs])
            done[k] += len(jobs)

    started = time.perf_counter()
    for s in range(0, m, 10_000):
        k = min(10_000, m - s)
        await pq.enqueue([EP] * k, [None] * k, [0] * k)
    await asyncio.gather(*(consume(k) for k in range(consumers)))
    secs = time.perf_counter() - started
    assert sum(done) == m, done
    for c in [producer, *conns]:
        await c.close()
    return m / secs


def case_end_to_end(dsn: str, m: int, consumers: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    impls: dict[str, Callable[[], float]] = {
        "job_manager": lambda: jm_end_to_end(dsn, m, consumers),
        "pooled-psycopg3": lambda: pooled_end_to_end(dsn, m, consumers),
        "pgqueuer": lambda: asyncio.run(pgq_end_to_end(dsn, m, consumers)),
    }
    names = list(impls)
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            v = impls[name]()
            out.setdefault(name, []).append(v)
            log(f"end to end {name}: {v:,.0f} jobs/s")
    return out


# -- 3. wake-up latency -------------------------------------------------------------------------


def produce(dsn: str, samples: int, insert: Callable[[psycopg.Connection, int], None]) -> dict:
    committed: dict[int, float] = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        time.sleep(0.5)
        for i in range(samples):
            insert(c, i)
            committed[i] = time.perf_counter()
            time.sleep(0.01 + (i % 7) * 0.003)
    return committed


def jm_latency(dsn: str, samples: int) -> list[float]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE jobs CASCADE")
    jm = JobManager(dsn, pool_size=1)
    got: dict[int, float] = {}

    def consume() -> None:
        while len(got) < samples:
            job = jm.wait_and_lock_job(T, 10)
            if job is None:
                return
            got[int(job["prompt_text"].split()[-1])] = time.perf_counter()

    t = threading.Thread(target=consume)
    t.start()
    committed = produce(
        dsn,
        samples,
        lambda c, i: c.execute(
            "INSERT INTO jobs (prompt_text, job_type) VALUES (%s, %s)", (f"wake {i}", T)
        ),
    )
    t.join(timeout=30)
    jm.close()
    return [(got[i] - committed[i]) * 1000 for i in range(samples)]


def pgq_latency(dsn: str, samples: int) -> list[float]:
    asyncio.run(pgq_reset(dsn, 0))
    got: dict[int, float] = {}
    ready = threading.Event()
    stop: list[Callable[[], None]] = []

    async def consumer() -> None:
        conn = await asyncpg.connect(dsn)
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint(EP)
        async def noop(job) -> None:  # type: ignore[no-untyped-def]
            got[int(job.payload.decode())] = time.perf_counter()
            if len(got) >= samples:
                qm.shutdown.set()

        loop = asyncio.get_running_loop()
        stop.append(lambda: loop.call_soon_threadsafe(qm.shutdown.set))
        ready.set()
        await qm.run(batch_size=1, dequeue_timeout=datetime.timedelta(seconds=30))
        await conn.close()

    t = threading.Thread(target=lambda: asyncio.run(consumer()))
    t.start()
    ready.wait(10)
    committed = produce(
        dsn,
        samples,
        lambda c, i: c.execute(
            "INSERT INTO pgqueuer (priority, entrypoint, payload, status) "
            "VALUES (0, %s, %s, 'queued')",
            (EP, str(i).encode()),
        ),
    )
    deadline = time.monotonic() + 30
    while len(got) < samples and time.monotonic() < deadline:
        time.sleep(0.05)
    if stop and t.is_alive():
        # RuntimeError: the loop ended on its own after the last job.
        with contextlib.suppress(RuntimeError):
            stop[0]()
    t.join(timeout=30)
    return [(got[i] - committed[i]) * 1000 for i in range(samples)]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


# -- 4. idle CPU ----------------------------------------------------------------------------------

IDLE_JM = """
import json, resource, sys, threading, time, job_manager
jm = job_manager.JobManager(sys.argv[1], pool_size=8)
s = float(sys.argv[2])
waiters = [threading.Thread(target=jm.wait_for_job, args=("IMAGE_TEST", 0.05)) for _ in range(8)]
for t in waiters: t.start()
for t in waiters: t.join()   # 8 LISTEN connections opened before the measure
before = resource.getrusage(resource.RUSAGE_SELF)
waiters = [threading.Thread(target=jm.wait_for_job, args=("IMAGE_TEST", s)) for _ in range(8)]
for t in waiters: t.start()
for t in waiters: t.join()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))
"""

IDLE_PGQ = """
import asyncio, json, resource, sys, asyncpg
from pgqueuer import Queries
from pgqueuer.qm import QueueManager

async def main():
    s = float(sys.argv[2])
    qms = []
    for _ in range(8):
        conn = await asyncpg.connect(sys.argv[1])
        qm = QueueManager(Queries.from_asyncpg_connection(conn))
        @qm.entrypoint("noop")
        async def noop(job): pass
        qms.append(qm)
    runs = [asyncio.create_task(qm.run(batch_size=10)) for qm in qms]
    await asyncio.sleep(1.0)   # started and listening before the measure
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(s)
    after = resource.getrusage(resource.RUSAGE_SELF)
    for qm in qms: qm.shutdown.set()
    await asyncio.wait(runs, timeout=10)
    print(json.dumps(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))

asyncio.run(main())
"""


def idle_cpu(dsn: str, seconds: float) -> dict[str, float]:
    asyncio.run(pgq_reset(dsn, 0))
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE jobs CASCADE")
    out = {}
    for name, script in (("job_manager", IDLE_JM), ("pgqueuer", IDLE_PGQ)):
        r = subprocess.run(
            [sys.executable, "-c", script, dsn, str(seconds)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
        out[name] = float(r.stdout.strip().splitlines()[-1])
        log(f"idle cpu {name}: {out[name] * 1000:.1f} ms over {seconds}s")
    return out


# -- 5. the notify trigger's cost on bulk adds -----------------------------------------------------


def trigger_cost(dsn: str, m: int, rounds: int) -> dict[str, list[float]]:
    """add_jobs of m new prompts (COPY) with V6's insert trigger enabled and disabled."""
    jm = JobManager(dsn, pool_size=1)
    jm.get_job_stats()  # connected before the clock starts
    out: dict[str, list[float]] = {}
    for r in range(rounds):
        for enabled in (True, False) if r % 2 == 0 else (False, True):
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("TRUNCATE jobs CASCADE")
                c.execute(
                    f"ALTER TABLE jobs {'ENABLE' if enabled else 'DISABLE'} TRIGGER "
                    "job_manager_notify_insert"
                )
            prompts = [f"trigger {r} {i}" for i in range(m)]
            started = time.perf_counter()
            jm.add_jobs(prompts, T)
            secs = time.perf_counter() - started
            name = "enabled (V6)" if enabled else "disabled"
            out.setdefault(name, []).append(secs)
            log(f"add_jobs {m} with the trigger {name}: {secs:.3f}s")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE jobs ENABLE TRIGGER job_manager_notify_insert")
    jm.close()
    return out


# -- report ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "QUEUE_WAITS.md")
    args = parser.parse_args()
    if args.quick:
        n, rounds, m, consumers, samples, idle_s = 600, 1, 500, 4, 20, 1.0
    else:
        n, rounds, m, consumers, samples, idle_s = 20_000, 3, 20_000, 4, 300, 10.0
    with pgcluster.throwaway("jm-bench-queue-") as cluster:
        dsn = cluster.dsn_for("postgres")
        setup = JobManager(dsn)
        setup.init_database()
        setup.close()

        async def install() -> None:
            conn = await asyncpg.connect(dsn)
            await Queries.from_asyncpg_connection(conn).install()
            await conn.close()

        asyncio.run(install())
        with psycopg.connect(dsn, autocommit=True) as c:
            server = c.execute("SHOW server_version").fetchone()[0]
        t0 = time.perf_counter()
        claims = case_claims(dsn, n, rounds)
        e2e = case_end_to_end(dsn, m, consumers, rounds)
        latency: dict[str, list[list[float]]] = {"job_manager": [], "pgqueuer": []}
        for r in range(rounds):
            for name in ["job_manager", "pgqueuer"][r % 2 :] + ["job_manager", "pgqueuer"][: r % 2]:
                f = jm_latency if name == "job_manager" else pgq_latency
                latency[name].append(f(dsn, samples))
                v = latency[name][-1]
                log(f"latency {name}: p50 {pct(v, 50):.2f} ms, p99 {pct(v, 99):.2f} ms")
        trigger = trigger_cost(dsn, m, rounds)
        idle = idle_cpu(dsn, idle_s)
        log(f"done in {time.perf_counter() - t0:.0f}s")

    impls = ["job_manager", "pooled-psycopg3", "pgqueuer"]
    cmd = "python bench/queue_waits.py" + (" --quick" if args.quick else "")
    lines = [
        "# Batch claims and waiting consumers: job_manager, pgqueuer, pooled psycopg 3",
        "",
        f"`{cmd}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC: Python "
        f"{platform.python_version()}, {platform.machine()}, a shared 2-core box (other "
        f"engineers' builds and tests were running: expect noise); PostgreSQL {server} "
        f"on 127.0.0.1 (throwaway cluster, scram-sha-256); pgqueuer {pg_version()} with "
        f"asyncpg {asyncpg.__version__}, psycopg {psycopg.__version__}. See the script's "
        "docstring for what each case does.",
        "",
        f"## Claims per second, one consumer, {n:,} queued jobs ({rounds} rounds, median)",
        "",
        "| batch | " + " | ".join(impls) + " | job_manager / pgqueuer |",
        "| ---: | " + " | ".join("---:" for _ in impls) + " | ---: |",
    ]
    med = {k: statistics.median(v) for k, v in claims.items()}
    for b in BATCHES:
        cells = [f"{med[(i, b)]:,.0f}" for i in impls]
        lines.append(
            f"| {b} | "
            + " | ".join(cells)
            + f" | {med[('job_manager', b)] / med[('pgqueuer', b)]:.2f}x |"
        )
    lines += [
        "",
        f"job_manager batch 100 vs its single claim: "
        f"{med[('job_manager', 100)] / med[('job_manager', 1)]:.1f}x.",
        "",
        f"## End to end: enqueue {m:,} no-op jobs, {consumers} consumers claim batches of 10 "
        f"and complete them ({rounds} rounds, median jobs/s)",
        "",
        "| implementation | jobs/s | per round |",
        "| --- | ---: | --- |",
    ]
    for i in impls:
        lines.append(
            f"| {i} | {statistics.median(e2e[i]):,.0f} | "
            + " / ".join(f"{v:,.0f}" for v in e2e[i])
            + " |"
        )
    lines += [
        "",
        f"## Wake-up latency, COMMIT to the consumer holding the job ({samples} jobs per round, "
        f"{rounds} rounds interleaved, ms)",
        "",
        "| implementation | p50 (median of rounds) | p99 (median of rounds) | p50 per round | "
        "p99 per round | max |",
        "| --- | ---: | ---: | --- | --- | ---: |",
    ]
    for name, runs in latency.items():
        p50s = [pct(v, 50) for v in runs]
        p99s = [pct(v, 99) for v in runs]
        lines.append(
            f"| {name} | {statistics.median(p50s):.2f} | {statistics.median(p99s):.2f} | "
            + " / ".join(f"{x:.2f}" for x in p50s)
            + " | "
            + " / ".join(f"{x:.2f}" for x in p99s)
            + f" | {max(max(v) for v in runs):.2f} |"
        )
    lines += [
        "",
        f"## Idle CPU: 8 waiting consumers, nothing queued, {idle_s:g} s",
        "",
        "| implementation | CPU ms over the wait | share of one core |",
        "| --- | ---: | ---: |",
    ]
    for name, cpu in idle.items():
        lines.append(f"| {name} | {cpu * 1000:.1f} | {cpu / idle_s * 100:.2f}% |")
    lines += [
        "",
        f"## What V6's NOTIFY trigger costs `add_jobs` ({m:,} new jobs, {rounds} rounds, "
        "median seconds)",
        "",
        "| trigger | seconds | per round |",
        "| --- | ---: | --- |",
    ]
    for name, values in trigger.items():
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | "
            + " / ".join(f"{v:.3f}" for v in values)
            + " |"
        )
    notes = Path(__file__).with_name("QUEUE_WAITS_NOTES.md")
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    text = "\n".join(lines) + "\n"
    print(text)
    raw = {
        "claims": {f"{k[0]} {k[1]}": v for k, v in claims.items()},
        "end_to_end": e2e,
        "latency_ms": latency,
        "idle_cpu_s": idle,
        "add_jobs_trigger_s": trigger,
    }
    if not args.quick:
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
