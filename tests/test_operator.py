"""What an operator meets at the command line and in the logs: help that says what to type,
errors that say what to do, dry runs that change nothing and tell the truth, no noise."""

from __future__ import annotations

import json
import logging
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import job_manager
import psycopg
import pytest
from conftest import scalar
from job_manager import JobManager

VENV_BIN = Path(sys.executable).parent


def run(dsn: str | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOB_MANAGER_", "POSTGRES_", "AIRFLOW"))
    }
    if dsn is not None:
        clean["JOB_MANAGER_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "job_manager", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=False,
    )


# -- help -----------------------------------------------------------------------------------


def test_usage_names_the_command_the_user_typed() -> None:
    script = shutil.which("job-manager", path=str(VENV_BIN))
    assert script, "the console script job-manager is installed with the wheel"
    r = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("usage: job-manager ")
    r = run(None, "--help")
    assert r.stdout.startswith("usage: python -m job_manager ")


def test_top_level_help_lists_every_command() -> None:
    from job_manager.cli import _parser

    text = run(None, "--help").stdout
    description = text.split("COMMAND ...", 1)[1].split("positional arguments", 1)[0]
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert name in description, name


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("verify", "a backup (.sql, .sql.zst, .sql.gz)"),
        ("restore", "verified completely before anything changes"),
        ("import", "a job_manager backup, a pg_dump"),
        ("maintain", "reset jobs that have been processing for longer than this"),
        ("add", "job type (default: IMAGE_TEST)"),
        ("restore", "needed when stdin is not a terminal"),
    ],
)
def test_every_argument_has_help(command: str, expected: str) -> None:
    r = run(None, command, "--help")
    assert r.returncode == 0
    assert expected in " ".join(r.stdout.split()), r.stdout


def test_version() -> None:
    r = run(None, "--version")
    assert r.returncode == 0
    assert r.stdout.strip() == (
        f"job_manager {job_manager.__version__} (schema V{job_manager.SCHEMA_VERSION})"
    )


# -- add ------------------------------------------------------------------------------------


def test_add_without_a_prompt_shows_the_usage_of_add() -> None:
    r = run(None, "add")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: python -m job_manager add ")
    assert "one of the arguments --prompt/-p --file/-f is required" in r.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.txt", "no such file"),
        (lambda p: p, "is a directory, not a file of prompts"),
    ],
)
def test_a_bad_prompts_file_is_a_clear_usage_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    r = run("postgresql://nobody@127.0.0.1:1/none", "add", "-f", str(path))
    assert r.returncode == 2
    assert f"--file {path}" in r.stderr
    assert message in r.stderr
    assert "Errno" not in r.stderr
    assert "Traceback" not in r.stderr


def test_add_says_how_many_were_queued_already_and_as_which_type(
    dsn: str, jm: JobManager, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\na cat\na fox\na dog\n", "utf-8")
    jm.add_job("a dog", "VIDEO_PROD")
    r = run(dsn, "add", "-f", str(prompts))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        f"added 2 new IMAGE_TEST jobs (4 prompts in {prompts}, 1 repeated in the file); "
        "1 already queued: 1 as VIDEO_PROD"
    )
    r = run(dsn, "add", "-f", str(prompts), "-t", "VIDEO_PROD", "--json")
    assert json.loads(r.stdout) == {
        "added": 0,
        "prompts": 4,
        "already_queued": {"IMAGE_TEST": 2, "VIDEO_PROD": 1},
    }
    assert jm.queued_job_types(["a fox", "a dog", "nope", "a fox"]) == {
        "IMAGE_TEST": 1,
        "VIDEO_PROD": 1,
    }
    assert jm.queued_job_types([]) == {}


# -- restore's confirmation -------------------------------------------------------------------


def answer_prompt(dsn: str, args: list[str], answer: bytes) -> tuple[int, str]:
    """Runs the CLI with a terminal as stdin and types ``answer`` (the terminal keeps it until
    the CLI reads it); returns the exit status and everything it printed."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_MANAGER_")}
    env["JOB_MANAGER_DSN"] = dsn
    proc = subprocess.Popen(
        [sys.executable, "-m", "job_manager", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    os.close(slave)
    try:
        os.write(master, answer)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return proc.returncode, out + err


def test_restore_asks_in_a_terminal_and_only_yes_goes_ahead(
    dsn: str, jm: JobManager, tmp_path: Path
) -> None:
    jm.add_job("kept", "IMAGE_TEST")
    made = jm.backup_database(tmp_path)
    jm.add_job("added after the backup", "IMAGE_TEST")
    args = ["restore", "--dir", str(tmp_path), made.path]
    code, text = answer_prompt(dsn, args, b"y\n")
    assert code == 1, text
    assert "Type yes to go ahead, anything else cancels" in text
    assert "a safety backup of the current rows goes to" in text
    assert "cancelled (you typed 'y'; only yes goes ahead): nothing was changed" in text
    assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 2}}
    code, text = answer_prompt(dsn, args, b"yes\n")
    assert code == 0, text
    assert f"restored {made.path}" in text or "restored" in text
    assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 1}}


def test_restore_without_a_terminal_needs_yes(dsn: str, jm: JobManager, tmp_path: Path) -> None:
    jm.add_job("kept", "IMAGE_TEST")
    made = jm.backup_database(tmp_path)
    jm.add_job("added after the backup", "IMAGE_TEST")
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "restore", "--dir", str(tmp_path), made.path],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(os.environ, JOB_MANAGER_DSN=dsn),
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.startswith("usage: python -m job_manager restore ")
    assert "stdin is not a terminal, so it cannot ask: pass --yes" in r.stderr
    assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 2}}


def test_readme_says_what_restore_does_when_it_asks() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text("utf-8")
    line = next(x for x in readme.splitlines() if "python -m job_manager restore backups/" in x)
    assert "type yes" in line, line
    assert "--yes" in line, line


# -- dry runs -------------------------------------------------------------------------------


def stuck_and_old(jm: JobManager, db: psycopg.Connection) -> None:
    """Two jobs stuck for two hours, one claimed just now, one old completed download."""
    owner = jm.add_job("downloaded", "VIDEO_PROD")
    d = jm.add_download_task(owner, "https://example.com/a.png", "/tmp/a.png", "image")
    jm.update_download_status(d, "completed", file_size=1)  # completes its job too
    ids = [jm.add_job(f"s{i}", "IMAGE_TEST") for i in range(3)]
    for _ in ids:
        jm.get_and_lock_job("IMAGE_TEST")
    db.execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
    db.execute(
        "UPDATE jobs SET updated_at = LOCALTIMESTAMP - interval '2 hours' WHERE id <> %s",
        (ids[2],),
    )
    db.execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")
    db.execute(
        "UPDATE download_queue SET completed_at = LOCALTIMESTAMP - interval '30 days' "
        "WHERE id = %s",
        (d,),
    )


def log_tree(root: Path) -> None:
    """One old log file in directories that become empty (and are old) once it goes."""
    old = root / "dag_id=x" / "run_id=r" / "task_id=t" / "attempt=1.log"
    old.parent.mkdir(parents=True)
    old.write_text("old")
    ten_days = time.time() - 10 * 86_400
    for p in (old, old.parent, old.parent.parent, old.parent.parent.parent):
        os.utime(p, (ten_days, ten_days))


def test_maintain_dry_run_changes_nothing_and_reports_what_the_real_run_does(
    dsn: str, jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    stuck_and_old(jm, db)
    backups = tmp_path / "backups"
    made = [jm.backup_database(backups).path for _ in range(3)]
    logs = tmp_path / "logs"
    log_tree(logs)
    analyzed_before = scalar(
        db, "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'jobs'"
    )
    before = sorted(p.name for p in backups.iterdir())
    args = ["maintain", "--log-dir", str(logs), "--dir", str(backups), "--keep", "1", "--json"]

    dry = run(dsn, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    would = json.loads(dry.stdout)
    # Nothing changed.
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 3
    assert scalar(db, "SELECT count(*) FROM download_queue") == 1
    assert sorted(p.name for p in backups.iterdir()) == before
    assert (logs / "dag_id=x").exists()
    db.execute("SELECT pg_stat_force_next_flush()")
    assert (
        scalar(db, "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
        == analyzed_before
    )

    real = run(dsn, *args)
    assert real.returncode == 0, real.stderr
    did = json.loads(real.stdout)
    assert would["dry_run"] is True
    assert did["dry_run"] is False
    for step in ("reset_stuck_jobs", "cleanup_old_downloads", "analyze_tables", "cleanup_backups"):
        assert would[step] == did[step], step
    assert did["reset_stuck_jobs"] == 2
    assert did["cleanup_old_downloads"] == 1
    assert did["analyze_tables"] == ["jobs", "download_queue", "job_manager_schema_history"]
    assert sorted(did["cleanup_backups"]) == sorted(made[:2])
    assert would["cleanup_logs"] == {**did["cleanup_logs"], "dry_run": True}
    assert (did["cleanup_logs"]["files"], did["cleanup_logs"]["dirs_removed"]) == (1, 3)
    assert not (logs / "dag_id=x").exists()

    text = run(dsn, *args[:-1], "--dry-run").stdout
    assert text.startswith("dry run: nothing was changed; this is what maintain would do now")
    assert "reset stuck jobs:       would be 0" in text


def test_dry_run_api(jm: JobManager, db: psycopg.Connection, tmp_path: Path) -> None:
    stuck_and_old(jm, db)
    assert jm.reset_stuck_jobs(older_than_seconds=3600, dry_run=True) == 2
    assert jm.reset_stuck_jobs("VIDEO_PROD", 3600, dry_run=True) == 0
    assert jm.cleanup_old_downloads(7, dry_run=True) == 1
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 3
    assert jm.reset_stuck_jobs(older_than_seconds=3600) == 2
    assert jm.cleanup_old_downloads(7) == 1
    assert jm.vacuum_tables(tables=["jobs"], dry_run=True) == ["jobs"]
    assert jm.analyze_tables(tables=["download_queue"]) == ["download_queue"]
    with pytest.raises(job_manager.InvalidArgumentError, match="not a table job_manager owns"):
        jm.vacuum_tables(tables=["pg_class"])
    backups = tmp_path / "b"
    made = [jm.backup_database(backups).path for _ in range(2)]
    assert job_manager.cleanup_old_backups(backups, 1, dry_run=True) == [made[0]]
    assert Path(made[0]).exists()


def test_log_commands_outside_a_container_name_the_log_dir_option(dsn: str, tmp_path: Path) -> None:
    r = run(dsn, "cleanup-logs", AIRFLOW_HOME=str(tmp_path))
    assert r.returncode == 1
    assert f"no Airflow log folder at {tmp_path / 'logs'}" in r.stderr
    assert "pass --log-dir PATH" in r.stderr
    r = run(dsn, "maintain", "--json", AIRFLOW_HOME=str(tmp_path))
    assert "pass --log-dir PATH" in json.loads(r.stdout)["failed"]["cleanup_logs"]


# -- logs -----------------------------------------------------------------------------------


def test_first_init_logs_no_server_notices_as_news(
    bare_jm: JobManager, log_records: list[logging.LogRecord]
) -> None:
    """The additive migrations make the server say "... already exists, skipping": that is
    not news (DEBUG), and it is ours to log (job_manager.server), not the driver's."""
    assert bare_jm.init_database()
    assert not [r for r in log_records if r.name.startswith("postgres")], [
        (r.name, r.getMessage()) for r in log_records if r.name.startswith("postgres")
    ]
    outside = [r.name for r in log_records if not r.name.startswith("job_manager")]
    assert outside == [], outside
    skipping = [r for r in log_records if "already exists, skipping" in r.getMessage()]
    assert skipping, "the baseline's ADD COLUMN IF NOT EXISTS makes the server say so"
    assert {(r.name, r.levelno) for r in skipping} == {("job_manager.server", logging.DEBUG)}
    news = [r for r in log_records if r.levelno >= logging.INFO]
    assert all(r.name != "job_manager.server" for r in news), [r.getMessage() for r in news]


# -- the demo -------------------------------------------------------------------------------


def test_demo_says_where_it_writes_and_asks_first(dsn: str, db: psycopg.Connection) -> None:
    demo = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_MANAGER_")}
    env["JOB_MANAGER_DSN"] = dsn

    def demo_run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(demo)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
            check=False,
        )

    r = demo_run()
    assert r.returncode == 2
    assert "This demo writes into the database of $JOB_MANAGER_DSN" in r.stdout
    assert "set JOB_MANAGER_DEMO_YES=1 to go ahead" in r.stderr
    assert "***" in r.stdout  # the target is named, its password is not
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert scalar(db, tables) == 0
    r = demo_run(JOB_MANAGER_DEMO_YES="1")
    assert r.returncode == 0, r.stderr
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'completed'") == 1
