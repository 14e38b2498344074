"""tests/airflow_stack.py reads docker-compose.yml as compose does: its interpolation rules
and the translation of a container's view (service names, /opt/airflow) onto this machine.
Pure logic, no processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_stack import compose, interpolate, localize, service_env

ENV = {"SET": "value", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "value"),
        ("$SET/x", "value/x"),
        ("${UNSET:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # `:-` also replaces an empty value
        ("${EMPTY-fallback}", ""),  # `-` only an unset one
        ("${SET:?must be set}", "value"),
        ("$${HOSTNAME}", "${HOSTNAME}"),  # `$$` is a literal dollar
        ("${UNSET}", ""),
    ],
)
def test_interpolation_follows_compose(text: str, expected: str) -> None:
    assert interpolate(text, ENV) == expected


@pytest.mark.parametrize("text", ["${UNSET:?set it in .env}", "${EMPTY:?set it}", "${UNSET?x}"])
def test_a_required_variable_that_is_missing_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="compose would refuse to start"):
        interpolate(text, ENV)


def test_nested_defaults_are_refused_not_misread() -> None:
    with pytest.raises(ValueError, match="nested"):
        interpolate("${UNSET-a${SET}}", ENV)


def test_the_compose_file_needs_every_secret() -> None:
    """Without a .env, compose refuses to start the Airflow services (`${VAR:?...}`)."""
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        service_env("airflow-scheduler", {})


def test_localize_maps_services_and_the_image_home(tmp_path: Path) -> None:
    env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:p@postgres/airflow",
        "AIRFLOW_CONN_JOB_MANAGER_DB": "postgresql://u:p@postgres:5432/job_manager",
        "AIRFLOW__CELERY__BROKER_URL": "redis://:@redis:6379/0",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
        "JOB_MANAGER_BACKUP_DIR": "/opt/airflow/backups",
        "PGHOST": "postgres",
        "PGUSER": "postgres",  # a user that happens to share the service's name stays
        "POSTGRES_USER": "postgres",
    }
    out = localize(env, {"postgres": 5001, "redis": 5002, "airflow-apiserver": 5003}, tmp_path)
    assert out == {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u:p@127.0.0.1:5001/airflow",
        "AIRFLOW_CONN_JOB_MANAGER_DB": "postgresql://u:p@127.0.0.1:5001/job_manager",
        "AIRFLOW__CELERY__BROKER_URL": "redis://:@127.0.0.1:5002/0",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:5003/execution/",
        "JOB_MANAGER_BACKUP_DIR": f"{tmp_path}/backups",
        "PGHOST": "127.0.0.1",
        "PGUSER": "postgres",
        "POSTGRES_USER": "postgres",
    }


def test_every_url_in_the_compose_environment_is_translated(tmp_path: Path) -> None:
    """No service name survives in any value the stack gives Airflow: a new service URL in
    docker-compose.yml that the translation misses fails here, not in a slow test."""
    dotenv = {
        "POSTGRES_PASSWORD": "p" * 20,
        "JOB_MANAGER_DB_PASSWORD": "q" * 20,
        "AIRFLOW__CORE__FERNET_KEY": "k" * 44,
        "AIRFLOW__API_AUTH__JWT_SECRET": "j" * 64,
        "AIRFLOW_UID": "50000",
        "_AIRFLOW_WWW_USER_PASSWORD": "w" * 20,
    }
    spec = compose()
    hosts = {"postgres": 1, "redis": 2, "airflow-apiserver": 3}
    for service in ("airflow-scheduler", "airflow-worker", "airflow-init", "airflow-apiserver"):
        env = localize(service_env(service, dotenv, spec), hosts, tmp_path)
        for key, value in env.items():
            for name in hosts:
                assert f"@{name}" not in value, (service, key, value)
                assert f"//{name}" not in value, (service, key, value)
            assert "/opt/airflow" not in value, (service, key, value)
