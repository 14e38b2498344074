-- V1: the replaced system's last layout (jobs + download_queue).
--
-- Written to adopt any earlier layout in place: every statement creates only what is missing.
-- Nothing here drops a table, a column or a row, and nothing touches tables it does not name
-- (Airflow keeps its own metadata in the same database).

DO $migration$
BEGIN
    IF to_regprocedure('update_updated_at_column()') IS NULL THEN
        CREATE FUNCTION update_updated_at_column() RETURNS trigger
            LANGUAGE plpgsql
            AS $fn$
            BEGIN
                NEW.updated_at = CURRENT_TIMESTAMP;
                RETURN NEW;
            END;
            $fn$;
    END IF;
END
$migration$;

CREATE TABLE IF NOT EXISTS jobs (
    id SERIAL PRIMARY KEY,
    prompt_text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CONSTRAINT jobs_status_check CHECK (status IN (
            'pending', 'processing', 'completed', 'failed',
            'awaiting_retry', 'generation_successful')),
    job_type TEXT NOT NULL
        CONSTRAINT jobs_job_type_check CHECK (job_type IN ('IMAGE_TEST', 'VIDEO_PROD')),
    local_path TEXT,
    gcs_uri TEXT,
    operation_id TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- Columns that older layouts lack (the oldest has no operation_id).
ALTER TABLE jobs
    ADD COLUMN IF NOT EXISTS local_path TEXT,
    ADD COLUMN IF NOT EXISTS gcs_uri TEXT,
    ADD COLUMN IF NOT EXISTS operation_id TEXT,
    ADD COLUMN IF NOT EXISTS created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP;

-- Every layout has prompt_text UNIQUE as jobs_prompt_text_key; add it where it is missing.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_prompt_text_key ON jobs (prompt_text);
CREATE INDEX IF NOT EXISTS idx_jobs_status ON jobs (status);
CREATE INDEX IF NOT EXISTS idx_jobs_job_type ON jobs (job_type);
CREATE INDEX IF NOT EXISTS idx_jobs_created_at ON jobs (created_at);
CREATE INDEX IF NOT EXISTS idx_jobs_operation_id ON jobs (operation_id);

DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'jobs'::regclass AND tgname = 'update_jobs_updated_at') THEN
        CREATE TRIGGER update_jobs_updated_at
            BEFORE UPDATE ON jobs
            FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
    END IF;
END
$migration$;

CREATE TABLE IF NOT EXISTS download_queue (
    id SERIAL PRIMARY KEY,
    job_id INTEGER REFERENCES jobs (id) ON DELETE CASCADE,
    remote_url TEXT NOT NULL,
    local_path TEXT NOT NULL,
    file_type TEXT NOT NULL CHECK (file_type IN ('image', 'video')),
    file_size BIGINT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'downloading', 'completed', 'failed')),
    priority INTEGER DEFAULT 0,
    attempts INTEGER DEFAULT 0,
    max_attempts INTEGER DEFAULT 3,
    error_message TEXT,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_download_queue_status ON download_queue (status);
CREATE INDEX IF NOT EXISTS idx_download_queue_job_id ON download_queue (job_id);
CREATE INDEX IF NOT EXISTS idx_download_queue_priority ON download_queue (priority);
CREATE INDEX IF NOT EXISTS idx_download_queue_created_at ON download_queue (created_at);

DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'download_queue'::regclass
                     AND tgname = 'update_download_queue_updated_at') THEN
        CREATE TRIGGER update_download_queue_updated_at
            BEFORE UPDATE ON download_queue
            FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
    END IF;
END
$migration$;
