"""``JobManager``: the Rust class, plus what only Python should do (Airflow lookups)."""

from __future__ import annotations

from typing import Any

from job_manager import _internal
from job_manager._airflow_connection import settings_from_connection


class JobManager(_internal.JobManager):
    """A job queue in PostgreSQL, drop-in for the replaced ``JobManager``.

    ``JobManager(dsn=None, *, pool_size=4, connect_timeout=10.0)``: construction does no I/O;
    see :class:`job_manager._internal.JobManager` for every method.
    """

    __slots__ = ()

    @classmethod
    def from_airflow_connection(cls, conn_id: str = "job_manager_db", **kwargs: Any) -> JobManager:
        """A JobManager on the database of an Airflow Connection (host, port, login, password,
        schema; libpq parameters and ``prepared_statements`` from its extras, which ``kwargs``
        override). Imports Airflow only now: job_manager does not depend on it."""
        dsn, options = settings_from_connection(conn_id)
        return cls(dsn, **{**options, **kwargs})
