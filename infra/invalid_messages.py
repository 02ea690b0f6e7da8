"""The ``invalid_messages`` table: Kafka records a processor dead-lettered (see
:mod:`processors.error_policy`), one row per topic, partition and offset, with the error,
the first KiB of the value and when it was recorded. Operators read it with SQL; the API's
``/metrics`` counts it."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Engine, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from processors.error_policy import InvalidMessage

metadata = MetaData()

invalid_messages = Table(
    "invalid_messages",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("error", Text, nullable=False),
    Column("value_excerpt", LargeBinary, nullable=False),  # ≤ 1 KiB (processors.error_policy.EXCERPT_BYTES)
    Column("recorded_at", DateTime(timezone=True), nullable=False, index=True),
)


class InvalidMessageTable:
    """``invalid_messages`` (created by the schema step, :func:`infra.schema.ensure_schema`):
    the :class:`processors.error_policy.InvalidMessageLog` of the processors."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, message: InvalidMessage) -> None:
        """Insert ``message`` (a record dead-lettered again at its offset — a broker restarted
        empty reuses offsets — replaces the row)."""
        values = {
            "topic": message.topic[:255],
            "partition": message.partition,
            "offset": message.offset,
            "error": message.error,
            "value_excerpt": message.excerpt,
            "recorded_at": message.recorded_at,
        }
        stmt = pg_insert(invalid_messages).values(**values)
        with self.engine.begin() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["topic", "partition", "offset"],
                    set_={k: stmt.excluded[k] for k in ("error", "value_excerpt", "recorded_at")},
                )
            )
