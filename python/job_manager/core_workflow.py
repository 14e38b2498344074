"""Compatibility with the replaced ``core_workflow`` module.

The same functions, on the process-wide JobManager configured from the environment. Existing
DAGs change only their import line: ``from job_manager.core_workflow import get_and_lock_job``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from job_manager._default import default_manager

if TYPE_CHECKING:
    from job_manager._internal import ClaimedJob, Job

__all__ = [
    "get_and_lock_job",
    "get_job_by_id",
    "get_job_operation_id",
    "mark_job_as_awaiting_retry",
    "mark_job_as_completed",
    "mark_job_as_failed",
    "mark_job_as_generation_successful",
    "reset_stuck_jobs",
    "update_job_gcs_uri",
    "update_job_operation_info",
]


def get_and_lock_job(job_type: str) -> ClaimedJob | None:
    """Claim the oldest pending job of ``job_type``; ``None`` when none is pending."""
    return default_manager().get_and_lock_job(job_type)


def mark_job_as_completed(
    job_id: int, local_path: str | None = None, gcs_uri: str | None = None
) -> bool:
    """Mark a job completed, setting the paths given."""
    return default_manager().mark_job_as_completed(job_id, local_path, gcs_uri)


def mark_job_as_failed(job_id: int, error_message: str | None = None) -> bool:
    """Mark a job failed and store the reason."""
    return default_manager().mark_job_as_failed(job_id, error_message)


def reset_stuck_jobs(job_type: str | None = None, older_than_seconds: float = 3600.0) -> int:
    """Put jobs processing for longer than ``older_than_seconds`` back to pending."""
    return default_manager().reset_stuck_jobs(job_type, older_than_seconds)


def get_job_by_id(job_id: int) -> Job | None:
    """A job by id; ``None`` when it does not exist."""
    return default_manager().get_job_by_id(job_id)


def update_job_operation_info(job_id: int, operation_id: str) -> bool:
    """Record the remote operation id of a job."""
    return default_manager().update_job_operation_info(job_id, operation_id)


def mark_job_as_awaiting_retry(job_id: int) -> bool:
    """Mark a job as waiting for a retry."""
    return default_manager().mark_job_as_awaiting_retry(job_id)


def update_job_gcs_uri(job_id: int, gcs_uri: str) -> bool:
    """Record the GCS URI of a job."""
    return default_manager().update_job_gcs_uri(job_id, gcs_uri)


def mark_job_as_generation_successful(job_id: int, gcs_uri: str) -> bool:
    """Mark a job's generation successful, with the URI of what it generated."""
    return default_manager().mark_job_as_generation_successful(job_id, gcs_uri)


def get_job_operation_id(job_id: int) -> str | None:
    """The operation id of a job; ``None`` when it has none or does not exist."""
    return default_manager().get_job_operation_id(job_id)
