-- The least privilege job_manager's queue role needs, and nothing more.
--
--   psql -v ON_ERROR_STOP=1 -v role=job_manager -v dbname=job_manager -d job_manager \
--        -f scripts/job_manager_grants.sql
--
-- Run it as the tables' owner (or a superuser) AFTER `python -m job_manager init` has created
-- or migrated the schema as that owner; run both again after an upgrade that adds migrations.
-- docker-compose.yml does exactly this (service job-manager-grants). Tested by
-- tests/test_grants.py against a real server: a role with exactly these grants runs every call
-- the DAGs and the CLI's queue commands make.
--
-- What the role can then NOT do, on purpose:
--   * DDL: init_database() with a migration pending, and restore_database() (it drops and
--     re-adds the tables' keys and indexes around its COPY, which only the owner may do):
--     operators run those with the owner's DSN.
--   * ANALYZE / VACUUM: only the owner (or, from PostgreSQL 17, a role granted MAINTAIN) may;
--     analyze_tables()/vacuum_tables() skip them for this role with a warning and leave them
--     out of what they report done; autovacuum still analyzes. On PostgreSQL 17+ you may add
--     GRANT MAINTAIN ON TABLE public.jobs, public.download_queue TO :"role";
--   * anything on other tables, and CREATE in the schema (revoked from PUBLIC: PostgreSQL 15+
--     does that by default; docker-compose.yml revokes it on older servers too).

-- Connect, and the temporary tables restore's staging uses (harmless without ownership).
GRANT CONNECT, TEMPORARY ON DATABASE :"dbname" TO :"role";
GRANT USAGE ON SCHEMA public TO :"role";
-- The queue: add, claim (SELECT ... FOR UPDATE SKIP LOCKED), update, delete old downloads.
GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.jobs, public.download_queue TO :"role";
-- init_database() and health_report() read the migration history; they never write it
-- unless a migration is pending (and that needs the owner anyway).
GRANT SELECT ON TABLE public.job_manager_schema_history TO :"role";
-- nextval() for new rows; backups read the sequences' positions.
GRANT USAGE, SELECT ON SEQUENCE public.jobs_id_seq, public.download_queue_id_seq TO :"role";
