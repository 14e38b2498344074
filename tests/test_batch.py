"""Batch claims (get_and_lock_jobs) and batch endings (mark_jobs_as_completed/failed)."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import threading

import psycopg
import pytest
from conftest import scalar
from job_manager import InvalidArgumentError, JobManager
from nethelpers import Proxy, via


def test_batch_claims_oldest_first_and_only_that_type(
    jm: JobManager, db: psycopg.Connection
) -> None:
    jm.add_jobs([f"img {i}" for i in range(25)], "IMAGE_TEST")
    jm.add_jobs([f"vid {i}" for i in range(5)], "VIDEO_PROD")
    first = jm.get_and_lock_jobs("IMAGE_TEST", 10)
    assert [j["prompt_text"] for j in first] == [f"img {i}" for i in range(10)]
    assert set(first[0]) == {"id", "prompt_text", "job_type", "created_at"}
    assert {j["job_type"] for j in first} == {"IMAGE_TEST"}
    ids = [j["id"] for j in first]
    assert ids == sorted(ids)
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 10
    rest = jm.get_and_lock_jobs("IMAGE_TEST", 100)
    assert [j["prompt_text"] for j in rest] == [f"img {i}" for i in range(10, 25)]
    assert jm.get_and_lock_jobs("IMAGE_TEST", 100) == []
    assert len(jm.get_and_lock_jobs("VIDEO_PROD", 1)) == 1
    # Each claim carries its own token; a batch shares one.
    tokens = scalar(
        db,
        "SELECT count(DISTINCT claim_token) FROM jobs WHERE id = ANY(%s)",
        ids,
    )
    assert tokens == 1


def test_batch_claim_finds_jobs_requeued_behind_the_cursor(
    jm: JobManager, db: psycopg.Connection
) -> None:
    jm.add_jobs([f"r{i}" for i in range(6)], "IMAGE_TEST")
    taken = jm.get_and_lock_jobs("IMAGE_TEST", 4)
    # The oldest goes back to pending, behind this manager's cursor.
    db.execute("UPDATE jobs SET status = 'pending' WHERE id = %s", (taken[0]["id"],))
    again = jm.get_and_lock_jobs("IMAGE_TEST", 10)
    assert sorted(j["prompt_text"] for j in again) == ["r0", "r4", "r5"]
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'pending'") == 0


def test_batch_claim_tops_up_from_behind_the_cursor_to_exactly_the_limit(
    jm: JobManager, db: psycopg.Connection
) -> None:
    """Fewer jobs after the cursor than asked for: the rest, and only the rest, comes from
    the head of the queue (mutation testing found nothing pinned the count of that top-up)."""
    jm.add_jobs([f"t{i}" for i in range(8)], "IMAGE_TEST")
    taken = jm.get_and_lock_jobs("IMAGE_TEST", 4)
    db.execute(
        "UPDATE jobs SET status = 'pending' WHERE id = ANY(%s)", ([j["id"] for j in taken[:3]],)
    )
    again = jm.get_and_lock_jobs("IMAGE_TEST", 5)
    assert [j["prompt_text"] for j in again] == ["t0", "t4", "t5", "t6", "t7"]  # oldest first
    pending = db.execute("SELECT prompt_text FROM jobs WHERE status = 'pending' ORDER BY id")
    assert [r[0] for r in pending] == ["t1", "t2"]


def test_batch_endings_take_up_to_10000_ids(
    jm: JobManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="job_manager")
    ids = list(range(1_000_001, 1_010_001))
    assert jm.mark_jobs_as_completed([(i, None) for i in ids]) == []
    assert "jobs 1000001, 1000002" in caplog.text
    with pytest.raises(InvalidArgumentError, match="at most 10000 jobs per call, got 10001"):
        jm.mark_jobs_as_failed([(i, None) for i in [*ids, 2_000_000]])


@pytest.mark.parametrize("limit", [0, -1, 10_001, 2**70])
def test_batch_limit_is_checked(jm: JobManager, limit: int) -> None:
    jm.add_job("x", "IMAGE_TEST")
    message = "out of range" if limit > 2**63 else "limit must be from 1 to 10000"
    with pytest.raises(InvalidArgumentError, match=message):
        jm.get_and_lock_jobs("IMAGE_TEST", limit)
    with pytest.raises(InvalidArgumentError):
        jm.wait_and_lock_jobs("IMAGE_TEST", limit, 0)
    assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 1}}


def test_batch_endings(
    jm: JobManager, db: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    jm.add_jobs([f"e{i}" for i in range(6)], "IMAGE_TEST")
    jobs = jm.get_and_lock_jobs("IMAGE_TEST", 5)
    ids = [j["id"] for j in jobs]
    db.execute("UPDATE jobs SET local_path = '/kept.png' WHERE id = %s", (ids[1],))
    done = jm.mark_jobs_as_completed([(ids[0], "/a.png"), (ids[1], None), (ids[2], "/c.png")])
    assert done == ids[:3]
    rows = db.execute(
        "SELECT id, status, local_path FROM jobs WHERE id = ANY(%s) ORDER BY id", (ids[:3],)
    ).fetchall()
    assert rows == [
        (ids[0], "completed", "/a.png"),
        (ids[1], "completed", "/kept.png"),
        (ids[2], "completed", "/c.png"),
    ]
    failed = jm.mark_jobs_as_failed([(ids[4], "boom"), (ids[3], None)])
    assert failed == [ids[4], ids[3]]
    assert db.execute(
        "SELECT status, error_message FROM jobs WHERE id = ANY(%s) ORDER BY id", (ids[3:5],)
    ).fetchall() == [("failed", None), ("failed", "boom")]
    pending = scalar(db, "SELECT id FROM jobs WHERE status = 'pending'")
    caplog.set_level(logging.WARNING, logger="job_manager")
    # A missing id and a job that is not processing: warnings, as the single endings.
    assert jm.mark_jobs_as_completed([(999_999, "/x"), (pending, "/p")]) == [pending]
    text = caplog.text
    assert "jobs 999999 do not exist" in text
    assert f"{pending} (pending)" in text
    assert jm.mark_jobs_as_completed([]) == []


def test_batch_endings_bad_input(jm: JobManager) -> None:
    a = jm.add_job("bad", "IMAGE_TEST")
    with pytest.raises(InvalidArgumentError, match="more than once"):
        jm.mark_jobs_as_completed([(a, "/x"), (a, "/y")])
    with pytest.raises(InvalidArgumentError, match="positive integer id"):
        jm.mark_jobs_as_failed([(0, "m")])
    with pytest.raises(InvalidArgumentError, match="NUL"):
        jm.mark_jobs_as_failed([(a, "nul\x00")])
    assert jm.get_job_stats() == {"IMAGE_TEST": {"pending": 1}}


def test_eight_threads_claim_each_job_exactly_once(jm: JobManager, dsn: str) -> None:
    jm.add_jobs([f"t{i}" for i in range(3000)], "VIDEO_PROD")
    claimed: list[int] = []
    lock = threading.Lock()
    other = JobManager(dsn, pool_size=8)

    def worker(n: int) -> None:
        mine = []
        manager = jm if n % 2 else other
        while batch := manager.get_and_lock_jobs("VIDEO_PROD", 7 + n):
            ids = [j["id"] for j in batch]
            mine.extend(ids)
            manager.mark_jobs_as_completed([(i, f"/{i}") for i in ids])
        with lock:
            claimed.extend(mine)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    other.close()
    assert len(claimed) == 3000
    assert len(set(claimed)) == 3000
    assert jm.get_job_stats() == {"VIDEO_PROD": {"completed": 3000}}


def _drain_batches(dsn: str, job_type: str, out) -> None:  # type: ignore[no-untyped-def]
    jm = JobManager(dsn)
    claimed = []
    while batch := jm.get_and_lock_jobs(job_type, 50):
        claimed.extend(j["id"] for j in batch)
    out.put(claimed)


@pytest.mark.slow
def test_four_processes_claim_each_job_exactly_once(
    dsn: str, jm: JobManager, db: psycopg.Connection
) -> None:
    jm.add_jobs([f"p{i}" for i in range(5000)], "IMAGE_TEST")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain_batches, args=(dsn, "IMAGE_TEST", out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert len(claimed) == 5000
    assert len(set(claimed)) == 5000
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'pending'") == 0


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOB_MANAGER_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "job_manager", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_cli_claim_prints_json_lines(jm: JobManager, dsn: str) -> None:
    jm.add_jobs([f"c{i}" for i in range(5)], "IMAGE_TEST")
    r = _cli(dsn, "claim", "--type", "IMAGE_TEST", "--batch", "3")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [j["prompt_text"] for j in lines] == ["c0", "c1", "c2"]
    assert set(lines[0]) == {"id", "prompt_text", "job_type", "created_at"}
    assert _cli(dsn, "claim", "-t", "IMAGE_TEST").stdout.count("\n") == 1
    r = _cli(dsn, "claim", "-t", "IMAGE_TEST", "-n", "10", "--wait", "0.5")
    assert r.returncode == 0
    assert len(r.stdout.splitlines()) == 1
    r = _cli(dsn, "claim", "-t", "IMAGE_TEST", "--wait", "0.3")
    assert (r.returncode, r.stdout) == (0, "")
    for bad in (["--batch", "0"], ["--batch", "10001"], ["--wait", "-1"], ["--wait", "nan"]):
        r = _cli(dsn, "claim", "-t", "IMAGE_TEST", *bad)
        assert r.returncode == 2, bad
        assert "must be from" in r.stderr or "not a" in r.stderr
    assert _cli(dsn, "claim").returncode == 2


def test_batch_claims_whose_reply_is_lost_are_handed_to_their_caller(
    proxy: Proxy,
    dsn: str,
    jm: JobManager,
    db: psycopg.Connection,
) -> None:
    """The claim token covers a batch: a claim of 5 whose reply the proxy drops after the
    server committed is found again on a new connection, and those 5 jobs are returned."""
    jm.add_jobs([f"lost {i}" for i in range(60)], "IMAGE_TEST")
    via_proxy = JobManager(via(proxy, dsn), connect_timeout=2, io_timeout=0.5)
    handed: list[int] = []
    for _ in range(5):
        warm = via_proxy.get_and_lock_jobs("IMAGE_TEST", 5)  # the statement is prepared
        assert len(warm) == 5
        handed += [j["id"] for j in warm]
        proxy.lose_next_reply()
        lost = via_proxy.get_and_lock_jobs("IMAGE_TEST", 5)
        assert len(lost) == 5
        handed += [j["id"] for j in lost]
    assert len(handed) == len(set(handed)) == 50
    processing = {r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'processing'")}
    assert processing == set(handed)
    via_proxy.close()
