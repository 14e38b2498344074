"""A throwaway PostgreSQL cluster from the server binaries on this machine.

Used by the test suite (tests/conftest.py), the demo and the benchmarks when no DSN is given:

    python scripts/pgcluster.py start DIR   # prints the DSN; the server runs until `stop`
    python scripts/pgcluster.py stop DIR

The cluster listens on 127.0.0.1 at a free port and requires a password (scram-sha-256) over
TCP and over its Unix socket alike: no local user gets in without it. Its files are private to
their owner: the data, the socket and the log live in a directory of mode 0700, and
`cluster.json` (which holds the password) is 0600.

As root, the server runs as the `postgres` user, as PostgreSQL requires, in a directory of its
own created for it under the system's temporary directory (mode 0700, owned by `postgres`);
DIR keeps only `cluster.json`, readable by root alone. No parent directory's mode is ever
changed. Without root, everything lives under DIR (mode 0700).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import random
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 for a server this run is about to start.

    Never from the kernel's ephemeral range: that is where every outgoing connection takes its
    source port, so a port found free there by binding to port 0 can be taken by any client
    (Airflow's, the driver's) before the server binds it. Picked at random below that range,
    checked free by binding it, and never handed out twice by one process."""
    lo, _ = _ephemeral_range()
    first, last = (20000, lo - 1) if lo > 21000 else (10000, 19999)
    for _ in range(500):
        port = random.randint(first, last)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {first}-{last} on 127.0.0.1")


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SUPERUSER, "--", *cmd]


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(SUPERUSER)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _write_private(path: Path, text: str) -> None:
    """Writes a file of mode 0600 (created so: never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def _server_dir(base: Path) -> Path:
    """Where the server keeps its data, socket and log: a 0700 directory its user owns."""
    if os.geteuid() != 0:
        base.chmod(0o700)
        return base
    # /tmp (or $TMPDIR when the server user can reach it): the new directory is ours, so
    # only its own mode and owner are set; nothing above it changes.
    parent = Path(tempfile.gettempdir())
    if not all(p.stat().st_mode & stat.S_IXOTH for p in [parent, *parent.parents]):
        parent = Path("/tmp")
    server = Path(tempfile.mkdtemp(prefix="jm-pgsrv-", dir=parent))
    _chown_to_server_user(server)
    return server


@dataclass
class Cluster:
    """A running throwaway cluster."""

    base: str
    bindir: str
    port: int
    password: str
    options: str
    #: The server's own directory (data, socket, log): `base` without root.
    server_dir: str = ""

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    @property
    def home(self) -> Path:
        return Path(self.server_dir or self.base)

    @property
    def data(self) -> Path:
        return self.home / "data"

    def pg_ctl(self, *args: str) -> None:
        cmd = [str(Path(self.bindir) / "pg_ctl"), "-D", str(self.data), *args]
        subprocess.run(_as_server_user(cmd), check=True, capture_output=True)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every open connection is terminated."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.home / "server.log"))

    def stop(self) -> None:
        self.pg_ctl("stop", "-m", "fast", "-w")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-l", str(self.home / "server.log"), "-o", self.options)


def start(base: Path) -> Cluster:
    """initdb + start in `base` (created if missing, must not hold a cluster)."""
    bindir = find_bindir()
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()
    if (base / "cluster.json").exists():
        raise RuntimeError(f"{base} holds a cluster already; stop and remove it first")
    base.chmod(0o700)  # DIR itself (never a parent): it holds the password
    server = _server_dir(base)
    password = "jm-" + secrets.token_hex(12)
    pwfile = server / "pwfile"
    _write_private(pwfile, password + "\n")
    _chown_to_server_user(pwfile)
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(server / "data"),
                    "-U",
                    SUPERUSER,
                    "--auth-local=scram-sha-256",
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
    finally:
        pwfile.unlink(missing_ok=True)
    port = free_port()
    options = (
        f"-p {port} -k {server} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        "-c unix_socket_permissions=0700 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    cluster = Cluster(
        base=str(base),
        bindir=str(bindir),
        port=port,
        password=password,
        options=options,
        server_dir=str(server),
    )
    _write_private(base / "cluster.json", json.dumps(asdict(cluster)))
    cluster.start()
    return cluster


def load(base: Path) -> Cluster:
    return Cluster(**json.loads((base / "cluster.json").read_text()))


def stop(base: Path, *, remove: bool = True) -> None:
    cluster = load(base)
    try:
        cluster.pg_ctl("stop", "-m", "immediate", "-w")
    finally:
        if remove:
            if cluster.server_dir:
                shutil.rmtree(cluster.server_dir, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def throwaway(prefix: str = "jm-pg-") -> Iterator[Cluster]:
    """A cluster for the length of a `with` block: started in a new temporary directory,
    stopped and removed (data, socket, log) when the block ends, however it ends."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield start(base / "cluster")
    finally:
        if (base / "cluster" / "cluster.json").exists():
            stop(base / "cluster")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def bench_server(prefix: str = "jm-bench-pg-") -> Iterator[tuple[str, Path, Cluster | None]]:
    """The server a benchmark runs against, as `(superuser DSN, bindir, cluster)`:
    $JOB_MANAGER_BENCH_DSN's when set (`cluster` is None: nothing is started or stopped),
    otherwise a `throwaway` cluster."""
    dsn = os.environ.get("JOB_MANAGER_BENCH_DSN")
    if dsn:
        yield dsn, find_bindir(), None
        return
    with throwaway(prefix) as cluster:
        yield cluster.dsn, Path(cluster.bindir), cluster


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
