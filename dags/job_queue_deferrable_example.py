"""
### job_queue_deferrable_example: consumers that start when there is work (on a scratch database)

The variant of `job_queue_example` for queues that something else fills:

1. `wait_for_jobs` is a deferrable `JobsPendingSensor`: when no job of the type is pending it
   waits in the triggerer (one indexed check every `poll_interval` seconds) and holds no worker
   slot; it succeeds as soon as a job is pending (at once when one already is).
2. `work` runs as several mapped task instances at once. Each claims up to `batch` jobs per
   round trip (`get_and_lock_jobs`, `FOR UPDATE SKIP LOCKED`), does stand-in work (nothing;
   prompts containing `fail` fail), and ends the whole batch in one round trip each
   (`mark_jobs_as_completed`, `mark_jobs_as_failed`), until none is pending.
3. `report` checks that no job was claimed twice.

Like `job_queue_example`, it marks every pending job of its type completed without doing it, so
it runs only on its own database: the Airflow Connection `job_queue_example_db`
(`$JOB_QUEUE_EXAMPLE_CONN_ID`); production's connections only when the operator sets
`JOB_QUEUE_EXAMPLE_ON_PRODUCTION=true` in the environment.
"""

from __future__ import annotations

import logging
import os

import pendulum
from airflow.sdk import Param, dag, task
from job_manager.airflow_sensor import JobsPendingSensor

log = logging.getLogger(__name__)
EXAMPLE_CONN_ID = "job_queue_example_db"
FAILURE = "stand-in failure: the prompt asked for it"


def allowed() -> list[str]:
    """The example's own connection, plus production's only when the operator opted in."""
    ids = [os.environ.get("JOB_QUEUE_EXAMPLE_CONN_ID") or EXAMPLE_CONN_ID]
    if os.environ.get("JOB_QUEUE_EXAMPLE_ON_PRODUCTION", "").lower() in ("1", "true", "yes"):
        from job_manager.airflow import allowed_conn_ids

        ids += allowed_conn_ids()
    return ids


def checked(params) -> dict:
    """The params this DAG acts on, validated (InvalidArgumentError otherwise)."""
    from job_manager import InvalidArgumentError
    from job_manager.airflow import allowed_conn_id, whole

    if params.get("job_type") not in ("IMAGE_TEST", "VIDEO_PROD"):
        raise InvalidArgumentError(f"unknown job_type {params.get('job_type')!r}")
    return {
        "conn_id": allowed_conn_id(params.get("conn_id") or allowed()[0], allowed()),
        "job_type": params["job_type"],
        "workers": whole(params, "workers", 1, 32),
        "batch": whole(params, "batch", 1, 1000),
    }


def manager(p: dict, **kwargs):
    from job_manager.airflow import manager_for

    return manager_for(p, allowed=allowed(), env_fallback=False, **kwargs)


@dag(
    dag_id="job_queue_deferrable_example",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["job_manager", "example"],
    doc_md=__doc__,
    params={
        "conn_id": Param(
            os.environ.get("JOB_QUEUE_EXAMPLE_CONN_ID", EXAMPLE_CONN_ID), type="string"
        ),
        "job_type": Param("IMAGE_TEST", enum=["IMAGE_TEST", "VIDEO_PROD"]),
        "workers": Param(3, type="integer", minimum=1, maximum=32),
        "batch": Param(50, type="integer", minimum=1, maximum=1000),
    },
)
def job_queue_deferrable_example():
    wait_for_jobs = JobsPendingSensor(
        task_id="wait_for_jobs",
        conn_id="{{ params.conn_id }}",
        job_type="{{ params.job_type }}",
        allowed=allowed(),
        poll_interval=1.0,
        timeout=3600,
    )

    @task
    def slots(params=None) -> list[int]:
        """One slot per worker for the mapped consumers."""
        return list(range(checked(params)["workers"]))

    @task
    def work(worker: int, params=None) -> list[int]:
        """Claims batches until none is pending; returns the ids it claimed."""
        p = checked(params)
        claimed: list[int] = []
        with manager(p, pool_size=1) as jm:
            while batch := jm.get_and_lock_jobs(p["job_type"], p["batch"]):
                done, failed = [], []
                for job in batch:
                    claimed.append(job["id"])
                    if "fail" in job["prompt_text"].lower():
                        failed.append((job["id"], FAILURE))
                    else:
                        done.append((job["id"], None))
                if done:
                    jm.mark_jobs_as_completed(done)
                if failed:
                    jm.mark_jobs_as_failed(failed)
        log.info("worker %d claimed %d jobs", worker, len(claimed))
        return claimed

    @task
    def report(claimed: list[list[int]], params=None) -> dict:
        """Every job claimed once; the queue's statistics."""
        ids = [i for batch in claimed for i in batch]
        if len(ids) != len(set(ids)):
            raise RuntimeError("a job was claimed twice")
        with manager(checked(params)) as jm:
            stats = jm.get_job_stats()
        log.info("%d jobs claimed by %d workers", len(ids), len(claimed))
        return {"claimed": sorted(ids), "stats": stats}

    workers = slots()
    wait_for_jobs >> workers
    report(work.expand(worker=workers))


dag = job_queue_deferrable_example()

if __name__ == "__main__":
    dag.test()
