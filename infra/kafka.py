"""Kafka producer and consumer factories (kafka-python), tuned for prompt delivery.

Topics: ``<prefix>.events`` carries every event's envelope (key = aggregate id);
``<prefix>.work.<type>`` carries the work messages processors consume.
"""

from __future__ import annotations

import json
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.serializer import Deserializer, Serializer


class JsonSerializer(Serializer):  # type: ignore[misc]  # kafka-python ships no types
    """Compact JSON, UTF-8."""

    def serialize(self, topic: str, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


class JsonDeserializer(Deserializer):  # type: ignore[misc]  # kafka-python ships no types
    """UTF-8 JSON."""

    def deserialize(self, topic: str, data: bytes) -> Any:
        return json.loads(data.decode())


class KeySerializer(Serializer):  # type: ignore[misc]  # kafka-python ships no types
    """A str key as UTF-8 (None stays None)."""

    def serialize(self, topic: str, value: Any) -> bytes | None:
        return value.encode() if value is not None else None


def events_topic(prefix: str) -> str:
    """The topic of every event's envelope."""
    return f"{prefix}.events"


def work_topic(prefix: str, job_type: str) -> str:
    """The topic of work messages for ``job_type``."""
    return f"{prefix}.work.{job_type}"


def dead_letter_topic(prefix: str) -> str:
    """The topic of work that exhausted its attempts (listed and re-driven by operators)."""
    return f"{prefix}.dead-letters"


def make_producer(bootstrap: str, **overrides: Any) -> KafkaProducer:
    """An idempotent producer (``acks=all``) with JSON values and str keys."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "retries": 5,
        "request_timeout_ms": 10_000,
        "max_block_ms": 10_000,
        "key_serializer": KeySerializer(),
        "value_serializer": JsonSerializer(),
    }
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(bootstrap: str, group: str, topics: list[str], **overrides: Any) -> KafkaConsumer:
    """A consumer-group member with manual commits and fast group joins.

    ``session_timeout_ms=6000`` makes the first assignment arrive in about 3 s on Tansu
    (ENVIRONMENT.md); ``heartbeat_interval_ms=2000`` is a third of it (Kafka's advice).
    ``fetch_max_wait_ms=1000``: an idle consumer's fetch waits at the broker for up to 1 s,
    so an idle processor sends about 1.5 requests a second with its heartbeats (``10``
    made it and the broker wake ~100 times a second). A message may wait out that fetch on
    the embedded broker, so an idle processor also learns of new work from the store's
    NOTIFY (:mod:`processors.processor`); a busy one fetches again as soon as it is done.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 2000,
        "max_poll_interval_ms": 600_000,
        "fetch_max_wait_ms": 1000,
        "max_poll_records": 1,
        # Notice topics created after subscribing (a broker restarted empty) quickly.
        "metadata_max_age_ms": 5000,
        "request_timeout_ms": 10_000,
        "value_deserializer": JsonDeserializer(),
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    consumer.subscribe(topics)
    return consumer
