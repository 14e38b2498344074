# syntax=docker/dockerfile:1
# The Airflow image with job_manager installed. The Airflow version is pinned here, once:
# scripts/test.sh reads AIRFLOW_VERSION from this line to test the DAGs on the same Airflow.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.12

# --- build: the abi3 wheel, exactly as scripts/bootstrap.sh builds it -----------------------
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.9,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY src ./src
COPY python ./python
RUN /opt/maturin/bin/maturin build --release --out /dist

# --- runtime: Airflow plus the wheel ---------------------------------------------------------
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION
COPY --from=build /dist/*.whl /tmp/wheels/
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /tmp/wheels/*.whl
# The official image's user is airflow, uid 50000, group 0; docker-compose.yml runs it as the
# host's user (AIRFLOW_UID) in group 0, so the outputs folder is group-writable, not world's.
USER 0
RUN rm -rf /tmp/wheels \
    && mkdir -p /opt/airflow/backups /opt/airflow/outputs \
    && chown 50000:0 /opt/airflow/backups /opt/airflow/outputs \
    && chmod 0700 /opt/airflow/backups && chmod 0770 /opt/airflow/outputs
USER 50000
# The roots a DAG run's conf may name paths under (README, "Security model").
ENV JOB_MANAGER_BACKUP_DIR=/opt/airflow/backups \
    JOB_MANAGER_OUTPUT_DIR=/opt/airflow/outputs \
    JOB_MANAGER_ALLOWED_CONN_IDS=job_manager_db
