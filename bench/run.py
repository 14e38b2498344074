"""job_manager side by side with the Python code it replaces, pg_dump/psql and pgbench.

    bash bench/run.sh            # default sizes, writes BENCHMARKS.md (under 10 minutes)
    bash bench/run.sh --quick    # small sizes, for CI: proves the harness works

Every case runs job_manager and its baselines interleaved (the order rotates each round) for
several rounds, against the same database and data, and reports the median of each and the
ratio per round, so a noisy machine cannot fake a result.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import job_manager
import psycopg
import psycopg2
from job_manager import JobManager
from psycopg.conninfo import conninfo_to_dict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import CLAIM, STATS, PooledPython, SeedStyle

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import pgcluster  # noqa: E402

#: Set by --quick: small sizes whose timings judge nothing.
QUICK = False


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Result:
    case: str
    impl: str
    values: list[float]
    unit: str
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Case:
    name: str
    results: list[Result] = field(default_factory=list)
    bars: list[tuple[str, bool]] = field(default_factory=list)  # (text, met)
    notes: list[str] = field(default_factory=list)
    #: The `--only` name of the method that ran it.
    key: str = ""

    def __post_init__(self) -> None:
        log(f"== case: {self.name}")

    def add(self, r: Result) -> Result:
        self.results.append(r)
        return r

    def ratios(self, ours: Result, other: Result) -> list[float]:
        """Per round: how many times better job_manager is (>1 is better)."""
        out = []
        for a, b in zip(ours.values, other.values, strict=False):
            if ours.higher_is_better:
                out.append(a / b if b else float("inf"))
            else:
                out.append(b / a if a else float("inf"))
        return out

    def bar(self, text: str, met: bool) -> None:
        self.bars.append((text, met))
        if QUICK:
            # Quick sizes prove the harness runs; they say nothing about the bars.
            log(f"  bar: {text}: judged only by the full run (bash bench/run.sh)")
        else:
            log(f"  bar: {text}: {'MET' if met else 'MISSED'}")


def analyze_after_load_s(dsn: str, *targets: str) -> float:
    """Seconds of the statistics refresh job_manager runs after a load (planner.rs,
    `analyze_after_load`): ANALYZE of `targets` at statistics target 10, one transaction."""
    sql = "SET LOCAL default_statistics_target = 10;" + "".join(f" ANALYZE {t};" for t in targets)
    with psycopg.connect(dsn) as c:
        return timed(lambda: c.execute(sql))


#: A backup in a process of its own: its peak memory is the child's own VmHWM (ru_maxrss would
#: carry the high-water mark of the forked parent, this process, across exec).
BACKUP_CODE = (
    "import sys, json; from job_manager import JobManager;"
    "kw = json.loads(sys.argv[3]);"
    "i = JobManager(sys.argv[1]).backup_database(sys.argv[2], keep=None, **kw);"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0];"
    "print(json.dumps({'path': i.path, 'size': i.size_bytes, 'hwm_kb': int(hwm.split()[1])}))"
)


def backup_child(dsn: str, d: Path, **kwargs: object) -> dict[str, Any]:
    """`backup_database(d, keep=None, **kwargs)` in a child process: path, size, peak KiB."""
    out = subprocess.run(
        [sys.executable, "-c", BACKUP_CODE, dsn, str(d), json.dumps(kwargs)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def default_streams_here() -> int:
    """The streams job_manager's backup uses by default on this machine (see
    `src/backup/parallel.rs`, `default_streams`), before the server's limits."""
    return max(1, min(os.cpu_count() or 1, 4))


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class Bench:
    def __init__(self, dsn: str, quick: bool, bindir: Path) -> None:
        self.dsn = dsn
        self.quick = quick
        self.bindir = bindir
        self.cases: list[Case] = []
        params = conninfo_to_dict(dsn)
        self.pgenv = dict(
            os.environ,
            PGHOST=str(params.get("host", "127.0.0.1")),
            PGPORT=str(params.get("port", 5432)),
            PGUSER=str(params.get("user", "postgres")),
            PGPASSWORD=str(params.get("password", "")),
        )
        self.rounds = 2 if quick else 5
        self.heavy_rounds = 1 if quick else 3

    # -- helpers ------------------------------------------------------------------------------
    def db_dsn(self, dbname: str) -> str:
        params = conninfo_to_dict(self.dsn)
        auth = params["user"] + (f":{params['password']}" if params.get("password") else "")
        return f"postgresql://{auth}@{params['host']}:{params['port']}/{dbname}"

    def fresh_db(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.db_dsn(name)

    def pg_dump_tables(self, db: str, out: Path, *flags: str) -> None:
        """`pg_dump -t` of the tables a job_manager backup holds, from `db` into `out`."""
        subprocess.run(
            [
                self.tool("pg_dump"),
                *("-t", "jobs", "-t", "download_queue", "-t", "job_manager_schema_history"),
                *flags,
                *("-f", str(out), db),
            ],
            env=self.pgenv,
            check=True,
        )

    def fresh_db_for_pg_dump_of(self, source_dsn: str, name: str) -> str:
        """A new empty database `name` into which psql can load a `pg_dump_tables` file of
        `source_dsn`: pg_dump -t leaves out the functions the tables' triggers call
        (updated_at, the NOTIFY of V6), so their definitions are copied from the source."""
        with psycopg.connect(source_dsn, autocommit=True) as src:
            functions = [
                r[0]
                for r in src.execute(
                    "SELECT DISTINCT pg_get_functiondef(tgfoid) FROM pg_trigger "
                    "WHERE NOT tgisinternal "
                    "AND tgrelid IN ('jobs'::regclass, 'download_queue'::regclass)"
                )
            ]
        dsn = self.fresh_db(name)
        with psycopg.connect(dsn, autocommit=True) as c:
            for definition in functions:
                c.execute(definition)
        return dsn

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def pgbench(
        self, dbname: str, sql: str, seconds: float, prelude: str = "", clients: int = 1
    ) -> float:
        """Transactions per second of one statement, `pgbench -n -M prepared -c N`."""
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(prelude + sql.strip().replace("\n", " ") + ";\n")
            script = f.name
        try:
            out = subprocess.run(
                [
                    self.tool("pgbench"),
                    "-n",
                    "-M",
                    "prepared",
                    "-c",
                    "1",
                    "-T",
                    str(seconds),
                    "-f",
                    script,
                    dbname,
                ],
                env=self.pgenv,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            os.unlink(script)
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        assert m, out
        return float(m.group(1))

    def run(self, selected: list[str]) -> None:
        for name in selected:
            started = time.perf_counter()
            log(f"case {name} ...")
            before = len(self.cases)
            getattr(self, f"case_{name}")()
            for case in self.cases[before:]:
                case.key = name
            log(f"case {name} done in {time.perf_counter() - started:.1f}s")

    # -- cases ----------------------------------------------------------------------------------
    def case_construction(self) -> None:
        case = Case("JobManager() construction")
        self.cases.append(case)
        n = 20_000 if self.quick else 200_000
        dsn = self.db_dsn("bench_nothing_here")
        values = []
        for _ in range(self.rounds):
            t = timed(lambda: [JobManager(dsn) for _ in range(n)])
            values.append(rate(n, t))
        r = case.add(Result(case.name, "job_manager", values, "constructions/s"))
        with psycopg.connect(self.dsn, autocommit=True) as c:
            opened = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench_nothing_here'"
            ).fetchone()[0]
        case.bar(f"no connection opened (found {opened})", opened == 0)
        case.bar(f">= 100,000/s (median {r.median:,.0f}/s)", r.median >= 100_000)

    def case_single_calls(self) -> None:
        dsn = self.fresh_db("bench_calls")
        jm = JobManager(dsn)
        jm.init_database()
        n_fill = 20_000 if self.quick else 200_000
        jm.add_jobs([f"claimable {i}" for i in range(n_fill)], "VIDEO_PROD")
        max_id = n_fill
        impls: dict[str, object] = {
            "job_manager": jm,
            "pooled-python": PooledPython(dsn),
            "seed-style": SeedStyle(dsn),
        }
        n_fast = 500 if self.quick else 3000
        # seed-style is 50-170x slower: 100 calls per round measure it well enough.
        n_seed = 50 if self.quick else 100
        counter = [0]

        def next_prompt() -> str:
            counter[0] += 1
            return f"bench prompt {counter[0]} {time.perf_counter_ns()}"

        calls = {
            "add_job": (
                lambda impl: impl.add_job(next_prompt(), "IMAGE_TEST"),
                "WITH inserted AS (INSERT INTO jobs (prompt_text, job_type) VALUES "
                "('pgbench ' || :r || ' ' || :s, 'IMAGE_TEST') ON CONFLICT (prompt_text) "
                "DO NOTHING RETURNING id, job_type) SELECT id FROM inserted UNION ALL "
                "SELECT id FROM jobs WHERE prompt_text = 'pgbench ' || :r || ' ' || :s "
                "LIMIT 1",
                "\\set r random(1, 2000000000)\n\\set s random(1, 2000000000)\n",
            ),
            "get_and_lock_job": (
                lambda impl: impl.get_and_lock_job("VIDEO_PROD"),
                CLAIM.replace("%s", "'VIDEO_PROD'"),
                "",
            ),
            "check_table_exists": (
                lambda impl: impl.check_table_exists("jobs"),
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN "
                "pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE "
                "n.nspname = current_schema() AND c.relname::text = "
                "'jobs'::text AND c.relkind IN ('r', 'p'))",
                "",
            ),
            "get_job_by_id": (
                lambda impl: impl.get_job_by_id(1 + counter[0] % max_id),
                "SELECT id, prompt_text, status, job_type, local_path, gcs_uri, "
                "operation_id, error_message, created_at, updated_at FROM jobs "
                "WHERE id = :id",
                f"\\set id random(1, {max_id})\n",
            ),
        }
        floor_select1: list[float] = []
        for call, (fn, sql, prelude) in calls.items():
            case = Case(f"single call: {call}")
            self.cases.append(case)
            values: dict[str, list[float]] = {k: [] for k in [*impls, "pgbench (floor)"]}
            order = list(impls)
            for rnd in range(self.rounds):
                order = order[1:] + order[:1]
                for name in order:
                    impl = impls[name]
                    n = n_seed if name == "seed-style" else n_fast
                    fn(impl)  # warm: pool open, statements prepared

                    def loop(impl: object = impl, n: int = n, fn=fn) -> None:  # type: ignore[no-untyped-def]
                        for _ in range(n):
                            fn(impl)

                    values[name].append(rate(n, timed(loop)))
                values["pgbench (floor)"].append(self.pgbench("bench_calls", sql, 1, prelude))
                if call == "get_and_lock_job" and rnd == 0:
                    floor_select1.append(self.pgbench("bench_calls", "SELECT 1", 1))
            results = {k: case.add(Result(case.name, k, v, "calls/s")) for k, v in values.items()}
            ours = results["job_manager"]
            seed = statistics.median(case.ratios(ours, results["seed-style"]))
            pooled = statistics.median(case.ratios(ours, results["pooled-python"]))
            floor = ours.median / results["pgbench (floor)"].median
            case.bar(f">= 10x seed-style (median ratio {seed:.1f}x)", seed >= 10)
            case.bar(f">= 1.2x pooled-python (median ratio {pooled:.2f}x)", pooled >= 1.2)
            case.bar(f">= 70% of pgbench's rate ({floor:.0%})", floor >= 0.7)
        if floor_select1:
            self.cases[-1].notes.append(
                f"bare round trip on this machine: pgbench `SELECT 1` {floor_select1[0]:,.0f}/s"
            )
        for impl in impls.values():
            impl.close()

    def case_bulk_insert(self) -> None:
        case = Case("bulk insert (add_jobs)")
        self.cases.append(case)
        n = 10_000 if self.quick else 100_000
        dsn = self.fresh_db("bench_bulk")
        jm = JobManager(dsn)
        jm.init_database()
        pooled = PooledPython(dsn)
        values: dict[str, list[float]] = {
            "job_manager": [],
            "pooled-python (COPY)": [],
            "psql \\copy from a file (floor)": [],
        }
        analyze_s: list[float] = []
        for rnd in range(self.rounds):
            prompts = [f"bulk {rnd} {i} " + "x" * 40 for i in range(n)]
            with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
                f.writelines(f"{p}\tIMAGE_TEST\n" for p in prompts)
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("TRUNCATE jobs CASCADE")
            t0 = time.perf_counter()
            subprocess.run(
                [
                    self.tool("psql"),
                    "-X",
                    "-q",
                    "-d",
                    "bench_bulk",
                    "-c",
                    f"\\copy jobs (prompt_text, job_type) from '{f.name}'",
                ],
                env=self.pgenv,
                check=True,
            )
            values["psql \\copy from a file (floor)"].append(rate(n, time.perf_counter() - t0))
            os.unlink(f.name)
            for name in ["job_manager", "pooled-python (COPY)"][:: 1 if rnd % 2 else -1]:
                with psycopg.connect(dsn, autocommit=True) as c:
                    c.execute("TRUNCATE jobs CASCADE")
                if name == "job_manager":
                    t = timed(lambda p=prompts: jm.add_jobs(p, "IMAGE_TEST"))
                    # What add_jobs runs after the COPY, timed alone on the loaded table.
                    analyze_s.append(
                        analyze_after_load_s(dsn, "jobs (job_type, status, created_at)")
                    )
                else:
                    t = timed(lambda p=prompts: pooled.copy_jobs(p, "IMAGE_TEST"))
                values[name].append(rate(n, t))
        ours = case.add(Result(case.name, "job_manager", values["job_manager"], "rows/s"))
        other = case.add(
            Result(case.name, "pooled-python (COPY)", values["pooled-python (COPY)"], "rows/s")
        )
        case.add(
            Result(
                case.name,
                "psql \\copy from a file (floor)",
                values["psql \\copy from a file (floor)"],
                "rows/s",
            )
        )
        ratio = statistics.median(case.ratios(ours, other))
        case.bar(f">= pooled-python's COPY rate (median ratio {ratio:.2f}x)", ratio >= 1.0)
        case.bar(f">= 200,000 rows/s (median {ours.median:,.0f})", ours.median >= 200_000)
        took = n / ours.median
        case.notes.append(
            f"of job_manager's {took:.2f} s per {n:,} rows, the statistics it refreshes after "
            f"the load (timed alone) take {statistics.median(analyze_s):.3f} s; the rest is "
            "checking the prompts, a 64-prompt lookup and the COPY"
        )
        pooled.close()

    def case_concurrency(self) -> None:
        case = Case("concurrent claims, one shared JobManager")
        self.cases.append(case)
        dsn = self.fresh_db("bench_threads")
        jm = JobManager(dsn, pool_size=4)
        jm.init_database()
        per_round = 4_000 if self.quick else 10_000
        values: dict[str, list[float]] = {"1 thread": [], "4 threads": []}
        duplicates = 0
        for _ in range(self.rounds):
            for threads in (1, 4):
                jm.add_jobs(
                    [f"c {time.perf_counter_ns()} {i}" for i in range(per_round)], "IMAGE_TEST"
                )
                claimed: list[list[int]] = [[] for _ in range(threads)]

                def work(slot: list[int]) -> None:
                    while (job := jm.get_and_lock_job("IMAGE_TEST")) is not None:
                        slot.append(job["id"])

                ts = [threading.Thread(target=work, args=(claimed[i],)) for i in range(threads)]
                t0 = time.perf_counter()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                elapsed = time.perf_counter() - t0
                ids = [i for s in claimed for i in s]
                duplicates += len(ids) - len(set(ids))
                assert len(ids) == per_round, (len(ids), per_round)
                values[f"{threads} thread{'s' if threads > 1 else ''}"].append(
                    rate(len(ids), elapsed)
                )
        one = case.add(Result(case.name, "1 thread", values["1 thread"], "claims/s"))
        four = case.add(Result(case.name, "4 threads", values["4 threads"], "claims/s"))
        ratio = statistics.median(case.ratios(four, one))
        jm.add_jobs(
            [
                f"pgb {time.perf_counter_ns()} {i}"
                for i in range(200_000 if not self.quick else 40_000)
            ],
            "VIDEO_PROD",
        )
        claim = CLAIM.replace("%s", "'VIDEO_PROD'")
        secs = 1 if self.quick else 3
        c1 = self.pgbench("bench_threads", claim, secs)
        c4 = self.pgbench("bench_threads", claim, secs, clients=4)
        case.add(Result(case.name, "pgbench -c 1 (floor)", [c1], "claims/s"))
        case.add(Result(case.name, "pgbench -c 4 (floor)", [c4], "claims/s"))
        case.notes.append(
            f"PostgreSQL's own scaling of this statement here: pgbench -c 4 / -c 1 = {c4 / c1:.2f}x on {os.cpu_count()} cores"
        )
        case.bar(f"4 threads >= 1.5x one thread (median ratio {ratio:.2f}x)", ratio >= 1.5)
        case.bar(f"every job claimed exactly once ({duplicates} duplicates)", duplicates == 0)

    def prefill(self, name: str, prompt: Callable[[int], str]) -> tuple[str, int, str]:
        """A large dataset in a new database `name`: N pending jobs whose i-th prompt is
        `prompt(i)`, alternating job types by 100,000, a download for every tenth job, vacuumed
        and analyzed. Returns (dsn, N, the size of `jobs` with its indexes)."""
        n = 50_000 if self.quick else 1_000_000
        dsn = self.fresh_db(name)
        jm = JobManager(dsn)
        jm.init_database()
        t0 = time.perf_counter()
        batch = 100_000
        for start in range(0, n, batch):
            jm.add_jobs(
                [prompt(i) for i in range(start, min(n, start + batch))],
                "VIDEO_PROD" if start % (2 * batch) else "IMAGE_TEST",
            )
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "INSERT INTO download_queue (job_id, remote_url, local_path, file_type) "
                "SELECT id, 'gs://bucket/' || id, '/out/' || id, 'video' FROM jobs WHERE id % 10 = 0"
            )
            c.execute("VACUUM ANALYZE jobs")
            c.execute("VACUUM ANALYZE download_queue")
            size = c.execute("SELECT pg_size_pretty(pg_total_relation_size('jobs'))").fetchone()[0]
        log(f"  prefilled {n:,} jobs in {name} ({size}) in {time.perf_counter() - t0:.1f}s")
        return dsn, n, size

    def prefill_big(self) -> tuple[str, int]:
        """The large dataset: N pending jobs with ~300-byte prompts, plus downloads."""
        filler = "lorem ipsum dolor sit amet, 一只可爱的小猫, consectetur \\ adipiscing\t " * 4
        self.big = self.prefill("bench_big", lambda i: f"big {i} {filler[: 280 - len(str(i))]}")
        return self.big[0], self.big[1]

    def prefill_varied(self) -> tuple[str, int, str]:
        """The large dataset again with prompts as varied as real ones: each a different
        sequence of 35-55 words drawn (seeded, Zipf-weighted, as words in text are) from a
        vocabulary of 20,000 made-up words, so no compressor finds long repeats to copy. The
        repeated filler of `prefill_big` compresses far better than real prompts do."""
        if getattr(self, "varied", None):
            return self.varied
        rng = random.Random(17)
        syllables = [
            a + b for a in "bcdfghklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou")
        ]
        vocab = sorted(
            {"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(25_000)}
        )[:20_000]
        rng.shuffle(vocab)
        cum = list(itertools.accumulate(1 / rank for rank in range(1, len(vocab) + 1)))
        self.varied = self.prefill(
            "bench_varied",
            lambda i: (
                f"{i} " + " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(35, 55)))
            ),
        )
        return self.varied

    def case_stats(self) -> None:
        dsn, n = self.prefill_big()
        case = Case(f"get_job_stats on {n:,} jobs")
        self.cases.append(case)
        jm = JobManager(dsn)
        pooled = PooledPython(dsn)
        reps = 5 if self.quick else 20
        values: dict[str, list[float]] = {
            "job_manager": [],
            "pooled-python": [],
            "psql/pgbench (same query)": [],
        }
        for _ in range(self.rounds):
            jm.get_job_stats()
            values["job_manager"].append(
                timed(lambda: [jm.get_job_stats() for _ in range(reps)]) / reps * 1000
            )
            pooled.get_job_stats()
            values["pooled-python"].append(
                timed(lambda: [pooled.get_job_stats() for _ in range(reps)]) / reps * 1000
            )
            tps = self.pgbench("bench_big", STATS, 1 if self.quick else 3)
            values["psql/pgbench (same query)"].append(1000 / tps)
        results = {
            k: case.add(Result(case.name, k, v, "ms per call", higher_is_better=False))
            for k, v in values.items()
        }
        ratio = results["job_manager"].median / results["psql/pgbench (same query)"].median
        case.bar(f"within 1.2x of the query run by pgbench ({ratio:.2f}x the time)", ratio <= 1.2)
        pooled.close()

    def case_backup_restore(self) -> None:
        dsn, n = self.big[0], self.big[1]
        case = Case(f"backup and restore of {n:,} jobs ({self.big[2]}) + downloads")
        self.cases.append(case)
        work = Path(tempfile.mkdtemp(prefix="jm-bench-"))
        # Peak memory is the child's own VmHWM: ru_maxrss would carry the high-water mark of
        # the forked parent (this process, holding the prefill data) across exec.
        values: dict[str, list[float]] = {
            k: []
            for k in (
                "backup: job_manager",
                "backup: job_manager streams=1",
                "backup: job_manager streams=2",
                "backup: job_manager streams=4",
                "backup: pg_dump -t (same tables)",
                "backup: psql \\copy to /dev/null (floor)",
                "restore: job_manager",
                "restore: psql --single-transaction (pg_dump's file)",
            )
        }
        rss: list[float] = []
        rss_by_streams: dict[str, list[float]] = {"1": [], "2": [], "4": []}
        verify_s: list[float] = []
        analyze_s: list[float] = []
        files: dict[str, Path] = {}

        def ours(d: Path) -> None:
            made = backup_child(dsn, d / "default")
            files["ours"] = Path(made["path"])
            rss.append(made["hwm_kb"] / 1024)

        def ours_streams(n: int) -> Callable[[Path], None]:
            def step(d: Path) -> None:
                made = backup_child(dsn, d / f"s{n}", streams=n)
                rss_by_streams[str(n)].append(made["hwm_kb"] / 1024)

            return step

        def pg_dump(d: Path) -> None:
            files["pg_dump"] = d / "pg_dump.sql"
            self.pg_dump_tables("bench_big", files["pg_dump"])

        def floor(_: Path) -> None:
            for table in ("jobs", "download_queue"):
                subprocess.run(
                    [
                        self.tool("psql"),
                        "-X",
                        "-q",
                        "-d",
                        "bench_big",
                        "-c",
                        f"\\copy {table} to /dev/null",
                    ],
                    env=self.pgenv,
                    check=True,
                )

        backups = [
            ("backup: job_manager", ours),
            ("backup: job_manager streams=1", ours_streams(1)),
            ("backup: job_manager streams=2", ours_streams(2)),
            ("backup: job_manager streams=4", ours_streams(4)),
            ("backup: pg_dump -t (same tables)", pg_dump),
            ("backup: psql \\copy to /dev/null (floor)", floor),
        ]
        restore_dsn = self.fresh_db("bench_restore")
        JobManager(restore_dsn).init_database()
        try:
            # Backups are short and this machine is noisy: more rounds, the order rotated.
            for rnd in range(2 if self.quick else 7):
                d = work / f"r{rnd}"
                d.mkdir()
                k = rnd % len(backups)
                for name, step in backups[k:] + backups[:k]:
                    # Nothing left to write back from the step before: job_manager's fsync
                    # would otherwise also wait for the other tools' dirty pages.
                    os.sync()
                    values[name].append(timed(lambda step=step, d=d: step(d)))
                if rnd:
                    shutil.rmtree(work / f"r{rnd - 1}")
            for rnd in range(self.heavy_rounds):
                # Both restores into empty tables: ours into a database with the schema (the
                # previous round's rows removed untimed), pg_dump's file into a fresh one.
                with psycopg.connect(restore_dsn, autocommit=True) as c:
                    c.execute("TRUNCATE download_queue, jobs")
                verify_s.append(timed(lambda: job_manager.verify_backup(files["ours"])))
                self.fresh_db_for_pg_dump_of(dsn, "bench_restore_psql")
                target = JobManager(restore_dsn)
                restores = [
                    (
                        "restore: job_manager",
                        lambda t=target: t.restore_database(files["ours"], safety_backup=False),
                    ),
                    (
                        "restore: psql --single-transaction (pg_dump's file)",
                        lambda: subprocess.run(
                            [
                                *(self.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"),
                                *("--single-transaction", "-f", str(files["pg_dump"])),
                                *("-d", "bench_restore_psql"),
                            ],
                            env=self.pgenv,
                            check=True,
                            stdout=subprocess.DEVNULL,
                        ),
                    ),
                ]
                for name, step in restores if rnd % 2 == 0 else restores[::-1]:
                    os.sync()
                    values[name].append(timed(step))
                target.close()
                analyze_s.append(
                    analyze_after_load_s(
                        restore_dsn,
                        "jobs (job_type, status, created_at, updated_at)",
                        "download_queue (status, file_type, priority, created_at, completed_at)",
                    )
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res = {
            k: case.add(Result(case.name, k, v, "seconds", higher_is_better=False))
            for k, v in values.items()
        }
        case.add(
            Result(case.name, "backup: job_manager peak RSS", rss, "MiB", higher_is_better=False)
        )
        b = statistics.median(
            case.ratios(res["backup: job_manager"], res["backup: pg_dump -t (same tables)"])
        )
        r = statistics.median(
            case.ratios(
                res["restore: job_manager"],
                res["restore: psql --single-transaction (pg_dump's file)"],
            )
        )
        for n, hwm in rss_by_streams.items():
            case.add(
                Result(
                    case.name,
                    f"backup: job_manager streams={n} peak RSS",
                    hwm,
                    "MiB",
                    higher_is_better=False,
                )
            )
        case.bar(f"backup >= 1.5x pg_dump's speed (pg_dump takes {b:.2f}x ours)", b >= 1.5)
        one = res["backup: job_manager streams=1"]
        speedups = {
            n: statistics.median(case.ratios(res[f"backup: job_manager streams={n}"], one))
            for n in (2, 4)
        }
        default_vs_one = statistics.median(case.ratios(res["backup: job_manager"], one))
        case.notes.append(
            "speed-up over 1 stream (median of per-round ratios): "
            f"2 streams {speedups[2]:.2f}x, 4 streams {speedups[4]:.2f}x; the default "
            f"({default_streams_here()} stream(s) on this machine) {default_vs_one:.2f}x"
        )
        case.bar(
            f"the default is not slower than 1 stream ({default_vs_one:.2f}x; within 10%)",
            default_vs_one >= 0.9,
        )
        peak = max(statistics.median(v) for v in [rss, *rss_by_streams.values()])
        case.bar(f"backup peak RSS < 100 MB (largest median {peak:.0f} MiB)", peak < 100)
        case.bar(f"restore <= psql of pg_dump's file (psql takes {r:.2f}x ours)", r >= 1.0)
        case.notes.append(
            "steps of job_manager's restore that psql does not take, timed alone: reading and "
            f"checking the whole file first (`verify_backup`) {statistics.median(verify_s):.2f} s; "
            "refreshing the planner's statistics afterwards (the ANALYZE it runs) "
            f"{statistics.median(analyze_s):.2f} s"
        )

    def case_compressed_backup(self) -> None:
        """Compressed backups: job_manager's zstd (the default compressed format) and gzip
        against `pg_dump -Z 6` (plain format, gzip level 6) of the same tables, on the
        repeated-filler dataset and on one of varied prompts."""
        self.compressed_backup_of(
            self.big[0], f"compressed backup of {self.big[1]:,} jobs ({self.big[2]}) + downloads"
        )
        dsn, n, size = self.prefill_varied()
        self.compressed_backup_of(
            dsn, f"compressed backup of {n:,} jobs with varied prompts ({size}) + downloads"
        )

    def compressed_backup_of(self, dsn: str, name: str) -> None:
        db = conninfo_to_dict(dsn)["dbname"]
        case = Case(name)
        self.cases.append(case)
        work = Path(tempfile.mkdtemp(prefix="jm-bench-z-"))
        names = (
            "compressed: job_manager zstd",
            "compressed: job_manager gzip",
            "compressed: pg_dump -Z 6 (gzip)",
        )
        times: dict[str, list[float]] = {k: [] for k in names}
        sizes: dict[str, list[float]] = {k: [] for k in names}
        rss: list[float] = []

        def ours(d: Path, compress: str) -> float:
            made = backup_child(dsn, d, compress=compress)
            rss.append(made["hwm_kb"] / 1024)
            return made["size"] / 2**20

        def pg_dump(d: Path) -> float:
            out = d / "pg_dump.sql.gz"
            d.mkdir(parents=True)
            self.pg_dump_tables(str(db), out, "-Z", "6")
            return out.stat().st_size / 2**20

        steps: list[tuple[str, Callable[[Path], float]]] = [
            (names[0], lambda d: ours(d, "zstd")),
            (names[1], lambda d: ours(d, "gzip")),
            (names[2], pg_dump),
        ]
        try:
            for rnd in range(1 if self.quick else self.heavy_rounds):
                for name, step in steps[rnd % 3 :] + steps[: rnd % 3]:
                    d = work / f"r{rnd}-{names.index(name)}"
                    os.sync()
                    t = time.perf_counter()
                    size = step(d)
                    times[name].append(time.perf_counter() - t)
                    sizes[name].append(size)
                    shutil.rmtree(d)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        res = {
            k: case.add(Result(case.name, k, v, "seconds", higher_is_better=False))
            for k, v in times.items()
        }
        for k, v in sizes.items():
            case.add(Result(case.name, f"size: {k.split(': ', 1)[1]}", v, "MiB", False))
        case.add(Result(case.name, "compressed: job_manager peak RSS", rss, "MiB", False))
        z = statistics.median(case.ratios(res[names[0]], res[names[2]]))
        zs = statistics.median(sizes[names[0]])
        ps = statistics.median(sizes[names[2]])
        case.bar(f"zstd backup >= 3x faster than pg_dump -Z 6 ({z:.2f}x)", z >= 3.0)
        case.bar(f"zstd file no larger than pg_dump -Z 6's ({zs:.0f} vs {ps:.0f} MiB)", zs <= ps)

    def case_claims_big(self) -> None:
        dsn, n = self.big[0], self.big[1]
        case = Case(f"claims on a queue of {n:,} jobs")
        self.cases.append(case)
        jm = JobManager(dsn)
        per = 2_000 if self.quick else 10_000
        start: list[float] = []
        half: list[float] = []
        for _ in range(self.rounds):
            start.append(
                rate(per, timed(lambda: [jm.get_and_lock_job("IMAGE_TEST") for _ in range(per)]))
            )
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "UPDATE jobs SET status = 'completed' WHERE id IN (SELECT id FROM jobs "
                "WHERE status = 'pending' AND job_type = 'IMAGE_TEST' ORDER BY created_at, id "
                "LIMIT (SELECT count(*) / 2 FROM jobs WHERE job_type = 'IMAGE_TEST'))"
            )
            processed = c.execute(
                "SELECT count(*) FILTER (WHERE status <> 'pending')::float / count(*) FROM jobs "
                "WHERE job_type = 'IMAGE_TEST'"
            ).fetchone()[0]
        for _ in range(self.rounds):
            half.append(
                rate(per, timed(lambda: [jm.get_and_lock_job("IMAGE_TEST") for _ in range(per)]))
            )
        floor = self.pgbench(
            "bench_big", CLAIM.replace("%s", "'IMAGE_TEST'"), 1 if self.quick else 3
        )
        a = case.add(Result(case.name, "job_manager, at the start", start, "claims/s"))
        b = case.add(Result(case.name, f"job_manager, {processed:.0%} processed", half, "claims/s"))
        case.add(
            Result(case.name, "pgbench (floor), same statement, at the end", [floor], "claims/s")
        )
        case.bar(
            f">= 5,000 claims/s (start {a.median:,.0f}, later {b.median:,.0f})",
            min(a.median, b.median) >= 5000,
        )
        slow = 1 - b.median / a.median
        case.bar(f"no more than 20% slower after half is processed ({slow:+.0%})", slow <= 0.2)

    def case_logs(self) -> None:
        n = 5_000 if self.quick else 100_000
        case = Case(f"cleanup_old_logs on a {n:,}-file Airflow log tree (half old)")
        self.cases.append(case)
        work = Path(tempfile.mkdtemp(prefix="jm-bench-logs-"))
        old = time.time() - 10 * 86400

        def make_tree(root: Path, old_only: bool) -> None:
            """The tree: n files over 50 DAGs x 1000 runs x 7 tasks, every other one old.
            With `old_only`, (re)creates just the old half: what the sweep before deleted."""
            dirs: dict[tuple[int, int, int], str] = {}
            for i in range(0, n, 2 if old_only else 1):
                key = (i % 50, i % 1000, i % 7)
                if key not in dirs:
                    d = (
                        root
                        / f"dag_id=dag_{key[0]}"
                        / f"run_id=run_{key[1]}"
                        / f"task_id=task_{key[2]}"
                    )
                    d.mkdir(parents=True, exist_ok=True)
                    dirs[key] = str(d)
                fd = os.open(f"{dirs[key]}/attempt={i}.log", os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"x" * 64)
                if i % 2 == 0:
                    os.utime(fd, (old, old))
                os.close(fd)

        values: dict[str, list[float]] = {
            "job_manager.cleanup_old_logs": [],
            "find -mtime +7 -delete": [],
        }
        a, b = work / "a", work / "b"
        try:
            for rnd in range(self.heavy_rounds):
                # The trees are built once; each later round puts back the old half the
                # sweeps deleted (building 100,000 files is slower than sweeping them).
                make_tree(a, old_only=rnd > 0)
                make_tree(b, old_only=rnd > 0)
                # Both trees on disk before either sweep: otherwise the one built first is
                # still being written back while it is swept.
                subprocess.run(["sync"], check=True)
                pairs = [("job_manager.cleanup_old_logs", a), ("find -mtime +7 -delete", b)]
                for name, root in pairs if rnd % 2 == 0 else pairs[::-1]:
                    if name.startswith("job_manager"):
                        t = timed(
                            lambda root=root: job_manager.cleanup_old_logs(
                                root, 7, remove_empty_dirs=False
                            )
                        )
                    else:
                        t = timed(
                            lambda root=root: subprocess.run(
                                ["find", str(root), "-name", "*.log", "-mtime", "+7", "-delete"],
                                check=True,
                            )
                        )
                    values[name].append(t)
                left = [sum(len(f) for _, _, f in os.walk(root)) for root in (a, b)]
                assert left[0] == left[1] == n // 2, left
        finally:
            shutil.rmtree(work, ignore_errors=True)
        ours = case.add(
            Result(
                case.name,
                "job_manager.cleanup_old_logs",
                values["job_manager.cleanup_old_logs"],
                "seconds",
                higher_is_better=False,
            )
        )
        find = case.add(
            Result(
                case.name,
                "find -mtime +7 -delete",
                values["find -mtime +7 -delete"],
                "seconds",
                higher_is_better=False,
            )
        )
        ratio = statistics.median(case.ratios(ours, find))
        case.bar(f"<= find's time (find takes {ratio:.2f}x ours)", ratio >= 1.0)


CASES = [
    "construction",
    "single_calls",
    "bulk_insert",
    "concurrency",
    "stats",
    "backup_restore",
    "compressed_backup",
    "claims_big",
    "logs",
]


def fmt(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def group(r: Result) -> str:
    return r.impl.split(":")[0] if ":" in r.impl else ""


def report(bench: Bench, command: str, server_version: str, settings: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- machine: {machine()}",
        f"- PostgreSQL {server_version} on the same machine, over TCP to 127.0.0.1 with "
        f"scram-sha-256 passwords; {settings}",
        f"- job_manager {job_manager.__version__} (release wheel), Python {platform.python_version()}, "
        f"psycopg {psycopg.__version__}, psycopg2 {psycopg2.__version__.split()[0]}",
        f"- {bench.rounds} rounds per case ({2 if bench.quick else 7} for backups, "
        f"{bench.heavy_rounds} for restores and logs), "
        "implementations interleaved with the order rotated each round; values are medians, "
        "ratios are computed per round and their median shown.",
        "",
        "Baselines (in `bench/baselines.py`, never shipped): **seed-style** is the replaced "
        "JobManager (psycopg2, a new connection per call, check-then-insert); **pooled-python** is "
        "psycopg 3 with psycopg_pool and prepared statements (COPY for bulk); **pgbench** "
        "(`-n -M prepared -c 1`) running the very statement job_manager sends is the floor: what "
        "PostgreSQL itself allows here.",
        "",
    ]
    lines.append(report_cases(bench.cases))
    notes = Path(__file__).with_name("NOTES.md")
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    return "\n".join(lines)


def case_key(heading: str) -> str:
    """A section's identity across runs: its heading without the sizes measured in it
    ("backup and restore of 1,000,000 jobs (1256 MB) + downloads" -> "backup and restore of
    jobs + downloads")."""
    return " ".join(re.sub(r"\([^)]*\)|[\d,.]+", " ", heading).split())


def report_cases(cases: list[Case], rerun: str = "", stamp: str = "") -> str:
    """The Markdown sections of `cases`; with `rerun`, each says it was re-run alone."""
    lines: list[str] = []
    for case in cases:
        lines += [f"## {case.name}", ""]
        if rerun:
            lines += [f"Re-run alone by `{rerun}` on {stamp}; other sections are older.", ""]
        lines += [
            "| implementation | median | unit | per round | ratio (job_manager vs it, per round) |",
            "| --- | ---: | --- | --- | --- |",
        ]
        for r in case.results:
            per_round = " / ".join(fmt(v) for v in r.values)
            # Compared with job_manager's row of the same group ("backup: ...", "restore: ...").
            ours = next(o for o in case.results if o.unit == r.unit and group(o) == group(r))
            ratio = ""
            if r is not ours and len(r.values) == len(ours.values):
                ratio = " / ".join(f"{x:.2f}x" for x in case.ratios(ours, r))
            lines.append(f"| {r.impl} | {fmt(r.median)} | {r.unit} | {per_round} | {ratio} |")
        lines.append("")
        for text, met in case.bars:
            verdict = "(judged by the full run only)" if QUICK else ("✅" if met else "❌")
            lines.append(f"- {verdict} {text}")
        for note in case.notes:
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines)


def merge_sections(old: str, new_sections: str) -> str:
    """`old` (a whole BENCHMARKS.md) with the case sections of `new_sections` put in place of
    the sections of the same cases (or after the last case section when new), and the notes
    at the end refreshed from bench/NOTES.md."""
    notes_path = Path(__file__).with_name("NOTES.md")
    notes = notes_path.read_text().strip() if notes_path.exists() else ""
    first_note = notes.splitlines()[0] if notes else None
    head, _, rest = old.partition("\n## ")
    rest = "## " + rest
    if first_note and first_note in rest:
        rest = rest[: rest.index(first_note)]
    sections = [s for s in re.split(r"(?m)^(?=## )", rest) if s.strip()]
    for new in re.split(r"(?m)^(?=## )", new_sections):
        if not new.strip():
            continue
        key = case_key(new.splitlines()[0][3:])
        at = next(
            (i for i, s in enumerate(sections) if case_key(s.splitlines()[0][3:]) == key), None
        )
        if at is None:
            sections.append(new)
        else:
            sections[at] = new
    body = "".join(s.rstrip("\n") + "\n\n" for s in sections)
    return head.rstrip("\n") + "\n\n" + body + notes


def merge_json(path: Path, cases: list[Case]) -> None:
    raw = json.loads(path.read_text()) if path.exists() else []
    for case in cases:
        entry = {
            "case": case.name,
            "bars": case.bars,
            "notes": case.notes,
            "results": [{"impl": r.impl, "values": r.values, "unit": r.unit} for r in case.results],
        }
        at = next(
            (i for i, c in enumerate(raw) if case_key(c["case"]) == case_key(case.name)), None
        )
        if at is None:
            raw.append(entry)
        else:
            raw[at] = entry
    path.write_text(json.dumps(raw, indent=1) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--only", action="append", choices=CASES, help="run only these cases")
    parser.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    with pgcluster.bench_server() as (dsn, bindir, cluster):
        settings = (
            f"a throwaway cluster started by the bench ({cluster.options.split(' -c ', 1)[1].replace(' -c ', ', ')})"
            if cluster
            else "server settings as configured"
        )
        with psycopg.connect(dsn, autocommit=True) as c:
            server_version = c.execute("SHOW server_version").fetchone()[0]
        global QUICK
        QUICK = args.quick
        bench = Bench(dsn, args.quick, bindir)
        selected = args.only or CASES
        big = ("backup_restore", "compressed_backup", "claims_big")
        if any(c in selected for c in big) and "stats" not in selected:
            selected = ["stats", *selected]
        t0 = time.perf_counter()
        bench.run([c for c in CASES if c in selected])
        # The cases asked for by name (not the prefill they needed): with --only, only their
        # sections of the output file are replaced.
        ran = [c.name for c in bench.cases if args.only is None or c.key in args.only]
        command = "bash bench/run.sh" + (" --quick" if args.quick else "")
        text = report(bench, command, server_version, settings)
        print(text)
        log(f"all cases done in {time.perf_counter() - t0:.0f}s")
        if not args.no_write and args.only and args.output.exists():
            # Only the cases asked for: their sections replace those of the same cases in
            # the existing file; every other section stays as its own run wrote it.
            rerun = [c for c in bench.cases if case_key(c.name) in {case_key(n) for n in ran}]
            stamp = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
            only = " ".join(f"--only {c}" for c in args.only)
            args.output.write_text(
                merge_sections(
                    args.output.read_text(), report_cases(rerun, f"bash bench/run.sh {only}", stamp)
                )
                + "\n"
            )
            merge_json(args.output.with_suffix(".json"), rerun)
            log(f"updated {len(rerun)} section(s) of {args.output}")
        elif not args.no_write:
            args.output.write_text(text + "\n")
            raw = [
                {
                    "case": c.name,
                    "bars": c.bars,
                    "notes": c.notes,
                    "results": [
                        {"impl": r.impl, "values": r.values, "unit": r.unit} for r in c.results
                    ],
                }
                for c in bench.cases
            ]
            args.output.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
            log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
