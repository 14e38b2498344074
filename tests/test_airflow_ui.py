"""The Job queue page as a person uses it: a real ``airflow api-server`` (SimpleAuthManager, a
known user, SQLite metadata) with the plugin from the installed wheel (entry point, lazily
loaded plugins), a login through Airflow's own form in headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright), the page inside Airflow's UI checked against the
database, screenshots in light and dark, and nothing for a browser or client without a login.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pgcluster
import psycopg
import pytest
from conftest import ROOT, Server
from job_manager import JobManager
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "operator", "known-" + secrets.token_hex(8)
# Logged in, but the auth manager (tests/fixtures/job_queue_auth_manager.py) denies "Job queue".
OUTSIDER, OUTSIDER_PASSWORD = "outsider", "other-" + secrets.token_hex(8)
PAGE_PATHS = ("/job-manager/", "/job-manager/api/overview", "/job-manager/metrics")


@dataclass
class Airflow:
    url: str
    dsn: str
    backups: Path
    log: Path


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _token(url: str, user: str = USER, password: str = PASSWORD) -> str:
    req = urllib.request.Request(
        url + "/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["access_token"]


@pytest.fixture(scope="module")
def airflow(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    if not Path(python).exists():
        pytest.fail("no Airflow venv: run bash scripts/test.sh (it installs Airflow with uv)")
    if not Path(CHROMIUM).exists():
        pytest.fail("no /usr/bin/chromium: run bash scripts/test.sh (it apt-installs chromium)")
    home = tmp_path_factory.mktemp("airflow_ui")
    backups = home / "backups"
    backups.mkdir()
    dbname = server.create_database()
    dsn = server.dsn_for(dbname)
    jm = JobManager(dsn)
    jm.init_database()
    jm.close()
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD, OUTSIDER: OUTSIDER_PASSWORD}))
    port = pgcluster.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_MANAGER_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LAZY_LOAD_PLUGINS="True",
        AIRFLOW__CORE__AUTH_MANAGER="job_queue_auth_manager.JobQueueTestAuthManager",
        PYTHONPATH=str(ROOT / "tests" / "fixtures"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:viewer,{OUTSIDER}:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),
        AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(32),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        AIRFLOW_CONN_JOB_MANAGER_DB=dsn,
        JOB_MANAGER_BACKUP_DIR=str(backups),
        PYTHONWARNINGS="ignore",
    )
    (home / "dags").mkdir()
    airflow_bin = str(Path(python).parent / "airflow")
    subprocess.run(
        [airflow_bin, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    log = home / "api-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [airflow_bin, "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api-server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if _get(url + "/api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server not up in 120 s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield Airflow(url=url, dsn=dsn, backups=backups, log=log)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
        server.drop_database(dbname)


@pytest.fixture(scope="module")
def seeded(airflow: Airflow) -> dict[str, int]:
    """Jobs in every interesting state, a download queue and one verified backup."""
    with psycopg.connect(airflow.dsn, autocommit=True) as db:
        for status, hours, n in (
            ("pending", 5, 12),
            ("processing", 3, 2),  # stuck: processing for 3 h
            ("processing", 0, 1),
            ("completed", 2, 40),
            ("failed", 1, 3),
            ("completed", 24 * 6, 25),
        ):
            db.execute(
                "INSERT INTO jobs (prompt_text, job_type, status, created_at, updated_at) "
                "SELECT 'p' || gen_random_uuid(), CASE WHEN i %% 2 = 0 THEN 'VIDEO_PROD' "
                "ELSE 'IMAGE_TEST' END, %s, LOCALTIMESTAMP - make_interval(secs => %s), "
                "LOCALTIMESTAMP - make_interval(secs => %s) FROM generate_series(1, %s) i",
                (status, hours * 3600 + 60, hours * 3600, n),
            )
        db.execute(
            "INSERT INTO download_queue (job_id, remote_url, local_path, file_type, status) "
            "SELECT id, 'https://example.invalid/' || id, '/tmp/' || id, 'image', "
            "CASE WHEN id % 5 = 0 THEN 'failed' ELSE 'completed' END FROM jobs "
            "WHERE status = 'completed'"
        )
        jobs = {
            f"{t}/{s}": n
            for t, s, n in db.execute(
                "SELECT job_type, status, count(*) FROM jobs GROUP BY 1, 2"
            ).fetchall()
        }
        downloads = dict(
            db.execute("SELECT status, count(*) FROM download_queue GROUP BY 1").fetchall()
        )
    jm = JobManager(airflow.dsn)
    jm.backup_database(airflow.backups)
    jm.close()
    return {
        "total": sum(jobs.values()),
        "pending": sum(n for k, n in jobs.items() if k.endswith("/pending")),
        "stuck": 2,
        "image_completed": jobs["IMAGE_TEST/completed"],
        "downloads_failed": downloads["failed"],
        "downloads_completed": downloads["completed"],
    }


def test_no_login_no_data(airflow: Airflow, seeded: dict[str, int]) -> None:
    for path in (*PAGE_PATHS, "/job-manager/static/job-queue.css"):
        code, body = _get(airflow.url + path)
        assert code == 401, (path, code, body[:200])
        assert b"job_manager_jobs" not in body
        assert b"IMAGE_TEST" not in body
    for path in PAGE_PATHS:
        code, body = _get(airflow.url + path, {"Authorization": "Bearer not-a-jwt"})
        assert code == 403, (path, code)
        assert b"IMAGE_TEST" not in body
        code, body = _get(airflow.url + path, {"Cookie": "_token=forged.jwt.value"})
        assert code == 403, (path, code)
    # Logged in, a valid token (Airflow's own API answers it), but the auth manager says no
    # to "Job queue": 403, no data.
    outsider = _token(airflow.url, OUTSIDER, OUTSIDER_PASSWORD)
    assert _get(airflow.url + "/api/v2/dags", {"Authorization": f"Bearer {outsider}"})[0] == 200
    for path in (*PAGE_PATHS, "/job-manager/static/job-queue.css"):
        code, body = _get(airflow.url + path, {"Authorization": f"Bearer {outsider}"})
        assert code == 403, (path, code)
        assert b"IMAGE_TEST" not in body
    # The permitted user gets the page, with its Content-Security-Policy.
    req = urllib.request.Request(
        airflow.url + "/job-manager/",
        headers={"Authorization": f"Bearer {_token(airflow.url)}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]


def test_no_route_outside_the_check(airflow: Airflow, seeded: dict[str, int]) -> None:
    """FastAPI adds /openapi.json, /docs and /redoc with add_route, outside the app's
    dependencies: without a login they must not answer (the Swagger page would also run a
    script from a CDN on Airflow's origin). And /metrics, like the page, must not be kept by a
    shared cache for the next client."""
    for path in ("/job-manager/openapi.json", "/job-manager/docs", "/job-manager/redoc"):
        code, body = _get(airflow.url + path)
        assert code in (401, 403, 404), (path, code, body[:200])
        assert b"cdn.jsdelivr.net" not in body
    req = urllib.request.Request(
        airflow.url + "/job-manager/metrics",
        headers={"Authorization": f"Bearer {_token(airflow.url)}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"


def test_metrics_with_a_bearer_token(airflow: Airflow, seeded: dict[str, int]) -> None:
    token = _token(airflow.url)
    code, body = _get(airflow.url + "/job-manager/metrics", {"Authorization": f"Bearer {token}"})
    assert code == 200, body[:500]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
    }
    assert samples[("job_manager_up", ())] == 1
    image_completed = (("job_type", "IMAGE_TEST"), ("status", "completed"))
    assert samples[("job_manager_jobs", image_completed)] == seeded["image_completed"]
    assert samples[("job_manager_stuck_jobs", ())] == seeded["stuck"]
    assert samples[("job_manager_downloads", (("status", "failed"),))] == seeded["downloads_failed"]
    assert samples[("job_manager_newest_backup_verified", ())] == 1
    assert samples[("job_manager_newest_verified_backup_age_seconds", ())] < 900
    assert 5 * 3600 < samples[("job_manager_oldest_pending_job_age_seconds", ())] < 6 * 3600
    assert samples[("job_manager_problems", ())] >= 1  # the stuck jobs
    password = psycopg.conninfo.conninfo_to_dict(airflow.dsn)["password"]
    assert password.encode() not in body
    code, body = _get(
        airflow.url + "/job-manager/api/overview", {"Authorization": f"Bearer {token}"}
    )
    assert code == 200
    overview = json.loads(body)
    assert overview["jobs_total"] == seeded["total"]
    assert password not in body.decode()
    assert "postgresql://" not in body.decode()


def _login(page, url: str) -> None:
    page.goto(url + "/", wait_until="networkidle")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)


def test_the_page_in_airflow_ui_light_and_dark(
    airflow: Airflow, seeded: dict[str, int], tmp_path: Path
) -> None:
    """Screenshots: job-queue-light.png and job-queue-dark.png in the test's tmp dir (and in
    $JOB_MANAGER_TEST_ARTIFACTS when set, for CI to keep)."""
    from playwright.sync_api import sync_playwright

    shots = tmp_path
    password = psycopg.conninfo.conninfo_to_dict(airflow.dsn)["password"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for scheme in ("light", "dark"):
                context = browser.new_context(
                    color_scheme=scheme, viewport={"width": 1400, "height": 2000}
                )
                page = context.new_page()
                requested: list[str] = []
                page.on("request", lambda r, seen=requested: seen.append(r.url))
                _login(page, airflow.url)
                # The UI keeps the JWT in the _token cookie; the iframe's same-origin requests
                # carry it, which is how the plugin's endpoints see the user.
                cookies = {c["name"] for c in context.cookies()}
                assert "_token" in cookies, cookies
                # As a person does: "Browse" in Airflow's navigation, then "Job queue" (the
                # entry Airflow builds from the plugin's external_views).
                page.get_by_role("button", name="Browse").click()
                page.get_by_role("menuitem", name="Job queue").click()
                page.wait_for_url("**/plugin/job-queue**", timeout=30_000)
                frame = page.frame_locator("iframe")
                stuck = frame.get_by_test_id("card-stuck")
                stuck.wait_for(timeout=30_000)
                assert stuck.inner_text() == str(seeded["stuck"])
                assert frame.get_by_test_id("card-pending").inner_text() == str(seeded["pending"])
                assert frame.get_by_test_id("jobs-total").inner_text() == f"{seeded['total']:,}"
                row = frame.locator("tr[data-job-type=IMAGE_TEST] td[data-status=completed]")
                assert row.inner_text() == f"{seeded['image_completed']:,}"
                dl = frame.locator("#downloads td[data-status=completed]")
                assert dl.inner_text() == f"{seeded['downloads_completed']:,}"
                assert "✓ verifies" in frame.locator("#backups").inner_text()
                assert "reset" in frame.locator("#problems").inner_text() or "processing" in (
                    frame.locator("#problems").inner_text()
                )
                assert frame.locator("svg.chart title").count() >= 2
                # Read-only: the actions are links to the DAGs, opened in Airflow's own frame.
                backup_link = frame.get_by_role("link", name="Trigger a backup")
                assert backup_link.get_attribute("href") == "/dags/job_manager_backup"
                assert backup_link.get_attribute("target") == "_top"
                assert frame.locator("form, button").count() == 0
                html = page.frames[-1].content()
                assert password not in html
                assert "postgresql://" not in html
                body_bg = page.frames[-1].evaluate(
                    "getComputedStyle(document.body).backgroundColor"
                )
                if scheme == "dark":
                    assert body_bg == "rgb(24, 24, 27)", body_bg
                else:
                    assert body_bg == "rgb(255, 255, 255)", body_bg
                local = (airflow.url, f"blob:{airflow.url}", "data:")
                outside = [u for u in requested if not u.startswith(local)]
                assert outside == [], outside
                page.screenshot(path=str(shots / f"job-queue-{scheme}.png"), full_page=True)
                if scheme == "light":
                    # Airflow's own theme switch wins over the system's: the UI stores the
                    # choice in localStorage "theme" (same origin), which the page follows.
                    page.evaluate("localStorage.setItem('theme', 'dark')")
                    page.reload(wait_until="networkidle")
                    frame.get_by_test_id("card-stuck").wait_for(timeout=30_000)
                    chosen = page.frames[-1].evaluate(
                        "getComputedStyle(document.body).backgroundColor"
                    )
                    assert chosen == "rgb(24, 24, 27)", chosen
                context.close()

            # A browser that never logged in: the page itself, straight, shows no data.
            context = browser.new_context()
            page = context.new_page()
            response = page.goto(airflow.url + "/job-manager/")
            assert response is not None
            assert response.status == 401
            text = page.content()
            assert "IMAGE_TEST" not in text
            assert "card-stuck" not in text
            context.close()
        finally:
            browser.close()
    assert (shots / "job-queue-light.png").stat().st_size > 10_000
    artifacts = os.environ.get("JOB_MANAGER_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        for name in ("job-queue-light.png", "job-queue-dark.png"):
            shutil.copy(shots / name, Path(artifacts) / name)
    if os.environ.get("JOB_MANAGER_UPDATE_SCREENSHOT"):
        shutil.copy(shots / "job-queue-light.png", ROOT / "docs" / "job-queue.png")


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_the_plugin_loads_from_the_entry_point_cheaply(lazy: str, tmp_path: Path) -> None:
    """Airflow finds the plugin through the wheel's entry point, lazily loaded or not;
    loading it builds no app and opens no connection (the connection points at a port where
    nothing listens: any attempt would fail); the app appears only when asked for."""
    python = os.environ.get("JOB_MANAGER_AIRFLOW_PYTHON") or str(ROOT / ".venv-airflow/bin/python")
    code = """
import sys
import airflow
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
assert not errors, errors
(plugin,) = [p for p in plugins if p.name == "job_manager"]
assert "job_manager.airflow_plugin.app" not in sys.modules
assert plugin.external_views[0]["href"] == "/job-manager/"
(app,) = plugin.fastapi_apps
assert app["url_prefix"] == "/job-manager"
paths = sorted(r.path for r in app["app"].routes if "{" not in r.path and "docs" not in r.path)
print("OK", paths)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_MANAGER_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__LAZY_LOAD_PLUGINS=lazy,
        AIRFLOW_CONN_JOB_MANAGER_DB="postgresql://u:secret@127.0.0.1:1/db",
        PYTHONWARNINGS="ignore",
    )
    out = subprocess.run(
        [python, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout, out.stdout
    for path in ("/", "/api/overview", "/metrics"):
        assert f"'{path}'" in out.stdout, out.stdout
