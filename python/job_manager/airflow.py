"""Airflow glue: the database of an Airflow Connection, imported lazily.

job_manager does not depend on Airflow; these functions import it only when called, inside a
task. Nothing here runs at DAG parse time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from job_manager.manager import JobManager

__all__ = ["DEFAULT_CONN_ID", "dsn_from_connection", "manager_for"]

DEFAULT_CONN_ID = "job_manager_db"
log = logging.getLogger(__name__)


def _quote(value: object) -> str:
    """A libpq key=value value: single-quoted, with backslashes and quotes escaped."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


# Connection extras that are libpq connection parameters job_manager understands; any other
# extra (the Postgres provider's "cursor", "iam", ...) is not a connection parameter.
_DSN_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "target_session_attrs",
    "channel_binding",
)


def dsn_from_connection(conn_id: str = DEFAULT_CONN_ID) -> str:
    """A key=value DSN built from the Airflow Connection's host, port, login, password and
    schema (the database), plus the libpq parameters among its extras (sslmode, sslrootcert,
    sslcert, sslkey, application_name, options, keepalives*, tcp_user_timeout, ...). Raises
    Airflow's not-found error when it is not defined."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    parts: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "dbname": conn.schema,
        "user": conn.login,
        "password": conn.password,
    }
    extras = conn.extra_dejson or {}
    for key in _DSN_EXTRAS:
        value = extras.get(key)
        if value is not None and value != "":
            parts[key] = str(value).lower() if isinstance(value, bool) else value
    ignored = sorted(set(extras) - set(_DSN_EXTRAS))
    if ignored:
        log.debug("connection %r: extras that are not connection parameters: %s", conn_id, ignored)
    return " ".join(f"{k}={_quote(v)}" for k, v in parts.items() if v not in (None, ""))


def _not_found_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):
        try:
            mod = __import__(module, fromlist=["AirflowNotFoundException"])
            errors.append(mod.AirflowNotFoundException)
        except (ImportError, AttributeError):
            continue
    return tuple(errors) or (LookupError,)


def manager_for(params: Mapping[str, Any] | None = None, **kwargs: Any) -> JobManager:
    """The JobManager a task should use: the Airflow Connection named by ``params["conn_id"]``
    (else ``$JOB_MANAGER_CONN_ID``, else ``job_manager_db``) when it is defined, otherwise the
    environment, as ``JobManager()`` reads it."""
    conn_id = (params or {}).get("conn_id") or os.environ.get(
        "JOB_MANAGER_CONN_ID", DEFAULT_CONN_ID
    )
    try:
        jm = JobManager.from_airflow_connection(conn_id, **kwargs)
    except _not_found_errors():
        log.info("no Airflow connection %r: using the environment's database", conn_id)
        return JobManager(**kwargs)
    log.info("using Airflow connection %r: %s", conn_id, jm.dsn)
    return jm
