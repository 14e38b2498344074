"""The ``AirflowPlugin`` that the wheel's ``airflow.plugins`` entry point names."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

#: Where the FastAPI app is mounted in the API server.
URL_PREFIX = "/job-manager"


class _LazyApps:
    """``fastapi_apps``, built on first access: the scheduler, the DAG processor and the
    workers load plugins too and never need FastAPI."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            from job_manager.airflow_plugin.app import create_app

            self._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Job queue"}]
        return self._apps


class JobManagerPlugin(AirflowPlugin):
    """Adds "Job queue" to the UI's navigation (an iframe of ``/job-manager/``) and serves
    ``/job-manager/metrics``; every endpoint requires an Airflow user allowed to read the
    custom view ``Job queue`` (the auth manager decides)."""

    name = "job_manager"
    fastapi_apps = _LazyApps()  # type: ignore[assignment]
    external_views = [  # noqa: RUF012 (Airflow's own attribute; it expects a list)
        {
            "name": "Job queue",
            "href": URL_PREFIX + "/",
            "destination": "nav",
            "url_route": "job-queue",
            "category": "browse",
        }
    ]
