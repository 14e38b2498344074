"""A throwaway PostgreSQL cluster from the server binaries on this machine.

Used by the test suite (tests/conftest.py), the demo and the benchmarks when no DSN is given:

    python scripts/pgcluster.py start DIR   # prints the DSN; the server runs until `stop`
    python scripts/pgcluster.py stop DIR

The cluster listens on 127.0.0.1 at a free port, requires a password over TCP (so tests see
real authentication), and keeps everything, socket included, under DIR. As root, the server
runs as the `postgres` user, as PostgreSQL requires.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SUPERUSER = "postgres"


def find_bindir() -> Path:
    """The directory of initdb/pg_ctl/psql: $PG_BINDIR, pg_config, or the newest Debian one."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return Path(candidates[-1])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    raise RuntimeError(
        "no PostgreSQL server binaries found: install them (Debian: apt-get install "
        "postgresql) or set PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SUPERUSER, "--", *cmd]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(SUPERUSER)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


@dataclass
class Cluster:
    """A running throwaway cluster."""

    base: str
    bindir: str
    port: int
    password: str
    options: str

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def data(self) -> Path:
        return Path(self.base) / "data"

    def pg_ctl(self, *args: str) -> None:
        cmd = [str(Path(self.bindir) / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(_as_server_user(cmd), check=True, capture_output=True)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every open connection is terminated."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(Path(self.base) / "server.log"))

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-l", str(Path(self.base) / "server.log"), "-o", self.options)


def start(base: Path) -> Cluster:
    """initdb + start in `base` (created if missing, must not hold a cluster)."""
    bindir = find_bindir()
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    if (base / "data").exists():
        raise RuntimeError(f"{base}/data exists already; stop and remove it first")
    password = "jm-" + secrets.token_hex(12)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    _chown_to_server_user(base)
    if os.geteuid() == 0:
        # The server user must be able to reach `base` through every parent directory.
        for parent in base.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    subprocess.run(
        _as_server_user(
            [
                str(bindir / "initdb"),
                "-D",
                str(base / "data"),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                f"--pwfile={pwfile}",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    port = _free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    cluster = Cluster(
        base=str(base), bindir=str(bindir), port=port, password=password, options=options
    )
    cluster.start()
    (base / "cluster.json").write_text(json.dumps(asdict(cluster)))
    return cluster


def load(base: Path) -> Cluster:
    return Cluster(**json.loads((base / "cluster.json").read_text()))


def stop(base: Path, *, remove: bool = True) -> None:
    cluster = load(base)
    try:
        cluster.pg_ctl("stop", "-m", "immediate", "-w")
    finally:
        if remove:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "dsn"):
        print(__doc__, file=sys.stderr)
        return 2
    base = Path(argv[1])
    if argv[0] == "start":
        print(start(base).dsn)
    elif argv[0] == "dsn":
        print(load(base).dsn)
    else:
        stop(base)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
