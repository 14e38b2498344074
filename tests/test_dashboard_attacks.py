"""Attacks on the Job queue page's data path (python/job_manager/airflow_plugin/snapshot.py):
work an authorised page view or a Prometheus scrape can be made to repeat. Real PostgreSQL,
real backup files.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT
from job_manager import JobManager
from job_manager.airflow_plugin import render, snapshot


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    backups = tmp_path / "backups"
    backups.mkdir()
    snapshot._backups_cache = None
    yield backups
    snapshot._backups_cache = None


def test_a_backup_being_written_does_not_make_every_scrape_verify_every_backup(
    jm: JobManager, db: psycopg.Connection, folder: Path
) -> None:
    """list_backups reads (verifies) every backup in full; the page and /metrics keep its
    listing while no backup file changed. A backup in progress grows only its hidden temporary
    file, which list_backups never lists: it must not throw the listing away on every scrape
    (a Prometheus scrape every 15 s would otherwise re-read every backup for as long as a
    backup runs). Nor must any other file that is not a backup."""
    db.execute(
        "INSERT INTO jobs (prompt_text, job_type) "
        "SELECT 'p' || g, 'IMAGE_TEST' FROM generate_series(1, 2000) g"
    )
    jm.backup_database(folder, keep=None)
    first = snapshot.backups(folder)
    assert len(first) == 1
    assert first[0].verified
    assert snapshot.backups(folder) is first  # kept: nothing changed
    # What a running backup does: its hidden temporary file grows between two scrapes.
    tmp = folder / ".airflow_backup_20991231_235959.sql.tmp"
    for chunk in range(3):
        with tmp.open("ab") as f:
            f.write(b"x" * 4096)
        time.sleep(0.01)
        assert snapshot.backups(folder) is first, f"re-verified all backups (chunk {chunk})"
    (folder / "notes.txt").write_text("rotation policy: keep 10")
    assert snapshot.backups(folder) is first
    # A new backup is seen at once.
    tmp.unlink()
    time.sleep(1.1)  # backup names have a one-second resolution
    jm.backup_database(folder, keep=None)
    assert len(snapshot.backups(folder)) == 2


def test_every_text_on_the_page_is_shown_as_text(
    jm: JobManager, folder: Path, monkeypatch: pytest.MonkeyPatch, dsn: str
) -> None:
    """Nothing the page shows is markup: a file named like a backup that does not verify (whoever
    can write into a shared backup volume chooses it), and hostile text in every string field
    of a real snapshot (job types and statuses of a legacy table without CHECKs, problems,
    the folder's name) come out escaped."""
    payload = (
        "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>'\"><svg onload=x>"
    )
    (folder / "airflow_backup_20990101_000000.sql").write_text(f"-- {payload}\n{payload}\n")
    monkeypatch.setenv("JOB_MANAGER_DSN", dsn)
    monkeypatch.setenv("JOB_MANAGER_CONN_ID", "job_manager_test_absent")
    monkeypatch.setenv("JOB_MANAGER_BACKUP_DIR", str(folder))
    jm.add_job("a", "IMAGE_TEST")
    snapshot._manager = None
    try:
        snap = snapshot.take()
    finally:
        if snapshot._manager is not None:
            snapshot._manager.close()
        snapshot._manager = None
    assert snap.newest_backup is not None
    assert not snap.newest_backup["verified"]
    snap.jobs[payload] = {payload: 3, "pending": 1}
    snap.downloads[payload] = 2
    snap.backup_dir = payload
    for b in snap.backups:
        b["name"], b["problem"] = payload, payload
    for p in snap.problems:
        p.text, p.action = payload, payload
    snap.problems.append(snapshot.Problem(payload, payload, payload))
    html = render.page(snap, base=payload, static=payload)
    for raw in ("<script>alert", "<img src=x", "<svg onload", "'\">"):
        assert raw not in html, raw
    assert "&lt;script&gt;alert" in html
    error = render.error_page(payload, static=payload)
    assert "<script>alert" not in error
    assert "<svg onload" not in error


NO_CONNECTION_SCRIPT = """
import os
from job_manager.airflow_plugin import snapshot
from job_manager.exceptions import JobManagerError
try:
    snapshot.take()
except JobManagerError as e:
    print("JobManagerError", type(e).__name__, e)
except Exception as e:
    print("other", type(e).__name__)
"""


def test_no_connection_configured_is_a_clear_error(tmp_path: Path) -> None:
    """In the API server with neither the Airflow connection nor $JOB_MANAGER_DSN, the page,
    its JSON and /metrics answer with job_manager's error (a 503 page saying what to set,
    job_manager_up 0), not a bare 500: snapshot.take() raises job_manager's errors only."""
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(python).exists():
        pytest.fail("no Airflow venv: run bash scripts/test.sh (it installs Airflow with uv)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_MANAGER_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        JOB_MANAGER_BACKUP_DIR=str(tmp_path),
        PYTHONWARNINGS="ignore",
    )
    out = subprocess.run(
        [python, "-c", NO_CONNECTION_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    (line,) = [x for x in out.splitlines() if x.startswith(("JobManagerError", "other"))]
    assert line.startswith("JobManagerError ConfigurationError"), line
    assert "job_manager_db" in line
    assert "JOB_MANAGER_DSN" in line
