#!/usr/bin/env bash
# The queue's database and least-privileged role, for docker-compose.yml (run with the
# postgres image, as the superuser; connection from PGHOST/PGPORT/PGUSER/PGPASSWORD):
#
#   bash scripts/compose_db_setup.sh before-init   # role, databases, PUBLIC revoked
#   bash scripts/compose_db_setup.sh after-init    # the GRANTs of job_manager_grants.sql
#
# Between the two, `python -m job_manager init` creates the schema as the superuser (the
# tables' owner); the role `job_manager` then gets exactly what job_manager needs.
# Variables: JOB_MANAGER_DB_PASSWORD (required), JOB_MANAGER_DB (default job_manager),
# JOB_MANAGER_ROLE (default job_manager), JOB_MANAGER_GRANTS (the SQL file).
set -euo pipefail
role=${JOB_MANAGER_ROLE:-job_manager}
db=${JOB_MANAGER_DB:-job_manager}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
grants=${JOB_MANAGER_GRANTS:-$here/job_manager_grants.sql}
psql_() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
case ${1-} in
    before-init)
        : "${JOB_MANAGER_DB_PASSWORD:?set JOB_MANAGER_DB_PASSWORD}"
        psql_ -d "${PGDATABASE:-postgres}" -v role="$role" -v db="$db" \
            -v pw="$JOB_MANAGER_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'pw';
SELECT format('CREATE DATABASE %I', :'db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
-- The queue example's scratch database: the role owns it (the example creates its tables).
SELECT format('CREATE DATABASE job_queue_example OWNER %I', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'job_queue_example') \gexec
SQL
        psql_ -d "$db" -c 'REVOKE CREATE ON SCHEMA public FROM PUBLIC'
        echo "role $role and database $db ready" >&2
        ;;
    after-init)
        psql_ -d "$db" -v role="$role" -v dbname="$db" -f "$grants"
        echo "granted $role what job_manager needs on $db" >&2
        ;;
    *)
        echo "usage: $0 before-init|after-init" >&2
        exit 2
        ;;
esac
