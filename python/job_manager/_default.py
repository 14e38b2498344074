"""The process-wide JobManager behind the module-level compatibility functions."""

from __future__ import annotations

import threading

from job_manager.manager import JobManager

_lock = threading.Lock()
_manager: JobManager | None = None


def default_manager() -> JobManager:
    """A JobManager configured from the environment, created on first use (no I/O)."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = JobManager()
    return _manager
