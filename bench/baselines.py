"""The Python code job_manager is measured against (never shipped).

* ``SeedStyle``: what the replaced JobManager did: psycopg2, a new connection per call,
  check-then-insert.
* ``PooledPython``: the best a careful Python developer would write: psycopg 3 with
  psycopg_pool, server-side prepared statements, COPY for bulk.

Both run the same statements as job_manager where the operation is the same, so the
comparison is of the client side: connection handling, protocol, (de)serialisation.
"""

from __future__ import annotations

import psycopg
import psycopg2
from psycopg_pool import ConnectionPool

CLAIM = """
    UPDATE jobs SET status = 'processing'
    WHERE id = (
        SELECT id FROM jobs
        WHERE status = 'pending' AND job_type = %s
        ORDER BY created_at, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING id, prompt_text, job_type, created_at"""

ADD_JOB = """
    WITH inserted AS (
        INSERT INTO jobs (prompt_text, job_type) VALUES (%(p)s, %(t)s)
        ON CONFLICT (prompt_text) DO NOTHING
        RETURNING id, job_type)
    SELECT id FROM inserted
    UNION ALL
    SELECT id FROM jobs WHERE prompt_text = %(p)s
    LIMIT 1"""

TABLE_EXISTS = """
    SELECT EXISTS (
        SELECT 1 FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relname::text = %s::text
          AND c.relkind IN ('r', 'p'))"""

GET_JOB = """
    SELECT id, prompt_text, status, job_type, local_path, gcs_uri, operation_id,
           error_message, created_at, updated_at
    FROM jobs WHERE id = %s"""

STATS = """
    SELECT job_type, status, count(*) FROM jobs
    GROUP BY job_type, status ORDER BY job_type, status"""


class SeedStyle:
    """The replaced JobManager: a psycopg2 connection per call."""

    name = "seed-style"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _connect(self):  # type: ignore[no-untyped-def]
        return psycopg2.connect(self.dsn)

    def add_job(self, prompt: str, job_type: str) -> int:
        with self._connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM jobs WHERE prompt_text = %s AND job_type = %s", (prompt, job_type)
            )
            existing = cur.fetchone()
            if existing:
                return existing[0]
            cur.execute(
                "INSERT INTO jobs (prompt_text, job_type) VALUES (%s, %s) RETURNING id",
                (prompt, job_type),
            )
            job_id = cur.fetchone()[0]
            conn.commit()
            return job_id

    def get_and_lock_job(self, job_type: str) -> dict | None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE jobs SET status = 'processing' WHERE id = (SELECT id FROM jobs "
                    "WHERE status = 'pending' AND job_type = %s ORDER BY created_at ASC LIMIT 1 "
                    "FOR UPDATE SKIP LOCKED) RETURNING id, prompt_text, job_type, created_at",
                    (job_type,),
                )
                row = cur.fetchone()
                conn.commit()
        finally:
            conn.close()
        if row is None:
            return None
        return {"id": row[0], "prompt_text": row[1], "job_type": row[2], "created_at": row[3]}

    def check_table_exists(self, name: str = "jobs") -> bool:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name = %s)",
                    (name,),
                )
                return cur.fetchone()[0]
        finally:
            conn.close()

    def get_job_by_id(self, job_id: int) -> dict | None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute(GET_JOB, (job_id,))
                row = cur.fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        keys = (
            "id",
            "prompt_text",
            "status",
            "job_type",
            "local_path",
            "gcs_uri",
            "operation_id",
            "error_message",
            "created_at",
            "updated_at",
        )
        return dict(zip(keys, row, strict=True))

    def close(self) -> None:
        pass


class PooledPython:
    """psycopg 3 + psycopg_pool, prepared statements, COPY for bulk."""

    name = "pooled-python"

    def __init__(self, dsn: str, size: int = 4) -> None:
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "prepare_threshold": 0},
            open=True,
        )

    def add_job(self, prompt: str, job_type: str) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(ADD_JOB, {"p": prompt, "t": job_type}).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT id FROM jobs WHERE prompt_text = %s", (prompt,)
                ).fetchone()
            return row[0]

    def get_and_lock_job(self, job_type: str) -> dict | None:
        with self.pool.connection() as conn:
            row = conn.execute(CLAIM, (job_type,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "prompt_text": row[1], "job_type": row[2], "created_at": row[3]}

    def check_table_exists(self, name: str = "jobs") -> bool:
        with self.pool.connection() as conn:
            return conn.execute(TABLE_EXISTS, (name,)).fetchone()[0]

    def get_job_by_id(self, job_id: int) -> dict | None:
        with self.pool.connection() as conn:
            cur = conn.execute(GET_JOB, (job_id,))
            row = cur.fetchone()
            if row is None:
                return None
            return dict(zip([d.name for d in cur.description], row, strict=True))

    def get_job_stats(self) -> dict:
        stats: dict = {}
        with self.pool.connection() as conn:
            for job_type, status, n in conn.execute(STATS):
                stats.setdefault(job_type, {})[status] = n
        return stats

    def copy_jobs(self, prompts: list[str], job_type: str) -> int:
        """Bulk load with COPY (no duplicate handling: the fastest path Python has)."""
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor().copy("COPY jobs (prompt_text, job_type) FROM STDIN") as copy,
        ):
            for p in prompts:
                copy.write_row((p, job_type))
        return len(prompts)

    def close(self) -> None:
        self.pool.close()


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)
