"""``/job-manager/metrics``: the snapshot as Prometheus gauges (prometheus_client).

A collector over one snapshot in a registry of its own per request: nothing global, so
nothing leaks between the API server's worker processes or between requests.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from job_manager.airflow_plugin.snapshot import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "job_manager_up", "1 when the queue's database answered this scrape, else 0"
        )
        up.add_metric([], 0.0 if self.snap is None else 1.0)
        yield up
        s = self.snap
        if s is None:
            return
        jobs = GaugeMetricFamily(
            "job_manager_jobs", "Jobs by type and status", labels=["job_type", "status"]
        )
        for job_type, statuses in sorted(s.jobs.items()):
            for status, count in sorted(statuses.items()):
                jobs.add_metric([job_type, status], count)
        yield jobs
        yield GaugeMetricFamily(
            "job_manager_oldest_pending_job_age_seconds",
            "Age of the oldest pending job (0 when none is pending)",
            value=s.oldest_pending_age_s or 0.0,
        )
        yield GaugeMetricFamily(
            "job_manager_stuck_jobs",
            f"Jobs processing for longer than {s.stuck_after_s:.0f} s",
            value=s.stuck,
        )
        downloads = GaugeMetricFamily(
            "job_manager_downloads", "Downloads by status", labels=["status"]
        )
        for status, count in sorted(s.downloads.items()):
            downloads.add_metric([status], count)
        yield downloads
        yield GaugeMetricFamily(
            "job_manager_backups", "Backup files in the backup folder", value=s.backup_count
        )
        newest = s.newest_backup
        if newest is not None and newest["age_s"] is not None:
            yield GaugeMetricFamily(
                "job_manager_newest_backup_age_seconds",
                "Age of the newest backup file, verified or not",
                value=newest["age_s"],
            )
            yield GaugeMetricFamily(
                "job_manager_newest_backup_size_bytes",
                "Size of the newest backup file",
                value=newest["size_bytes"],
            )
            yield GaugeMetricFamily(
                "job_manager_newest_backup_verified",
                "1 when the newest backup file verifies, else 0",
                value=1.0 if newest["verified"] else 0.0,
            )
        verified = s.newest_verified_backup
        if verified is not None and verified["age_s"] is not None:
            # Absent when no backup verifies: alert on absent() too.
            yield GaugeMetricFamily(
                "job_manager_newest_verified_backup_age_seconds",
                "Age of the newest backup that verifies (absent when none does)",
                value=verified["age_s"],
            )
        yield GaugeMetricFamily(
            "job_manager_problems",
            "Problems the health report lists (the Job queue page says what fixes each)",
            value=len(s.problems),
        )


def render(snap: Snapshot | None) -> bytes:
    """The exposition text for one snapshot (``None``: the database did not answer)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)
