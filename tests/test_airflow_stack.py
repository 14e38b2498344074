"""A real running Airflow, as docker-compose.yml's Celery profile deploys it: api-server,
scheduler, dag-processor and triggerer as separate processes, Redis as the broker, two
`airflow celery worker` processes with different host names, the metadata and the queue on the
suite's PostgreSQL, everything configured by the compose file itself (tests/airflow_stack.py).

The DAGs are triggered through the REST API v2 with a JWT from the auth manager, as an
operator would. One stack serves the whole module (starting it is most of the cost).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from airflow_stack import REDIS, Stack, poll, printed_on_failure
from conftest import Server
from job_manager import JobManager, verify_backup
from nethelpers import Bouncer, find_pgbouncer, start_pgbouncer
from psycopg.conninfo import conninfo_to_dict

AIRFLOW_PYTHON = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not AIRFLOW_PYTHON, reason="needs $JOB_MANAGER_AIRFLOW_PYTHON (scripts/test.sh sets it)"
    ),
    pytest.mark.skipif(not Path(REDIS).exists(), reason=f"needs Debian's redis-server ({REDIS})"),
]

EXAMPLE = "job_queue_example"
#: What the compose file names the example's scratch database (its Connection).
EXAMPLE_DB = "job_queue_example"
CONSUMERS_PER_RUN = 4
PROMPTS_PER_RUN = 1000
#: The stack's scheduler notices a dead worker's task instances after this long without a
#: heartbeat (Airflow's default, 300 s, is the only setting the stack changes; README says so).
HEARTBEAT_TIMEOUT_S = 20


@contextlib.contextmanager
def started_stack(
    server: Server, factory: pytest.TempPathFactory, executor: str
) -> Iterator[Stack]:
    """The whole deployment, up and with the four DAGs parsed; stopped and its databases
    dropped afterwards. LocalExecutor is the compose file's default (no Redis, no workers)."""
    if server.cluster is None:
        pytest.skip("needs the suite's throwaway cluster (its psql and superuser)")
    params = conninfo_to_dict(server.admin_dsn)
    s = Stack(
        base=factory.mktemp("airflow-stack"),
        pg_port=int(params["port"]),
        superuser=str(params["user"]),
        superpassword=str(params.get("password") or ""),
        bindir=Path(server.cluster.bindir),
        executor=executor,
    )
    celery = executor == "CeleryExecutor"
    try:
        with printed_on_failure(s):
            s.prepare(Path(AIRFLOW_PYTHON or ""))
            lines = "\n".join(f"prompt {i}" for i in range(PROMPTS_PER_RUN))
            (s.home / "dags" / "prompts" / "many.txt").write_text(lines + "\n")
            s.setup_databases()
            if celery:
                s.start_redis()
            s.start_airflow(
                AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S)
            )
            if celery:
                for name in ("worker-a", "worker-b"):
                    s.start_worker(name, concurrency=CONSUMERS_PER_RUN)
                s.wait_workers(["worker-a", "worker-b"])
            for dag_id in ("job_manager_init", "job_manager_backup", "job_manager_maintenance"):
                s.wait_dag(dag_id)
            s.wait_dag(EXAMPLE)
        yield s
    finally:
        s.stop()
        with server.admin() as c:
            for db in (s.dotenv.get("POSTGRES_DB"), s.dotenv.get("JOB_MANAGER_DB"), EXAMPLE_DB):
                if db:
                    c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            c.execute("DROP ROLE IF EXISTS job_manager")


@pytest.fixture(scope="module")
def stack(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose file's celery profile: CeleryExecutor, Redis, two workers."""
    with started_stack(server, tmp_path_factory, "CeleryExecutor") as s:
        yield s


def queue_dsn(server: Server, stack: Stack) -> str:
    return server.dsn_for(stack.dotenv["JOB_MANAGER_DB"])


def example_dsn(server: Server) -> str:
    return server.dsn_for(EXAMPLE_DB)


def all_ids(c: psycopg.Connection) -> set[int]:
    """Every job id in the example's database (none before its first run made the table)."""
    if c.execute("SELECT to_regclass('jobs')").fetchone()[0] is None:
        return set()
    return {r[0] for r in c.execute("SELECT id FROM jobs").fetchall()}


def states(stack: Stack, dag_id: str, run_id: str) -> dict[str, str]:
    out = {}
    for ti in stack.task_instances(dag_id, run_id):
        key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
        out[key] = ti["state"]
    return out


def open_connections(server: Server, dbname: str) -> int:
    with server.admin() as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'job_manager'",
            (dbname,),
        ).fetchone()
    return int(row[0]) if row else -1


class PeakConnections:
    """Samples the server's backends on `dbname` every 50 ms: the most seen at once."""

    def __init__(self, server: Server, dbname: str, user: str) -> None:
        self.server, self.dbname, self.user = server, dbname, user
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.admin() as c:
            while not self._stop.is_set():
                row = c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                    (self.dbname, self.user),
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                time.sleep(0.05)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_the_four_dags_through_the_rest_api(server: Server, stack: Stack) -> None:
    """Each DAG triggered as an operator would, on the compose file's configuration: the
    schema is current, a backup is written under the mounted backups folder and verifies, the
    maintenance run ends with a health report, the example's jobs are all completed."""
    with printed_on_failure(stack):
        with JobManager(queue_dsn(server, stack)) as jm:
            jm.add_jobs([f"queued {i}" for i in range(50)], "IMAGE_TEST")
        runs = {
            "job_manager_init": stack.trigger("job_manager_init"),
            "job_manager_backup": stack.trigger("job_manager_backup"),
            "job_manager_maintenance": stack.trigger("job_manager_maintenance"),
            EXAMPLE: stack.trigger(EXAMPLE, {"workers": 2}),
        }
        for dag_id, run_id in runs.items():
            assert stack.wait_run(dag_id, run_id) == "success", states(stack, dag_id, run_id)
            assert set(states(stack, dag_id, run_id).values()) == {"success"}

        state = stack.xcom("job_manager_init", runs["job_manager_init"], "inspect_schema")
        assert state["pending"] == [], state
        assert all(state["tables"].values()), state
        made = stack.xcom("job_manager_backup", runs["job_manager_backup"], "verify")
        path = Path(made["path"])
        assert path.parent == stack.home / "backups"
        assert verify_backup(path).rows["jobs"] == 50

        report = stack.xcom(
            "job_manager_maintenance", runs["job_manager_maintenance"], "health_report"
        )
        assert report["jobs"] == {"IMAGE_TEST": {"pending": 50}}, report
        assert report["jobs_total"] == 50
        assert report["stuck_processing"] == 0
        assert isinstance(report["problems"], list)

        out = stack.xcom(EXAMPLE, runs[EXAMPLE], "report")
        with psycopg.connect(example_dsn(server), autocommit=True) as c:
            rows = c.execute("SELECT id, status, prompt_text FROM jobs").fetchall()
        assert sorted(out["claimed"]) == sorted(r[0] for r in rows)
        for _, status, prompt in rows:
            assert status == (
                "failed" if "fail" in prompt.split(" · run ")[0].lower() else "completed"
            )
        poll(lambda: open_connections(server, EXAMPLE_DB) == 0, 30, "connections closed")
        poll(
            lambda: open_connections(server, stack.dotenv["JOB_MANAGER_DB"]) == 0,
            30,
            "connections closed",
        )


def concurrent_example_runs(
    server: Server, stack: Stack, connections_closed: Callable[[], bool] | None = None
) -> dict:
    """Three runs of job_queue_example at once, CONSUMERS_PER_RUN mapped consumers each, on
    PROMPTS_PER_RUN prompts each; checks every invariant and returns what it measured.
    `connections_closed`: how to see that no consumer kept a connection (default: no backend
    named job_manager on the example's database)."""
    with psycopg.connect(example_dsn(server), autocommit=True) as c:
        before = all_ids(c)
    with PeakConnections(server, EXAMPLE_DB, "job_manager") as peak:
        run_ids = [
            stack.trigger(
                EXAMPLE,
                {"workers": CONSUMERS_PER_RUN, "prompts_file": "many.txt"},
            )
            for _ in range(3)
        ]
        for run_id in run_ids:
            assert stack.wait_run(EXAMPLE, run_id) == "success", states(stack, EXAMPLE, run_id)
    hosts: dict[str, int] = {}
    claimed: list[int] = []
    for run_id in run_ids:
        tis = stack.task_instances(EXAMPLE, run_id)
        assert {ti["state"] for ti in tis} == {"success"}
        work = [ti for ti in tis if ti["task_id"] == "work"]
        assert len(work) == CONSUMERS_PER_RUN
        for ti in work:
            hosts[ti["hostname"]] = hosts.get(ti["hostname"], 0) + 1
        claimed += stack.xcom(EXAMPLE, run_id, "report")["claimed"]
    # Every job claimed exactly once, none lost: each run's jobs are its own prompts with the
    # run id appended, every one completed.
    assert len(claimed) == len(set(claimed)) == 3 * PROMPTS_PER_RUN
    with psycopg.connect(example_dsn(server), autocommit=True) as c:
        rows = c.execute("SELECT id, status, prompt_text FROM jobs").fetchall()
    new = {r[0]: r for r in rows if r[0] not in before}
    assert set(new) == set(claimed)
    assert {r[1] for r in new.values()} == {"completed"}
    for run_id in run_ids:
        mine = [r for r in new.values() if r[2].endswith(f" · run {run_id}")]
        assert len(mine) == PROMPTS_PER_RUN
    # Both workers ran consumers.
    assert set(hosts) == {"worker-a", "worker-b"}, hosts
    poll(
        connections_closed or (lambda: open_connections(server, EXAMPLE_DB) == 0),
        30,
        "consumers' connections closed",
    )
    return {"hosts": hosts, "peak_server_connections": peak.peak}


def test_celery_workers_share_three_concurrent_runs(server: Server, stack: Stack) -> None:
    with printed_on_failure(stack):
        measured = concurrent_example_runs(server, stack)
    print(f"direct: {measured}")
    # Each consumer holds one connection (pool_size=1): at most the 8 worker slots, plus
    # produce/report tasks, at once.
    assert measured["peak_server_connections"] >= 2


@pytest.fixture
def bouncer(server: Server, stack: Stack) -> Iterator[Bouncer]:
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed (scripts/bootstrap.sh installs it)")
    params = conninfo_to_dict(server.admin_dsn)
    base = Path(tempfile.mkdtemp(prefix="jm-stack-bouncer-"))
    base.chmod(0o755)
    b = start_pgbouncer(
        base,
        int(params["port"]),
        str(params["user"]),
        str(params.get("password") or ""),
        "transaction",
        users={"job_manager": stack.dotenv["JOB_MANAGER_DB_PASSWORD"]},
        pool_size=POOL_SIZE,
    )
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(base, ignore_errors=True)


#: PgBouncer's default_pool_size for the test: server connections per database and user.
POOL_SIZE = 4


def restart_workers(stack: Stack, **extra: str) -> None:
    for name in ("worker-a", "worker-b"):
        stack.procs.pop(name).stop()
        stack.start_worker(name, concurrency=CONSUMERS_PER_RUN, **extra)
    stack.wait_workers(["worker-a", "worker-b"])


def test_celery_workers_through_pgbouncer(server: Server, stack: Stack, bouncer: Bouncer) -> None:
    """The queue's Connection points at PgBouncer (pool_mode=transaction) with
    prepared_statements=false in its extras: the same invariants, on fewer server
    connections."""
    env = stack.airflow_env("airflow-worker")
    direct = env["AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB"]
    head, tail = direct.rsplit("@", 1)
    through = f"{head}@127.0.0.1:{bouncer.port}/{tail.split('/', 1)[1]}?prepared_statements=false"
    with printed_on_failure(stack):
        restart_workers(stack, AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB=through)
        try:
            measured = concurrent_example_runs(
                server, stack, lambda: not bouncer_clients(server, bouncer, "job_manager")
            )
        finally:
            restart_workers(stack)
    print(f"through PgBouncer (default_pool_size={POOL_SIZE}): {measured}")
    assert measured["peak_server_connections"] <= POOL_SIZE
    # PgBouncer keeps its server connections (that is its job), at most its pool size; the
    # clients, the consumers' connections, are all gone (checked above).
    assert open_connections(server, EXAMPLE_DB) <= POOL_SIZE


def bouncer_clients(server: Server, bouncer: Bouncer, user: str) -> list[str]:
    """PgBouncer's client connections of `user` (SHOW CLIENTS on its admin console, through
    psql: the console speaks the simple query protocol only)."""
    params = conninfo_to_dict(server.admin_dsn)
    out = subprocess.run(
        [
            str(Path(server.cluster.bindir) / "psql"),
            "-X",
            "-At",
            "-F",
            "|",
            "-h",
            "127.0.0.1",
            "-p",
            str(bouncer.port),
            "-U",
            str(params["user"]),
            "-c",
            "SHOW CLIENTS",
            "pgbouncer",
        ],
        env={**os.environ, "PGPASSWORD": str(params.get("password") or "")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    # type|user|database|state|...
    return [line for line in out.splitlines() if line.split("|")[1:2] == [user]]


def test_a_celery_worker_killed_mid_task(server: Server, stack: Stack) -> None:
    """SIGKILL to one worker's whole process group while its consumers hold claimed jobs:
    its task instances fail (no heartbeat), the other worker's consumers finish the rest,
    reset_stuck_jobs returns the orphans to pending and a later run completes them."""
    with psycopg.connect(example_dsn(server), autocommit=True) as c:
        before = len(all_ids(c))
    with printed_on_failure(stack):
        run_id = stack.trigger(
            EXAMPLE,
            {"workers": 2 * CONSUMERS_PER_RUN, "prompts_file": "many.txt", "work_seconds": 0.1},
        )

        def processing() -> int:
            with psycopg.connect(example_dsn(server), autocommit=True) as c:
                return c.execute(
                    "SELECT count(*) FROM jobs WHERE status = 'processing'"
                ).fetchone()[0]

        def holding() -> list[dict]:
            """worker-a's running consumers, once no consumer is still queued (Celery hands a
            worker its tasks before they run: a task received but not started when the worker
            dies stays queued in Airflow until task_queued_timeout, 10 minutes) and every
            running consumer holds a job (one claimed job at a time, `work_seconds` of each
            cycle)."""
            work = [t for t in stack.task_instances(EXAMPLE, run_id) if t["task_id"] == "work"]
            if not work or any(t["state"] in (None, "scheduled", "queued") for t in work):
                return []
            running = [t for t in work if t["state"] == "running"]
            on_a = [t for t in running if t["hostname"] == "worker-a"]
            return on_a if on_a and processing() >= len(running) else []

        consumers_on_a = len(poll(holding, 180, "worker-a's consumers holding jobs", 0.3))
        victim = stack.procs["worker-a"]
        victim.expected_dead = True  # type: ignore[attr-defined]
        victim.kill()
        assert victim.popen.returncode == -9

        state = stack.wait_run(EXAMPLE, run_id, timeout=HEARTBEAT_TIMEOUT_S + 240)
        assert state == "failed"
        tis = states(stack, EXAMPLE, run_id)
        assert "failed" in {v for k, v in tis.items() if k.startswith("work[")}, tis
        assert tis["report"] == "upstream_failed", tis

        with psycopg.connect(example_dsn(server), autocommit=True) as c:
            orphans = [
                r[0]
                for r in c.execute("SELECT id FROM jobs WHERE status = 'processing'").fetchall()
            ]
        print(f"killed worker-a: {consumers_on_a} consumers running there, {len(orphans)} orphans")
        assert 1 <= len(orphans) <= consumers_on_a
        with JobManager(example_dsn(server)) as jm:
            assert jm.reset_stuck_jobs("IMAGE_TEST", 0.5) == len(orphans)

        # A replacement worker and a later run: the orphans are claimed and completed.
        stack.procs.pop("worker-a")
        stack.start_worker("worker-a", concurrency=CONSUMERS_PER_RUN)
        stack.wait_workers(["worker-a"])
        later = stack.trigger(EXAMPLE, {"workers": 2})
        assert stack.wait_run(EXAMPLE, later) == "success", states(stack, EXAMPLE, later)
        claimed = stack.xcom(EXAMPLE, later, "report")["claimed"]
        assert set(orphans) <= set(claimed)
    with psycopg.connect(example_dsn(server), autocommit=True) as c:
        counts = dict(c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        total = c.execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert counts.get("processing", 0) == 0
    assert counts.get("pending", 0) == 0
    assert total >= before + PROMPTS_PER_RUN
    poll(lambda: open_connections(server, EXAMPLE_DB) == 0, 30, "connections closed")
