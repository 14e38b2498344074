"""Writes the fuzzers' seed corpora: real backups (format 1 and 2, signed, gzip), the hostile
files of tests/reliability/test_hostile_backups.py made from them, and pg_dump files.

    .venv/bin/python fuzz/seed.py BACKUP.sql PG_DUMP.sql...

BACKUP.sql is a format-2 backup written with JOB_MANAGER_BACKUP_KEY unset; the signed copy is
made here with the fuzz target's key. Each backup_reader seed starts with one byte that says
whether the target reads it with the key (1) or without (0).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "reliability"), str(ROOT / "scripts")]

from test_hostile_backups import CASES, body  # noqa: E402

FUZZ_KEY = b"fuzzing-key-0123456789"
LEGACY = ROOT / "tests" / "fixtures" / "veo3-legacy"


def sign(data: bytes) -> bytes:
    tag = hmac.new(FUZZ_KEY, body(data), hashlib.sha256).hexdigest().encode()
    return data + b"-- hmac-sha256: " + tag + b"\n"


def main() -> None:
    backup = Path(sys.argv[1]).read_bytes()
    out = ROOT / "fuzz" / "corpus" / "backup_reader"
    out.mkdir(parents=True, exist_ok=True)
    old = ROOT / "tests" / "fixtures" / "backups" / "format1_airflow_backup_20261124_081940.sql"
    seeds = {
        "good": b"\0" + backup,
        "good-signed": b"\1" + sign(backup),
        "good-gzip": b"\0" + gzip.compress(backup),
        "format1": b"\0" + old.read_bytes(),
        "legacy-inserts": b"\0" + (LEGACY / "historical_jobs.sql").read_bytes(),
        "legacy-csv": b"\0" + (LEGACY / "historical_jobs.csv").read_bytes(),
    }
    for case_id, make, expected in CASES:
        if "bomb" in case_id:
            continue  # 65 MiB once decompressed: a test case, too slow as a seed
        # "verified": a pg_dump whose hostile part is refused only by the restore.
        prefix = "legacy" if expected == "verified" else "hostile"
        try:
            seeds[f"{prefix}-{case_id}"] = b"\0" + make(backup)
        except (ValueError, AssertionError):
            continue  # a case made for the replaced system's dump
    for name, data in seeds.items():
        if len(data) <= 1 << 20:
            (out / name).write_bytes(data)
    dumps = ROOT / "fuzz" / "corpus" / "pg_dump_reader"
    dumps.mkdir(parents=True, exist_ok=True)
    prefix = b"--\n-- PostgreSQL database dump\n--\n"
    for path in map(Path, sys.argv[2:]):
        data = path.read_bytes()
        (dumps / path.stem).write_bytes(data[len(prefix) :] if data.startswith(prefix) else data)


if __name__ == "__main__":
    main()
