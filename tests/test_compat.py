"""The old module-level API: job_manager.core_workflow and job_manager.database.db_manager."""

from __future__ import annotations

import job_manager
import pytest
from job_manager import _default, core_workflow, database


@pytest.fixture
def env_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("JOB_MANAGER_DSN", dsn)
    monkeypatch.setattr(_default, "_manager", None)
    yield dsn
    if _default._manager is not None:
        _default._manager.close()


def test_db_manager_and_core_workflow(env_dsn: str) -> None:
    from job_manager.database import DatabaseManager, db_manager

    assert DatabaseManager is job_manager.JobManager
    assert db_manager is database.db_manager
    # The old DAG pattern: init only when the table is missing.
    if not db_manager.check_table_exists("jobs"):
        db_manager.init_database()
    assert db_manager.check_table_exists("jobs")
    job_id = db_manager.add_job("compat prompt", "IMAGE_TEST")

    job = core_workflow.get_and_lock_job("IMAGE_TEST")
    assert job is not None
    assert job["id"] == job_id
    assert core_workflow.update_job_operation_info(job_id, "op-1") is True
    assert core_workflow.get_job_operation_id(job_id) == "op-1"
    assert core_workflow.mark_job_as_generation_successful(job_id, "gs://b/x") is True
    assert core_workflow.update_job_gcs_uri(job_id, "gs://b/y") is True
    assert core_workflow.mark_job_as_awaiting_retry(job_id) is True
    assert core_workflow.mark_job_as_failed(job_id, "boom") is True
    assert core_workflow.mark_job_as_completed(job_id, "/out/x.png") is True
    got = core_workflow.get_job_by_id(job_id)
    assert got is not None
    assert (got["status"], got["gcs_uri"], got["local_path"]) == (
        "completed",
        "gs://b/y",
        "/out/x.png",
    )
    assert core_workflow.reset_stuck_jobs() == 0
    assert db_manager.get_job_stats() == {"IMAGE_TEST": {"completed": 1}}


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError):
        database.no_such_thing  # noqa: B018
