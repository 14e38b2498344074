"""The throwaway test clusters are private to their owner (scripts/pgcluster.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pgcluster  # on sys.path: tests/conftest.py puts scripts/ there
import psycopg
import pytest


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cluster() -> object:
    outer = Path(tempfile.mkdtemp(prefix="jm-pgc-"))  # 0700, like a home directory
    before = {p: mode(p) for p in [outer, *outer.parents]}
    c = pgcluster.start(outer / "x" / "cluster")
    try:
        yield c, outer, before
    finally:
        pgcluster.stop(Path(c.base))
        shutil.rmtree(outer, ignore_errors=True)


def test_cluster_files_are_private_and_parents_untouched(cluster: object) -> None:
    c, outer, before = cluster  # type: ignore[misc]
    assert {p: mode(p) for p in before} == before  # no parent directory's mode changed
    assert mode(Path(c.base) / "cluster.json") == 0o600
    assert mode(Path(c.base)) == 0o700
    home = c.home
    assert mode(home) == 0o700
    sockets = [p for p in home.iterdir() if p.is_socket()]
    assert sockets, list(home.iterdir())
    if os.geteuid() == 0:
        assert home.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert not str(home).startswith(str(outer))
    with psycopg.connect(c.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_other_local_users_cannot_get_in(cluster: object) -> None:
    """`nobody` once became superuser through the trusted socket."""
    c, _, _ = cluster  # type: ignore[misc]
    psql = str(Path(c.bindir) / "psql")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            f"host=127.0.0.1 port={c.port} user=postgres password=wrong dbname=postgres"
        )
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    for host in (str(c.home), "127.0.0.1"):
        r = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                psql,
                "-X",
                "-w",
                "-h",
                host,
                "-p",
                str(c.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "SELECT 1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert r.returncode != 0, (host, r.stdout)
    # The server's own user, on the socket, without the password: refused too (scram).
    r = subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            psql,
            "-X",
            "-w",
            "-h",
            str(c.home),
            "-p",
            str(c.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode != 0
    assert "password" in r.stderr
