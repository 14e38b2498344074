"""The one exception hierarchy of job_manager.

Every error job_manager raises is a :class:`JobManagerError`. Messages say what went wrong and
what to do about it, and never contain a password.
"""

from __future__ import annotations

__all__ = [
    "BackupCorruptError",
    "BackupError",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "InvalidArgumentError",
    "JobManagerError",
    "SchemaError",
]


class JobManagerError(Exception):
    """Base class of every job_manager error."""


class ConfigurationError(JobManagerError):
    """The DSN or environment is wrong: bad syntax, login refused, database missing."""


class DatabaseUnavailableError(JobManagerError):
    """The server cannot be reached: refused, timed out, unresolvable, or gone mid-call."""


class SchemaError(JobManagerError):
    """The schema is not as expected: a migration failed or changed, or a table lock timed out."""


class InvalidArgumentError(JobManagerError, ValueError):
    """An argument is not acceptable: unknown job type or status, NUL byte, negative age, ..."""


class DatabaseError(JobManagerError):
    """The server refused a statement for another reason (see the SQLSTATE in the message)."""


class BackupError(JobManagerError):
    """A backup, restore or retention step failed; nothing was lost or half-written."""


class BackupCorruptError(BackupError):
    """A backup file is truncated, edited, or not a backup at all."""
