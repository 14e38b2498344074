"""The "Job queue" page in Airflow's UI and ``/job-manager/metrics`` for Prometheus.

Airflow 3.1+ finds the plugin (:class:`job_manager.airflow_plugin.plugin.JobManagerPlugin`)
through the wheel's ``airflow.plugins`` entry point: installing job_manager into the image is
all it takes (no copy into ``plugins/``). Importing it is cheap and connects to nothing: the
FastAPI app (and FastAPI itself) is imported only when the API server asks for
``fastapi_apps``, and the database is read only per request. The modules that read and render
(``snapshot``, ``render``, ``metrics``) need no Airflow.
"""
