"""job_manager: a PostgreSQL-backed job queue for Apache Airflow, written in Rust.

``JobManager()`` costs nothing: the connection pool opens on first use, is rebuilt after
``fork()``, and every blocking call releases the GIL. See README.md for the tour.
"""

from __future__ import annotations

from job_manager._internal import (
    SCHEMA_VERSION,
    JobManager,
    PoolStatus,
    __version__,
    reset_log_cache,
)
from job_manager.exceptions import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    JobManagerError,
    SchemaError,
)

__all__ = [
    "SCHEMA_VERSION",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "InvalidArgumentError",
    "JobManager",
    "JobManagerError",
    "PoolStatus",
    "SchemaError",
    "__version__",
    "reset_log_cache",
]
