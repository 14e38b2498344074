"""A deferrable Airflow sensor that waits for pending jobs in the triggerer, holding no worker
slot: :class:`JobsPendingSensor` and its trigger :class:`JobsPendingTrigger`.

Import this module only in DAG files and the triggerer (it imports Airflow); ``job_manager``
itself never imports it.

The sensor checks once when it starts (one indexed ``EXISTS``); when a job of its type is
pending it succeeds at once. Otherwise it defers: the task gives up its worker slot and the
triggerer runs :class:`JobsPendingTrigger`, which repeats the same check every
``poll_interval`` seconds, in a thread (``asyncio.to_thread``) so the triggerer's event loop is
never blocked. It does not LISTEN: one check every few seconds costs the database less than a
connection held open per waiting sensor, keeps working behind PgBouncer, and a sensor's latency
is dominated by Airflow's scheduling of the next task anyway. (Workers that need low latency
use ``JobManager.wait_and_lock_jobs``, which does LISTEN.)

Usage::

    from job_manager.airflow_sensor import JobsPendingSensor

    wait = JobsPendingSensor(
        task_id="wait_for_jobs",
        job_type="IMAGE_TEST",
        conn_id="job_manager_db",
        poll_interval=5,
        timeout=3600,
    )
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from job_manager.exceptions import InvalidArgumentError

__all__ = ["JobsPendingSensor", "JobsPendingTrigger"]

log = logging.getLogger(__name__)

JOB_TYPES = ("IMAGE_TEST", "VIDEO_PROD")
#: The application_name of the trigger's connection (pg_stat_activity shows who waits).
TRIGGER_APPLICATION_NAME = "job_manager JobsPendingTrigger"
#: The shortest pause between two checks in the triggerer (seconds).
MIN_POLL_INTERVAL = 0.5


def _checked_job_type(job_type: object) -> str:
    if job_type not in JOB_TYPES:
        raise InvalidArgumentError(
            f"unknown job_type {job_type!r}; expected one of: {', '.join(JOB_TYPES)}"
        )
    return str(job_type)


def _checked_interval(poll_interval: object) -> float:
    try:
        value = float(poll_interval)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not (MIN_POLL_INTERVAL <= value <= 3600):
        raise InvalidArgumentError(
            f"poll_interval must be from {MIN_POLL_INTERVAL} to 3600 seconds, got {poll_interval!r}"
        )
    return value


class JobsPendingTrigger(BaseTrigger):
    """Fires once a job of ``job_type`` is pending in the database of the Airflow Connection
    ``conn_id``: ``TriggerEvent({"status": "pending", "job_type": ...})``. A check that fails
    (the database unreachable) is logged and repeated at the next interval; the sensor's
    ``timeout`` bounds the whole wait."""

    def __init__(self, conn_id: str, job_type: str, poll_interval: float = 5.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_type = _checked_job_type(job_type)
        self.poll_interval = _checked_interval(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "job_type": self.job_type,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from job_manager.manager import JobManager

        # The Connection lookup talks to Airflow: sync_to_async, as Airflow's own triggers do.
        jm = await sync_to_async(JobManager.from_airflow_connection)(
            self.conn_id, pool_size=1, application_name=TRIGGER_APPLICATION_NAME
        )
        self.log.info(
            "waiting in the triggerer for a pending %s job (%s), checking every %.1fs",
            self.job_type,
            jm.dsn,
            self.poll_interval,
        )
        checks = 0
        try:
            while True:
                checks += 1
                try:
                    # timeout 0: one indexed EXISTS, no LISTEN; the GIL is released meanwhile.
                    found = await asyncio.to_thread(jm.wait_for_job, self.job_type, 0)
                except Exception as e:  # logged; the next check may succeed
                    self.log.warning("checking for pending jobs failed (%s); retrying", e)
                    found = False
                if found:
                    self.log.info("a %s job is pending (check %d)", self.job_type, checks)
                    yield TriggerEvent(
                        {"status": "pending", "job_type": self.job_type, "checks": checks}
                    )
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(jm.close)


class JobsPendingSensor(BaseSensorOperator):
    """Succeeds when a job of ``job_type`` is pending. Deferrable (the default): while nothing
    is pending the task waits in the triggerer and holds no worker slot.

    ``conn_id`` (templated) must be in ``allowed`` (default: ``$JOB_MANAGER_ALLOWED_CONN_IDS``,
    else the deployment's default connection). ``timeout`` (seconds, BaseSensorOperator's)
    bounds the wait; ``poll_interval`` is the pause between checks in the triggerer (and
    between pokes when ``deferrable=False``)."""

    template_fields: Sequence[str] = ("conn_id", "job_type")

    def __init__(
        self,
        *,
        job_type: str,
        conn_id: str | None = None,
        allowed: Iterable[str] | None = None,
        poll_interval: float = 5.0,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.job_type = job_type
        self.conn_id = conn_id
        self.allowed = list(allowed) if allowed is not None else None
        self.poll_interval = _checked_interval(poll_interval)
        self.deferrable = deferrable

    def _conn_id(self) -> str:
        from job_manager.airflow import allowed_conn_id

        return allowed_conn_id(self.conn_id, self.allowed)

    def poke(self, context: Any) -> bool:
        from job_manager.airflow import manager_for

        job_type = _checked_job_type(self.job_type)
        with manager_for(
            {"conn_id": self._conn_id()}, allowed=self.allowed, env_fallback=False, pool_size=1
        ) as jm:
            return jm.wait_for_job(job_type, 0)

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            log.info("a %s job is pending: not deferring", self.job_type)
            return True
        self.defer(
            trigger=JobsPendingTrigger(
                conn_id=self._conn_id(),
                job_type=_checked_job_type(self.job_type),
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            timeout=datetime.timedelta(seconds=float(self.timeout)),
        )
        return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> bool:
        if not event or event.get("status") != "pending":
            raise RuntimeError(f"the trigger ended without a pending job: {event!r}")
        log.info(
            "a %s job is pending (found by the triggerer after %s checks)",
            event.get("job_type"),
            event.get("checks"),
        )
        return True
