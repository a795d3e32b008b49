"""Server-side activity: the session workflow's writes to Postgres, one transaction each.

Runs as a local activity on the server worker: `db/writes.py` says what is written (and
why a retried or late write is harmless); here the batch goes out as one pipelined
transaction, one round trip, because the workflow task waits for it.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from temporalio import activity

from db.writes import write_batch
from workflows.contracts import RecordBatch


class RecordActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @activity.defn(name="record")
    async def record(self, batch: RecordBatch) -> None:
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            await write_batch(conn, batch)
