"""The classic stack's Celery side: the app (Redis broker, no result backend) and the one task
the API enqueues per job.

``run_job(job_id)`` is what a worker of a DRF + Celery deployment does with a job it picks
up: mark the row running (``started_at = now()``), do the work (nothing here: the comparison
is about orchestration, not engines), mark it completed. The row's ``created_at`` (set by the
API's INSERT) and ``started_at`` give POST → running on the database's clock.

Settings (environment): ``CLASSIC_DATABASE_URL`` (libpq URL of the jobs database),
``CLASSIC_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

    celery -A bench.classic.tasks worker --pool solo --without-gossip --without-mingle --without-heartbeat
"""

from __future__ import annotations

import os
import threading
from typing import Any

import psycopg
from celery import Celery

app = Celery("classic", broker=os.environ.get("CLASSIC_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,  # as most deployments: the row is the result
    task_acks_late=False,
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_local = threading.local()


def _conn() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["CLASSIC_DATABASE_URL"], autocommit=True)
    return conn


@app.task(name="classic.run_job")
def run_job(job_id: str) -> None:
    """Mark job ``job_id`` running, then completed (two UPDATEs)."""
    conn = _conn()
    conn.execute("UPDATE jobs SET status = 'running', started_at = now(), updated_at = now() "
                 "WHERE id = %s AND status = 'pending'", (job_id,))
    conn.execute("UPDATE jobs SET status = 'completed', progress = 100, finished_at = now(), updated_at = now() "
                 "WHERE id = %s AND status = 'running'", (job_id,))
