"""The four DAGs on a running Airflow with the compose file's default executor, LocalExecutor
(api-server, scheduler, dag-processor and triggerer as separate processes; no Redis, no
workers): the same test as on the Celery profile (tests/test_airflow_stack.py), on its own
stack."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from airflow_stack import Stack
from conftest import Server
from test_airflow_stack import pytestmark as stack_marks
from test_airflow_stack import started_stack
from test_airflow_stack import test_the_four_dags_through_the_rest_api as test_four_dags_local

pytestmark = stack_marks
__all__ = ["test_four_dags_local"]


@pytest.fixture(scope="module")
def stack(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with started_stack(server, tmp_path_factory, "LocalExecutor") as s:
        yield s
