-- V2: the status values of the last layout.
--
-- Before this runs, the runner has lifted the old constraint and mapped the statuses of the
-- oldest layout (submitted -> processing, poll_completed -> generation_successful,
-- awaiting_manual_retry -> awaiting_retry), logging how many rows each mapping touched.

ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN (
    'pending', 'processing', 'completed', 'failed', 'awaiting_retry', 'generation_successful'));
