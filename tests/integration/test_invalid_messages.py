"""Records a processor can never handle, on the real broker: each is logged with topic,
partition and offset, recorded in ``invalid_messages``, counted (by the processor, and in
the API's ``/metrics``), and committed past; the work after them still runs."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import select

from commands.context import Actor, Context
from commands.messages import CreateProject, SubmitJob
from infra.invalid_messages import invalid_messages
from infra.kafka import work_topic
from infra.roles import create_user
from processors.error_policy import EXCERPT_BYTES
from tests.conftest import Client, wait_until

GARBAGE = b"\xff\xfe not json {" + b"x" * 3000  # longer than the excerpt kept
ENVELOPE = {  # an event envelope, valid as such, but no work message
    "aggregate_id": str(uuid.uuid4()),
    "type": "JobBogusHappened",
    "position": 1,
    "version": 1,
    "data": {"anything": True},
}
BOGUS_WORK = {"job_id": "not-a-uuid", "type": "tts", "version": 1, "position": 1, "priority": "normal"}


def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    """The consumer group's committed offset of ``tp`` (-1 if none)."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=group, enable_auto_commit=False)
    try:
        found = reader.committed(tp)  # an offset fetch: it does not join the group
    finally:
        reader.close(autocommit=False)
    return int(found) if found is not None else -1


def test_poison_records_are_dead_lettered_committed_and_work_goes_on(
    system: Any, runner: Any, settings: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="processors")
    user_id = create_user(system, "ed", "editor-password", "editor")
    ctx = Context(Actor(user_id, "ed", "editor"), "invalid")
    project, _ = system.platform.create_project(CreateProject("invalid"), ctx)
    runner.projector()
    runner.relay()
    proc = runner.processor()
    topic = work_topic(settings.topic_prefix, "tts")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","), acks="all")
    bad = [GARBAGE, json.dumps(ENVELOPE).encode(), json.dumps(BOGUS_WORK).encode()]
    offsets = [producer.send(topic, value=value, partition=0).get(timeout=30).offset for value in bad]
    producer.close()

    def rows() -> list[Any]:
        with system.engine.connect() as conn:
            return list(conn.execute(select(invalid_messages).order_by(invalid_messages.c.offset)).all())

    found = wait_until(lambda: len(rows()) == 3 and rows(), 60, 0.2, "three invalid_messages rows")
    assert [(r.topic, r.partition, r.offset) for r in found] == [(topic, 0, o) for o in offsets]
    assert found[0].value_excerpt == GARBAGE[:EXCERPT_BYTES] and len(found[0].value_excerpt) == EXCERPT_BYTES
    assert "not UTF-8 JSON" in found[0].error
    assert "None" in found[1].error and "not a UUID" in found[1].error
    assert json.loads(found[2].value_excerpt) == BOGUS_WORK and "not-a-uuid" in found[2].error
    assert all(r.recorded_at is not None for r in found)
    for offset in offsets:  # each logged with its topic, partition and offset
        assert any(f"topic={topic} partition=0 offset={offset}" in r.getMessage() for r in caplog.records), offset
    counted = {s.labels["topic"]: s.value for m in proc.errors.counter.collect() for s in m.samples if s.name.endswith("_total")}
    assert counted == {topic: 3.0}
    metrics = Client(runner.api(), "ed", "editor-password").get("/metrics").text  # the API counts the table
    assert f'aiorch_invalid_messages_total{{topic="{topic}"}} 3.0' in metrics

    tp = TopicPartition(topic, 0)
    wait_until(
        lambda: committed(settings.kafka_bootstrap_servers, settings.consumer_group, tp) > offsets[-1],
        30,
        0.2,
        "a commit past them",
    )

    job_id, _ = system.platform.submit_job(SubmitJob(project, "tts", {"text": "After the poison."}), ctx)
    wait_until(lambda: system.platform.get_job(job_id).status == "completed", 120, 0.2, "the next job to complete")
    assert len(rows()) == 3, "each dead letter recorded once"
