#!/usr/bin/env bash
# Back up the job queue from the host, as the operators of the old system did:
#
#   scripts/backup_database.sh [--compress] [--keep N] [--json]
#
# A thin wrapper over `python -m job_manager backup` run in the scheduler container
# (docker compose exec). The backup lands in the container's $JOB_MANAGER_BACKUP_DIR, which
# docker-compose.yml mounts from ./backups. Set JOB_MANAGER_EXEC="" to run the command on this
# machine instead (it then needs job_manager installed and a DSN in the environment, or
# JOB_MANAGER_DSN_FILE naming a file that holds it: never put a password on a command line).
#
# The command prints what it did: the file it wrote, then what rotation deleted (or why
# rotation failed: the new backup is then kept). This script adds nothing it does not know.
set -euo pipefail
exec_prefix=${JOB_MANAGER_EXEC-docker compose exec -T airflow-scheduler}
echo "backing up: ${exec_prefix:+$exec_prefix }python -m job_manager backup $*" >&2
status=0
${exec_prefix} python -m job_manager backup "$@" || status=$?
if [[ $status -eq 0 ]]; then
    echo "backup done" >&2
else
    echo "backup FAILED (exit $status): the messages above say what happened (whether a" \
        "backup was written, what rotation deleted); see the files with" \
        "'python -m job_manager list-backups'" >&2
    exit "$status"
fi
