"""`python -m job_manager`: the old subcommands and flags, --json, clear failures."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import job_manager
import pytest
from conftest import FIXTURES, ROOT, SecretLogin, Server


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
    assert json.loads(r.stdout) == {
        "added": len(prompts),
        "prompts": len(prompts),
        "already_queued": {},
    }

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
    assert "one of the arguments --prompt/-p --file/-f is required" in r.stderr
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
    assert r.returncode == 2  # a usage error: the file named does not exist
    assert r.stderr.splitlines()[-1].endswith("missing.txt: no such file")
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
    good = Path(made["path"]).read_bytes()
    r = run(None, "cleanup-backups", "--dir", str(d), "--keep", "1", "--json")
    assert len(json.loads(r.stdout)["deleted"]) == 2
    # A damaged file (the verified backup without its last 20 bytes): exit 1 with the reason.
    bad = tmp_path / "airflow_backup_20200101_000000.sql"
    bad.write_bytes(good[:-20])
    r = run(None, "verify", str(bad))
    assert r.returncode == 1
    assert re.fullmatch(r"error: the file ends in the middle of line \d+ \(truncated\)\n", r.stderr)
    assert r.stdout == ""


def test_dump_command_uses_pg_dump(
    server: Server, secret_login: SecretLogin, tmp_path: Path
) -> None:
    if server.cluster is None:
        pytest.skip("needs the throwaway cluster's pg_dump")
    dsn, password = secret_login.dsn, secret_login.password
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
    assert password not in Path(info["path"]).read_text("utf-8")
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
    assert password not in r.stderr
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


@pytest.mark.parametrize(
    "args",
    [
        ["cleanup-backups", "--keep", "-1"],
        ["cleanup-backups", "--keep", "0"],
        ["cleanup-backups", "--keep", "1e999"],
        ["backup", "--keep", "x"],
        ["reset", "--older-than", "0"],
        ["reset", "--older-than", "299"],
        ["reset", "--older-than", "nan"],
        ["reset", "--older-than", "inf"],
        ["cleanup-logs", "--max-age-days", "1e300"],
        ["cleanup-logs", "--max-age-days", "-1"],
        ["maintain", "--stuck-after", "1"],
        ["maintain", "--stuck-after", "299.9"],
        ["maintain", "--download-days", "0"],
    ],
)
def test_bad_numbers_are_usage_errors_without_traceback(
    dsn: str, tmp_path: Path, args: list[str]
) -> None:
    r = run(dsn, *args, "--dir", str(tmp_path)) if "--dir" in _help(args[0]) else run(dsn, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "error:" in r.stderr


def test_the_300_s_floor_itself_is_accepted(dsn: str) -> None:
    assert run(dsn, "init").returncode == 0
    r = run(dsn, "reset", "--older-than", "300")
    assert r.returncode == 0, r.stderr


def test_cleanup_logs_refuses_the_root_and_other_trees(tmp_path: Path) -> None:
    for target in ("/", str(tmp_path)):
        r = run(None, "cleanup-logs", "--log-dir", target, "--dry-run")
        assert r.returncode == 1, target
        assert r.stderr.startswith("error: log_dir "), r.stderr
        assert "Traceback" not in r.stderr


def test_add_file_must_be_a_regular_file(dsn: str) -> None:
    assert run(dsn, "init").returncode == 0
    r = run(dsn, "add", "--file", "/dev/zero")
    assert r.returncode == 2
    assert "not a regular file" in r.stderr


def _help(command: str) -> str:
    return run(None, command, "--help").stdout


def test_restore_prompt_ctrl_d_cancels(dsn: str, tmp_path: Path) -> None:
    """Ctrl-D (end of input) at the confirmation prompt is a no: nothing changes, no traceback."""
    import pty

    assert run(dsn, "init").returncode == 0
    run(dsn, "add", "-p", "kept")
    made = json.loads(run(dsn, "backup", "--dir", str(tmp_path), "--json").stdout)
    run(dsn, "add", "-p", "added after the backup")
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOB_MANAGER_")}
    env["JOB_MANAGER_DSN"] = dsn
    proc = subprocess.Popen(
        [sys.executable, "-m", "job_manager", "restore", "--dir", str(tmp_path), made["path"]],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    os.close(slave)
    try:
        os.write(master, b"\x04")  # Ctrl-D on an empty line: EOF
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 1, (out, err)
    assert "cancelled (no answer): nothing was changed" in err
    assert "Traceback" not in err
    stats = json.loads(run(dsn, "stats", "--json").stdout)
    assert stats == {"IMAGE_TEST": {"pending": 2}}


def test_dsn_from_a_file_and_argv_warning(dsn: str, tmp_path: Path) -> None:
    assert run(dsn, "init").returncode == 0
    f = tmp_path / "dsn"
    f.write_text(dsn + "\n")
    f.chmod(0o600)
    r = run(None, "--dsn-file", str(f), "stats", "--json")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "stats", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "JOB_MANAGER_DSN_FILE": str(f)},
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    r = run(None, "--dsn", dsn, "stats", "--json")
    assert r.returncode == 0
    assert "process list" in r.stderr
    r = run(None, "--dsn-file", str(tmp_path / "missing"), "stats")
    assert r.returncode == 2
    assert "cannot read the DSN file" in r.stderr


def test_raw_at_sign_in_a_url_password_is_refused_without_showing_it() -> None:
    r = run("postgresql://user:pa@ss-tail-secret@127.0.0.1:1/db", "stats")
    assert r.returncode == 2
    assert "%40" in r.stderr
    assert "tail-secret" not in r.stderr + r.stdout


def test_file_names_starting_with_a_dash(tmp_path: Path) -> None:
    odd = tmp_path / "-rf.sql"
    odd.write_text("not a backup\n")
    r = subprocess.run(
        [sys.executable, "-m", "job_manager", "verify", "--", "-rf.sql"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1  # read as a file (and refused as not a backup), not an option
    assert r.stderr.startswith("error: not a job_manager backup")
    # The restore script passes the file after --: the same file, never an option.
    env = dict(os.environ, JOB_MANAGER_EXEC="", JOB_MANAGER_DSN="postgresql://u@127.0.0.1:1/d")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "restore_database.sh"), "-rf.sql", "--yes"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1, r.stderr
    assert "-- -rf.sql" in r.stderr
    assert "unrecognized arguments" not in r.stderr
    assert "restore FAILED" in r.stderr


def test_maintain_runs_every_step_and_reports_failures(dsn: str, tmp_path: Path) -> None:
    assert run(dsn, "init").returncode == 0
    not_logs = tmp_path / "not-logs"
    not_logs.mkdir()
    r = run(dsn, "maintain", "--log-dir", str(not_logs), "--dir", str(tmp_path / "b"), "--json")
    assert r.returncode == 1
    summary = json.loads(r.stdout)
    assert list(summary["failed"]) == ["cleanup_logs"]
    assert "Airflow log folder" in summary["failed"]["cleanup_logs"]
    # The steps after the failing one ran too.
    assert summary["reset_stuck_jobs"] == 0
    assert summary["analyze_tables"] == ["jobs", "download_queue", "job_manager_schema_history"]
    assert summary["cleanup_backups"] == f"skipped (no directory {tmp_path / 'b'})"
    r = run(dsn, "maintain", "--log-dir", str(not_logs), "--dir", str(tmp_path / "b"))
    assert r.returncode == 1
    assert "log files deleted:      FAILED: " in r.stdout
    assert "1 of 5 steps FAILED" in r.stdout


def test_backup_reports_a_failed_rotation_truthfully(dsn: str, tmp_path: Path) -> None:
    """The backup is written, rotation fails on a file it cannot delete: both are said."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make one backup undeletable")
    assert run(dsn, "init").returncode == 0
    d = tmp_path / "b"
    for _ in range(2):
        assert run(dsn, "backup", "--dir", str(d)).returncode == 0
    oldest = sorted(d.iterdir())[0]
    if subprocess.run(["chattr", "+i", str(oldest)], check=False).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        r = run(dsn, "backup", "--dir", str(d), "--keep", "1", "--json")
        data = json.loads(r.stdout)
        assert Path(data["path"]).exists()  # written, and said so
        text = run(dsn, "backup", "--dir", str(d), "--keep", "1")
    finally:
        subprocess.run(["chattr", "-i", str(oldest)], check=True)
    assert r.returncode == 1, r.stderr
    assert "rotation_error" in data
    assert text.returncode == 1
    assert text.stdout.startswith("backup written: ")
    assert "rotation FAILED (the new backup is kept)" in text.stdout
    # The script says what happened, never "no new backup was written".
    env = dict(os.environ, JOB_MANAGER_DSN=dsn, JOB_MANAGER_EXEC="")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    subprocess.run(["chattr", "+i", str(oldest)], check=True)
    try:
        script = subprocess.run(
            ["bash", str(ROOT / "scripts" / "backup_database.sh"), "--dir", str(d), "--keep", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        subprocess.run(["chattr", "-i", str(oldest)], check=True)
    assert script.returncode == 1
    assert "backup written: " in script.stdout
    assert "no new backup was written" not in script.stderr
