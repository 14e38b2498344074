#!/usr/bin/env bash
# Back up the job queue from the host, as the operators of the old system did:
#
#   scripts/backup_database.sh [--compress] [--keep N] [--json]
#
# A thin wrapper over `python -m job_manager backup` run in the scheduler container
# (docker compose exec). The backup lands in the container's $JOB_MANAGER_BACKUP_DIR, which
# docker-compose.yml mounts from ./backups. Set JOB_MANAGER_EXEC="" to run the command on this
# machine instead (it then needs job_manager installed and a DSN in the environment).
set -euo pipefail
exec_prefix=${JOB_MANAGER_EXEC-docker compose exec -T airflow-scheduler}
echo "backing up: ${exec_prefix:+$exec_prefix }python -m job_manager backup $*" >&2
if ${exec_prefix} python -m job_manager backup "$@"; then
    echo "backup done" >&2
else
    status=$?
    echo "backup FAILED (exit $status): no new backup was written, the existing ones are untouched" >&2
    exit "$status"
fi
