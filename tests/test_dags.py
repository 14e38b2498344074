"""The example DAGs in real Apache Airflow 3: parsed by DagBag, run end to end by dag.test()."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, Server, scalar
from job_manager import JobManager, verify_backup

DAGS = ROOT / "dags"
RUNNER = Path(__file__).resolve().parent / "airflow_runner.py"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def airflow_python() -> str:
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(python).exists():
        pytest.fail("no Airflow venv: run bash scripts/test.sh (it installs Airflow with uv)")
    return python


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory, airflow_python: str) -> Path:
    """An Airflow home with a migrated SQLite metadata database, shared by the session."""
    home = tmp_path_factory.mktemp("airflow_home")
    subprocess.run(
        [str(Path(airflow_python).parent / "airflow"), "db", "migrate"],
        env=airflow_env(home, None),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return home


def airflow_env(home: Path, dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_MANAGER_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        PYTHONWARNINGS="ignore",
    )
    if dsn:
        env["JOB_MANAGER_DSN"] = dsn
    env.update(extra)
    return env


def run_dag(
    python: str, home: Path, dsn: str | None, dag_id: str, conf: dict | None = None, **env: str
) -> dict:
    out = subprocess.run(
        [python, str(RUNNER), str(DAGS / f"{dag_id}.py"), json.dumps(conf or {})],
        env=airflow_env(home, dsn, **env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    result["log"] = out.stdout + out.stderr
    return result


def run_dags(
    python: str, home: Path, dsn: str | None, dag_id: str, confs: list[dict], **env: str
) -> list[dict]:
    """One run per conf, in one Airflow process; the results in order."""
    out = subprocess.run(
        [python, str(RUNNER), str(DAGS / f"{dag_id}.py"), json.dumps(confs)],
        env=airflow_env(home, dsn, **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    detail = f"exit {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert len(lines) == len(confs), detail
    results = [json.loads(line[len("RESULT ") :]) for line in lines]
    for r, conf in zip(results, confs, strict=True):
        r["conf"] = conf
        r["log"] = out.stdout + out.stderr
    return results


class Listener:
    """A TCP port that counts connection attempts (and never answers)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    li = Listener()
    yield li
    li.close()


PARSE = """
import json
from unittest import mock
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag

def refuse(*args, **kwargs):
    raise AssertionError("a connection was looked up at parse time")

with mock.patch.object(airflow.sdk.BaseHook, "get_connection", side_effect=refuse):
    bag = DagBag(dag_folder=__import__("os").environ["AIRFLOW__CORE__DAGS_FOLDER"])
print("RESULT " + json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                              "dags": sorted(bag.dag_ids)}))
"""


def test_dagbag_parses_every_dag_without_touching_a_database(
    airflow_python: str, airflow_home: Path, listener: Listener
) -> None:
    unreachable = f"postgresql://u:pw@127.0.0.1:{listener.port}/db"
    out = subprocess.run(
        [airflow_python, "-c", PARSE],
        env=airflow_env(airflow_home, unreachable, AIRFLOW_CONN_JOB_MANAGER_DB=unreachable),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["errors"] == {}
    assert result["dags"] == [
        "job_manager_backup",
        "job_manager_init",
        "job_manager_maintenance",
        "job_queue_deferrable_example",
        "job_queue_example",
    ]
    time.sleep(0.2)
    assert listener.accepted == 0


def test_init_dag(
    airflow_python: str, airflow_home: Path, dsn: str, db: psycopg.Connection
) -> None:
    first = run_dag(airflow_python, airflow_home, dsn, "job_manager_init")
    assert first["state"] == "success", first["log"][-3000:]
    assert first["xcom"]["apply_missing"] == [
        "V1__baseline",
        "V2__job_status_values",
        "V3__queue_indexes_and_error_message",
        "V4__queue_autovacuum",
        "V5__claim_token",
        "V6__notify_pending",
        "V7__dashboard_indexes",
    ]
    applied = first["xcom"]["apply_missing"]
    assert scalar(db, "SELECT count(*) FROM job_manager_schema_history") == len(applied)
    again = run_dag(airflow_python, airflow_home, dsn, "job_manager_init")
    assert again["state"] == "success"
    assert again["xcom"]["apply_missing"] == []
    assert "nothing to do" in again["log"]


def test_init_dag_prefers_the_airflow_connection(
    airflow_python: str, airflow_home: Path, dsn: str, listener: Listener
) -> None:
    """JOB_MANAGER_DSN points nowhere; the Airflow Connection is what the tasks must use."""
    env_dsn = f"postgresql://u:pw@127.0.0.1:{listener.port}/db"
    result = run_dag(
        airflow_python, airflow_home, env_dsn, "job_manager_init", AIRFLOW_CONN_JOB_MANAGER_DB=dsn
    )
    assert result["state"] == "success", result["log"][-3000:]
    assert "using Airflow connection 'job_manager_db'" in result["log"]
    assert JobManager(dsn).pending_migrations() == []
    assert listener.accepted == 0


def test_backup_dag_backs_up_verifies_and_rotates(
    airflow_python: str, airflow_home: Path, dsn: str, jm: JobManager, tmp_path: Path
) -> None:
    jm.add_jobs([f"backed up {i}" for i in range(50)], "VIDEO_PROD")
    d = tmp_path / "backups"
    old = [jm.backup_database(d, keep=None) for _ in range(3)]
    (d / "notes.txt").write_text("not a backup")
    result = run_dag(
        airflow_python,
        airflow_home,
        dsn,
        "job_manager_backup",
        {"keep": 3},
        JOB_MANAGER_BACKUP_DIR=str(d),
    )
    assert result["state"] == "success", result["log"][-3000:]
    assert set(result["tasks"].values()) == {"success"}
    made = result["xcom"]["backup"]
    assert verify_backup(made["path"]).rows == {"jobs": 50, "download_queue": 0}
    assert result["xcom"]["verify"]["sha256"] == made["sha256"]
    # keep=3: the new one and the two newest older ones; the oldest went; notes.txt stayed.
    assert result["xcom"]["rotate"] == {"deleted": 1, "paths": [old[0].path]}
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(
        ["notes.txt", *(Path(o.path).name for o in old[1:]), Path(made["path"]).name]
    )


def test_backup_dag_fails_loudly(
    airflow_python: str, airflow_home: Path, dsn: str, jm: JobManager, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the backup directory should be")
    result = run_dag(
        airflow_python, airflow_home, dsn, "job_manager_backup", JOB_MANAGER_BACKUP_DIR=str(blocker)
    )
    assert result["state"] == "failed"
    assert result["tasks"]["backup"] == "failed"
    assert "is not a directory" in result["log"]


def test_maintenance_dag(
    airflow_python: str,
    airflow_home: Path,
    dsn: str,
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
) -> None:
    ids = [jm.add_job(f"m{i}", "IMAGE_TEST") for i in range(3)]
    for _ in ids:
        jm.get_and_lock_job("IMAGE_TEST")
    db.execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
    db.execute(
        "UPDATE jobs SET updated_at = LOCALTIMESTAMP - interval '2 hours' WHERE id <> %s", (ids[2],)
    )
    db.execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")
    logs = tmp_path / "logs"
    old_log = logs / "dag_id=x" / "run_id=r" / "task_id=t" / "attempt=1.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("old")
    ten_days = time.time() - 10 * 86_400
    os.utime(old_log, (ten_days, ten_days))
    new_log = logs / "dag_id=x" / "run_id=s" / "task_id=t" / "attempt=1.log"
    new_log.parent.mkdir(parents=True)
    new_log.write_text("new")
    many = logs / "dag_id=many" / "run_id=r" / "task_id=t"
    many.mkdir(parents=True)
    for i in range(300):
        (many / f"attempt={i}.log").write_text("old")
        os.utime(many / f"attempt={i}.log", (ten_days, ten_days))

    # Dead rows past the health report's threshold in jobs (autovacuum kept out of the way):
    # the DAG must VACUUM jobs and only ANALYZE the others.
    db.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
    jm.add_jobs([f"dead {i}" for i in range(2000)], "VIDEO_PROD")
    db.execute("DELETE FROM jobs WHERE job_type = 'VIDEO_PROD'")
    db.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 15
    while scalar(db, "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'jobs'") < 2000:
        assert time.monotonic() < deadline, "the server never counted the dead rows"
        time.sleep(0.2)

    # Downloads: completed 10 and 8 days ago (past the default 7 days), completed 6 days ago,
    # and a failed one 10 days old: the DAG deletes exactly the two old completed ones.
    for age, status in ((10, "completed"), (8, "completed"), (6, "completed"), (10, "failed")):
        db.execute(
            "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, status, "
            "completed_at) VALUES (%s, %s, %s, 'image', %s, "
            "LOCALTIMESTAMP - make_interval(days => %s))",
            (ids[0], f"https://example.invalid/{age}/{status}", f"/d/{age}", status, age),
        )

    def downloads_left() -> list[tuple[str, str]]:
        return db.execute(
            "SELECT status, remote_url FROM download_queue ORDER BY remote_url"
        ).fetchall()

    everything = downloads_left()
    env = {
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs),
        "JOB_MANAGER_BACKUP_DIR": str(tmp_path / "none"),
    }
    dry = run_dag(
        airflow_python, airflow_home, dsn, "job_manager_maintenance", {"dry_run": True}, **env
    )
    assert dry["state"] == "success", dry["log"][-3000:]
    assert old_log.exists()
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 3
    assert dry["xcom"]["cleanup_logs"]["files"] == 301
    # XCom carries the count and a bounded sample, never the whole list.
    assert len(dry["xcom"]["cleanup_logs"]["paths"]) == 100
    # A dry run reports what the real run does, and does none of it.
    assert dry["xcom"]["reset_stuck_jobs"] == 2
    assert dry["xcom"]["cleanup_old_downloads"] == 2
    assert downloads_left() == everything
    assert dry["xcom"]["vacuum_or_analyze"] == {
        "vacuumed": ["jobs"],
        "analyzed": ["download_queue", "job_manager_schema_history"],
    }
    assert scalar(db, "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'jobs'") is None

    result = run_dag(airflow_python, airflow_home, dsn, "job_manager_maintenance", {}, **env)
    assert result["state"] == "success", result["log"][-3000:]
    assert result["xcom"]["reset_stuck_jobs"] == 2
    assert result["xcom"]["cleanup_old_downloads"] == 2
    assert downloads_left() == [
        ("failed", "https://example.invalid/10/failed"),
        ("completed", "https://example.invalid/6/completed"),
    ]
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 1
    assert not old_log.exists()
    assert new_log.exists()
    assert result["xcom"]["cleanup_logs"]["files"] == 301
    assert result["xcom"]["cleanup_logs"] == {**dry["xcom"]["cleanup_logs"], "dry_run": False}
    assert result["xcom"]["vacuum_or_analyze"] == dry["xcom"]["vacuum_or_analyze"]
    assert scalar(db, "SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'jobs'")
    report = result["xcom"]["health_report"]
    assert report["jobs"] == {"IMAGE_TEST": {"pending": 2, "processing": 1}}
    assert any("no backup directory" in p for p in report["problems"])
    assert not any("dead rows" in p for p in report["problems"]), report["problems"]
    # Each problem is logged once (job_manager's logger), not again by the DAG.
    warned = [
        line
        for line in result["log"].splitlines()
        if "no backup directory" in line and "warning" in line.lower()
    ]
    assert len(warned) == 1, warned


def test_queue_example_claims_each_job_once(
    airflow_python: str, airflow_home: Path, dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts" / "prompts.txt"
    prompts.parent.mkdir()
    lines = [f"picture number {i}" for i in range(12)] + ["please fail this one"]
    prompts.write_text("\n".join(lines) + "\n", "utf-8")
    out = tmp_path / "outputs"
    conf = {"prompts_file": "prompts.txt", "workers": 4}
    # Run twice with the same conf, then once with the prompts as they are, twice.
    first, second, plain, plain_again = run_dags(
        airflow_python,
        airflow_home,
        None,
        "job_queue_example",
        [conf, conf, {**conf, "unique_per_run": False}, {**conf, "unique_per_run": False}],
        AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB=dsn,
        JOB_MANAGER_PROMPTS_DIR=str(prompts.parent),
        JOB_MANAGER_OUTPUT_DIR=str(out),
    )
    result = first
    assert result["state"] == "success", result["log"][-3000:]
    assert [k for k in result["tasks"] if k.startswith("work[")] == [f"work[{i}]" for i in range(4)]
    claimed = [i for k, v in result["xcom"].items() if k.startswith("work[") for i in v]
    assert sorted(claimed) == list(range(1, 14))
    assert result["xcom"]["report"]["stats"] == {"IMAGE_TEST": {"completed": 12, "failed": 1}}
    failed = db.execute(
        "SELECT prompt_text, error_message FROM jobs WHERE status = 'failed' ORDER BY id"
    ).fetchall()
    # unique_per_run (the default): each prompt carries its run's id, so it is new.
    assert failed[0][0].startswith(lines[-1] + " · run ")
    assert failed[0][1] == "stand-in failure: the prompt asked for it"
    # A second run with the defaults does the same work again on new jobs.
    assert second["state"] == "success", second["log"][-3000:]
    claimed2 = [i for k, v in second["xcom"].items() if k.startswith("work[") for i in v]
    assert sorted(claimed2) == list(range(14, 27))
    assert second["xcom"]["report"]["stats"] == {"IMAGE_TEST": {"completed": 24, "failed": 2}}
    # Without it, the file's prompts as they are: queued once, then skipped.
    claimed3 = [i for k, v in plain["xcom"].items() if k.startswith("work[") for i in v]
    assert len(claimed3) == 13
    claimed4 = [i for k, v in plain_again["xcom"].items() if k.startswith("work[") for i in v]
    assert claimed4 == [], plain_again["xcom"]
    assert scalar(db, "SELECT count(*) FROM jobs WHERE prompt_text = %s", lines[-1]) == 1
    assert len(list((out / "job_queue_example").iterdir())) == 36
    assert "=== 作业统计信息 ===" in result["log"]


def test_dag_files_run_standalone_end_with_dag_test() -> None:
    for path in DAGS.glob("*.py"):
        assert path.read_text().rstrip().endswith("dag.test()"), path


def test_server_fixture_is_real(server: Server) -> None:
    with server.admin() as c:
        assert scalar(c, "SELECT 1") == 1


# --- What a trigger-only user can do with a run's conf: nothing the operator did not choose. --
# Each run below is refused by Airflow (the Params) or fails in its first task, before anything
# is read, written, deleted or connected to; the assertions check that nothing was.


def refused(result: dict, first_task: str) -> None:
    """The run never started, or its first task failed and nothing after it ran."""
    conf = result.get("conf")
    if result["state"] == "rejected":
        return
    assert result["state"] == "failed", (conf, result["log"][-3000:])
    assert result["tasks"][first_task] == "failed", (conf, result["tasks"])
    others = {k: v for k, v in result["tasks"].items() if k != first_task}
    assert "success" not in others.values(), (conf, result["tasks"])
    assert not (set(result["xcom"]) - {first_task}), (conf, result["xcom"])


def with_outside(confs: list[dict], outside: Path) -> list[dict]:
    """The confs with the placeholder OUTSIDE replaced by a path outside every root."""
    return [{k: str(outside) if v == "OUTSIDE" else v for k, v in c.items()} for c in confs]


def tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def other_dsn(server: Server) -> Iterator[str]:
    """Another database on the same server: somebody else's."""
    name = server.create_database()
    try:
        yield server.dsn_for(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def example_env(tmp_path: Path, dsn: str) -> dict[str, str]:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "ok.txt").write_text("a prompt\n")
    (prompts / "link.txt").symlink_to("/etc/passwd")
    (prompts / "big.txt").write_bytes(b"p\n" * (3 * 1024 * 1024))  # 6 MiB > 4 MiB
    os.mkfifo(prompts / "fifo")
    return {
        "AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB": dsn,
        "JOB_MANAGER_PROMPTS_DIR": str(prompts),
        "JOB_MANAGER_OUTPUT_DIR": str(tmp_path / "outputs"),
    }


EXAMPLE_ATTACKS = [
    {"prompts_file": "/etc/passwd"},
    {"prompts_file": "/dev/zero"},
    {"prompts_file": "link.txt"},  # a symlink inside the prompts folder to /etc/passwd
    {"prompts_file": "../../../../../../etc/passwd"},
    {"prompts_file": "big.txt"},  # over the size cap
    {"prompts_file": "fifo"},  # not a regular file
    {"prompts_file": "ok.txt", "output_dir": "OUTSIDE"},  # an absolute path outside the root
    {"prompts_file": "ok.txt", "conn_id": "other_db"},
    {"prompts_file": "ok.txt", "conn_id": "job_manager_db"},  # production, not opted in
    {"prompts_file": "ok.txt", "workers": 1000},
    {"prompts_file": "ok.txt", "work_seconds": 1e9},  # a consumer that would sleep for years
    {"prompts_file": "ok.txt", "work_seconds": -1},
]


def test_queue_example_refuses_hostile_conf(
    airflow_python: str,
    airflow_home: Path,
    dsn: str,
    other_dsn: str,
    example_env: dict[str, str],
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside-outputs"
    confs = with_outside(EXAMPLE_ATTACKS, outside)
    results = run_dags(
        airflow_python,
        airflow_home,
        other_dsn,  # JOB_MANAGER_DSN: production; the example must never fall back to it
        "job_queue_example",
        confs,
        AIRFLOW_CONN_OTHER_DB=other_dsn,
        AIRFLOW_CONN_JOB_MANAGER_DB=other_dsn,
        **example_env,
    )
    for result in results:
        refused(result, "produce")
    assert tables(dsn) == []  # not even init_database ran
    assert tables(other_dsn) == []
    assert not outside.exists()
    assert not Path(example_env["JOB_MANAGER_OUTPUT_DIR"]).exists()


def test_queue_example_on_production_only_when_the_operator_opts_in(
    airflow_python: str, airflow_home: Path, other_dsn: str, example_env: dict[str, str]
) -> None:
    result = run_dag(
        airflow_python,
        airflow_home,
        None,
        "job_queue_example",
        {"prompts_file": "ok.txt", "conn_id": "job_manager_db", "workers": 1},
        AIRFLOW_CONN_JOB_MANAGER_DB=other_dsn,
        JOB_QUEUE_EXAMPLE_ON_PRODUCTION="true",
        **example_env,
    )
    assert result["state"] == "success", result["log"][-3000:]
    assert result["xcom"]["report"]["stats"] == {"IMAGE_TEST": {"completed": 1}}


@pytest.fixture
def maintenance_setup(tmp_path: Path, jm: JobManager, db: psycopg.Connection) -> dict:
    """A job claimed a moment ago, a completed download, an old and a fresh task log."""
    job = jm.add_job("claimed just now", "IMAGE_TEST")
    jm.get_and_lock_job("IMAGE_TEST")
    jm.add_download_task(job, "https://example.com/a", "/tmp/a", "image")
    db.execute("UPDATE download_queue SET status = 'completed'")
    logs = tmp_path / "logs"
    old = logs / "dag_id=x" / "run_id=r" / "task_id=t" / "attempt=1.log"
    old.parent.mkdir(parents=True)
    old.write_text("old")
    t = time.time() - 10 * 86_400
    os.utime(old, (t, t))
    fresh = logs / "dag_id=x" / "run_id=s" / "task_id=t" / "attempt=1.log"
    fresh.parent.mkdir(parents=True)
    fresh.write_text("written a second ago")
    elsewhere = tmp_path / "elsewhere" / "dag_id=y"
    elsewhere.mkdir(parents=True)
    (elsewhere / "precious.log").write_text("not a task log")
    os.utime(elsewhere / "precious.log", (t, t))
    (logs / "link").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "backups").mkdir()
    return {"logs": logs, "old": old, "fresh": fresh, "elsewhere": elsewhere, "job": job}


MAINTENANCE_ATTACKS = [
    {"stuck_after_s": 0},
    {"stuck_after_s": 299},
    {"download_days": 0},
    {"log_days": 0},
    {"log_days": 1e300},
    {"log_dir": "/"},
    {"log_dir": "ELSEWHERE"},
    {"log_dir": "link"},  # a symlink inside the log folder to a tree outside it
    {"log_dir": "dag_id=x"},  # inside, but not a log folder: the sweep would refuse it later
    {"backup_dir": "/tmp"},
    {"conn_id": "other_db"},
    {"dry_run": "yes"},
]


def test_maintenance_refuses_hostile_conf(
    airflow_python: str,
    airflow_home: Path,
    dsn: str,
    other_dsn: str,
    db: psycopg.Connection,
    maintenance_setup: dict,
    tmp_path: Path,
) -> None:
    s = maintenance_setup
    elsewhere = str(s["elsewhere"].parent)
    confs = [
        {k: (elsewhere if v == "ELSEWHERE" else v) for k, v in c.items()}
        for c in MAINTENANCE_ATTACKS
    ]
    results = run_dags(
        airflow_python,
        airflow_home,
        dsn,
        "job_manager_maintenance",
        confs,
        AIRFLOW_CONN_OTHER_DB=other_dsn,
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(s["logs"]),
        JOB_MANAGER_BACKUP_DIR=str(tmp_path / "backups"),
    )
    for result in results:
        refused(result, "check_params")
    assert scalar(db, "SELECT status FROM jobs WHERE id = %s", s["job"]) == "processing"
    assert scalar(db, "SELECT count(*) FROM download_queue") == 1
    assert s["old"].exists()
    assert s["fresh"].exists()
    assert (s["elsewhere"] / "precious.log").exists()
    assert tables(other_dsn) == []


@pytest.fixture
def six_backups(tmp_path: Path, jm: JobManager) -> Path:
    d = tmp_path / "backups"
    jm.add_job("one", "IMAGE_TEST")
    for _ in range(6):
        jm.backup_database(d, keep=None)
    return d


BACKUP_ATTACKS = [
    {"keep": 1},
    {"keep": 2},
    {"backup_dir": "OUTSIDE"},  # an absolute path outside the root
    {"backup_dir": "../elsewhere"},
    {"conn_id": "other_db"},
]


def test_backup_refuses_hostile_conf(
    airflow_python: str,
    airflow_home: Path,
    dsn: str,
    other_dsn: str,
    six_backups: Path,
    tmp_path: Path,
) -> None:
    before = sorted(p.name for p in six_backups.iterdir())
    outside = tmp_path / "outside-backups"
    confs = with_outside(BACKUP_ATTACKS, outside)
    results = run_dags(
        airflow_python,
        airflow_home,
        dsn,
        "job_manager_backup",
        confs,
        AIRFLOW_CONN_OTHER_DB=other_dsn,
        JOB_MANAGER_BACKUP_DIR=str(six_backups),
    )
    for result in results:
        refused(result, "backup")
    assert sorted(p.name for p in six_backups.iterdir()) == before
    assert not outside.exists()
    assert not (tmp_path / "elsewhere").exists()
    assert tables(other_dsn) == []


def test_init_refuses_a_connection_off_the_allow_list(
    airflow_python: str, airflow_home: Path, dsn: str, other_dsn: str
) -> None:
    """conn_id=other_db once created our tables in somebody else's database."""
    result = run_dag(
        airflow_python,
        airflow_home,
        dsn,
        "job_manager_init",
        {"conn_id": "other_db"},
        AIRFLOW_CONN_OTHER_DB=other_dsn,
    )
    refused(result, "inspect_schema")
    assert "is not allowed here" in result["log"]
    assert tables(other_dsn) == []
    # On the list but not defined: an error too, never the environment's database.
    result = run_dag(
        airflow_python,
        airflow_home,
        dsn,
        "job_manager_init",
        {"conn_id": "other_db"},
        JOB_MANAGER_ALLOWED_CONN_IDS="job_manager_db,other_db",
    )
    refused(result, "inspect_schema")
    assert "is not defined" in result["log"]
    assert tables(dsn) == []
