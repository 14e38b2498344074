-- V7: indexes for the "Job queue" page and /job-manager/metrics (the Airflow UI plugin).
--
-- Every statement the page runs reads through an index, except the exact counts per status,
-- which must visit every row (PostgreSQL rightly scans the table for them). V1 and V3 already
-- serve jobs added per hour/day (idx_jobs_created_at), stuck jobs
-- (idx_jobs_processing_updated_at) and the health report's download check
-- (idx_download_queue_status). Two were missing:
--
-- * jobs finished per hour/day: completed or failed jobs by their last change. Partial, so it
--   holds only finished jobs; status is included so the count per status is index-only.
-- * the oldest pending job: min(created_at) of pending jobs. Through idx_jobs_created_at it
--   would walk every older finished job first; this partial index holds only pending jobs.
--
-- Plain CREATE INDEX, not CONCURRENTLY: each migration commits with its history row in one
-- transaction, and CONCURRENTLY cannot run in a transaction. A plain build blocks writes to
-- jobs (not reads) while it runs: measured in BENCHMARKS.md on 1,000,000 jobs. init_database's
-- lock_timeout bounds the wait for the table lock, so it fails fast instead of queueing behind
-- a long transaction. Where even that pause is too long, create the two indexes beforehand
-- with CREATE INDEX CONCURRENTLY and these exact names and definitions; IF NOT EXISTS then
-- makes this migration a no-op (check \d jobs first: a failed concurrent build leaves an
-- INVALID index, which must be dropped and built again).

CREATE INDEX IF NOT EXISTS idx_jobs_finished_updated_at ON jobs (updated_at) INCLUDE (status)
    WHERE status IN ('completed', 'failed');
CREATE INDEX IF NOT EXISTS idx_jobs_pending_created_at ON jobs (created_at)
    WHERE status = 'pending';
