"""The download queue: add, scan, move through statuses, statistics, cleanup."""

from __future__ import annotations

import psycopg
import pytest
from conftest import scalar
from job_manager import InvalidArgumentError, JobManager


@pytest.fixture
def job_id(jm: JobManager) -> int:
    return jm.add_job("a video of the sea", "VIDEO_PROD")


def test_add_download_task_returns_the_real_id(
    jm: JobManager, job_id: int, db: psycopg.Connection
) -> None:
    a = jm.add_download_task(job_id, "gs://b/a.png", "/out/a.png", "image")
    b = jm.add_download_task(job_id, "gs://b/b.mp4", "/out/b.mp4", "video", priority=5)
    assert b == a + 1
    assert scalar(db, "SELECT max(id) FROM download_queue") == b


def test_add_download_task_bad_input(jm: JobManager, job_id: int) -> None:
    with pytest.raises(InvalidArgumentError, match="job 999 does not exist"):
        jm.add_download_task(999, "u", "/p", "image")
    with pytest.raises(InvalidArgumentError, match="unknown file_type"):
        jm.add_download_task(job_id, "u", "/p", "audio")
    with pytest.raises(InvalidArgumentError, match="NUL"):
        jm.add_download_task(job_id, "u\x00", "/p", "image")


def test_pending_downloads_order_filter_and_limit(jm: JobManager, job_id: int) -> None:
    low = jm.add_download_task(job_id, "u1", "/p1", "image", priority=0)
    high = jm.add_download_task(job_id, "u2", "/p2", "video", priority=9)
    mid = jm.add_download_task(job_id, "u3", "/p3", "image", priority=5)
    rows = jm.get_pending_downloads()
    assert [r["id"] for r in rows] == [high, mid, low]
    assert rows[0]["prompt_text"] == "a video of the sea"
    assert rows[0]["job_type"] == "VIDEO_PROD"
    assert set(rows[0]) >= {"remote_url", "local_path", "file_type", "attempts", "max_attempts"}
    assert [r["id"] for r in jm.get_pending_downloads(file_type="image")] == [mid, low]
    assert [r["id"] for r in jm.get_pending_downloads(limit=1)] == [high]
    assert jm.get_pending_downloads(limit=0) == []
    with pytest.raises(InvalidArgumentError):
        jm.get_pending_downloads(limit=-1)


def test_download_attempts_and_failure(jm: JobManager, job_id: int) -> None:
    d = jm.add_download_task(job_id, "u", "/p", "image")
    for _ in range(3):
        assert jm.update_download_status(d, "downloading") is True
        assert jm.update_download_status(d, "pending") is True
    # max_attempts (3) reached: no longer offered.
    assert jm.get_pending_downloads() == []
    assert jm.update_download_status(d, "failed", error_message="404 Not Found") is True
    assert jm.get_download_stats()["by_status"]["failed"] == {"count": 1, "total_size": 0}
    assert jm.update_download_status(4242, "failed") is False
    with pytest.raises(InvalidArgumentError, match="unknown download status"):
        jm.update_download_status(d, "done")


def test_completing_a_download_completes_its_job(
    jm: JobManager, job_id: int, db: psycopg.Connection
) -> None:
    d = jm.add_download_task(job_id, "gs://b/v.mp4", "/opt/airflow/outputs/v.mp4", "video")
    jm.update_download_status(d, "downloading")
    assert jm.update_download_status(d, "completed", file_size=1234) is True
    job = jm.get_job_by_id(job_id)
    assert job is not None
    assert (job["status"], job["local_path"]) == ("completed", "/opt/airflow/outputs/v.mp4")
    row = db.execute(
        "SELECT status, file_size, attempts, completed_at IS NOT NULL FROM download_queue"
    ).fetchone()
    assert row == ("completed", 1234, 1, True)


def test_download_stats_shape(jm: JobManager, job_id: int) -> None:
    empty = jm.get_download_stats()
    assert empty == {
        "by_status": {},
        "by_type": {},
        "summary": {"total_files": 0, "total_downloaded_size": 0},
    }
    a = jm.add_download_task(job_id, "u1", "/p1", "image")
    jm.add_download_task(job_id, "u2", "/p2", "video")
    jm.update_download_status(a, "completed", file_size=100)
    assert jm.get_download_stats() == {
        "by_status": {
            "completed": {"count": 1, "total_size": 100},
            "pending": {"count": 1, "total_size": 0},
        },
        "by_type": {"image": {"completed": 1}, "video": {"pending": 1}},
        "summary": {"total_files": 2, "total_downloaded_size": 100},
    }


def test_cleanup_old_downloads(jm: JobManager, job_id: int, db: psycopg.Connection) -> None:
    ids = [jm.add_download_task(job_id, f"u{i}", f"/p{i}", "image") for i in range(4)]
    for d in ids[:3]:
        jm.update_download_status(d, "completed", file_size=1)
    db.execute(
        "UPDATE download_queue SET completed_at = LOCALTIMESTAMP - interval '8 days' "
        "WHERE id = ANY(%s)",
        (ids[:2],),
    )
    assert jm.cleanup_old_downloads() == 2
    assert jm.cleanup_old_downloads(days=7) == 0
    assert jm.cleanup_old_downloads(days=0) == 1
    assert scalar(db, "SELECT count(*) FROM download_queue") == 1
    with pytest.raises(InvalidArgumentError):
        jm.cleanup_old_downloads(days=-1)


def test_deleting_a_job_cascades_to_its_downloads(
    jm: JobManager, job_id: int, db: psycopg.Connection
) -> None:
    jm.add_download_task(job_id, "u", "/p", "image")
    db.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
    assert scalar(db, "SELECT count(*) FROM download_queue") == 0
