"""
### job_queue_example: how a team uses the queue

1. `produce` adds one job per line of a prompts file (`add_jobs`, one round trip per batch).
2. `work` runs as several mapped task instances at once (dynamic task mapping). Each claims
   jobs with `get_and_lock_job` (`FOR UPDATE SKIP LOCKED`: every job goes to exactly one
   worker), does stand-in work (writes a small file; no external API), and marks each job
   completed, or failed when the prompt contains the word `fail`.
3. `report` checks that no job was claimed twice and prints `show_stats()`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent


@dag(
    dag_id="job_queue_example",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["job_manager", "example"],
    doc_md=__doc__,
    params={
        "conn_id": Param(os.environ.get("JOB_MANAGER_CONN_ID", "job_manager_db"), type="string"),
        "prompts_file": Param(str(HERE / "prompts" / "example_prompts.txt"), type="string"),
        "job_type": Param("IMAGE_TEST", enum=["IMAGE_TEST", "VIDEO_PROD"]),
        "workers": Param(3, type="integer", minimum=1, maximum=32),
        "output_dir": Param(
            os.environ.get("JOB_MANAGER_OUTPUT_DIR", "/tmp/job_manager_outputs"), type="string"
        ),
    },
)
def job_queue_example():
    @task
    def produce(params=None) -> list[int]:
        """Queues the prompts; returns one slot per worker for the mapped consumers."""
        from job_manager.airflow import manager_for

        path = Path(params["prompts_file"])
        prompts = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
        with manager_for(params) as jm:
            jm.init_database()
            added = jm.add_jobs(prompts, params["job_type"])
        log.info("queued %d new jobs from %s (%d prompts)", added, path, len(prompts))
        return list(range(params["workers"]))

    @task
    def work(worker: int, params=None) -> list[int]:
        """Claims jobs until none is pending; returns the ids it claimed."""
        from job_manager.airflow import manager_for

        out = Path(params["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        claimed: list[int] = []
        with manager_for(params, pool_size=1) as jm:
            while (job := jm.get_and_lock_job(params["job_type"])) is not None:
                claimed.append(job["id"])
                if "fail" in job["prompt_text"].lower():
                    jm.mark_job_as_failed(job["id"], "stand-in failure: the prompt asked for it")
                    continue
                target = out / f"job_{job['id']}.txt"
                target.write_text(f"worker {worker}: {job['prompt_text']}\n", "utf-8")
                jm.mark_job_as_completed(job["id"], local_path=str(target))
        log.info("worker %d claimed %d jobs", worker, len(claimed))
        return claimed

    @task
    def report(claimed: list[list[int]], params=None) -> dict:
        """Every job claimed once; the queue's statistics."""
        from job_manager.airflow import manager_for

        ids = [i for batch in claimed for i in batch]
        if len(ids) != len(set(ids)):
            raise RuntimeError("a job was claimed twice")
        with manager_for(params) as jm:
            jm.show_stats()
            stats = jm.get_job_stats()
        log.info("%d jobs claimed by %d workers", len(ids), len(claimed))
        return {"claimed": sorted(ids), "stats": stats}

    report(work.expand(worker=produce()))


dag = job_queue_example()

if __name__ == "__main__":
    dag.test()
