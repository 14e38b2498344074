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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from job_manager._internal import (
    SCHEMA_VERSION,
    JobManager,
    cleanup_old_backups,
    list_backups,
    verify_backup,
)
from job_manager.exceptions import JobManagerError

JOB_TYPES = ("IMAGE_TEST", "VIDEO_PROD")
DEFAULT_BACKUP_DIR = os.environ.get("JOB_MANAGER_BACKUP_DIR", "backups")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job_manager",
        description="Manage the job queue: add jobs, show statistics, reset stuck jobs, "
        "create or migrate the schema.",
    )
    parser.add_argument(
        "--dsn",
        help="PostgreSQL DSN (default: $JOB_MANAGER_DSN, else built from $POSTGRES_*)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

    add = sub.add_parser("add", help="add jobs: one with --prompt, or one per line of --file")
    add.add_argument("--prompt", "-p", help="the prompt of one job")
    add.add_argument("--file", "-f", type=Path, help="a file with one prompt per line")
    add.add_argument("--type", "-t", choices=JOB_TYPES, default="IMAGE_TEST", help="job type")

    sub.add_parser("stats", help="job counts per type and status")

    reset = sub.add_parser("reset", help="put jobs stuck in processing back to pending")
    reset.add_argument("--job-type-filter", choices=JOB_TYPES, help="only jobs of this type")
    reset.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="only jobs processing for longer than this (default 3600)",
    )

    sub.add_parser("init", help="create or migrate the schema (only what is missing)")

    def backup_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=Path(DEFAULT_BACKUP_DIR),
            help=f"backup directory (default $JOB_MANAGER_BACKUP_DIR or {DEFAULT_BACKUP_DIR!r})",
        )

    def keep(p: argparse.ArgumentParser) -> None:
        p.add_argument("--keep", type=int, default=10, help="backups to keep (default 10)")

    backup = sub.add_parser("backup", help="back up jobs and download_queue, then rotate")
    backup_dir(backup)
    keep(backup)
    backup.add_argument("--compress", action="store_true", help="write .sql.gz")

    dump = sub.add_parser("dump", help="pg_dump the whole database (old behaviour), then rotate")
    backup_dir(dump)
    keep(dump)

    verify = sub.add_parser("verify", help="check a backup file completely (no database needed)")
    verify.add_argument("file", type=Path)

    restore = sub.add_parser(
        "restore", help="replace jobs and download_queue with a backup's rows (one transaction)"
    )
    restore.add_argument("file", type=Path)
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.add_argument(
        "--no-safety-backup",
        action="store_true",
        help="skip the backup of the current rows taken before restoring",
    )
    backup_dir(restore)

    listing = sub.add_parser("list-backups", help="backups in --dir, newest first")
    backup_dir(listing)

    cleanup = sub.add_parser("cleanup-backups", help="keep the newest --keep verified backups")
    backup_dir(cleanup)
    keep(cleanup)

    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _read_prompts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _run(args: argparse.Namespace) -> Any:
    jm = JobManager(args.dsn)
    if args.action == "add":
        if args.file is not None:
            prompts = _read_prompts(args.file)
            added = jm.add_jobs(prompts, args.type)
            text = f"added {added} new {args.type} jobs ({len(prompts)} prompts in {args.file})"
            return {"added": added, "prompts": len(prompts)}, text
        if args.prompt is not None:
            job_id = jm.add_job(args.prompt, args.type)
            return {"id": job_id}, f"job {job_id}"
        raise _UsageError("add needs --prompt TEXT or --file PATH")
    if args.action == "stats":
        if args.json:
            return jm.get_job_stats(), None
        jm.show_stats()
        return None, None
    if args.action == "reset":
        n = jm.reset_stuck_jobs(args.job_type_filter, args.older_than)
        return {"reset": n}, f"reset {n} stuck jobs"
    if args.action == "init":
        applied = jm.init_database()
        text = (
            "applied: " + ", ".join(applied)
            if applied
            else f"schema is current (V{SCHEMA_VERSION})"
        )
        return {"applied": applied, "schema_version": SCHEMA_VERSION}, text
    return _run_backup_command(args)


def _describe(info: Any) -> str:
    rows = ", ".join(f"{t} {n}" for t, n in sorted(info.rows.items()))
    state = "verified" if info.verified else f"DOES NOT VERIFY: {info.problem}"
    return f"{info.path}  {info.size_bytes} bytes  {rows or '-'}  {state}"


def _confirm(args: argparse.Namespace) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise _UsageError("restore replaces every row of jobs and download_queue: pass --yes")
    answer = input(
        f"Restore {args.file}? This replaces every row of jobs and download_queue "
        f"(a safety backup is taken first unless --no-safety-backup). Type 'yes': "
    )
    if answer.strip().lower() != "yes":
        raise _Cancelled


def _run_backup_command(args: argparse.Namespace) -> Any:
    if args.action == "verify":
        info = verify_backup(args.file)
        return info.to_dict(), f"OK {_describe(info)}"
    if args.action == "list-backups":
        infos = list_backups(args.dir)
        text = "\n".join(_describe(i) for i in infos) or f"no backups in {args.dir}"
        return [i.to_dict() for i in infos], text
    if args.action == "cleanup-backups":
        deleted = cleanup_old_backups(args.dir, args.keep)
        return {"deleted": deleted}, f"deleted {len(deleted)} old backups"
    jm = JobManager(args.dsn)
    if args.action == "backup":
        info = jm.backup_database(args.dir, keep=args.keep, compress=args.compress)
        return info.to_dict(), f"backup written: {_describe(info)} in {info.duration_s:.1f}s"
    if args.action == "dump":
        info = jm.dump_database(args.dir, keep=args.keep)
        return info.to_dict(), f"pg_dump written: {_describe(info)} in {info.duration_s:.1f}s"
    if args.action == "restore":
        _confirm(args)
        result = jm.restore_database(
            args.file, safety_backup=not args.no_safety_backup, backup_dir=args.dir
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
    logging.basicConfig(
        level=logging.WARNING if args.quiet or args.json else logging.INFO,
        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
        stream=sys.stderr,
    )
    try:
        data, text = _run(args)
    except _UsageError as e:
        parser.error(str(e))  # exits 2
    except _Cancelled:
        print("cancelled: nothing was changed", file=sys.stderr)
        return 1
    except (JobManagerError, OSError, UnicodeDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json and data is not None:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
    elif text is not None:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
