"""Compatibility with the replaced ``database`` module.

``from job_manager.database import db_manager`` replaces ``from database import db_manager``:
``db_manager`` is a :class:`~job_manager.JobManager` configured from the environment, created
on first use. ``DatabaseManager`` is ``JobManager``. See docs/MIGRATING.md for the differences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from job_manager._default import default_manager
from job_manager.manager import JobManager

DatabaseManager = JobManager

__all__ = ["DatabaseManager", "db_manager"]

if TYPE_CHECKING:
    db_manager: JobManager


def __getattr__(name: str) -> JobManager:
    if name == "db_manager":
        return default_manager()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
