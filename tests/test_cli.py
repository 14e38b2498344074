"""`python -m job_manager`: the old subcommands and flags, --json, clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import job_manager
import pytest
from conftest import FIXTURES


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
