"""``JobManager.get_connection()``: psycopg2 connections for the replaced system's own SQL.

The replaced ``DatabaseManager.get_connection()`` returned ``psycopg2.connect(...)``, and code
written for it uses psycopg2's placeholders (``%s``, ``%(name)s``), its types, its
``RealDictCursor`` and its ``with conn:`` (commit or rollback, never close). So this lends real
psycopg2 connections, made from the JobManager's own resolved settings (the keywords come from
Rust, ``Settings::dbapi_params``: hosts, TLS, timeouts, keepalives, application_name), from a
small bounded pool kept beside the queue's own:

* at most ``dbapi_pool_size`` connections per JobManager and process, lent or idle; a caller
  that finds them all lent waits ``connect_timeout`` seconds, then gets
  DatabaseUnavailableError naming the limit;
* the block ends normally: commit; it raises: rollback, and the exception goes on; either way
  the connection goes back, or is closed when it is broken, closed by the caller, or its
  transaction state is unknown;
* a connection goes back as a new one would be: the replaced code's connection ended with its
  block, so nothing a block did to the session outlives it. One round trip runs what
  ``DISCARD ALL`` runs (held cursors closed, SET/SET ROLE/SET SESSION AUTHORIZATION undone,
  prepared statements, LISTENs, session advisory locks, temporary tables and cached plans
  dropped) and sets ``statement_timeout`` again; a connection this cannot reset is closed;
* a connection idle in the pool is checked without a round trip (anything readable on an idle
  socket means the server closed it or is closing it) and replaced when dead;
* fork-safe: a child never speaks on its parent's sockets. After ``os.fork()`` (and, without
  fork handlers, at the child's first call) the inherited connections are detached: their
  file descriptor is pointed at ``/dev/null`` before psycopg2 closes it, so the Terminate
  message that closing sends goes nowhere and the parent's sessions are untouched.

Errors inside the block are psycopg2's, unchanged. Failing to connect is the library's:
DatabaseUnavailableError (server unreachable, timed out) or ConfigurationError (login refused,
database missing), with the password masked.
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from contextlib import suppress
from types import TracebackType
from typing import Any

from job_manager.exceptions import ConfigurationError, DatabaseUnavailableError

__all__ = ["Lease", "Pool"]

# Messages of libpq that mean the settings, not the network, are wrong.
_LOGIN_REFUSED = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "certificate verify failed",
    "server does not support SSL",
)

_pools: weakref.WeakSet[Pool] = weakref.WeakSet()

# DISCARD ALL, spelled out: DISCARD ALL itself must be a query of its own (it refuses to run
# in the implicit transaction of a multi-statement query), and the statement_timeout the pool
# sets follows it in the same round trip.
_RESET_SESSION = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"
)


def _import_psycopg2() -> Any:
    try:
        import psycopg2
        import psycopg2.extensions
    except ImportError as exc:
        raise ConfigurationError(
            "get_connection() lends psycopg2 connections (the driver the replaced system used) "
            "and psycopg2 is not installed: pip install 'job_manager[dbapi]' "
            f"(or psycopg2-binary) ({exc})"
        ) from None
    return psycopg2


def _detach(conn: Any) -> None:
    """Closes `conn` without a byte reaching its socket: for connections inherited through
    fork(), whose sockets the parent still uses."""
    if conn.closed:
        return
    try:
        fd = conn.fileno()
    except Exception:
        fd = None
    if fd is not None:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    with suppress(Exception):
        conn.close()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Pool:
    """At most ``size`` psycopg2 connections of one JobManager in this process."""

    def __init__(
        self,
        params: dict[str, str],
        size: int,
        timeout: float,
        redacted_dsn: str,
        statement_timeout_ms: int | None,
    ) -> None:
        self._psycopg2 = _import_psycopg2()
        self._params = params
        self._size = size
        self._timeout = timeout
        self._dsn = redacted_dsn
        self._statement_timeout_ms = statement_timeout_ms
        self._reset_sql = _RESET_SESSION
        self._reset_args: tuple[str, ...] = ()
        if statement_timeout_ms is not None:
            self._reset_sql += "; SELECT set_config('statement_timeout', %s, false)"
            self._reset_args = (f"{statement_timeout_ms}ms",)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[Any] = []
        # Every connection of this process (lent or idle), for fork() and close().
        self._open: set[Any] = set()
        # Bumped by close() and fork(): a connection of an older generation is never reused.
        self._generation = 0
        _pools.add(self)

    def __repr__(self) -> str:
        return f"Pool(dsn={self._dsn!r}, size={self._size}, open={len(self._open)})"

    # -- fork and close ----------------------------------------------------------------------

    def _forked(self) -> None:
        """In a child process: forget the parent's connections without touching them."""
        inherited = list(self._open)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self._size)
        self._idle = []
        self._open = set()
        self._generation += 1
        self._pid = os.getpid()
        for conn in inherited:
            _detach(conn)

    def close(self) -> None:
        """Closes the idle connections now and the lent ones when they come back."""
        if os.getpid() != self._pid:
            self._forked()
            return
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
            for conn in idle:
                self._open.discard(conn)
        for conn in idle:
            conn.close()

    # -- lending ---------------------------------------------------------------------------

    def connection(self) -> Lease:
        """Lends a connection for one ``with`` block (see the module's docstring)."""
        return Lease(self)

    def _acquire(self) -> tuple[Any, int, threading.BoundedSemaphore]:
        if os.getpid() != self._pid:
            self._forked()
        slots = self._slots
        started = time.monotonic()
        if not slots.acquire(timeout=self._timeout):
            waited = time.monotonic() - started
            raise DatabaseUnavailableError(
                f"all {self._size} connections of get_connection() (dbapi_pool_size="
                f"{self._size}) to {self._dsn} stayed in use for {waited:.1f}s; raise "
                "dbapi_pool_size, or hold fewer get_connection() blocks open at once in this "
                "process"
            )
        try:
            with self._lock:
                generation = self._generation
            conn = self._take_idle()
            if conn is None:
                conn = self._connect()
                with self._lock:
                    self._open.add(conn)
            return conn, generation, slots
        except BaseException:
            slots.release()
            raise

    def _take_idle(self) -> Any | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if self._alive(conn):
                return conn
            with self._lock:
                self._open.discard(conn)
            conn.close()

    @staticmethod
    def _alive(conn: Any) -> bool:
        """An idle connection has nothing to say: anything readable (EOF, or the FATAL a
        server sends when it shuts down or terminates the session) means it is gone."""
        if conn.closed:
            return False
        try:
            # poll(), not select(): a process with more than 1024 descriptors is fine.
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def _connect(self) -> Any:
        psycopg2 = self._psycopg2
        try:
            conn = psycopg2.connect(**self._params)
        except psycopg2.Error as exc:
            raise self._connect_error(exc) from None
        try:
            if self._statement_timeout_ms is not None:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT set_config('statement_timeout', %s, false)",
                        (f"{self._statement_timeout_ms}ms",),
                    )
                conn.commit()
        except psycopg2.Error as exc:
            conn.close()
            raise self._connect_error(exc) from None
        return conn

    def _connect_error(self, exc: Exception) -> Exception:
        text = str(exc).strip()
        password = self._params.get("password")
        if password:
            text = text.replace(password, "***")
        if any(marker in text for marker in _LOGIN_REFUSED):
            return ConfigurationError(
                f"get_connection(): connecting to {self._dsn} was refused ({text}); check the "
                "user, password, database and TLS settings of the DSN"
            )
        return DatabaseUnavailableError(
            f"get_connection(): cannot connect to {self._dsn} ({text}); is the server running "
            "and reachable?"
        )

    def _release(
        self, conn: Any, generation: int, slots: threading.BoundedSemaphore, *, clean: bool
    ) -> None:
        """Returns `conn` to the pool, or closes it when it cannot be trusted; frees its slot."""
        if os.getpid() != self._pid or slots is not self._slots:
            # Lent before a fork and returned in the child: detached already, not ours.
            return
        try:
            keep = self._reusable(conn, clean) and generation == self._generation
            with self._lock:
                if keep and generation == self._generation:
                    self._idle.append(conn)
                else:
                    keep = False
                    self._open.discard(conn)
            if not keep and not conn.closed:
                conn.close()
        except BaseException:
            # Ctrl-C (or any exception) while checking or resetting it: its state is unknown,
            # and a connection neither idle nor closed would escape the bound.
            with self._lock:
                self._open.discard(conn)
            with suppress(Exception):
                conn.close()
            raise
        finally:
            slots.release()

    def _reusable(self, conn: Any, clean: bool) -> bool:
        """Whether `conn` is open, outside any transaction, and back to the defaults (on the
        Python side and in the server's session)."""
        psycopg2 = self._psycopg2
        if conn.closed:
            return False
        try:
            if not clean:
                conn.rollback()
            if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                return False
            # What a borrower may have changed on the Python side goes back to the default.
            if conn.autocommit or any(
                v is not None for v in (conn.isolation_level, conn.readonly, conn.deferrable)
            ):
                conn.set_session(
                    isolation_level="DEFAULT",
                    readonly="DEFAULT",
                    deferrable="DEFAULT",
                    autocommit=False,
                )
            conn.cursor_factory = None
            del conn.notices[:]
            del conn.notifies[:]
            # Typecasters registered on this connection (register_uuid(conn_or_curs=conn)...).
            conn.string_types.clear()
            conn.binary_types.clear()
            # What the block left on the server's session (SET, SET ROLE, WITH HOLD cursors,
            # advisory locks, LISTEN, temporary tables): reset in one round trip.
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(self._reset_sql, self._reset_args)
            finally:
                conn.autocommit = False
            # RESET ALL put client_encoding back on the server; psycopg2 encodes with what
            # set_client_encoding() told it. A mismatch cannot be trusted: closed.
            if conn.get_parameter_status("client_encoding") != conn.encoding:
                return False
        except psycopg2.Error:
            return False
        return True


class Lease:
    """What ``get_connection()`` returns: ``with`` it to borrow a connection. The replaced
    code's ``conn = get_connection()`` without ``with`` fails at its first use with a message
    saying so (a connection nobody returns is what the old "pool" leaked)."""

    __slots__ = ("_conn", "_generation", "_pool", "_slots", "_used")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: Any = None
        self._used = False

    def __enter__(self) -> Any:
        if self._used:
            raise RuntimeError(
                "this get_connection() was entered already; call get_connection() for each "
                "`with` block"
            )
        self._used = True
        self._conn, self._generation, self._slots = self._pool._acquire()
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        clean = False
        try:
            if exc_type is not None:
                if not conn.closed:
                    with suppress(Exception):
                        conn.rollback()
            elif not conn.closed:
                # A failed COMMIT is the caller's to see; nothing is retried (it may have
                # committed).
                conn.commit()
                clean = True
        finally:
            self._pool._release(conn, self._generation, self._slots, clean=clean)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"get_connection() lends a connection for a `with` block only: write `with "
            f"jm.get_connection() as conn:` and use conn.{name} inside it (the connection "
            "is committed and returned at the end of the block)"
        )

    def __repr__(self) -> str:
        state = "lent" if self._conn is not None else ("returned" if self._used else "unused")
        return f"<get_connection() lease, {state}, {self._pool!r}>"
