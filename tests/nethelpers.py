"""Real network pieces for the network tests: TLS certificates made with openssl, a TLS-only
PostgreSQL cluster, a TCP proxy that can go silent or lose a reply, and PgBouncer.

Everything listens on 127.0.0.1 only and lives under a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pgcluster

# -- certificates -----------------------------------------------------------------------------


@dataclass
class Certs:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", str(key), "-sha256", "-days", "2",
        "-subj", f"/CN={name}", "-out", str(crt), cwd=d,
    )  # fmt: skip
    return crt, key


def _signed(d: Path, name: str, cn: str, ca: tuple[Path, Path], san: str | None) -> None:
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key), cwd=d)
    _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={cn}", "-out", str(csr), cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt),
        cwd=d,
    )  # fmt: skip
    key.chmod(0o600)


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for `localhost` (only: 127.0.0.1 is a name it does not
    carry), a client certificate for the user
    `certuser`, and a second CA that signed nothing of ours."""
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca(d, "ca")
    other = _ca(d, "other-ca")
    _signed(d, "server", "localhost", ca, "DNS:localhost")
    _signed(d, "client", "certuser", ca, None)
    return Certs(
        ca[0], other[0], d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )


# -- a TLS-only cluster -------------------------------------------------------------------------


def start_tls_cluster(base: Path, certs: Certs) -> pgcluster.Cluster:
    """A throwaway cluster (scripts/pgcluster.py) restarted with ssl=on and a pg_hba that
    accepts TLS only: password logins, and certificate logins for `certuser`."""
    cluster = pgcluster.start(base)
    cluster.stop()
    data = Path(cluster.data)
    for src, name in (
        (certs.server_cert, "server.crt"),
        (certs.server_key, "server.key"),
        (certs.ca, "root.crt"),
    ):
        shutil.copy(src, data / name)
    (data / "server.key").chmod(0o600)
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all certuser 127.0.0.1/32 cert\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "ssl_ca_file = 'root.crt'\n"
        )
    if os.geteuid() == 0:
        pw = pwd.getpwnam(pgcluster.SUPERUSER)
        for name in ("server.crt", "server.key", "root.crt", "pg_hba.conf"):
            os.chown(data / name, pw.pw_uid, pw.pw_gid)
    cluster.start()
    return cluster


# -- a TCP proxy that can misbehave --------------------------------------------------------------


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.silent = False  # forward nothing, in either direction, and close nothing
        self.drop_after_request = False  # forward the next request, then go silent


class Proxy:
    """Forwards 127.0.0.1:port to a server. `blackhole()` makes every open connection silent
    (bytes are read and discarded; nothing is closed, so TCP keeps acknowledging), like a
    stateful firewall or NAT that lost its entry. `lose_next_reply()` lets the next request
    of any connection through, then drops everything after it: the server commits, the
    client never hears."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.links: list[_Link] = []
        self.lock = threading.Lock()
        self.arm_lose = False
        self.silent_new = False
        self.closed = False
        self.accepted = 0
        self.rate: float | None = None  # bytes per second from the server, when throttled
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self.lock:
                link.silent = self.silent_new
                self.links.append(link)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(link,), daemon=True).start()

    def _pump(self, link: _Link) -> None:
        socks = [link.client, link.upstream]
        try:
            while not self.closed:
                ready, _, _ = select.select(socks, [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if link.silent:
                        continue
                    if s is link.client:
                        with self.lock:
                            lose = self.arm_lose
                            self.arm_lose = False
                        link.upstream.sendall(data)
                        if lose:
                            link.silent = True
                    else:
                        link.client.sendall(data)
                        if self.rate:
                            time.sleep(len(data) / self.rate)
        except OSError:
            return
        finally:
            if not link.silent:
                for s in socks:
                    with contextlib.suppress(OSError):
                        s.close()

    def blackhole(self, *, new_connections: bool = False) -> None:
        """Silences every open connection; with `new_connections`, those accepted later too."""
        with self.lock:
            self.silent_new = new_connections
            for link in self.links:
                link.silent = True

    def throttle(self, bytes_per_second: float) -> None:
        """Forwards what servers send at about this rate (a slow link), on every connection."""
        self.rate = bytes_per_second

    def lose_next_reply(self) -> None:
        with self.lock:
            self.arm_lose = True

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            for link in self.links:
                for s in (link.client, link.upstream):
                    with contextlib.suppress(OSError):
                        s.close()


def via(proxy: Proxy, dsn: str) -> str:
    """`dsn` (a URL) with its host and port replaced by the proxy's."""
    head, tail = dsn.rsplit("@", 1)
    return f"{head}@127.0.0.1:{proxy.port}/{tail.split('/', 1)[1]}"


# -- PgBouncer ---------------------------------------------------------------------------------


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connections are refused for as long as the block runs: bound
    by a socket that never listens, so no other process can start listening there meanwhile
    (a port bound and closed again can be taken by anyone before the test connects)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


@dataclass
class Bouncer:
    port: int
    process: subprocess.Popen[bytes]
    base: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_pgbouncer(
    base: Path,
    server_port: int,
    user: str,
    password: str,
    pool_mode: str,
    users: dict[str, str] | None = None,
    pool_size: int = 10,
) -> Bouncer:
    """Debian's pgbouncer in front of the test cluster, as a non-root user, on a free port.
    `users`: more logins (name: password) it accepts; `pool_size`: its default_pool_size."""
    exe = find_pgbouncer()
    if exe is None:
        raise RuntimeError("pgbouncer is not installed (scripts/bootstrap.sh installs it)")
    base.mkdir(parents=True, exist_ok=True)
    port = pgcluster.free_port()
    logins = {user: password, **(users or {})}
    (base / "userlist.txt").write_text("".join(f'"{u}" "{p}"\n' for u, p in logins.items()))
    (base / "pgbouncer.ini").write_text(
        f"""[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {base}/userlist.txt
pool_mode = {pool_mode}
max_client_conn = 200
default_pool_size = {pool_size}
ignore_startup_parameters = extra_float_digits,options
logfile = {base}/pgbouncer.log
admin_users = {user}
"""
    )
    cmd = [exe, str(base / "pgbouncer.ini")]
    if os.geteuid() == 0:
        pw = pwd.getpwnam(pgcluster.SUPERUSER)
        for p in (base, base / "userlist.txt", base / "pgbouncer.ini"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        (base / "userlist.txt").chmod(0o600)
        cmd = ["runuser", "-u", pgcluster.SUPERUSER, "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"pgbouncer exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return Bouncer(port, proc, base)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("pgbouncer did not start listening within 10 s")
