#!/usr/bin/env bash
# Restore the job queue from a backup, from the host:
#
#   scripts/restore_database.sh backups/airflow_backup_YYYYMMDD_HHMMSS.sql [--yes] [--no-safety-backup]
#
# A thin wrapper over `python -m job_manager restore` run in the scheduler container. The
# file is verified in full first; the restore replaces jobs and download_queue in one
# transaction (nothing else in the database is touched) after taking a safety backup.
# The path is resolved inside the container: files under ./backups on the host are under
# $JOB_MANAGER_BACKUP_DIR there. Set JOB_MANAGER_EXEC="" to run on this machine instead.
# The file is passed after `--`, so a name that starts with '-' is a file, never an option.
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 BACKUP_FILE [--yes] [--no-safety-backup]" >&2
    exit 2
fi
file=$1
shift
for arg in "$@"; do
    case $arg in
        --yes | --no-safety-backup | --json | -q | --quiet | --dir=*) ;;
        *)
            echo "unknown option: $arg (usage: $0 BACKUP_FILE [--yes] [--no-safety-backup])" >&2
            exit 2
            ;;
    esac
done
# With a terminal, the container's prompt can ask for confirmation; without one, pass --yes.
if [[ -t 0 ]]; then tty_flag=""; else tty_flag="-T"; fi
exec_prefix=${JOB_MANAGER_EXEC-docker compose exec $tty_flag airflow-scheduler}
if [[ -n $exec_prefix && $file == backups/* ]]; then
    file="${JOB_MANAGER_BACKUP_DIR_IN_CONTAINER:-/opt/airflow/backups}/${file#backups/}"
fi
echo "restoring: ${exec_prefix:+$exec_prefix }python -m job_manager restore $* -- $file" >&2
status=0
${exec_prefix} python -m job_manager restore "$@" -- "$file" || status=$?
if [[ $status -eq 0 ]]; then
    echo "restore done" >&2
else
    echo "restore FAILED (exit $status): see the messages above. The restore is one" \
        "transaction: unless they say it was restored, jobs and download_queue are as they" \
        "were (a safety backup may have been written: its path is printed above if so)" >&2
    exit "$status"
fi
