"""`python -m job_manager`: the old subcommands and flags, --json, clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import job_manager
import pytest
from conftest import FIXTURES, Server


def run(dsn: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_MANAGER_", "POSTGRES_"))}
    if dsn is not None:
        env["JOB_MANAGER_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "job_manager", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_init_add_stats_reset(dsn: str) -> None:
    r = run(dsn, "init")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("applied: V1__baseline, V2__job_status_values")
    r = run(dsn, "init", "--json")
    assert json.loads(r.stdout) == {"applied": [], "schema_version": job_manager.SCHEMA_VERSION}

    r = run(dsn, "add", "-p", "一只可爱的小猫", "-t", "VIDEO_PROD")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "job 1\n"
    r = run(dsn, "add", "--file", str(FIXTURES / "prompts.txt"), "--json")
    prompts = [p for p in (FIXTURES / "prompts.txt").read_text("utf-8").splitlines() if p.strip()]
    assert json.loads(r.stdout) == {"added": len(prompts), "prompts": len(prompts)}

    r = run(dsn, "stats")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        f"\n=== 作业统计信息 ===\n\nIMAGE_TEST:\n  pending: {len(prompts)}\n"
        f"  总计: {len(prompts)}\n\nVIDEO_PROD:\n  pending: 1\n  总计: 1\n"
    )
    r = run(dsn, "stats", "--json")
    assert json.loads(r.stdout) == {
        "IMAGE_TEST": {"pending": len(prompts)},
        "VIDEO_PROD": {"pending": 1},
    }

    r = run(dsn, "reset", "--job-type-filter", "IMAGE_TEST", "--json")
    assert json.loads(r.stdout) == {"reset": 0}
    # Logs go to stderr, in the old format, never to stdout.
    r = run(dsn, "add", "-p", "logged")
    assert " - job_manager.jobs - INFO - added job " in r.stderr


def test_usage_errors_exit_2(dsn: str) -> None:
    r = run(dsn, "add")
    assert r.returncode == 2
    assert "add needs --prompt TEXT or --file PATH" in r.stderr
    assert run(dsn, "add", "-p", "x", "-t", "AUDIO").returncode == 2
    assert run(dsn, "frobnicate").returncode == 2


def test_failures_are_one_line_and_exit_1(dsn: str, tmp_path: Path) -> None:
    secret = "cli-secret-pw"
    r = run(f"postgresql://u:{secret}@127.0.0.1:1/db", "stats")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot connect to postgresql://u:***@127.0.0.1:1/db")
    assert r.stderr.count("\n") == 1
    assert secret not in r.stderr + r.stdout
    r = run(dsn, "add", "-f", str(tmp_path / "missing.txt"))
    assert r.returncode == 1
    assert "missing.txt" in r.stderr
    r = run("not a dsn at all", "stats")
    assert r.returncode == 1
    assert r.stderr.startswith("error: invalid DSN")
    # No schema yet: the message says what to run.
    r = run(dsn, "add", "-p", "x")
    assert r.returncode == 1
    assert "init" in r.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("job-manager")
    assert script.exists()
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0
    for command in ("add", "stats", "reset", "init"):
        assert command in r.stdout


@pytest.mark.parametrize("module", ["job_manager.core_workflow", "job_manager.database"])
def test_compat_modules_import_without_io(module: str) -> None:
    code = f"import {module}, sys; print('ok')"
    env = dict(os.environ, POSTGRES_HOST="203.0.113.1")
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
        check=False,
    )
    assert r.stdout == "ok\n", r.stderr


def test_backup_commands(server: Server, dsn: str, tmp_path: Path) -> None:
    assert run(dsn, "init").returncode == 0
    run(dsn, "add", "-f", str(FIXTURES / "prompts.txt"))
    d = tmp_path / "b"
    r = run(dsn, "backup", "--dir", str(d), "--json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["verified"] is True
    assert made["rows"]["jobs"] > 0
    r = run(dsn, "backup", "--dir", str(d), "--compress")
    assert r.stdout.startswith("backup written: ")
    r = run(None, "verify", made["path"])
    assert r.returncode == 0
    assert r.stdout.startswith("OK ")
    listed = json.loads(run(None, "list-backups", "--dir", str(d), "--json").stdout)
    assert len(listed) == 2
    assert listed[0]["compressed"] is True
    # restore without a terminal and without --yes: refused, nothing changed.
    r = run(dsn, "restore", made["path"], "--dir", str(d))
    assert r.returncode == 2
    assert "--yes" in r.stderr
    r = run(dsn, "restore", made["path"], "--dir", str(d), "--yes")
    assert r.returncode == 0, r.stderr
    assert "the rows it replaced are in " in r.stdout
    r = run(None, "cleanup-backups", "--dir", str(d), "--keep", "1", "--json")
    assert len(json.loads(r.stdout)["deleted"]) == 2
    # A damaged file: exit 1 with the reason.
    bad = tmp_path / "airflow_backup_20200101_000000.sql"
    bad.write_bytes(Path(made["path"]).read_bytes()[:-20] if Path(made["path"]).exists() else b"x")
    r = run(None, "verify", str(bad))
    assert r.returncode == 1
    assert r.stderr.startswith("error: ")


def test_dump_command_uses_pg_dump(server: Server, dsn: str, tmp_path: Path) -> None:
    if server.cluster is None:
        pytest.skip("needs the throwaway cluster's pg_dump")
    assert run(dsn, "init").returncode == 0
    run(dsn, "add", "-p", "dumped prompt")
    env_path = f"{server.cluster.bindir}:{os.environ['PATH']}"
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "dump", "--dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        env=dict(os.environ, JOB_MANAGER_DSN=dsn, PATH=env_path),
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "pg_dump"
    assert info["rows"] == {"jobs": 1, "download_queue": 0}
    assert server.password not in Path(info["path"]).read_text("utf-8")
    # A pg_dump that fails leaves no file; the message carries no password.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 99.0"; exit 0; fi\n'
        'echo "partial" ; echo "pg_dump: error: connection lost $PGPASSWORD" >&2; exit 1\n'
    )
    (fake / "pg_dump").chmod(0o755)
    out = tmp_path / "failed"
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "dump", "--dir", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, JOB_MANAGER_DSN=dsn, PATH=f"{fake}:{os.environ['PATH']}"),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "pg_dump failed" in r.stderr
    assert server.password not in r.stderr
    assert list(out.iterdir()) == []
    # A pg_dump older than the server is refused before it runs.
    (fake / "pg_dump").write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 9.6.24"\n')
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "dump", "--dir", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, JOB_MANAGER_DSN=dsn, PATH=f"{fake}:{os.environ['PATH']}"),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "older than the server" in r.stderr


def test_operator_scripts(dsn: str, tmp_path: Path) -> None:
    env = dict(
        os.environ, JOB_MANAGER_DSN=dsn, JOB_MANAGER_EXEC="", JOB_MANAGER_BACKUP_DIR=str(tmp_path)
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    assert run(dsn, "init").returncode == 0
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    r = subprocess.run(
        ["bash", str(scripts / "backup_database.sh"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "backup done" in r.stderr
    path = json.loads(r.stdout)["path"]
    r = subprocess.run(
        ["bash", str(scripts / "restore_database.sh"), path, "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "restore done" in r.stderr
    r = subprocess.run(
        ["bash", str(scripts / "restore_database.sh"), str(tmp_path / "nope.sql"), "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "restore FAILED" in r.stderr
