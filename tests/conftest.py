"""Test fixtures: a real PostgreSQL server, a fresh database per test, and the reliability
suite's recorder (``faults``), which writes RELIABILITY.md with ``--reliability-report``.

With ``JOB_MANAGER_TEST_DSN`` (a role that may CREATE DATABASE) the tests use that server;
otherwise they start a throwaway cluster from the PostgreSQL binaries on this machine
(scripts/pgcluster.py) and remove it afterwards.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import job_manager
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "veo3-legacy"
sys.path.insert(0, str(ROOT / "scripts"))

import claimmap  # noqa: E402
import pgcluster  # noqa: E402
from nethelpers import Proxy  # noqa: E402


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on."""

    admin_dsn: str
    cluster: pgcluster.Cluster | None

    @property
    def password(self) -> str:
        return conninfo_to_dict(self.admin_dsn).get("password") or ""

    def dsn_for(self, dbname: str, *, user: str | None = None, password: str | None = None) -> str:
        """A URL for `dbname`, as the admin or as `user`, with the admin's or this password
        (built from parsed parts: never by replacing a substring of another DSN)."""
        params = conninfo_to_dict(self.admin_dsn)
        host, port = params.get("host"), params.get("port", 5432)
        user = user or params.get("user")
        pw = password if password is not None else params.get("password")
        auth = f"{quote(str(user), safe='')}:{quote(pw, safe='')}" if pw else f"{user}"
        return f"postgresql://{auth}@{host}:{port}/{dbname}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def create_database(self, template: str = "template0") -> str:
        name = "jm_test_" + uuid.uuid4().hex[:12]
        with self.admin() as c:
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\'')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, dbname: str, *args: str, input: str | None = None) -> str:
        """Runs psql with ON_ERROR_STOP against `dbname` (test setup only)."""
        bindir = Path(self.cluster.bindir) if self.cluster else pgcluster.find_bindir()
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        out = subprocess.run(
            [
                str(bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                make_conninfo(**params),
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr}")
        return out.stdout

    def pg_dump(self, dbname: str, out: Path, *flags: str) -> Path:
        """Runs this server's pg_dump with `flags` on `dbname` into `out` (test setup only)."""
        bindir = Path(self.cluster.bindir) if self.cluster else pgcluster.find_bindir()
        done = subprocess.run(
            [str(bindir / "pg_dump"), *flags, "-f", str(out), self.dsn_for(dbname)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr}")
        return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="reliability suite: soak counts instead of the bounded ones CI runs",
    )
    parser.addoption(
        "--reliability-report",
        metavar="PATH",
        help="write the reliability suite's table (fault, tried, times, lost) to PATH",
    )


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    dsn = os.environ.get("JOB_MANAGER_TEST_DSN")
    if dsn:
        yield Server(admin_dsn=dsn, cluster=None)
        return
    # A run stopped with SIGTERM (a CI timeout) still stops its server: the server daemonizes,
    # so only this fixture's `finally` can.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="jm-pg-"))
    cluster = pgcluster.start(base / "cluster")
    try:
        yield Server(admin_dsn=cluster.dsn, cluster=cluster)
    finally:
        pgcluster.stop(Path(cluster.base))


@pytest.fixture(scope="session", autouse=True)
def _fresh_log_levels() -> None:
    # pyo3-log caches logger levels; tests change them with caplog.
    job_manager.reset_log_cache()


@pytest.fixture(scope="session")
def migrated_template(server: Server) -> Iterator[str]:
    """A database with the current schema and nothing else, made once per run by
    init_database itself: tests that ask for `jm` get a copy of it, which is faster than
    migrating an empty database each time (test_schema.py migrates empty and legacy ones)."""
    name = server.create_database()
    jm = job_manager.JobManager(server.dsn_for(name))
    try:
        jm.init_database()
    finally:
        jm.close()
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def dbname(server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new database: a copy of `migrated_template` for tests that use `jm` (its
    init_database then finds nothing to do), empty otherwise."""
    if "jm" in request.fixturenames:
        name = server.create_database(template=request.getfixturevalue("migrated_template"))
    else:
        name = server.create_database()
    try:
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def dsn(server: Server, dbname: str) -> str:
    return server.dsn_for(dbname)


@dataclass
class SecretLogin:
    """A login whose password can be looked for by substring."""

    dsn: str
    user: str
    password: str


@pytest.fixture
def secret_login(server: Server, dbname: str) -> Iterator[SecretLogin]:
    """A role owning `dbname` whose password is long, random and nowhere else: tests that check
    a password appears in no message use it. (The admin password of a JOB_MANAGER_TEST_DSN may
    be `postgres`, which every message about PostgreSQL contains.)"""
    role = "jm_login_" + uuid.uuid4().hex[:12]
    password = "pw-" + secrets.token_hex(16)
    with server.admin() as c:
        c.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        c.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)
            )
        )
    try:
        yield SecretLogin(server.dsn_for(dbname, user=role, password=password), role, password)
    finally:
        with server.admin() as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        with psycopg.connect(server.dsn_for(dbname), autocommit=True) as c:
            c.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
            c.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with server.admin() as c:
            c.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER").format(sql.Identifier(dbname))
            )
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    """A TCP proxy in front of the test server that can go silent, lose a reply or slow down
    (tests/nethelpers.py); `nethelpers.via(proxy, dsn)` is a DSN through it."""
    port = int(conninfo_to_dict(server.admin_dsn).get("port") or 5432)
    p = Proxy(port)
    yield p
    p.close()


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    """An independent connection to the test database, for setting up and asserting."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def bare_jm(dsn: str) -> Iterator[job_manager.JobManager]:
    """A JobManager on an empty database (no schema yet)."""
    jm = job_manager.JobManager(dsn, connect_timeout=5)
    yield jm
    jm.close()


@pytest.fixture
def jm(bare_jm: job_manager.JobManager) -> job_manager.JobManager:
    """A JobManager on a database with the current schema."""
    bare_jm.init_database()
    return bare_jm


def content(db: psycopg.Connection) -> str:
    """A checksum of every row of the owned tables, every column by name (jsonb sorts keys)."""
    parts = []
    for table in ("jobs", "download_queue"):
        row = db.execute(
            "SELECT count(*), md5(coalesce(string_agg(to_jsonb(t)::text, '|' ORDER BY id), '')) "
            f"FROM {table} t"
        ).fetchone()
        parts.append(f"{table}:{row}")
    return " ".join(parts)


def whole_database(server: Server, dbname: str) -> str:
    """A pg_dump of everything in `dbname` (schema, data, sequences, every table job_manager
    does not own), minus the random \\restrict token: equal dumps mean nothing changed."""
    bindir = Path(server.cluster.bindir) if server.cluster else pgcluster.find_bindir()
    out = subprocess.run(
        [str(bindir / "pg_dump"), "--no-sync", server.dsn_for(dbname)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger, at every level, while the test runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(level=logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    job_manager.reset_log_cache()
    yield records
    root.removeHandler(handler)
    root.setLevel(level)
    job_manager.reset_log_cache()


def scalar(db: psycopg.Connection, sql: str, *params: object) -> object:
    row = db.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def caplog_jm(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog at DEBUG for the job_manager logger tree, with pyo3-log's level cache refreshed."""
    caplog.set_level("DEBUG", logger="job_manager")
    job_manager.reset_log_cache()
    return caplog


# -- the reliability suite's recorder (tests/reliability) ---------------------------------------


@dataclass
class Row:
    fault: str
    tried: str
    times: int
    lost: str


_ROWS: list[Row] = []


class Recorder:
    def __init__(self, long: bool) -> None:
        self.long = long

    def n(self, ci: int, long: int) -> int:
        """A count: bounded in CI, larger with --long."""
        return long if self.long else ci

    def record(self, fault: str, tried: str, times: int, lost: str) -> None:
        """One row of RELIABILITY.md; `lost` is counted by the test (see `counted`). Record
        before asserting: a failing run then writes what it observed."""
        _ROWS.append(Row(fault, tried, times, lost))


def counted(note: str = "", **counts: int) -> str:
    """The "what was lost" cell from counts the test measured: `nothing` only when every count
    is 0, and the counts always shown (`rows_lost=0` reads "0 rows lost")."""
    shown = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
    head = "nothing" if not any(counts.values()) else "LOST"
    return f"{head} ({shown}{'; ' + note if note else ''})"


def rows_of(db: psycopg.Connection) -> Counter[str]:
    """Every row of the owned tables, each as its table and all its columns by name (jsonb)."""
    out: Counter[str] = Counter()
    for table in ("jobs", "download_queue"):
        for (row,) in db.execute(f"SELECT to_jsonb(t)::text FROM {table} t"):
            out[f"{table} {row}"] += 1
    return out


def row_changes(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    """Rows of `before` missing or different in `after`, and rows `after` has that `before`
    had not: `counted(**row_changes(...))`."""
    return {
        "rows_lost_or_changed": sum((before - after).values()),
        "rows_appeared": sum((after - before).values()),
    }


def lines_changed(before: str, after: str) -> int:
    """Lines of `before` (a whole-database dump) missing from or added in `after`."""
    a, b = Counter(before.splitlines()), Counter(after.splitlines())
    return sum((a - b).values()) + sum((b - a).values())


@pytest.fixture(scope="session")
def faults(request: pytest.FixtureRequest) -> Recorder:
    return Recorder(bool(request.config.getoption("--long")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--reliability-report")
    if not path or not _ROWS:
        return
    lines = [
        "# Reliability",
        "",
        "Faults and hostile input that job_manager survives, each row written by the test that "
        "injected the fault, from what it observed.",
        f"Produced by `pytest {' '.join(session.config.invocation_params.args)}` "
        f"on {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"(Python {platform.python_version()}); pytest exit status {exitstatus}"
        f"{' (all passed)' if exitstatus == 0 else ' (FAILURES: see the run)'}.",
        "CI runs the same suite with these bounded counts; `--long` multiplies them for soak runs.",
        "",
        "| fault | what was tried | times | what was lost |",
        "| --- | --- | ---: | --- |",
    ]
    lines += [f"| {r.fault} | {r.tried} | {r.times} | {r.lost} |" for r in _ROWS]
    lines += [
        "",
        "## Known limits",
        "",
        "- **fork() while another thread is inside a job_manager call.** r2d2 and its worker "
        "thread wait in parking_lot, whose global table of waiting threads is not fork-safe: a "
        "child that inherits entries of threads it does not have crashed (SIGSEGV in "
        "`parking_lot_core::ThreadData::new`) or spun when its own pool's thread waited (seen "
        "in CI; reproduced in about 1 fork in 100 while pools came and went on other threads). "
        "So before every `os.fork()` job_manager closes the process's pools and waits for "
        "their worker threads (an `os.register_at_fork` hook, about 5 ms; the parent reopens "
        "its pool on its next call), and the stress test forks 160 children that way. Not "
        "covered: a fork at the instant another thread is inside a JobManager call (waiting "
        "for a pooled connection: the hook logs a warning after 1 s and forks anyway), and a "
        "fork by C code that bypasses `os.fork()`. Programs that fork while other threads use "
        "a JobManager should use the `spawn` start method.",
        "",
    ]
    # The claim -> test mapping, rendered from tests/claims.toml (tests/test_claims.py checks it).
    Path(path).write_text("\n".join(lines) + "\n" + claimmap.render(claimmap.load()))
