"""The command line: ``python -m job_manager`` or ``job-manager``.

The old script's subcommands and flags (``add -p/-f/-t``, ``stats``, ``reset
--job-type-filter``) plus ``init`` and the backup commands (``backup``, ``verify``, ``restore``,
``list-backups``, ``cleanup-backups``, ``dump``); ``--json`` prints data for scripts. Failures
print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from job_manager._internal import (
    SCHEMA_VERSION,
    __version__,
    cleanup_old_backups,
    cleanup_old_logs,
    list_backups,
    verify_backup,
)
from job_manager.exceptions import BackupCorruptError, InvalidArgumentError, JobManagerError
from job_manager.manager import JobManager

JOB_TYPES = ("IMAGE_TEST", "VIDEO_PROD")
DEFAULT_BACKUP_DIR = os.environ.get("JOB_MANAGER_BACKUP_DIR", "backups")
#: A job claimed less than this long ago is never reset (its worker may be busy with it).
MIN_STUCK_S = 300.0


def _number(minimum: float, maximum: float, *, whole: bool = False) -> Any:
    """An argparse type: a finite number from minimum to maximum (a usage error otherwise)."""

    def parse(text: str) -> float | int:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise argparse.ArgumentTypeError(f"must be from {minimum:g} to {maximum:g}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _resolve_dsn(args: argparse.Namespace) -> str | None:
    """The DSN from --dsn-file / $JOB_MANAGER_DSN_FILE, --dsn (warned: visible in the process
    list), or None for the environment ($JOB_MANAGER_DSN, else $POSTGRES_*)."""
    path = args.dsn_file or os.environ.get("JOB_MANAGER_DSN_FILE")
    if path and args.dsn:
        raise _UsageError("pass --dsn or --dsn-file, not both")
    dsn = args.dsn
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                dsn = f.read(65536).strip()
        except OSError as e:
            raise _UsageError(f"cannot read the DSN file {path}: {e.strerror}") from None
        if not dsn:
            raise _UsageError(f"the DSN file {path} is empty")
    elif dsn:
        print(
            "warning: --dsn shows the password to every user of this machine (the process "
            "list, /proc/PID/cmdline); use --dsn-file PATH or $JOB_MANAGER_DSN instead",
            file=sys.stderr,
        )
    if dsn is None:
        dsn = os.environ.get("JOB_MANAGER_DSN") or None
    if dsn and dsn.startswith(("postgres://", "postgresql://")):
        authority = dsn.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        if authority.count("@") > 1:
            # Otherwise the text after the password's '@' is taken for the host, and shown.
            raise _UsageError(
                "the DSN's password contains a raw '@': percent-encode it as %40 "
                "(postgresql://user:p%40ss@host/db)"
            )
    return dsn


def default_log_dir() -> str:
    """Airflow's base log folder: its setting, else $AIRFLOW_HOME/logs."""
    configured = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER")
    if configured:
        return configured
    return os.path.join(os.environ.get("AIRFLOW_HOME", "/opt/airflow"), "logs")


def _prog() -> str:
    """How the user called us: ``job-manager`` (the console script) or ``python -m job_manager``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name in ("__main__.py", "-c") or name.endswith(".py"):
        return "python -m job_manager"
    return name


DESCRIPTION = """\
Manage the PostgreSQL job queue of job_manager.

queue:        add, stats, reset, init, claim
backups:      backup, verify, restore, import, list-backups, cleanup-backups, dump
upkeep:       maintain, cleanup-logs, health, size

The database comes from --dsn-file, $JOB_MANAGER_DSN, else $POSTGRES_*. Run
'%(prog)s COMMAND --help' for a command's options."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dsn",
        help="PostgreSQL DSN; visible to every local user in the process list: prefer "
        "--dsn-file or $JOB_MANAGER_DSN (default: $JOB_MANAGER_DSN, else $POSTGRES_*)",
    )
    parser.add_argument(
        "--dsn-file",
        metavar="PATH",
        help="read the DSN from this file (default: $JOB_MANAGER_DSN_FILE)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    parser.add_argument(
        "--version",
        action="version",
        version=f"job_manager {__version__} (schema V{SCHEMA_VERSION})",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

    add = sub.add_parser(
        "add",
        help="add jobs: one with --prompt, or one per line of --file",
        description="Add one job (--prompt) or one job per non-empty line of a file (--file). "
        "A prompt that is queued already (under any job type) is not added again.",
    )
    what = add.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", "-p", help="the prompt of one job")
    what.add_argument("--file", "-f", type=Path, help="a UTF-8 file with one prompt per line")
    add.add_argument(
        "--type",
        "-t",
        choices=JOB_TYPES,
        default="IMAGE_TEST",
        help="job type (default: IMAGE_TEST)",
    )

    sub.add_parser("stats", help="job counts per type and status")

    reset = sub.add_parser("reset", help="put jobs stuck in processing back to pending")
    reset.add_argument("--job-type-filter", choices=JOB_TYPES, help="only jobs of this type")
    reset.add_argument(
        "--older-than",
        type=_number(MIN_STUCK_S, 1e12),
        default=3600.0,
        metavar="SECONDS",
        help=f"only jobs processing for longer than this (default 3600, at least {MIN_STUCK_S:g}:"
        " a job claimed a moment ago is being worked on)",
    )

    sub.add_parser("init", help="create or migrate the schema (only what is missing)")

    claim = sub.add_parser(
        "claim",
        help="claim pending jobs (they become processing); one JSON line per job",
        description="Claim up to --batch of the oldest pending jobs of --type and print each as "
        "one JSON line (id, prompt_text, job_type, created_at) on stdout, for scripts. With "
        "--wait, wait up to SECONDS for jobs to arrive (woken by LISTEN/NOTIFY). Prints "
        "nothing when no job was claimed; the exit status is 0 either way.",
    )
    claim.add_argument("--type", "-t", choices=JOB_TYPES, required=True, help="job type")
    claim.add_argument(
        "--batch",
        "-n",
        type=_number(1, 10_000, whole=True),
        default=1,
        metavar="N",
        help="claim up to N jobs in one round trip (1 to 10000, default 1)",
    )
    claim.add_argument(
        "--wait",
        type=_number(0, 30 * 86_400),
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for a job when none is pending (default 0: do not wait)",
    )

    def backup_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=Path(DEFAULT_BACKUP_DIR),
            help=f"backup directory (default $JOB_MANAGER_BACKUP_DIR or {DEFAULT_BACKUP_DIR!r})",
        )

    def keep(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--keep",
            type=_number(1, 100_000, whole=True),
            default=10,
            help="backups to keep (default 10, at least 1)",
        )

    backup = sub.add_parser("backup", help="back up jobs and download_queue, then rotate")
    backup_dir(backup)
    keep(backup)
    backup.add_argument(
        "--compress",
        nargs="?",
        const="zstd",
        choices=("zstd", "gzip"),
        help="compress: zstd (.sql.zst, the default when given alone) or gzip (.sql.gz)",
    )
    backup.add_argument(
        "--streams",
        type=_number(1, 16, whole=True),
        default=None,
        help="connections reading the tables in parallel, all in the backup's one snapshot "
        "(1-16; default: decided from this machine's cores and the server, 1 where parallel "
        "reading cannot help)",
    )

    dump = sub.add_parser("dump", help="pg_dump the whole database (old behaviour), then rotate")
    backup_dir(dump)
    keep(dump)

    verify = sub.add_parser(
        "verify",
        help="check a backup file completely (no database needed); put -- before a file name "
        "that starts with '-'",
    )
    verify.add_argument(
        "file",
        type=Path,
        help="a backup (.sql, .sql.zst, .sql.gz), a pg_dump plain file, or a CSV export",
    )
    verify.add_argument(
        "--for-psql",
        action="store_true",
        help="also require a job_manager backup (the only kind checked line by line), before "
        "running it with psql -X -v ON_ERROR_STOP=1 -f FILE",
    )

    restore = sub.add_parser(
        "restore", help="replace jobs and download_queue with a backup's rows (one transaction)"
    )
    restore.add_argument(
        "file",
        type=Path,
        help="a job_manager backup (.sql, .sql.zst, .sql.gz) or a plain pg_dump file; it is "
        "verified completely before anything changes",
    )
    restore.add_argument(
        "--yes",
        action="store_true",
        help="restore without asking (needed when stdin is not a terminal, e.g. in scripts)",
    )
    restore.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="skip the backup of the current rows taken before restoring",
    )
    restore.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="with JOB_MANAGER_BACKUP_KEY set, also accept a file that carries no HMAC "
        "(a pg_dump, or a backup made without the key): only for a file you trust",
    )
    backup_dir(restore)

    importing = sub.add_parser(
        "import",
        help="add the jobs of a backup, pg_dump (COPY or INSERT) or CSV export whose prompts "
        "are not queued yet (--replace: replace every row, like restore)",
    )
    importing.add_argument(
        "file", type=Path, help="a job_manager backup, a pg_dump (COPY or INSERT), or a CSV export"
    )
    importing.add_argument(
        "--replace", action="store_true", help="replace every row instead of merging (asks)"
    )
    importing.add_argument(
        "--yes",
        action="store_true",
        help="with --replace: replace without asking (needed when stdin is not a terminal)",
    )
    importing.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="skip the backup of the current rows taken before importing",
    )
    importing.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="with JOB_MANAGER_BACKUP_KEY set, also accept a file that carries no HMAC",
    )
    backup_dir(importing)

    listing = sub.add_parser("list-backups", help="backups in --dir, newest first")
    backup_dir(listing)

    cleanup = sub.add_parser("cleanup-backups", help="keep the newest --keep verified backups")
    backup_dir(cleanup)
    keep(cleanup)

    def log_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--log-dir",
            type=Path,
            default=None,
            help="Airflow's base log folder (default: $AIRFLOW__LOGGING__BASE_LOG_FOLDER, "
            "else $AIRFLOW_HOME/logs, i.e. /opt/airflow/logs in the Airflow image)",
        )
        p.add_argument(
            "--max-age-days", type=_number(0, 36_500), default=7.0, help="default 7 (0 to 36500)"
        )
        p.add_argument(
            "--pattern",
            action="append",
            default=None,
            help="file name pattern, repeatable (default *.log)",
        )
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="change nothing; report exactly what the real run would do",
        )

    logs = sub.add_parser("cleanup-logs", help="delete old task log files and empty directories")
    log_options(logs)

    maintain = sub.add_parser(
        "maintain",
        help="the standard upkeep: reset stuck jobs, clean old downloads, ANALYZE, clean logs, "
        "rotate backups",
    )
    log_options(maintain)
    backup_dir(maintain)
    keep(maintain)
    maintain.add_argument(
        "--download-days", type=_number(1, 36_500, whole=True), default=7, help="default 7"
    )
    maintain.add_argument(
        "--stuck-after",
        type=_number(MIN_STUCK_S, 1e12),
        default=3600.0,
        metavar="SECONDS",
        help="reset jobs that have been processing for longer than this (default 3600, "
        f"at least {MIN_STUCK_S:g}: a job claimed a moment ago is being worked on)",
    )

    health = sub.add_parser("health", help="the queue, database and backups at a glance")
    backup_dir(health)
    health.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a threshold, e.g. stuck_after_s=600 (repeatable)",
    )
    health.add_argument(
        "--fail-on-problems", action="store_true", help="exit 3 when any problem is found"
    )

    sub.add_parser("size", help="database and table sizes")

    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(command_parser=p)
    return parser


#: The largest prompts file `add --file` reads.
MAX_PROMPTS_FILE_BYTES = 256 * 1024 * 1024


def _read_prompts(path: Path) -> list[str]:
    """A regular file of at most MAX_PROMPTS_FILE_BYTES (never a FIFO, device or /dev/zero)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise _UsageError(f"--file {path}: no such file") from None
    except IsADirectoryError:
        raise _UsageError(f"--file {path} is a directory, not a file of prompts") from None
    except PermissionError:
        raise _UsageError(f"--file {path}: permission denied (cannot read it)") from None
    except OSError as e:
        raise _UsageError(f"--file {path} cannot be opened: {e.strerror}") from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _UsageError(f"--file {path} is not a regular file")
        data = f.read(MAX_PROMPTS_FILE_BYTES + 1)
    if len(data) > MAX_PROMPTS_FILE_BYTES:
        raise _UsageError(f"--file {path} is larger than {MAX_PROMPTS_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _UsageError(
            f"--file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _run(args: argparse.Namespace) -> Any:
    jm = JobManager(args.dsn_value)
    if args.action == "add":
        if args.file is not None:
            return _add_file(jm, args)
        job_id = jm.add_job(args.prompt, args.type)
        return {"id": job_id}, f"job {job_id}"
    if args.action == "stats":
        if args.json:
            return jm.get_job_stats(), None
        jm.show_stats()
        return None, None
    if args.action == "reset":
        n = jm.reset_stuck_jobs(args.job_type_filter, args.older_than)
        return {"reset": n}, f"reset {n} stuck jobs"
    if args.action == "claim":
        return _claim(jm, args)
    if args.action == "init":
        applied = jm.init_database()
        text = (
            "applied: " + ", ".join(applied)
            if applied
            else f"schema is current (V{SCHEMA_VERSION})"
        )
        return {"applied": applied, "schema_version": SCHEMA_VERSION}, text
    return _run_maintenance_command(args)


def _claim(jm: JobManager, args: argparse.Namespace) -> Any:
    """Claims and prints one JSON line per job as soon as they are claimed."""
    if args.wait > 0:
        jobs = jm.wait_and_lock_jobs(args.type, args.batch, args.wait)
    else:
        jobs = jm.get_and_lock_jobs(args.type, args.batch)
    for job in jobs:
        created = job["created_at"]
        line = {**job, "created_at": created.isoformat() if created is not None else None}
        print(json.dumps(line, ensure_ascii=False, sort_keys=True), flush=True)
    return None, None


def _add_file(jm: JobManager, args: argparse.Namespace) -> Any:
    prompts = _read_prompts(args.file)
    unique = len(set(prompts))
    added = jm.add_jobs(prompts, args.type)
    data: dict[str, Any] = {"added": added, "prompts": len(prompts), "already_queued": {}}
    text = f"added {added} new {args.type} jobs ({len(prompts)} prompts in {args.file}"
    if unique < len(prompts):
        text += f", {len(prompts) - unique} repeated in the file"
    text += ")"
    if added < unique:
        # Why the rest were not added: queued before, maybe under another type.
        queued = jm.queued_job_types(prompts)
        # Minus the ones this call just added: those were not queued before it.
        queued[args.type] = queued.get(args.type, 0) - added
        queued = {t: n for t, n in queued.items() if n > 0}
        data["already_queued"] = queued
        text += f"; {unique - added} already queued: " + ", ".join(
            f"{n} as {t}" for t, n in queued.items()
        )
    return data, text


def _describe(info: Any) -> str:
    rows = ", ".join(f"{t} {n}" for t, n in sorted(info.rows.items()))
    if not info.verified:
        state = f"DOES NOT VERIFY: {info.problem}"
    elif info.authenticated:
        state = "verified, signed with the backup key"
    elif info.format == "pg_dump":
        state = "verified pg_dump (only its jobs and download_queue data are ever restored)"
    else:
        state = "verified"
    return f"{info.path}  {info.size_bytes} bytes  {rows or '-'}  {state}"


def _confirm(args: argparse.Namespace) -> None:
    """Asks in a terminal; only the word ``yes`` goes on. Without a terminal nobody can
    answer, so ``--yes`` is required (a usage error, exit 2, otherwise)."""
    if args.yes:
        return
    verb = "restore" if args.action == "restore" else "import --replace"
    if not sys.stdin.isatty():
        raise _UsageError(
            f"{verb} replaces every row of jobs and download_queue and stdin is not a "
            "terminal, so it cannot ask: pass --yes to go ahead without asking"
        )
    safety = (
        "no safety backup (--no-safety-backup)"
        if args.no_safety_backup
        else f"a safety backup of the current rows goes to {args.dir} first"
    )
    try:
        answer = input(
            f"{verb} {args.file} replaces every row of jobs and download_queue ({safety}).\n"
            "Type yes to go ahead, anything else cancels: "
        )
    except EOFError:  # Ctrl-D: no answer is no
        print(file=sys.stderr)
        raise _Cancelled("no answer") from None
    if answer.strip().lower() != "yes":
        raise _Cancelled(f"you typed {answer.strip()!r}; only yes goes ahead")


def _log_sweep(args: argparse.Namespace) -> Any:
    log_dir = args.log_dir
    if log_dir is None:
        log_dir = default_log_dir()
        if not os.path.isdir(log_dir):
            raise InvalidArgumentError(
                f"no Airflow log folder at {log_dir} (the default: "
                "$AIRFLOW__LOGGING__BASE_LOG_FOLDER, else $AIRFLOW_HOME/logs); "
                "pass --log-dir PATH, Airflow's base log folder"
            )
    return cleanup_old_logs(
        log_dir,
        args.max_age_days,
        patterns=args.pattern or ["*.log"],
        dry_run=args.dry_run,
    )


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def _run_maintenance_command(args: argparse.Namespace) -> Any:
    if args.action == "cleanup-logs":
        r = _log_sweep(args)
        verb = "would delete" if r.dry_run else "deleted"
        text = f"{verb} {r.files} log files ({_mib(r.bytes)}), {r.dirs_removed} empty directories"
        if r.errors:
            text += f"; {len(r.errors)} errors:\n  " + "\n  ".join(r.errors)
        return r.to_dict(), text
    jm = JobManager(args.dsn_value)
    if args.action == "size":
        size = jm.database_size()
        tables = jm.table_stats()
        lines = [f"database: {_mib(size)}"] + [
            f"{t['table']}: {_mib(t['total_bytes'])} (table {_mib(t['table_bytes'])}, "
            f"indexes {_mib(t['index_bytes'])}), ~{t['rows_estimate'] or 0} rows, "
            f"{t['dead_tuples']} dead"
            for t in tables
        ]
        return {"database_size_bytes": size, "tables": tables}, "\n".join(lines)
    if args.action == "health":
        thresholds = {}
        for item in args.threshold:
            name, _, value = item.partition("=")
            try:
                thresholds[name] = float(value)
            except ValueError:
                raise _UsageError(f"--threshold wants NAME=NUMBER, got {item!r}") from None
        report = jm.health_report(args.dir, thresholds=thresholds)
        if args.fail_on_problems and report["problems"]:
            args.exit_status = 3
        return report, _health_text(report)
    if args.action == "maintain":
        return _maintain(jm, args)
    return _run_backup_command(args)


def _health_text(report: dict[str, Any]) -> str:
    lines = [f"jobs: {report['jobs_total']}  {json.dumps(report['jobs'], ensure_ascii=False)}"]
    oldest = report["oldest_pending_age_s"]
    lines.append(
        f"oldest pending: {'-' if oldest is None else f'{oldest / 3600:.1f}h'}   "
        f"stuck in processing: {report['stuck_processing']}"
    )
    d = report["downloads"]
    lines.append(
        f"downloads: pending {d['pending']}, failed {d['failed']}, out of attempts {d['exhausted']}"
    )
    sch = report["schema"]
    lines.append(f"schema: V{sch['version']} of V{sch['latest']}")
    lines.append(f"database: {_mib(report['database_size_bytes'])}")
    b = report["backup"]
    if b:
        age = "-" if b["age_s"] is None else f"{b['age_s'] / 3600:.1f}h old"
        lines.append(f"newest backup: {b['newest'] or '-'} ({age}, verified: {b['verified']})")
    problems = report["problems"]
    lines.append("problems: none" if not problems else "problems:")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)


def _maintain(jm: JobManager, args: argparse.Namespace) -> Any:
    """Every step runs, whatever happened to the ones before (each commits on its own); the
    summary says what each did or why it failed, and the exit status is 1 if any failed."""
    summary: dict[str, Any] = {"dry_run": args.dry_run, "failed": {}}

    def step(name: str, action: Any, skip: str | None = None) -> None:
        if skip is not None:
            summary[name] = f"skipped ({skip})"
            return
        try:
            summary[name] = action()
        except (JobManagerError, OSError, ValueError) as e:
            summary[name] = None
            summary["failed"][name] = str(e)

    dry = args.dry_run
    # A dry run changes nothing: each step reports what the real run would do (the counts are
    # of now; the real run decides again when it runs).
    step(
        "reset_stuck_jobs",
        lambda: jm.reset_stuck_jobs(older_than_seconds=args.stuck_after, dry_run=dry),
    )
    step(
        "cleanup_old_downloads",
        lambda: jm.cleanup_old_downloads(args.download_days, dry_run=dry),
    )
    step("analyze_tables", lambda: jm.analyze_tables(dry_run=dry))
    step("cleanup_logs", lambda: _log_sweep(args).to_dict())
    no_dir = None if args.dir.is_dir() else f"no directory {args.dir}"
    step(
        "cleanup_backups",
        lambda: cleanup_old_backups(args.dir, args.keep, dry_run=dry),
        no_dir,
    )

    def show(name: str, ok: Any) -> str:
        if name in summary["failed"]:
            return f"FAILED: {summary['failed'][name]}"
        value = summary[name]
        if isinstance(value, str):
            return value
        return ("would be " if dry else "") + ok(value)

    text = "\n".join(
        ["dry run: nothing was changed; this is what maintain would do now"] * dry
        + [
            f"reset stuck jobs:       {show('reset_stuck_jobs', str)}",
            f"old downloads deleted:  {show('cleanup_old_downloads', str)}",
            f"analyzed:               {show('analyze_tables', ', '.join)}",
            "log files deleted:      "
            + show(
                "cleanup_logs",
                lambda r: (
                    f"{r['files']} ({_mib(r['bytes'])}), {r['dirs_removed']} directories"
                    + (f", {r['error_count']} errors" if r["error_count"] else "")
                ),
            ),
            f"old backups deleted:    {show('cleanup_backups', lambda d: str(len(d)))}",
        ]
    )
    if summary["failed"]:
        text += f"\n{len(summary['failed'])} of 5 steps FAILED; the others ran (see above)"
        args.exit_status = 1
    return summary, text


def _rotate_after(args: argparse.Namespace, data: dict[str, Any], text: str) -> Any:
    """Rotation after a backup was written: its outcome is reported on its own, so a failed
    rotation never hides the new file (and the exit status is 1)."""
    try:
        deleted = cleanup_old_backups(args.dir, args.keep)
    except (JobManagerError, OSError) as e:
        data["rotation_error"] = str(e)
        args.exit_status = 1
        return data, f"{text}\nrotation FAILED (the new backup is kept): {e}"
    data["deleted"] = deleted
    return data, f"{text}\nrotation kept the newest {args.keep}, deleted {len(deleted)}" + (
        ": " + ", ".join(deleted) if deleted else ""
    )


def _run_backup_command(args: argparse.Namespace) -> Any:
    if args.action == "verify":
        info = verify_backup(args.file)
        if args.for_psql and info.format != "job_manager":
            raise BackupCorruptError(
                f"{args.file} is a {info.format} file, not a job_manager backup: only a "
                "job_manager backup is checked line by line, so only one may be run with psql; "
                "load this one with `python -m job_manager restore` or `import`"
            )
        return info.to_dict(), f"OK {_describe(info)}"
    if args.action == "list-backups":
        infos = list_backups(args.dir)
        text = "\n".join(_describe(i) for i in infos) or f"no backups in {args.dir}"
        return [i.to_dict() for i in infos], text
    if args.action == "cleanup-backups":
        deleted = cleanup_old_backups(args.dir, args.keep)
        return {"deleted": deleted}, f"deleted {len(deleted)} old backups"
    jm = JobManager(args.dsn_value)
    if args.action == "backup":
        info = jm.backup_database(
            args.dir, keep=None, compress=args.compress or False, streams=args.streams
        )
        text = f"backup written: {_describe(info)} in {info.duration_s:.1f}s"
        return _rotate_after(args, info.to_dict(), text)
    if args.action == "dump":
        info = jm.dump_database(args.dir, keep=None)
        text = f"pg_dump written: {_describe(info)} in {info.duration_s:.1f}s"
        return _rotate_after(args, info.to_dict(), text)
    if args.action == "import":
        if args.replace:
            _confirm(args)
        result = jm.import_jobs(
            args.file,
            mode="replace" if args.replace else "merge",
            safety_backup=not args.no_safety_backup,
            backup_dir=args.dir,
            allow_unsigned=args.allow_unsigned,
        )

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{t} {n}" for t, n in sorted(d.items())) or "-"

        text = (
            f"imported {args.file} ({result.mode}): added {counts(result.added)}; "
            f"skipped (already queued) {counts(result.skipped)}; "
            f"given new ids {counts(result.remapped)}"
        )
        if result.safety_backup:
            text += f"\nthe rows before the import are in {result.safety_backup}"
        return result.to_dict(), text
    if args.action == "restore":
        _confirm(args)
        result = jm.restore_database(
            args.file,
            safety_backup=not args.no_safety_backup,
            backup_dir=args.dir,
            allow_unsigned=args.allow_unsigned,
        )
        rows = ", ".join(f"{t} {n}" for t, n in sorted(result.rows.items()))
        text = f"restored {args.file}: {rows} in {result.duration_s:.1f}s"
        if result.safety_backup:
            text += f"\nthe rows it replaced are in {result.safety_backup}"
        return result.to_dict(), text
    raise _UsageError(f"unknown command {args.action}")


class _Cancelled(Exception):
    pass


class _UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 failure, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.dsn_value = _resolve_dsn(args)
    except _UsageError as e:
        parser.error(str(e))  # exits 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet or args.json else logging.INFO,
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
        stream=sys.stderr,
    )
    try:
        data, text = _run(args)
    except _UsageError as e:
        getattr(args, "command_parser", parser).error(str(e))  # exits 2
    except _Cancelled as e:
        why = f" ({e})" if str(e) else ""
        print(f"cancelled{why}: nothing was changed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (JobManagerError, OSError, UnicodeDecodeError, ValueError, OverflowError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json and data is not None:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
    elif text is not None:
        print(text)
    return int(getattr(args, "exit_status", 0))


if __name__ == "__main__":
    sys.exit(main())
