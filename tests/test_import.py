"""Every file the replaced system produced comes home: its INSERT-format pg_dump
(`historical_jobs.sql`) and its CSV export (`historical_jobs.csv`), into a fresh database and
into a queue in use, merged or replaced; hostile variants change nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import FIXTURES, Server, content, whole_database
from job_manager import BackupCorruptError, JobManager, verify_backup
from test_schema import OLDEST_LAYOUT

INSERTS = FIXTURES / "historical_jobs.sql"
CSV = FIXTURES / "historical_jobs.csv"
LEGACY_STATUSES = {"submitted", "poll_completed", "awaiting_manual_retry"}

ROW = (
    "SELECT id, prompt_text, status, job_type, local_path, gcs_uri, created_at::text, "
    "updated_at::text FROM jobs ORDER BY id"
)


@pytest.fixture
def reference(server: Server) -> list[dict[str, object]]:
    """The 42 jobs as the old system had them: its oldest layout loaded by psql, then
    migrated by job_manager (statuses mapped). Every import must give exactly these rows."""
    name = server.create_database()
    try:
        server.psql(name, "-c", OLDEST_LAYOUT)
        server.psql(name, "-f", str(INSERTS))
        JobManager(server.dsn_for(name)).init_database()
        with psycopg.connect(server.dsn_for(name), autocommit=True) as c:
            c.execute("SET TimeZone = 'UTC'")
            rows = c.execute(
                "SELECT to_jsonb(j) - 'claim_token' - 'error_message' FROM jobs j ORDER BY id"
            ).fetchall()
        return [r for (r,) in rows]
    finally:
        server.drop_database(name)


def jobs_json(db: psycopg.Connection) -> list[dict[str, object]]:
    db.execute("SET TimeZone = 'UTC'")
    rows = db.execute(
        "SELECT to_jsonb(j) - 'claim_token' - 'error_message' FROM jobs j ORDER BY id"
    ).fetchall()
    return [r for (r,) in rows]


CSV_COLUMNS = ("id", "prompt_text", "status", "job_type", "local_path", "gcs_uri")


def only(rows: list[dict[str, object]], keys: tuple[str, ...]) -> list[dict[str, object]]:
    return [{k: r[k] for k in keys} for r in rows]


def test_verify_reports_the_rows_of_both_real_files() -> None:
    assert verify_backup(INSERTS).rows == {"jobs": 42}
    assert verify_backup(INSERTS).format == "pg_dump"
    assert verify_backup(CSV).rows == {"jobs": 42}
    assert verify_backup(CSV).format == "csv"


def test_a_dump_without_rows_for_jobs_does_not_verify(tmp_path: Path) -> None:
    text = INSERTS.read_text()
    schema_only = tmp_path / "schema_only.sql"
    schema_only.write_text(re.sub(r"(?m)^INSERT INTO public\.jobs .*\n", "", text))
    with pytest.raises(BackupCorruptError, match=r"holds no data for jobs"):
        verify_backup(schema_only)


def test_the_insert_dump_restores_into_a_fresh_database_exactly(
    bare_jm: JobManager, db: psycopg.Connection, reference: list[dict[str, object]]
) -> None:
    info = bare_jm.restore_database(INSERTS, safety_backup=False)
    assert info.rows == {"jobs": 42}
    assert jobs_json(db) == reference
    # The oldest layout's extra columns came with their values and their type.
    types = dict(
        db.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'jobs'::regclass AND attname IN ('submitted_at', 'completed_at')"
        ).fetchall()
    )
    assert types == {
        "submitted_at": "timestamp without time zone",
        "completed_at": "timestamp without time zone",
    }
    statuses = {s for (s,) in db.execute("SELECT DISTINCT status FROM jobs").fetchall()}
    assert not statuses & LEGACY_STATUSES


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_legacy_statuses_are_mapped(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path, mode: str
) -> None:
    """The oldest layout's statuses (the real file's 'completed' jobs edited to them)."""
    text = INSERTS.read_text()
    edited = tmp_path / "legacy_statuses.sql"
    for old, job_id in (("submitted", 1), ("poll_completed", 2), ("awaiting_manual_retry", 3)):
        text = re.sub(
            rf"VALUES \({job_id}, ('(?:[^']|'')*'), 'completed'",
            rf"VALUES ({job_id}, \1, '{old}'",
            text,
        )
        assert f"'{old}'" in text
    edited.write_text(text)
    jm.import_jobs(edited, mode=mode, safety_backup=False)
    rows = dict(db.execute("SELECT id, status FROM jobs WHERE id IN (1, 2, 3)").fetchall())
    assert rows == {1: "processing", 2: "generation_successful", 3: "awaiting_retry"}


def test_the_csv_restores_into_a_fresh_database_exactly(
    bare_jm: JobManager, db: psycopg.Connection, reference: list[dict[str, object]]
) -> None:
    info = bare_jm.restore_database(CSV, safety_backup=False)
    assert info.rows == {"jobs": 42}
    assert only(jobs_json(db), (*CSV_COLUMNS, "created_at", "updated_at")) == only(
        reference, (*CSV_COLUMNS, "created_at", "updated_at")
    )
    # The prompt that ends in a TAB kept it.
    assert db.execute("SELECT count(*) FROM jobs WHERE prompt_text LIKE E'%\\t'").fetchone() == (1,)


@pytest.mark.parametrize("path", [INSERTS, CSV], ids=["inserts", "csv"])
def test_merge_into_a_queue_in_use(
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    reference: list[dict[str, object]],
    path: Path,
) -> None:
    # A queue in use: one job with a prompt that the file also has, one whose id the file's
    # jobs use, and a download.
    taken = jm.add_job(str(reference[0]["prompt_text"]), "VIDEO_PROD")
    live = jm.add_job("a live job nobody exported", "IMAGE_TEST")
    jm.add_download_task(live, "gs://b/live.png", "/out/live.png", "image")
    jm.mark_job_as_completed(taken, local_path="/out/mine.mp4")
    before = {r["id"]: r for r in jobs_json(db)}

    info = jm.import_jobs(path, backup_dir=tmp_path / "safety")
    assert info.mode == "merge"
    assert info.added == {"jobs": 41}
    assert info.skipped == {"jobs": 1}
    # The file's ids 1 and 2 are taken by the live jobs: one job (id 2) needed a new id.
    assert info.remapped == {"jobs": 1}
    assert info.safety_backup is not None
    assert verify_backup(info.safety_backup).rows["jobs"] == 2

    after = {r["id"]: r for r in jobs_json(db)}
    # Nothing that was there changed.
    for job_id, row in before.items():
        assert {k: after[job_id][k] for k in row} == row
        assert all(after[job_id][k] is None for k in after[job_id].keys() - row.keys())
    # Every added job is the old one, field for field, under its id or a new one.
    keys = (*CSV_COLUMNS[1:], "created_at", "updated_at")
    if path == INSERTS:
        keys = (*keys, "operation_id", "submitted_at", "completed_at")
    by_prompt = {r["prompt_text"]: r for r in after.values()}
    for old in reference[1:]:
        new = by_prompt[old["prompt_text"]]
        assert {k: new[k] for k in keys} == {k: old[k] for k in keys}
        if old["id"] not in before:
            assert new["id"] == old["id"]
    assert by_prompt[reference[1]["prompt_text"]]["id"] not in before
    assert len(after) == 43
    # The sequence continues after every id.
    assert jm.add_job("after the import", "IMAGE_TEST") > max(after)
    # A second import adds nothing.
    again = jm.import_jobs(path, safety_backup=False)
    assert again.added == {"jobs": 0}
    assert again.skipped == {"jobs": 42}


def test_merge_re_points_downloads_to_the_new_ids(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A job_manager backup of another queue merged into this one: its download follows its
    job to the job's new id."""
    other_id = jm.add_job("from the other queue", "IMAGE_TEST")
    jm.add_download_task(other_id, "gs://b/other.png", "/out/other.png", "image")
    backup = jm.backup_database(tmp_path / "other", keep=None).path
    db.execute("DELETE FROM download_queue")
    db.execute("DELETE FROM jobs")
    mine = jm.add_job("mine", "VIDEO_PROD")
    assert mine != other_id
    db.execute("UPDATE jobs SET id = %s WHERE id = %s", (other_id, mine))
    info = jm.import_jobs(backup, safety_backup=False)
    assert info.added == {"jobs": 1, "download_queue": 1}
    assert info.remapped == {"jobs": 1, "download_queue": 0}
    row = db.execute(
        "SELECT j.prompt_text FROM download_queue d JOIN jobs j ON j.id = d.job_id"
    ).fetchone()
    assert row == ("from the other queue",)


@pytest.mark.parametrize("path", [INSERTS, CSV], ids=["inserts", "csv"])
def test_replace_mode_is_a_restore(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path, path: Path
) -> None:
    jm.add_job("replaced by the import", "IMAGE_TEST")
    info = jm.import_jobs(path, mode="replace", backup_dir=tmp_path)
    assert info.mode == "replace"
    assert info.added == {"jobs": 42}
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (42,)


def test_the_cli_imports(jm: JobManager, dsn: str, tmp_path: Path) -> None:
    jm.add_job("already here", "IMAGE_TEST")
    out = subprocess.run(
        [sys.executable, "-m", "job_manager", "import", str(INSERTS), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "JOB_MANAGER_DSN": dsn},
    )
    assert out.returncode == 0, out.stderr
    assert "added jobs 42" in out.stdout
    assert "skipped (already queued) jobs 0" in out.stdout


# -- hostile variants: nothing from the file is executed; refused files change nothing ----------


def inserts_with(change: Callable[[str], str]) -> str:
    return change(INSERTS.read_text())


def first_insert(text: str, new: Callable[[str], str]) -> str:
    line = next(line for line in text.splitlines() if line.startswith("INSERT INTO public.jobs"))
    return text.replace(line, new(line), 1)


def csv_with_extra_column(header: str) -> str:
    first, *rest = CSV.read_text().splitlines()
    return "\n".join([f"{first},{header}", *(f"{line},v" for line in rest)]) + "\n"


HOSTILE: list[tuple[str, str, Callable[[], str]]] = [
    (
        "function-call",
        r"not a literal pg_dump writes",
        lambda: inserts_with(
            lambda t: first_insert(
                t, lambda line: line.replace("VALUES (1, ", "VALUES (pg_terminate_backend(1), ")
            )
        ),
    ),
    (
        "cast",
        r"malformed INSERT row|not a literal",
        lambda: inserts_with(
            lambda t: first_insert(t, lambda line: line.replace("VALUES (1, ", "VALUES (1::int, "))
        ),
    ),
    (
        "sub-select",
        r"not a literal pg_dump writes",
        lambda: inserts_with(
            lambda t: first_insert(
                t, lambda line: line.replace("VALUES (1, ", "VALUES ((SELECT 1), ")
            )
        ),
    ),
    (
        "second-statement",
        r"malformed INSERT statement",
        lambda: inserts_with(lambda t: first_insert(t, lambda line: line + " DROP TABLE dag;")),
    ),
    (
        "too-few-values",
        r"INSERT row with \d+ values where the table has 11 columns",
        lambda: inserts_with(
            lambda t: first_insert(t, lambda line: line.replace("VALUES (1, ", "VALUES ("))
        ),
    ),
    (
        "unclosed-string",
        r"before the end of an INSERT statement: it is truncated",
        lambda: inserts_with(
            lambda t: t.replace(
                "\n--\n-- PostgreSQL database dump complete",
                "\nINSERT INTO public.jobs (id) VALUES ('never closed"
                "\n--\n-- PostgreSQL database dump complete",
            )
        ),
    ),
    (
        "e-string-bad-escape",
        r"an escape pg_dump does not write",
        lambda: inserts_with(
            lambda t: first_insert(
                t, lambda line: line.replace("VALUES (1, '", "VALUES (1, E'\\x41")
            )
        ),
    ),
    (
        "column-injection",
        r"malformed COPY column list|not an INSERT statement",
        lambda: inserts_with(
            lambda t: first_insert(
                t,
                lambda line: line.replace("(id, prompt_text,", "(id; DROP TABLE dag, prompt_text,"),
            )
        ),
    ),
    (
        "no-column-names-data-only",
        r"without column names, in a dump without its CREATE TABLE",
        lambda: inserts_with(
            lambda t: first_insert(
                t,
                lambda line: re.sub(
                    r"INSERT INTO public\.jobs \([^)]*\)", "INSERT INTO public.jobs", line
                ),
            )
        ),
    ),
    (
        "cut-short",
        r"incomplete|truncated",
        lambda: INSERTS.read_text()[: INSERTS.read_text().index("INSERT INTO public.jobs") + 300],
    ),
    (
        "csv-unknown-column",
        r'the file has a column "x""; DROP TABLE dag; --" that jobs does not have',
        lambda: csv_with_extra_column('"x""; DROP TABLE dag; --"'),
    ),
    (
        "csv-wrong-field-count",
        r"a CSV record with \d+ fields where the header names 8",
        lambda: CSV.read_text().replace("\n1,", "\n1,extra,", 1),
    ),
    (
        "csv-stray-quote",
        r"a quote inside an unquoted CSV field",
        lambda: CSV.read_text().replace("\n1,", '\n1,ab"c', 1),
    ),
    (
        "csv-carriage-return",
        r"a carriage return outside quotes",
        lambda: CSV.read_text().replace("\n2,", "\r\n2,", 1),
    ),
    (
        "csv-unclosed-quote",
        r"the end of a quoted CSV field",
        lambda: CSV.read_text() + '99,"never closed\n',
    ),
    (
        "csv-no-final-newline",
        r"the file ends in the middle of line 43",
        lambda: CSV.read_text().rstrip("\n"),
    ),
]


@pytest.mark.parametrize("case", [c for c, _, _ in HOSTILE])
@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_hostile_variants_are_refused_and_change_nothing(
    server: Server,
    dbname: str,
    jm: JobManager,
    db: psycopg.Connection,
    tmp_path: Path,
    case: str,
    mode: str,
) -> None:
    db.execute("CREATE TABLE dag (dag_id text PRIMARY KEY)")
    db.execute("INSERT INTO dag VALUES ('mine')")
    jm.add_job("live", "IMAGE_TEST")
    expected, make = next((e, m) for c, e, m in HOSTILE if c == case)
    suffix = ".csv" if case.startswith("csv") else ".sql"
    path = tmp_path / f"hostile{suffix}"
    path.write_text(make())
    baseline = whole_database(server, dbname)
    with pytest.raises(BackupCorruptError, match=expected):
        jm.import_jobs(path, mode=mode, backup_dir=tmp_path / "safety")
    assert whole_database(server, dbname) == baseline
    assert content(db)


def test_statements_in_a_dump_are_skipped_never_run(
    jm: JobManager, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A dump with a DROP TABLE between its INSERTs and an INSERT into another table: only the
    jobs rows are read; nothing else is executed."""
    db.execute("CREATE TABLE dag (dag_id text PRIMARY KEY)")
    db.execute("INSERT INTO dag VALUES ('mine')")
    text = INSERTS.read_text()
    text = first_insert(
        text, lambda line: "DROP TABLE dag;\nINSERT INTO public.dag VALUES ('evil');\n" + line
    )
    path = tmp_path / "with_statements.sql"
    path.write_text(text)
    info = jm.import_jobs(path, safety_backup=False)
    assert info.added == {"jobs": 42}
    assert db.execute("SELECT dag_id FROM dag").fetchall() == [("mine",)]
