"""An Airflow Connection as a DSN: the one piece both ``JobManager.from_airflow_connection``
(manager.py) and the DAG helpers (airflow.py) need, kept here so that neither imports the
other. Imports Airflow only when called: job_manager does not depend on it."""

from __future__ import annotations

import logging
from typing import Any

DEFAULT_CONN_ID = "job_manager_db"
log = logging.getLogger("job_manager.airflow")


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


# Connection extras that are JobManager settings, not libpq parameters: `prepared_statements`
# ("false" for PgBouncer in pool_mode=transaction, README "PgBouncer").
_OPTION_EXTRAS = ("prepared_statements",)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _boolean(conn_id: str, key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    from job_manager.exceptions import ConfigurationError

    raise ConfigurationError(
        f"connection {conn_id!r}: extra {key!r} must be true or false, not {value!r}"
    )


def settings_from_connection(conn_id: str = DEFAULT_CONN_ID) -> tuple[str, dict[str, Any]]:
    """The DSN of :func:`dsn_from_connection` and the JobManager settings among the Connection's
    extras (``prepared_statements``), as keyword arguments."""
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
    options = {
        key: _boolean(conn_id, key, extras[key])
        for key in _OPTION_EXTRAS
        if extras.get(key) is not None and extras.get(key) != ""
    }
    ignored = sorted(set(extras) - set(_DSN_EXTRAS) - set(_OPTION_EXTRAS))
    if ignored:
        log.debug("connection %r: extras that are not connection parameters: %s", conn_id, ignored)
    dsn = " ".join(f"{k}={_quote(v)}" for k, v in parts.items() if v not in (None, ""))
    return dsn, options


def dsn_from_connection(conn_id: str = DEFAULT_CONN_ID) -> str:
    """A key=value DSN built from the Airflow Connection's host, port, login, password and
    schema (the database), plus the libpq parameters among its extras (sslmode, sslrootcert,
    sslcert, sslkey, application_name, options, keepalives*, tcp_user_timeout, ...). Raises
    Airflow's not-found error when it is not defined."""
    return settings_from_connection(conn_id)[0]
