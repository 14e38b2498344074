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
RUN python3 -m venv /opt/maturin \
    && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.9,<2" "ziglang>=0.13"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md LICENSE ./
COPY src ./src
COPY python ./python
# manylinux2014 (glibc 2.17): the same wheel installs into any Airflow image.
ENV PATH=/opt/maturin/bin:$PATH
RUN maturin build --release --zig --compatibility manylinux2014 --out /dist

# --- runtime: Airflow plus the wheel ---------------------------------------------------------
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION
ARG PYTHON_VERSION
COPY --from=build /dist/*.whl /tmp/wheels/
# Airflow's published constraints for this version keep pip from moving Airflow's own
# dependencies (Airflow's documented way to extend the image).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /tmp/wheels/*.whl \
    --constraint "https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt"
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
