"""A short tour of job_manager against the database in $JOB_MANAGER_DSN (scripts/demo.sh)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from job_manager import JobManager

PROMPTS = Path(__file__).resolve().parents[1] / "tests/fixtures/veo3-legacy/test_prompts.txt"


def step(text: str) -> None:
    print(f"\n\033[1m--- {text}\033[0m", flush=True)


def demo_prompts() -> list[str]:
    return [p.strip() for p in PROMPTS.read_text(encoding="utf-8").splitlines() if p.strip()]


def demo_jobs() -> int:
    return len(demo_prompts()) + 1


def confirm_target(jm: JobManager) -> bool:
    """The demo writes into the database it is given: say so, and ask, unless it is the
    throwaway cluster demo.sh started."""
    if os.environ.get("JOB_MANAGER_DEMO_THROWAWAY") == "1":
        return True
    print(
        f"This demo writes into the database of $JOB_MANAGER_DSN ({jm!r}): it creates "
        f"job_manager's tables there if they are missing, adds up to {demo_jobs()} jobs, and "
        "claims and completes one. Unset JOB_MANAGER_DSN to run it on a throwaway "
        "PostgreSQL instead."
    )
    if os.environ.get("JOB_MANAGER_DEMO_YES") == "1":
        return True
    if not sys.stdin.isatty():
        print("stdin is not a terminal: set JOB_MANAGER_DEMO_YES=1 to go ahead", file=sys.stderr)
        return False
    return input("Type yes to go ahead, anything else stops: ").strip().lower() == "yes"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="  log: %(name)s: %(message)s")
    jm = JobManager()
    if not confirm_target(jm):
        print("stopped: nothing was written", file=sys.stderr)
        return 2
    print(f"{jm!r}  (constructed: no connection yet, {jm.pool_status()})")

    step("init_database(): creates only what is missing")
    print("applied:", jm.init_database())
    print("again:  ", jm.init_database())

    step(f"add jobs: one by one, and in bulk from {PROMPTS.name}")
    print("add_job ->", jm.add_job("A serene mountain lake at sunrise", "VIDEO_PROD"))
    prompts = demo_prompts()
    print("add_jobs ->", jm.add_jobs(prompts, "IMAGE_TEST"), "new jobs")

    step("a worker claims a job (FOR UPDATE SKIP LOCKED), does it, completes it")
    job = jm.get_and_lock_job("IMAGE_TEST")
    assert job is not None
    print("claimed:", job)
    jm.mark_job_as_completed(job["id"], local_path=f"/opt/airflow/outputs/{job['id']}.png")
    print("now:", jm.get_job_by_id(job["id"]))

    step("show_stats(), as the old JobManager printed it")
    jm.show_stats()

    step("the same from the command line: python -m job_manager stats --json")
    subprocess.run([sys.executable, "-m", "job_manager", "stats", "--json"], check=True)
    print(f"\npool: {jm.pool_status()}")
    print(f"database: {os.environ.get('JOB_MANAGER_DSN', '').split('@')[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
