-- V6: a notification on channel 'job_manager_jobs' whenever a job becomes pending, so that
-- waiting consumers (wait_for_job, wait_and_lock_job[s]) wake without polling.
--
-- The payload is the job type. PostgreSQL delivers a NOTIFY at COMMIT, in the same
-- transaction as the insert or the return to 'pending': a waiter is never woken before the row
-- is visible, and no commit after its LISTEN goes unnoticed. Repeats of one payload in one
-- transaction are folded into one notification by the server.
--
-- Inserts: one statement-level trigger with a transition table, so a COPY or a multi-row
-- INSERT of a million jobs calls the function once (one pg_notify per job type present), not
-- once per row. Returns to 'pending' (reset_stuck_jobs, a manual UPDATE): a row-level trigger
-- whose WHEN clause is evaluated without calling any function, so claims and endings, which
-- never set 'pending', pay only that comparison. (Transition tables cannot be combined with
-- a column list such as UPDATE OF status, which is why the two differ.)
--
-- Additive and idempotent: functions are replaced, triggers created only when missing.
-- pg_notify needs no privilege; trigger functions run whoever writes the row.

CREATE OR REPLACE FUNCTION job_manager_notify_inserted() RETURNS trigger
    LANGUAGE plpgsql
    AS $fn$
BEGIN
    PERFORM pg_notify('job_manager_jobs', t.job_type)
    FROM (SELECT DISTINCT job_type FROM job_manager_new_jobs WHERE status = 'pending') AS t;
    RETURN NULL;
END;
$fn$;

CREATE OR REPLACE FUNCTION job_manager_notify_pending() RETURNS trigger
    LANGUAGE plpgsql
    AS $fn$
BEGIN
    PERFORM pg_notify('job_manager_jobs', NEW.job_type);
    RETURN NULL;
END;
$fn$;

DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'jobs'::regclass AND tgname = 'job_manager_notify_insert') THEN
        CREATE TRIGGER job_manager_notify_insert
            AFTER INSERT ON jobs
            REFERENCING NEW TABLE AS job_manager_new_jobs
            FOR EACH STATEMENT EXECUTE FUNCTION job_manager_notify_inserted();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'jobs'::regclass AND tgname = 'job_manager_notify_requeue') THEN
        CREATE TRIGGER job_manager_notify_requeue
            AFTER UPDATE OF status ON jobs
            FOR EACH ROW
            WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
            EXECUTE FUNCTION job_manager_notify_pending();
    END IF;
END
$migration$;
