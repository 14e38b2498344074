"""job_manager: a PostgreSQL-backed job queue for Apache Airflow, written in Rust.

``JobManager()`` costs nothing: the connection pool opens on first use, is rebuilt after
``fork()``, and every blocking call releases the GIL. See README.md for the tour.
"""

from __future__ import annotations

from job_manager._internal import (
    SCHEMA_VERSION,
    BackupInfo,
    CleanupReport,
    ImportInfo,
    PoolStatus,
    RestoreInfo,
    __version__,
    cleanup_old_backups,
    cleanup_old_logs,
    list_backups,
    reset_log_cache,
    verify_backup,
)
from job_manager.exceptions import (
    BackupCorruptError,
    BackupError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    JobManagerError,
    SchemaError,
)
from job_manager.manager import JobManager

__all__ = [
    "SCHEMA_VERSION",
    "BackupCorruptError",
    "BackupError",
    "BackupInfo",
    "CleanupReport",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ImportInfo",
    "InvalidArgumentError",
    "JobManager",
    "JobManagerError",
    "PoolStatus",
    "RestoreInfo",
    "SchemaError",
    "__version__",
    "cleanup_old_backups",
    "cleanup_old_logs",
    "list_backups",
    "reset_log_cache",
    "verify_backup",
]
