-- V3: what the queue's own queries need.
--
-- error_message keeps the reason given to mark_job_as_failed (the old system only logged it).
-- The partial indexes stay small however many jobs are done, so a claim, a stuck-job sweep or
-- a download scan reads only the rows it may touch.

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS error_message TEXT;

-- get_and_lock_job: oldest pending job of a type.
CREATE INDEX IF NOT EXISTS idx_jobs_claim ON jobs (job_type, created_at, id)
    WHERE status = 'pending';
-- reset_stuck_jobs: processing jobs by age.
CREATE INDEX IF NOT EXISTS idx_jobs_processing_updated_at ON jobs (updated_at)
    WHERE status = 'processing';
-- get_job_stats / show_stats: an index-only scan instead of reading every row.
CREATE INDEX IF NOT EXISTS idx_jobs_type_status ON jobs (job_type, status);
-- get_pending_downloads: highest priority, then oldest.
CREATE INDEX IF NOT EXISTS idx_download_queue_pending ON download_queue
    (priority DESC, created_at, id) WHERE status = 'pending';
-- cleanup_old_downloads: completed downloads by age.
CREATE INDEX IF NOT EXISTS idx_download_queue_completed_at ON download_queue (completed_at)
    WHERE status = 'completed';
