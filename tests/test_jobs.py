"""The job queue API: same names, arguments and results as the replaced JobManager."""

from __future__ import annotations

import datetime
import threading

import psycopg
import pytest
from conftest import FIXTURES, scalar
from job_manager import InvalidArgumentError, JobManager, SchemaError


def test_add_job_returns_new_then_existing_id(jm: JobManager, db: psycopg.Connection) -> None:
    a = jm.add_job("a cat in a garden", "IMAGE_TEST")
    b = jm.add_job("a dog on a beach", "VIDEO_PROD")
    assert b == a + 1
    assert jm.add_job("a cat in a garden", "IMAGE_TEST") == a
    # The prompt is unique across types: the existing job's id, not a second job.
    assert jm.add_job("a cat in a garden", "VIDEO_PROD") == a
    assert scalar(db, "SELECT count(*) FROM jobs") == 2
    assert db.execute("SELECT status, job_type FROM jobs WHERE id = %s", (a,)).fetchone() == (
        "pending",
        "IMAGE_TEST",
    )


def test_add_job_stores_text_exactly(jm: JobManager) -> None:
    prompts = [
        "tab at the end\t",
        "line\nbreaks\r\nand \\backslashes\\ and 'quotes' and \"double\"",
        "'; DROP TABLE jobs; --",
        "一只可爱的小猫坐在花园里 with English and emoji 🐱",
        "\u202eright-to-left mark",
        "%s %(name)s $1 {} \\x00 literal",
    ]
    for p in prompts:
        job = jm.get_job_by_id(jm.add_job(p, "IMAGE_TEST"))
        assert job is not None
        assert job["prompt_text"] == p
    assert jm.check_table_exists("jobs")


@pytest.mark.parametrize(
    ("prompt", "job_type", "match"),
    [
        (
            "x",
            "image_test",
            'unknown job_type "image_test"; expected one of: IMAGE_TEST, VIDEO_PROD',
        ),
        ("x", "", "unknown job_type"),
        ("nul\x00byte", "IMAGE_TEST", "NUL"),
        ("", "IMAGE_TEST", "prompt_text is empty"),
        ("   \n", "IMAGE_TEST", "prompt_text is empty"),
        ("lone \ud800 surrogate", "IMAGE_TEST", "unpaired surrogate"),
    ],
)
def test_add_job_bad_input(jm: JobManager, prompt: str, job_type: str, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        jm.add_job(prompt, job_type)
    # InvalidArgumentError is also a ValueError, for code that already catches that.
    with pytest.raises(ValueError):  # noqa: PT011
        jm.add_job(prompt, job_type)
    assert jm.get_job_stats() == {}


def test_add_job_too_long_for_the_unique_index(jm: JobManager) -> None:
    with pytest.raises(InvalidArgumentError, match="too large"):
        jm.add_job("".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(20_000)), "IMAGE_TEST")


def test_add_job_without_schema_says_what_to_do(bare_jm: JobManager) -> None:
    with pytest.raises(SchemaError, match="init_database"):
        bare_jm.add_job("x", "IMAGE_TEST")


def test_add_jobs_bulk(jm: JobManager, db: psycopg.Connection) -> None:
    prompts = [f"prompt {i}" for i in range(25_000)]
    assert jm.add_jobs(prompts, "VIDEO_PROD") == 25_000
    # Already queued prompts are skipped; duplicates within one call count once.
    assert jm.add_jobs([*prompts[:10], "new one", "new one"], "VIDEO_PROD") == 1
    assert jm.add_jobs([], "VIDEO_PROD") == 0
    assert scalar(db, "SELECT count(*) FROM jobs") == 25_001
    # Ids follow the order of the prompts (FIFO claims).
    first = jm.get_and_lock_job("VIDEO_PROD")
    assert first is not None
    assert first["prompt_text"] == "prompt 0"


def test_add_jobs_skips_a_queued_prompt_the_sample_misses(
    jm: JobManager, db: psycopg.Connection
) -> None:
    # add_jobs checks a sample of the batch, then COPYs it whole; here the one queued prompt
    # is not in the sample, so the COPY meets it, rolls back, and the lookup path adds the rest.
    queued = jm.add_job("new 5000", "IMAGE_TEST")
    prompts = [f"new {i}" for i in range(10_001)]
    assert jm.add_jobs(prompts, "VIDEO_PROD") == 10_000
    assert scalar(db, "SELECT count(*) FROM jobs") == 10_001
    assert db.execute(
        "SELECT id, job_type FROM jobs WHERE prompt_text = 'new 5000'"
    ).fetchone() == (
        queued,
        "IMAGE_TEST",
    )
    # The rest in the order given.
    ids = [
        r[0]
        for r in db.execute(
            "SELECT prompt_text FROM jobs WHERE job_type = 'VIDEO_PROD' ORDER BY id"
        )
    ]
    assert ids == [p for p in prompts if p != "new 5000"]


def test_concurrent_add_jobs_of_overlapping_batches(
    dsn: str, jm: JobManager, db: psycopg.Connection
) -> None:
    # Four writers, each batch overlapping its neighbours': every prompt is queued once, and
    # the counts returned add up to the rows there are (the races end in ON CONFLICT).
    added: list[int] = []
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            added.append(
                JobManager(dsn).add_jobs(
                    [f"o {i}" for i in range(k * 3000, k * 3000 + 6000)], "IMAGE_TEST"
                )
            )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert scalar(db, "SELECT count(*) FROM jobs") == sum(added) == 15_000
    assert scalar(db, "SELECT count(DISTINCT prompt_text) FROM jobs") == 15_000


def test_add_jobs_is_all_or_nothing(jm: JobManager) -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        jm.add_jobs(["fine", "bad\x00"], "IMAGE_TEST")
    with pytest.raises(InvalidArgumentError):
        jm.add_jobs(["fine"], "NOPE")
    with pytest.raises(TypeError):
        jm.add_jobs("a string is not a list of prompts", "IMAGE_TEST")  # type: ignore[arg-type]
    assert jm.get_job_stats() == {}


def test_add_test_jobs_counts_like_the_old_one(jm: JobManager) -> None:
    prompts = (FIXTURES / "test_prompts.txt").read_text(encoding="utf-8").splitlines()
    prompts = [p.strip() for p in prompts if p.strip()]
    assert jm.add_test_jobs(prompts) == len(prompts)
    # Again: all already queued as IMAGE_TEST, all counted.
    assert jm.add_test_jobs(prompts) == len(prompts)
    # A prompt queued as VIDEO_PROD is not an IMAGE_TEST job.
    jm.add_job("video only", "VIDEO_PROD")
    assert jm.add_test_jobs(["video only", prompts[0]]) == 1
    assert jm.get_job_stats() == {
        "IMAGE_TEST": {"pending": len(prompts)},
        "VIDEO_PROD": {"pending": 1},
    }


def test_claims_are_fifo_per_type(jm: JobManager, db: psycopg.Connection) -> None:
    assert jm.get_and_lock_job("IMAGE_TEST") is None
    a = jm.add_job("first", "IMAGE_TEST")
    jm.add_job("video", "VIDEO_PROD")
    b = jm.add_job("second", "IMAGE_TEST")
    job = jm.get_and_lock_job("IMAGE_TEST")
    assert job is not None
    assert set(job) == {"id", "prompt_text", "job_type", "created_at"}
    assert (job["id"], job["prompt_text"], job["job_type"]) == (a, "first", "IMAGE_TEST")
    assert isinstance(job["created_at"], datetime.datetime)
    job2 = jm.get_and_lock_job("IMAGE_TEST")
    assert job2 is not None
    assert job2["id"] == b
    assert jm.get_and_lock_job("IMAGE_TEST") is None
    assert scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 2
    with pytest.raises(InvalidArgumentError):
        jm.get_and_lock_job("AUDIO")


def test_a_requeued_job_behind_the_claim_cursor_is_still_claimed(
    jm: JobManager, db: psycopg.Connection
) -> None:
    """Claims start after the previous one; a job put back to pending behind that point is
    claimed when the forward scan runs dry (or within 1000 claims), never lost."""
    ids = [jm.add_job(f"cursor {i}", "IMAGE_TEST") for i in range(5)]
    got = [jm.get_and_lock_job("IMAGE_TEST")["id"] for _ in range(3)]  # type: ignore[index]
    assert got == ids[:3]
    db.execute("UPDATE jobs SET status = 'pending' WHERE id = %s", (ids[0],))
    rest = []
    while (job := jm.get_and_lock_job("IMAGE_TEST")) is not None:
        rest.append(job["id"])
    assert rest == [ids[3], ids[4], ids[0]]
    # A fresh JobManager (no cursor) sees FIFO from the head of the queue.
    db.execute("UPDATE jobs SET status = 'pending' WHERE id IN (%s, %s)", (ids[1], ids[4]))
    assert [JobManager(jm_dsn(db)).get_and_lock_job("IMAGE_TEST")["id"] for _ in range(2)] == [  # type: ignore[index]
        ids[1],
        ids[4],
    ]


def jm_dsn(db: psycopg.Connection) -> str:
    info = db.info
    return f"postgresql://{info.user}:{info.password}@{info.host}:{info.port}/{info.dbname}"


def test_job_lifecycle(jm: JobManager, db: psycopg.Connection) -> None:
    job_id = jm.add_job("lifecycle", "VIDEO_PROD")
    created = jm.get_job_by_id(job_id)
    assert created is not None
    assert created["status"] == "pending"
    assert jm.update_job_operation_info(job_id, "operations/123") is True
    assert jm.get_job_operation_id(job_id) == "operations/123"
    assert jm.mark_job_as_generation_successful(job_id, "gs://bucket/v.mp4") is True
    assert jm.mark_job_as_awaiting_retry(job_id) is True
    assert jm.update_job_gcs_uri(job_id, "gs://bucket/v2.mp4") is True
    assert jm.mark_job_as_failed(job_id, "quota exceeded: 429") is True
    failed = jm.get_job_by_id(job_id)
    assert failed is not None
    assert (failed["status"], failed["error_message"]) == ("failed", "quota exceeded: 429")
    assert jm.mark_job_as_completed(job_id, "/opt/airflow/outputs/v.mp4") is True
    done = jm.get_job_by_id(job_id)
    assert done is not None
    assert done["status"] == "completed"
    assert done["local_path"] == "/opt/airflow/outputs/v.mp4"
    # gcs_uri was not given: kept, as the old code only set the fields it was given.
    assert done["gcs_uri"] == "gs://bucket/v2.mp4"
    assert done["operation_id"] == "operations/123"
    # The BEFORE UPDATE trigger keeps updated_at moving.
    assert done["updated_at"] is not None
    assert created["updated_at"] is not None
    assert done["updated_at"] > created["updated_at"]


def test_missing_job_is_false_or_none(jm: JobManager) -> None:
    assert jm.mark_job_as_completed(4242) is False
    assert jm.mark_job_as_failed(4242, "x") is False
    assert jm.mark_job_as_awaiting_retry(4242) is False
    assert jm.update_job_operation_info(4242, "op") is False
    assert jm.get_job_operation_id(4242) is None
    assert jm.get_job_by_id(4242) is None


@pytest.mark.parametrize("bad_id", [0, -1, 2**31, 2**63 - 1])
def test_bad_ids_are_refused(jm: JobManager, bad_id: int) -> None:
    with pytest.raises(InvalidArgumentError, match="positive integer"):
        jm.get_job_by_id(bad_id)
    with pytest.raises(InvalidArgumentError):
        jm.mark_job_as_completed(bad_id)


def test_reset_stuck_jobs_only_touches_old_processing_jobs(
    jm: JobManager, db: psycopg.Connection
) -> None:
    ids = [jm.add_job(f"job {i}", "IMAGE_TEST" if i % 2 else "VIDEO_PROD") for i in range(6)]
    for _ in range(4):
        assert jm.get_and_lock_job("IMAGE_TEST") or jm.get_and_lock_job("VIDEO_PROD")
    # Age all processing jobs except one by two hours (the trigger would reset updated_at).
    db.execute("ALTER TABLE jobs DISABLE TRIGGER update_jobs_updated_at")
    db.execute(
        "UPDATE jobs SET updated_at = LOCALTIMESTAMP - interval '2 hours' "
        "WHERE status = 'processing' AND id <> %s",
        (ids[0],),
    )
    db.execute("ALTER TABLE jobs ENABLE TRIGGER update_jobs_updated_at")
    processing = scalar(db, "SELECT count(*) FROM jobs WHERE status = 'processing'")
    assert processing == 4
    old_image = scalar(
        db,
        "SELECT count(*) FROM jobs WHERE status = 'processing' AND job_type = 'IMAGE_TEST' "
        "AND id <> %s",
        ids[0],
    )
    assert old_image > 0
    assert jm.reset_stuck_jobs("IMAGE_TEST") == old_image
    remaining_old = scalar(
        db, "SELECT count(*) FROM jobs WHERE status = 'processing' AND id <> %s", ids[0]
    )
    assert remaining_old == 3 - old_image
    assert jm.reset_stuck_jobs() == remaining_old
    # The recent one stays; with a zero age it goes too.
    assert scalar(db, "SELECT status FROM jobs WHERE id = %s", ids[0]) == "processing"
    assert jm.reset_stuck_jobs(older_than_seconds=0) == 1
    with pytest.raises(InvalidArgumentError):
        jm.reset_stuck_jobs(older_than_seconds=-5)


def test_show_stats_prints_the_old_format(
    jm: JobManager, capsys: pytest.CaptureFixture[str]
) -> None:
    jm.show_stats()
    assert capsys.readouterr().out == "数据库中没有作业\n"
    for i in range(3):
        jm.add_job(f"img {i}", "IMAGE_TEST")
    jm.add_job("vid", "VIDEO_PROD")
    claimed = jm.get_and_lock_job("IMAGE_TEST")
    assert claimed is not None
    jm.mark_job_as_completed(claimed["id"], "/x.png")
    jm.show_stats()
    assert capsys.readouterr().out == (
        "\n=== 作业统计信息 ===\n"
        "\nIMAGE_TEST:\n  completed: 1\n  pending: 2\n  总计: 3\n"
        "\nVIDEO_PROD:\n  pending: 1\n  总计: 1\n"
    )
    assert jm.get_job_stats() == {
        "IMAGE_TEST": {"completed": 1, "pending": 2},
        "VIDEO_PROD": {"pending": 1},
    }


def test_threads_share_one_manager(jm: JobManager) -> None:
    jm.add_jobs([f"t{i}" for i in range(2000)], "VIDEO_PROD")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while (job := jm.get_and_lock_job("VIDEO_PROD")) is not None:
            mine.append(job["id"])
        with lock:
            claimed.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 2000
    assert len(set(claimed)) == 2000
    status = jm.pool_status()
    assert status.size <= 4
    assert status.in_use == 0


CLAIM_SHAPE = (
    "EXPLAIN SELECT id FROM jobs WHERE status = 'pending' AND job_type = 'IMAGE_TEST' "
    "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)


def test_claims_use_the_claim_index_right_after_a_bulk_load(
    jm: JobManager, db: psycopg.Connection
) -> None:
    # Loaded by COPY alone, the planner knows nothing of the new rows and sorts every pending
    # job on each claim; add_jobs refreshes the statistics, so the claim index is used at once.
    with db.cursor().copy("COPY jobs (prompt_text, job_type) FROM STDIN") as copy:
        for i in range(50_000):
            copy.write_row((f"copied {i}", "IMAGE_TEST"))
    plan = "\n".join(r[0] for r in db.execute(CLAIM_SHAPE))
    assert "Sort" in plan, plan  # what add_jobs must prevent
    db.execute("TRUNCATE jobs CASCADE")
    assert jm.add_jobs([f"added {i}" for i in range(50_000)], "IMAGE_TEST") == 50_000
    plan = "\n".join(r[0] for r in db.execute(CLAIM_SHAPE))
    assert "idx_jobs_claim" in plan, plan
    assert "Sort" not in plan, plan
