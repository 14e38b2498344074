"""Airflow glue: the database of an Airflow Connection, and the checks every DAG task makes
on its params before it touches anything. Airflow is imported lazily.

job_manager does not depend on Airflow; these functions import it only when called, inside a
task. Nothing here runs at DAG parse time.

A user who may trigger DAGs can override every param with the run's conf
(``core.dag_run_conf_overrides_params``). So the tasks trust no param: paths must resolve,
symlinks included, inside roots the deployment sets in the environment, connection ids must be
on an allow-list, and thresholds have floors. The roots and lists:

``JOB_MANAGER_BACKUP_DIR``
    backups are written, rotated and read only under it (default ``/opt/airflow/backups``).
``JOB_MANAGER_OUTPUT_DIR``
    the example's output files go only under it (default ``/opt/airflow/outputs``).
``JOB_MANAGER_PROMPTS_DIR``
    prompt files are read only under it (default: ``prompts/`` beside the DAG files).
Airflow's base log folder (``[logging] base_log_folder``)
    the log sweep runs only under it.
``JOB_MANAGER_ALLOWED_CONN_IDS``
    comma-separated Airflow Connection ids the DAGs may use (default: ``$JOB_MANAGER_CONN_ID``,
    else ``job_manager_db``).
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from job_manager._airflow_connection import DEFAULT_CONN_ID, dsn_from_connection
from job_manager.exceptions import ConfigurationError, InvalidArgumentError
from job_manager.manager import JobManager

__all__ = [
    "DEFAULT_CONN_ID",
    "MAX_PROMPTS_BYTES",
    "allowed_conn_id",
    "allowed_conn_ids",
    "at_least",
    "backup_root",
    "base_log_folder",
    "boolean",
    "confined_path",
    "default_conn_id",
    "dsn_from_connection",
    "is_log_folder",
    "manager_for",
    "output_root",
    "prompts_root",
    "read_prompts",
    "whole",
]

#: The largest prompts file a task reads (bytes).
MAX_PROMPTS_BYTES = 4 * 1024 * 1024
log = logging.getLogger(__name__)


def default_conn_id() -> str:
    """The deployment's connection id: ``$JOB_MANAGER_CONN_ID``, else ``job_manager_db``."""
    return os.environ.get("JOB_MANAGER_CONN_ID") or DEFAULT_CONN_ID


def allowed_conn_ids() -> list[str]:
    """``$JOB_MANAGER_ALLOWED_CONN_IDS`` (comma-separated), else the default connection id."""
    configured = os.environ.get("JOB_MANAGER_ALLOWED_CONN_IDS", "")
    ids = [c.strip() for c in configured.split(",") if c.strip()]
    return ids or [default_conn_id()]


def backup_root() -> Path:
    return Path(os.environ.get("JOB_MANAGER_BACKUP_DIR") or "/opt/airflow/backups")


def output_root() -> Path:
    return Path(os.environ.get("JOB_MANAGER_OUTPUT_DIR") or "/opt/airflow/outputs")


def prompts_root(dags_folder: Path | None = None) -> Path:
    configured = os.environ.get("JOB_MANAGER_PROMPTS_DIR")
    if configured:
        return Path(configured)
    return (dags_folder or Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", "."))) / "prompts"


def base_log_folder() -> Path:
    """Airflow's base log folder, read inside the task (never at parse time)."""
    configured = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER")
    if configured:
        return Path(configured)
    try:
        from airflow.configuration import conf

        return Path(conf.get("logging", "base_log_folder"))
    except Exception:  # configuration not importable in this process
        return Path(os.environ.get("AIRFLOW_HOME", "/opt/airflow")) / "logs"


def confined_path(value: object, root: Path, what: str) -> Path:
    """``value`` (absolute, or relative to ``root``) resolved with every symlink followed; it
    must be ``root`` or inside it (resolved too), else InvalidArgumentError, before anything is
    touched. Returns the resolved path."""
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip() or "\0" in str(value):
        raise InvalidArgumentError(f"{what} must be a path under {root}, got {value!r}")
    real_root = Path(os.path.realpath(root))
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = real_root / candidate
    real = Path(os.path.realpath(candidate))
    if real != real_root and real_root not in real.parents:
        raise InvalidArgumentError(
            f"{what} {str(value)!r} resolves to {real}, outside {real_root}: the deployment "
            f"allows only paths under it (set by the operator in the environment)"
        )
    return real


def is_log_folder(path: Path) -> bool:
    """What ``cleanup_old_logs`` accepts, checked up front: a directory named in
    ``$AIRFLOW__LOGGING__BASE_LOG_FOLDER`` / ``$JOB_MANAGER_LOG_DIRS``, or one holding Airflow's
    log layout at its top (a ``dag_id=*``, ``dag_processor`` or ``scheduler`` directory)."""
    real = os.path.realpath(path)
    if real == "/":
        return False
    named = [os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER", "")]
    named += os.environ.get("JOB_MANAGER_LOG_DIRS", "").split(os.pathsep)
    if any(n and os.path.realpath(n) == real for n in named):
        return True
    try:
        with os.scandir(real) as entries:
            return any(
                (e.name.startswith("dag_id=") or e.name in ("dag_processor", "scheduler"))
                and e.is_dir(follow_symlinks=False)
                for e in entries
            )
    except OSError:
        return False


def at_least(params: Mapping[str, Any], name: str, minimum: float, maximum: float) -> float:
    """``params[name]`` as a finite number from ``minimum`` to ``maximum``, else
    InvalidArgumentError (the Params check the same; this holds whatever the run conf says)."""
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise InvalidArgumentError(f"{name} must be from {minimum} to {maximum}, got {value!r}")
    return value


def whole(params: Mapping[str, Any], name: str, minimum: int, maximum: int) -> int:
    """``params[name]`` as a whole number from ``minimum`` to ``maximum``."""
    value = at_least(params, name, minimum, maximum)
    if value != int(value):
        raise InvalidArgumentError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def boolean(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be true or false, got {value!r}")
    return value


def allowed_conn_id(value: object, allowed: Iterable[str] | None = None) -> str:
    """``value`` when it is an allowed connection id (default list: :func:`allowed_conn_ids`;
    empty means the deployment's default), else InvalidArgumentError."""
    conn_id = value or default_conn_id()
    permitted = list(allowed) if allowed is not None else allowed_conn_ids()
    if not isinstance(conn_id, str) or conn_id not in permitted:
        raise InvalidArgumentError(
            f"conn_id {conn_id!r} is not allowed here; allowed: {', '.join(permitted)} "
            "(the operator sets them in $JOB_MANAGER_ALLOWED_CONN_IDS)"
        )
    return conn_id


def read_prompts(value: object, root: Path, max_bytes: int = MAX_PROMPTS_BYTES) -> list[str]:
    """The non-empty lines of a prompts file under ``root``: a regular file (no FIFO, device
    or symlink swapped in after the check) of at most ``max_bytes``, UTF-8."""
    path = confined_path(value, root, "prompts_file")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise InvalidArgumentError(f"prompts_file {path} cannot be opened: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgumentError(f"prompts_file {path} is not a regular file")
        if st.st_size > max_bytes:
            raise InvalidArgumentError(
                f"prompts_file {path} has {st.st_size} bytes, more than {max_bytes}"
            )
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidArgumentError(f"prompts_file {path} grew past {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"prompts_file {path} is not UTF-8 ({e.reason})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _not_found_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module in ("airflow.sdk.exceptions", "airflow.exceptions"):
        try:
            mod = __import__(module, fromlist=["AirflowNotFoundException"])
            errors.append(mod.AirflowNotFoundException)
        except (ImportError, AttributeError):
            continue
    return tuple(errors) or (LookupError,)


def manager_for(
    params: Mapping[str, Any] | None = None,
    *,
    allowed: Iterable[str] | None = None,
    env_fallback: bool = True,
    **kwargs: Any,
) -> JobManager:
    """The JobManager a task should use: the Airflow Connection named by ``params["conn_id"]``
    (else the deployment's default, ``$JOB_MANAGER_CONN_ID`` or ``job_manager_db``).

    The id must be in ``allowed`` (default :func:`allowed_conn_ids`), else
    InvalidArgumentError. When that Connection is not defined, only the deployment's default id
    falls back to the environment's database (``JobManager()``: ``$JOB_MANAGER_DSN`` or
    ``POSTGRES_*``), and only with ``env_fallback``; any other id is a ConfigurationError."""
    conn_id = allowed_conn_id((params or {}).get("conn_id"), allowed)
    try:
        jm = JobManager.from_airflow_connection(conn_id, **kwargs)
    except _not_found_errors():
        if env_fallback and conn_id == default_conn_id():
            log.info("no Airflow connection %r: using the environment's database", conn_id)
            return JobManager(**kwargs)
        raise ConfigurationError(
            f"the Airflow Connection {conn_id!r} is not defined: define it (for example "
            f"AIRFLOW_CONN_{conn_id.upper()}) before running this task"
        ) from None
    log.info("using Airflow connection %r: %s", conn_id, jm.dsn)
    return jm
