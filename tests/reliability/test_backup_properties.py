"""Property-based round trips (Hypothesis): any text a job can hold survives every file format
byte for byte, or is refused with the documented error before anything is written.

The INSERT and CSV cases are differential: PostgreSQL's own `pg_dump --column-inserts` and
psql's `\\copy ... CSV HEADER` write the files, so the readers are checked against what the
real tools produce, not against our idea of it.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from conftest import Server, counted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from job_manager import InvalidArgumentError, JobManager

# Any Unicode text PostgreSQL can store in UTF-8 (no NUL, no lone surrogates), biased towards
# the characters the formats escape: tab, newline, carriage return, backslash, quotes, commas.
AWKWARD = st.sampled_from(
    [*"\t\n\r\\'\",.;:$%{}[]()", "\\N", "\\.", "--", "/*", "E'", "é", "漢", "🎉"]
)
TEXT = st.lists(
    st.one_of(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
        ),
        AWKWARD,
    ),
    min_size=1,
    max_size=8,
).map("".join)
ROWS = st.lists(st.tuples(TEXT, st.none() | TEXT, st.none() | TEXT), min_size=1, max_size=6)

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def bindir(server: Server) -> Path:
    import pgcluster

    return Path(server.cluster.bindir) if server.cluster else pgcluster.find_bindir()


def fresh(server: Server) -> str:
    return server.create_database()


def load(dsn: str, rows: list[tuple[str, str | None, str | None]]) -> list[tuple[object, ...]]:
    """Puts the rows into jobs as plain SQL would (parameters, not job_manager), returns them."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM download_queue")
        c.execute("DELETE FROM jobs")
        seen: set[str] = set()
        for i, (prompt, local_path, error) in enumerate(rows, start=1):
            if prompt in seen:
                continue
            seen.add(prompt)
            c.execute(
                "INSERT INTO jobs (id, prompt_text, job_type, local_path, error_message) "
                "VALUES (%s, %s, 'IMAGE_TEST', %s, %s)",
                (i, prompt, local_path, error),
            )
        return c.execute(SELECT).fetchall()


SELECT = "SELECT id, prompt_text, local_path, error_message FROM jobs ORDER BY id"


TALLY = {"examples": 0, "rows_different": 0}


def tallied(got: list[tuple[object, ...]], expected: list[tuple[object, ...]]) -> bool:
    """Counts the example and the rows that came back different; True when none did."""
    TALLY["examples"] += 1
    TALLY["rows_different"] += sum((Counter(expected) - Counter(got)).values()) + sum(
        (Counter(got) - Counter(expected)).values()
    )
    return got == expected


def read_back(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(SELECT).fetchall()


@pytest.fixture(scope="module")
def pair(server: Server):  # type: ignore[no-untyped-def]
    """A source and a target database with the schema."""
    names = [fresh(server), fresh(server)]
    managers = [JobManager(server.dsn_for(n)) for n in names]
    for m in managers:
        m.init_database()
    yield server, names, managers
    for m in managers:
        m.close()
    for n in names:
        server.drop_database(n)


@SETTINGS
@given(rows=ROWS)
def test_any_text_survives_a_job_manager_backup(pair, tmp_path_factory, rows) -> None:  # type: ignore[no-untyped-def]
    server, (src, dst), (jm_src, jm_dst) = pair
    expected = load(server.dsn_for(src), rows)
    info = jm_src.backup_database(tmp_path_factory.mktemp("b"), keep=None)
    jm_dst.restore_database(info.path, safety_backup=False)
    assert tallied(read_back(server.dsn_for(dst)), expected)


@SETTINGS
@given(rows=ROWS)
def test_any_text_survives_pg_dumps_insert_files(pair, tmp_path_factory, rows) -> None:  # type: ignore[no-untyped-def]
    server, (src, dst), (_, jm_dst) = pair
    expected = load(server.dsn_for(src), rows)
    path = tmp_path_factory.mktemp("d") / "jobs_inserts.sql"
    subprocess.run(
        [
            str(bindir(server) / "pg_dump"),
            "--data-only",
            "--column-inserts",
            "--rows-per-insert=3",
            "-t",
            "jobs",
            "-f",
            str(path),
            server.dsn_for(src),
        ],
        check=True,
    )
    jm_dst.import_jobs(path, mode="replace", safety_backup=False)
    assert tallied(read_back(server.dsn_for(dst)), expected)


@SETTINGS
@given(rows=ROWS)
def test_any_text_survives_a_psql_csv_export(pair, tmp_path_factory, rows) -> None:  # type: ignore[no-untyped-def]
    server, (src, dst), (_, jm_dst) = pair
    expected = load(server.dsn_for(src), rows)
    path = tmp_path_factory.mktemp("c") / "jobs.csv"
    server.psql(
        src,
        "-c",
        f"\\copy (SELECT id, prompt_text, job_type, local_path, error_message FROM jobs) "
        f"TO '{path}' CSV HEADER",
    )
    jm_dst.import_jobs(path, mode="replace", safety_backup=False)
    assert tallied(read_back(server.dsn_for(dst)), expected)


@SETTINGS
@given(
    prompt=st.text(max_size=20).filter(
        lambda s: "\x00" in s or not s or any(0xD800 <= ord(c) <= 0xDFFF for c in s)
    )
)
def test_text_no_backup_could_hold_is_refused_before_anything_is_written(pair, prompt) -> None:  # type: ignore[no-untyped-def]
    _, _, (jm_src, _) = pair
    with pytest.raises(InvalidArgumentError):
        jm_src.add_job(prompt, "IMAGE_TEST")


@pytest.fixture(scope="module", autouse=True)
def _record_the_tally(faults):  # type: ignore[no-untyped-def]
    """After every property of this module ran (in whatever order): the RELIABILITY.md row,
    from what they counted."""
    yield
    if TALLY["examples"]:
        faults.record(
            "random text (tabs, newlines, CR, backslashes, quotes, \\N, \\., emoji, any Unicode) in prompts, paths and errors",
            "Hypothesis: job_manager backup -> restore; pg_dump --column-inserts --rows-per-insert=3 -> import; psql \\copy CSV -> import",
            TALLY["examples"],
            counted(rows_read_back_different=TALLY["rows_different"]),
        )
