"""The FastAPI app mounted at ``/job-manager`` in Airflow's API server.

Every route, the stylesheet included, depends on :func:`requires_job_queue_access`: Airflow's
own ``get_user`` (a ``Authorization: Bearer`` JWT, else the ``_token`` cookie the UI sets at
login, which the browser sends with the iframe's same-origin requests) and then the auth
manager's ``is_authorized_custom_view(GET, "Job queue")``. No user: 401; a user without the
permission or an invalid token: 403. Nothing is read before the check passes. FastAPI's own
``/openapi.json``, ``/docs`` and ``/redoc`` (which it adds outside the app's dependencies)
are turned off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from job_manager.airflow_plugin import metrics, render, snapshot
from job_manager.exceptions import JobManagerError

log = logging.getLogger("job_manager.airflow_plugin")

#: The resource the auth manager is asked about (FAB: a permission on this view name).
RESOURCE_NAME = "Job queue"
STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"job-queue.css": "text/css", "theme.js": "text/javascript"}
# The page fetches only its own stylesheet and script; nothing inline, nothing from outside.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def requires_job_queue_access(user: GetUserDep) -> BaseUser:
    """Airflow's authentication, then its authorization for the custom view "Job queue"."""
    if not get_auth_manager().is_authorized_custom_view(
        method="GET", resource_name=RESOURCE_NAME, user=user
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    return user


AuthorizedUser = Annotated[BaseUser, Depends(requires_job_queue_access)]


def _roots(request: Request) -> tuple[str, str]:
    """Airflow's UI root and this app's static folder, both as absolute paths."""
    mount = request.scope.get("root_path", "").rstrip("/")
    base = mount.removesuffix("/job-manager")
    return base, f"{mount}/static"


def _unavailable(e: Exception) -> str:
    # The error's text may name the host; the page names only the kind of failure.
    log.warning("job queue page: reading the queue failed: %s", e)
    return (
        f"The queue's database could not be read ({type(e).__name__}); "
        "see the API server's log for the reason."
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="job_manager: Job queue",
        description="The job queue at a glance (read-only) and Prometheus metrics.",
        dependencies=[Depends(requires_job_queue_access)],
        # FastAPI serves these with add_route, outside `dependencies`: no login would be
        # asked, and the Swagger page runs a script from a CDN on Airflow's origin.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/", response_class=HTMLResponse)
    def job_queue_page(request: Request) -> HTMLResponse:
        base, static = _roots(request)
        try:
            snap = snapshot.take()
        except JobManagerError as e:
            return HTMLResponse(
                render.error_page(_unavailable(e), static=static), status_code=503, headers=HEADERS
            )
        return HTMLResponse(render.page(snap, base=base, static=static), headers=HEADERS)

    @app.get("/api/overview")
    def overview() -> JSONResponse:
        """The page's numbers as JSON."""
        try:
            snap = snapshot.take()
        except JobManagerError as e:
            return JSONResponse({"error": _unavailable(e)}, status_code=503)
        return JSONResponse(snap.to_dict(), headers={"Cache-Control": "no-store"})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """Prometheus text format; ``job_manager_up 0`` when the database does not answer."""
        try:
            snap: snapshot.Snapshot | None = snapshot.take(throughput=False)
        except JobManagerError as e:
            _unavailable(e)
            snap = None
        return Response(
            metrics.render(snap),
            media_type=metrics.CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/static/{name}")
    def static_file(name: str) -> FileResponse:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
        return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)

    return app
