"""
### job_queue_example: how a team uses the queue (on a scratch database)

1. `produce` adds one job per line of a prompts file (`add_jobs`, one round trip per batch).
   With `unique_per_run` (the default), each prompt gets the run's id appended
   (`a red fox · run manual__2026-11-24T10:00:00+00:00`), so every run queues and processes
   new jobs: prompts are unique in the queue, and a second run of the same file would
   otherwise find them all done and queue nothing. Turn it off to queue the file's prompts as
   they are (those already queued are skipped and reported).
2. `work` runs as several mapped task instances at once (dynamic task mapping). Each claims
   jobs with `get_and_lock_job` (`FOR UPDATE SKIP LOCKED`: every job goes to exactly one
   worker), does stand-in work (writes a small file; no external API), and marks each job
   completed, or failed when the prompt contains the word `fail`. `work_seconds` (0 to 60,
   default 0) makes each job take that long, as a call to a real generation API would: a
   consumer then holds its claimed job for a while (tests/test_airflow_stack.py kills a
   Celery worker at that moment).
3. `report` checks that no job was claimed twice and prints `show_stats()`.

**It never touches production work by default.** The stand-in work marks every pending job of
its type completed without doing it, so the example runs only on its own database: the Airflow
Connection `job_queue_example_db` (`$JOB_QUEUE_EXAMPLE_CONN_ID`), a scratch database the
operator creates; there is no fallback to `JOB_MANAGER_DSN`. To run it against the production
connections (`$JOB_MANAGER_ALLOWED_CONN_IDS`), the operator sets
`JOB_QUEUE_EXAMPLE_ON_PRODUCTION=true` in the environment; a run's conf cannot.

Params are checked before anything is touched: `prompts_file` must be a regular file of at most
4 MiB under `$JOB_MANAGER_PROMPTS_DIR` (default: `prompts/` beside this file), `output_dir`
must resolve inside `$JOB_MANAGER_OUTPUT_DIR` (default `/opt/airflow/outputs`), 1 to 32
workers.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
EXAMPLE_CONN_ID = "job_queue_example_db"
FAILURE = "stand-in failure: the prompt asked for it"
#: Between a prompt and the run id that `unique_per_run` appends to it.
RUN_MARK = " · run "


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
    from job_manager.airflow import allowed_conn_id, confined_path, output_root, whole

    if params.get("job_type") not in ("IMAGE_TEST", "VIDEO_PROD"):
        raise InvalidArgumentError(f"unknown job_type {params.get('job_type')!r}")
    out = output_root()
    return {
        "conn_id": allowed_conn_id(params.get("conn_id") or allowed()[0], allowed()),
        "job_type": params["job_type"],
        "workers": whole(params, "workers", 1, 32),
        "work_seconds": seconds(params.get("work_seconds", 0)),
        "output_dir": str(
            confined_path(params.get("output_dir") or out / "job_queue_example", out, "output_dir")
        ),
    }


def seconds(value) -> float:
    """`work_seconds`: a number from 0 to 60 (InvalidArgumentError otherwise)."""
    from job_manager import InvalidArgumentError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60:
        raise InvalidArgumentError(f"work_seconds must be a number from 0 to 60, not {value!r}")
    return float(value)


def manager(p: dict, **kwargs):
    from job_manager.airflow import manager_for

    return manager_for(p, allowed=allowed(), env_fallback=False, **kwargs)


@dag(
    dag_id="job_queue_example",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["job_manager", "example"],
    doc_md=__doc__,
    params={
        "conn_id": Param(
            os.environ.get("JOB_QUEUE_EXAMPLE_CONN_ID", EXAMPLE_CONN_ID), type="string"
        ),
        "prompts_file": Param(
            "example_prompts.txt", type="string", description="under $JOB_MANAGER_PROMPTS_DIR"
        ),
        "job_type": Param("IMAGE_TEST", enum=["IMAGE_TEST", "VIDEO_PROD"]),
        "workers": Param(3, type="integer", minimum=1, maximum=32),
        "output_dir": Param("", type="string", description="empty: $JOB_MANAGER_OUTPUT_DIR/..."),
        "work_seconds": Param(
            0, type="number", minimum=0, maximum=60, description="stand-in time per job"
        ),
        "unique_per_run": Param(
            True,
            type="boolean",
            description="append ' · run RUN_ID' to each prompt, so every run queues new jobs",
        ),
    },
)
def job_queue_example():
    @task
    def produce(params=None, run_id=None) -> list[int]:
        """Queues the prompts; returns one slot per worker for the mapped consumers."""
        from job_manager.airflow import boolean, prompts_root, read_prompts

        p = checked(params)
        prompts = read_prompts(params.get("prompts_file"), prompts_root(HERE))
        if boolean(params, "unique_per_run"):
            prompts = [f"{prompt}{RUN_MARK}{run_id}" for prompt in prompts]
        with manager(p) as jm:
            jm.init_database()
            added = jm.add_jobs(prompts, p["job_type"])
            if added < len(set(prompts)):
                queued = jm.queued_job_types(prompts)
                log.info("already queued (skipped): %s", queued)
        log.info("queued %d new jobs (%d prompts)", added, len(prompts))
        return list(range(p["workers"]))

    @task
    def work(worker: int, params=None) -> list[int]:
        """Claims jobs until none is pending; returns the ids it claimed."""
        p = checked(params)
        out = Path(p["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        # Files are created through the directory's descriptor, never through a symlink.
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        claimed: list[int] = []
        try:
            with manager(p, pool_size=1) as jm:
                while (job := jm.get_and_lock_job(p["job_type"])) is not None:
                    claimed.append(job["id"])
                    prompt = job["prompt_text"].split(RUN_MARK, 1)[0]
                    if "fail" in prompt.lower():
                        jm.mark_job_as_failed(job["id"], FAILURE)
                        continue
                    if p["work_seconds"]:
                        time.sleep(p["work_seconds"])
                    name = f"job_{job['id']}.txt"
                    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
                    with os.fdopen(fd, "w", encoding="utf-8") as f:
                        f.write(f"worker {worker}: {job['prompt_text']}\n")
                    jm.mark_job_as_completed(job["id"], local_path=str(out / name))
        finally:
            os.close(dir_fd)
        log.info("worker %d claimed %d jobs", worker, len(claimed))
        return claimed

    @task
    def report(claimed: list[list[int]], params=None) -> dict:
        """Every job claimed once; the queue's statistics."""
        ids = [i for batch in claimed for i in batch]
        if len(ids) != len(set(ids)):
            raise RuntimeError("a job was claimed twice")
        with manager(checked(params)) as jm:
            jm.show_stats()
            stats = jm.get_job_stats()
        log.info("%d jobs claimed by %d workers", len(ids), len(claimed))
        return {"claimed": sorted(ids), "stats": stats}

    report(work.expand(worker=produce()))


dag = job_queue_example()

if __name__ == "__main__":
    dag.test()
