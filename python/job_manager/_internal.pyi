"""Type stubs of the compiled module ``job_manager._internal`` (Rust, PyO3)."""

import datetime
import os
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, TypedDict, final

from typing_extensions import Self

__version__: str
SCHEMA_VERSION: int
"""The newest schema migration this build knows."""

JobType = Literal["IMAGE_TEST", "VIDEO_PROD"]
DownloadStatus = Literal["pending", "downloading", "completed", "failed"]
FileType = Literal["image", "video"]

class ClaimedJob(TypedDict):
    id: int
    prompt_text: str
    job_type: str
    created_at: datetime.datetime | None

class Job(TypedDict):
    id: int
    prompt_text: str
    status: str
    job_type: str
    local_path: str | None
    gcs_uri: str | None
    operation_id: str | None
    error_message: str | None
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None

class Download(TypedDict):
    id: int
    job_id: int | None
    remote_url: str
    local_path: str
    file_type: str
    file_size: int | None
    status: str
    priority: int | None
    attempts: int | None
    max_attempts: int | None
    error_message: str | None
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None
    prompt_text: str | None
    job_type: str | None

class StatusTotals(TypedDict):
    count: int
    total_size: int

class DownloadSummary(TypedDict):
    total_files: int
    total_downloaded_size: int

class DownloadStats(TypedDict):
    by_status: dict[str, StatusTotals]
    by_type: dict[str, dict[str, int]]
    summary: DownloadSummary

class ThroughputBucket(TypedDict):
    start: str
    """The bucket's start, ISO 8601 in the database's local time (like ``created_at``)."""
    added: int
    completed: int
    failed: int

class Throughput(TypedDict):
    granularity: Literal["hour", "day"]
    buckets: list[ThroughputBucket]

StrPath = str | os.PathLike[str]

@final
class BackupInfo:
    """What a backup file is and holds."""

    @property
    def path(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def created_at(self) -> datetime.datetime | None:
        """When the snapshot was taken (UTC)."""
    @property
    def rows(self) -> dict[str, int]:
        """Rows per table: ``jobs``, ``download_queue``."""
    @property
    def duration_s(self) -> float | None:
        """How long writing it took (only for a backup just made)."""
    @property
    def format(self) -> Literal["job_manager", "pg_dump", "csv"]: ...
    @property
    def compressed(self) -> bool: ...
    @property
    def compression(self) -> Literal["zstd", "gzip"] | None: ...
    @property
    def schema_version(self) -> int | None: ...
    @property
    def server_version(self) -> str | None: ...
    @property
    def problem(self) -> str | None:
        """Why the file does not verify (only from ``list_backups``)."""
    @property
    def signed(self) -> bool:
        """The file carries an HMAC-SHA-256 line (written with ``JOB_MANAGER_BACKUP_KEY``)."""
    @property
    def authenticated(self) -> bool:
        """The HMAC was checked against the configured backup key and matched."""
    @property
    def verified(self) -> bool: ...
    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dict (times as ISO 8601 strings)."""

@final
class ImportInfo:
    """What an import did."""

    @property
    def path(self) -> str: ...
    @property
    def mode(self) -> Literal["merge", "replace"]: ...
    @property
    def format(self) -> Literal["job_manager", "pg_dump", "csv"]: ...
    @property
    def added(self) -> dict[str, int]:
        """Rows added per table."""
    @property
    def skipped(self) -> dict[str, int]:
        """Rows of the file not added: jobs whose prompt was present (or repeated in the
        file), downloads of such jobs."""
    @property
    def remapped(self) -> dict[str, int]:
        """Rows added under a new id because their id was taken."""
    @property
    def duration_s(self) -> float: ...
    @property
    def safety_backup(self) -> str | None: ...
    def to_dict(self) -> dict[str, object]: ...

@final
class RestoreInfo:
    """What a restore did."""

    @property
    def path(self) -> str: ...
    @property
    def rows(self) -> dict[str, int]: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def safety_backup(self) -> str | None:
        """The backup of the rows the restore replaced."""
    @property
    def format(self) -> Literal["job_manager", "pg_dump", "csv"]: ...
    def to_dict(self) -> dict[str, object]: ...

def verify_backup(path: StrPath) -> BackupInfo:
    """Read a backup in full and check every line of it (no database needed).

    A job_manager backup verifies only if every line is one job_manager writes, its row counts
    and SHA-256 match, and, with ``JOB_MANAGER_BACKUP_KEY`` (or ``_FILE``) set, its HMAC
    matches the key. A plain pg_dump verifies when it is complete and its ``jobs`` and
    ``download_queue`` data parse; only that data is ever restored from it.

    Raises:
        BackupCorruptError: the file is truncated, edited, unsigned while a key is set, not a
            regular file, or not a backup; the message names the line.
    """

def _release_pools_before_fork() -> None:
    """Run by ``os.fork()`` before it forks (registered with ``os.register_at_fork``): closes
    this process's connection pools and waits for their threads."""

def list_backups(backup_dir: StrPath = "backups") -> list[BackupInfo]:
    """Every file named like a backup, newest first; ``verified`` says which pass."""

def cleanup_old_backups(
    backup_dir: StrPath = "backups", keep: int = 10, *, dry_run: bool = False
) -> list[str]:
    """Keep the newest ``keep`` verified backups, delete older ones; return what was deleted
    (with ``dry_run``: delete nothing, return what the same call would delete).

    Files not named like a backup are never touched; files that do not verify are never
    counted as kept; files whose names are dated in the future are neither counted nor
    deleted (both are logged). ``keep`` below 1 raises InvalidArgumentError."""

@final
class CleanupReport:
    """What a log sweep deleted (or, with ``dry_run``, would delete)."""

    @property
    def files(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def paths(self) -> list[str]:
        """The first 100 files deleted (``files`` counts them all)."""
    @property
    def dirs_removed(self) -> int: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def errors(self) -> list[str]:
        """The first 100 things that could not be read or deleted; the sweep went on."""
    @property
    def error_count(self) -> int:
        """How many things could not be read or deleted."""
    def to_dict(self) -> dict[str, object]: ...

def cleanup_old_logs(
    log_dir: StrPath,
    max_age_days: float | None = None,
    *,
    patterns: list[str] = ...,
    dry_run: bool = False,
    remove_empty_dirs: bool = True,
) -> CleanupReport:
    """Delete files under ``log_dir`` whose names match ``patterns`` (default ``["*.log"]``)
    and that are strictly older than ``max_age_days`` (None: 7), then directories left empty.

    A directory goes only when it is empty after the sweep and its modification time was older
    than ``max_age_days`` and than one day. Never follows or deletes a symlink, never deletes
    ``log_dir`` or a directory that still holds a file; ``dry_run`` deletes nothing and reports
    exactly what the real run would. Walks any depth with a bounded stack and at most 32 open
    directories.

    Raises InvalidArgumentError for a missing ``log_dir``, for ``/``, for a directory that is
    neither named in ``$AIRFLOW__LOGGING__BASE_LOG_FOLDER`` / ``$JOB_MANAGER_LOG_DIRS`` nor holds
    Airflow's log layout (``dag_id=*``, ``dag_processor``, ``scheduler``), for
    ``max_age_days`` outside 0..36500 and for a bad pattern."""

def reset_log_cache() -> None:
    """Forget cached Python logger levels (call after changing ``job_manager`` log levels)."""

@final
class PoolStatus:
    """Connections of a JobManager's pool in this process."""

    @property
    def max_size(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def idle(self) -> int: ...
    @property
    def in_use(self) -> int: ...

class JobManager:
    """A job queue in PostgreSQL, drop-in for the replaced ``JobManager``.

    The DSN is, in order: ``dsn``; ``$JOB_MANAGER_DSN``; else built from ``POSTGRES_HOST``
    (default ``postgres``), ``POSTGRES_PORT`` (5432), ``POSTGRES_DB``, ``POSTGRES_USER`` and
    ``POSTGRES_PASSWORD`` (each default ``airflow``). URL and key=value DSNs are accepted.

    TLS follows libpq: ``sslmode`` (disable, allow, prefer (default), require, verify-ca,
    verify-full), ``sslrootcert`` (a PEM file, or ``system``), ``sslcert``/``sslkey``, in the
    DSN. ``io_timeout`` bounds every wait of an ordinary call (no byte moving for that long
    closes the connection: DatabaseUnavailableError); ``long_io_timeout`` is the same bound for
    backups and restores. ``prepared_statements=False`` is the switch for PgBouncer in
    ``pool_mode=transaction``. ``application_name`` (default ``job_manager``) is what
    ``pg_stat_activity`` shows.

    Construction reads the TLS files the DSN names and does no other I/O. The pool opens on
    first use, is rebuilt in a forked child, and every call that may block releases the GIL.

    Raises:
        ConfigurationError: the DSN, a TLS file or any of the numbers is invalid.
    """

    def __new__(
        cls,
        dsn: str | None = None,
        *,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        io_timeout: float = 30.0,
        long_io_timeout: float = 3600.0,
        application_name: str | None = None,
        prepared_statements: bool = True,
        dbapi_pool_size: int | None = None,
    ) -> Self: ...
    @property
    def dsn(self) -> str:
        """The DSN as a URL built from its user, hosts, ports and database (and sslmode when not
        ``prefer``), the password shown as ``***``."""
    @property
    def pool_size(self) -> int: ...
    @property
    def dbapi_pool_size(self) -> int:
        """The most connections ``get_connection()`` keeps open in this process (default:
        ``pool_size``), beside the pool's own."""
    @property
    def connect_timeout(self) -> float: ...
    @property
    def io_timeout(self) -> float: ...
    @property
    def long_io_timeout(self) -> float: ...
    @property
    def sslmode(self) -> str: ...
    @property
    def prepared_statements(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool: ...
    def close(self) -> None:
        """Close this process's connections (``get_connection()``'s idle ones too, and those
        lent out when they come back); the next call opens a new pool."""
    def pool_status(self) -> PoolStatus: ...
    def get_connection(self) -> AbstractContextManager[Any]:
        """A context manager lending a psycopg2 connection (``pip install
        'job_manager[dbapi]'``) made from this JobManager's settings (DSN, TLS,
        connect_timeout, application_name, keepalives; ``statement_timeout`` = ``io_timeout``
        unless ``prepared_statements=False``), for the replaced system's own SQL::

            with jm.get_connection() as conn:
                with conn.cursor() as cur:
                    cur.execute("SELECT ... WHERE job_type = %s", ("IMAGE_TEST",))

        The block ends normally: commit; it raises: rollback, and the exception goes on. The
        connection then goes back to a pool of at most ``dbapi_pool_size`` per process (closed
        instead when broken, closed by the block, or left in an unknown state), its session
        reset as ``DISCARD ALL`` resets it (SETs, roles, held cursors, session advisory locks,
        LISTENs, temporary tables): nothing a block leaves on it reaches the next borrower. A
        forked child never uses its parent's. Errors inside the block are psycopg2's.

        Raises:
            ConfigurationError: psycopg2 is not installed, or the server refused the login.
            DatabaseUnavailableError: the server cannot be reached, or all
                ``dbapi_pool_size`` connections stayed lent for ``connect_timeout`` seconds.
        """

    # -- schema -----------------------------------------------------------------------------
    def check_table_exists(self, table_name: str = "jobs") -> bool:
        """Whether the table exists in the current schema (the name is a query parameter)."""
    def init_database(self, *, lock_timeout: float = 5.0) -> list[str]:
        """Apply the missing migrations and return their labels (``[]`` when current).

        Additive only: never drops a table, a column or a row. Safe to call from many processes
        at once (an advisory lock serialises them). DDL waits at most ``lock_timeout`` seconds
        for a table lock, then raises :class:`SchemaError`.
        """
    def pending_migrations(self) -> list[str]:
        """Labels of the migrations ``init_database`` would apply now."""

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, prompt_text: str, job_type: JobType | str) -> int:
        """Queue a job; return its id, or the id of the job that already has this prompt."""
    def add_jobs(self, prompts: list[str], job_type: JobType | str) -> int:
        """Queue many jobs with COPY; return how many were new (prompts already queued, and
        repeats in ``prompts``, are skipped). All or nothing."""
    def queued_job_types(self, prompts: list[str]) -> dict[str, int]:
        """How many of ``prompts`` are queued already, per job type: ``{job_type: count}`` (the
        prompts ``add_jobs`` skips, whatever type they were queued as)."""
    def add_test_jobs(self, prompts: list[str]) -> int:
        """Queue IMAGE_TEST jobs; return how many of the prompts are now queued as IMAGE_TEST."""
    def show_stats(self) -> None:
        """Print the job counts per type and status in the old format."""
    def get_job_stats(self) -> dict[str, dict[str, int]]:
        """``{job_type: {status: count}}``."""
    def reset_stuck_jobs(
        self,
        job_type: JobType | str | None = None,
        older_than_seconds: float = 3600.0,
        *,
        dry_run: bool = False,
    ) -> int:
        """Put jobs ``processing`` for longer than ``older_than_seconds`` back to ``pending``;
        return how many. With ``dry_run``, change nothing and return how many it would reset."""
    def get_and_lock_job(self, job_type: JobType | str) -> ClaimedJob | None:
        """Claim the oldest pending job of a type (it becomes ``processing``); each job is
        claimed by exactly one caller, however many workers. ``None`` when none is pending.

        Repeated claims on one JobManager continue after its previous claim (skipping the
        index entries of claimed jobs); a job re-queued behind that point is claimed when the
        jobs after it run out, or within 1,000 claims."""
    def get_and_lock_jobs(self, job_type: JobType | str, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` (1 to 10,000) of the oldest pending jobs of a type in one round
        trip, with the guarantees of ``get_and_lock_job``; oldest first, ``[]`` when none is
        pending."""
    def mark_jobs_as_completed(self, jobs: list[tuple[int, str | None]]) -> list[int]:
        """Mark many jobs completed in one round trip: ``[(job_id, local_path or None), ...]``
        (None keeps the job's local_path). Returns the ids marked, in the order given; ids
        with no job, and jobs that were not ``processing``, are logged as warnings."""
    def mark_jobs_as_failed(self, jobs: list[tuple[int, str | None]]) -> list[int]:
        """Mark many jobs failed in one round trip: ``[(job_id, error_message or None), ...]``.
        Returns the ids marked, in the order given; ids with no job, and jobs that were not
        ``processing``, are logged as warnings."""
    def wait_for_job(self, job_type: JobType | str, timeout: float) -> bool:
        """Block (GIL released) until a job of this type is pending, or ``timeout`` seconds pass:
        ``True`` when one is pending. Woken by LISTEN/NOTIFY (polling with backoff when
        ``prepared_statements=False``); Ctrl-C ends it within 0.2 s (a check of the queue
        already sent finishes first, within ``io_timeout``)."""
    def wait_and_lock_job(self, job_type: JobType | str, timeout: float) -> ClaimedJob | None:
        """``get_and_lock_job`` that waits (GIL released, as ``wait_for_job``) up to ``timeout``
        seconds for a job to claim; ``None`` when none came."""
    def wait_and_lock_jobs(
        self, job_type: JobType | str, limit: int, timeout: float
    ) -> list[ClaimedJob]:
        """``get_and_lock_jobs`` that waits (GIL released, as ``wait_for_job``) up to ``timeout``
        seconds for at least one job; returns what one claim took then (up to ``limit``), or
        ``[]``."""
    def mark_job_as_completed(
        self, job_id: int, local_path: str | None = None, gcs_uri: str | None = None
    ) -> bool:
        """Mark completed, setting the paths given; ``True`` when it was marked. When no job
        has this id: ``False``, with a warning logged (``job_manager.jobs``), nothing changed."""
    def mark_job_as_failed(self, job_id: int, error_message: str | None = None) -> bool:
        """Mark failed and store ``error_message``; ``True`` when it was marked. When no job
        has this id: ``False``, with a warning logged (``job_manager.jobs``), nothing changed."""
    def mark_job_as_awaiting_retry(self, job_id: int) -> bool: ...
    def mark_job_as_generation_successful(self, job_id: int, gcs_uri: str) -> bool: ...
    def update_job_operation_info(self, job_id: int, operation_id: str) -> bool: ...
    def get_job_operation_id(self, job_id: int) -> str | None: ...
    def update_job_gcs_uri(self, job_id: int, gcs_uri: str) -> bool: ...
    def get_job_by_id(self, job_id: int) -> Job | None: ...

    # -- downloads --------------------------------------------------------------------------
    def add_download_task(
        self,
        job_id: int,
        remote_url: str,
        local_path: str,
        file_type: FileType | str,
        priority: int = 0,
    ) -> int:
        """Queue a download for an existing job; return the new download's id."""
    def get_pending_downloads(
        self, limit: int = 10, file_type: FileType | str | None = None
    ) -> list[Download]:
        """Pending downloads with attempts left, highest priority first, then oldest."""
    def update_download_status(
        self,
        download_id: int,
        status: DownloadStatus | str,
        error_message: str | None = None,
        file_size: int | None = None,
    ) -> bool:
        """Move a download to ``status``; ``completed`` also completes its job, atomically.
        ``False`` when the download does not exist."""
    def get_download_stats(self) -> DownloadStats: ...
    def download_counts(self) -> dict[str, int]:
        """``{status: count}`` of the download queue, nothing else (an index-only scan)."""
    def throughput(self, granularity: Literal["hour", "day"] = "hour") -> Throughput:
        """Jobs added and finished (completed / failed) per hour over the last 24 hours
        (``granularity="hour"``) or per day over the last 30 days (``"day"``), oldest first,
        every bucket present. Read-only; each half is an index range scan."""
    def cleanup_old_downloads(self, days: int = 7, *, dry_run: bool = False) -> int:
        """Delete completed downloads older than ``days``; return how many. With ``dry_run``,
        delete nothing and return how many it would delete."""

    # -- maintenance ------------------------------------------------------------------------
    def analyze_tables(
        self, *, tables: list[str] | None = None, dry_run: bool = False
    ) -> list[str]:
        """ANALYZE on the owned tables; returns their names. ``tables``: only these owned
        tables. With ``dry_run``, run nothing and return the tables it would analyze."""
    def vacuum_tables(
        self, full: bool = False, *, tables: list[str] | None = None, dry_run: bool = False
    ) -> list[str]:
        """VACUUM (ANALYZE) on the owned tables (FULL rewrites them under an exclusive lock);
        returns the tables vacuumed. ``tables``: only these owned tables. With ``dry_run``,
        run nothing and return the tables it would vacuum."""
    def database_size(self) -> int:
        """``pg_database_size`` of the current database, in bytes."""
    def table_stats(self, exact: bool = False) -> list[dict[str, object]]:
        """Per owned table: rows_estimate (rows_exact when ``exact``), total/table/index bytes,
        live/dead tuples, last (auto)vacuum and analyze, and ``indexes`` with scans each."""
    def health_report(
        self, backup_dir: StrPath | None = None, *, thresholds: dict[str, float] | None = None
    ) -> dict[str, object]:
        """Job counts, the oldest pending job's age, stuck jobs, exhausted downloads, sizes,
        schema version and pending migrations, the newest backup's age and whether it
        verifies, and ``problems``: human-readable warnings. Thresholds (``stuck_after_s``,
        ``max_pending_age_s``, ``max_exhausted_downloads``, ``max_backup_age_s``,
        ``max_dead_ratio``, ``min_dead_tuples``) can be overridden. JSON-serialisable."""

    # -- backups ----------------------------------------------------------------------------
    def backup_database(
        self,
        backup_dir: StrPath = "backups",
        *,
        keep: int | None = 10,
        compress: bool | Literal["zstd", "gzip"] = False,
        streams: int | None = None,
    ) -> BackupInfo:
        """Back up ``jobs``, ``download_queue`` and the schema history from one consistent
        snapshot into ``backup_dir/airflow_backup_YYYYMMDD_HHMMSS.sql[.zst|.gz]`` (atomically,
        mode 0600), then keep the newest ``keep`` backups that verify (``None``: no rotation).
        ``compress=True`` is zstd (multi-threaded), ``"gzip"`` for tools that read only gzip.
        A backup that certainly cannot fit in the directory's free space is refused first.

        ``streams`` (1-16) connections read the tables in parallel, in ranges of pages, all in
        the backup's one exported snapshot; the file is the same as with one. ``None`` decides
        from this machine's cores and the server: 1 stream on PostgreSQL < 14, with
        ``prepared_statements=False`` (PgBouncer), or when the server has few free connection
        slots (the backup takes at most half of them). Raises InvalidArgumentError outside
        1-16, BackupError (and leaves no file) when a stream fails."""
    def dump_database(
        self,
        backup_dir: StrPath = "backups",
        *,
        keep: int | None = 10,
        pg_dump: StrPath | None = None,
    ) -> BackupInfo:
        """A whole-database ``pg_dump`` (the old behaviour), written atomically, checked
        complete, then rotated. Raises BackupError when pg_dump is missing, older than the
        server, or fails."""
    def import_jobs(
        self,
        path: StrPath,
        *,
        mode: Literal["merge", "replace"] = "merge",
        safety_backup: bool = True,
        backup_dir: StrPath = "backups",
        allow_unsigned: bool = False,
    ) -> ImportInfo:
        """Bring historical jobs home: a job_manager backup, a pg_dump (COPY or INSERT
        statements, data-only or full) or a CSV export of jobs with a header row.

        ``mode="merge"`` adds, in one transaction after a safety backup, the jobs whose prompts
        are not present (keeping an old id where it is free, a new one from the sequence where
        it is taken), re-points their downloads, maps legacy statuses, keeps extra columns, and
        leaves every existing row untouched. ``mode="replace"`` is ``restore_database``.
        Nothing read from the file is executed as SQL; a file that does not verify changes
        nothing."""
    def restore_database(
        self,
        path: StrPath,
        *,
        safety_backup: bool = True,
        backup_dir: StrPath = "backups",
        allow_unsigned: bool = False,
    ) -> RestoreInfo:
        """Restore a job_manager backup or a plain pg_dump of the replaced system.

        The file is opened once and verified in full first (a file that does not verify
        changes nothing); a table job_manager does not own that refers to ``jobs``, or a
        trigger it did not create, refuses the restore before anything changes. Then the
        schema is migrated, a safety backup of the current rows is written to ``backup_dir``,
        and ``jobs`` and ``download_queue`` are replaced in ONE transaction that loads exactly
        the bytes verified. No other table is touched. With ``JOB_MANAGER_BACKUP_KEY`` set, an
        unsigned file (a pg_dump, or a backup made without the key) is refused unless
        ``allow_unsigned=True``."""
