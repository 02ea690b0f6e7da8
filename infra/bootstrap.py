"""The composition root: builds the store, the read-model engine, blob storage and the
engine catalogue from settings, and hands them to each role. Nothing is built at import."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from commands.outbound import parse_networks
from commands.policies import Policies
from commands.service import Platform
from commands.setting_keys import DEFAULTS
from infra.blobs import LocalBlobStore
from infra.blobstores import open_blob_store
from infra.db import app_database_url, conninfo, make_engine, store_env
from infra.secrets import fernet, secure_data_dir
from infra.settings import Settings
from projections import queries
from projections.follow import StoreWaiter
from projections.generations import current_position
from projections.projector import Projector

if TYPE_CHECKING:
    from infra.s3blobs import S3BlobStore

log = logging.getLogger(__name__)


def read_runtime(settings: Settings) -> dict[str, Any]:
    """``runtime.json`` written by a running ``aiorch up`` (empty if none)."""
    try:
        return dict(json.loads(settings.runtime_file.read_text()))
    except (OSError, ValueError):
        return {}


def resolve_urls(settings: Settings) -> Settings:
    """Fill unset database and broker addresses from ``runtime.json`` of a running system."""
    runtime = read_runtime(settings)
    updates: dict[str, Any] = {}
    if not settings.database_url and runtime.get("database_url"):
        updates["database_url"] = runtime["database_url"]
    if not settings.kafka_bootstrap_servers and runtime.get("kafka_bootstrap_servers"):
        updates["kafka_bootstrap_servers"] = runtime["kafka_bootstrap_servers"]
    return settings.model_copy(update=updates) if updates else settings


def engine_catalog(model_dir: Path) -> list[dict[str, Any]]:
    """``[{type, engine, available, missing?, languages, voices}]`` for every job type."""
    from events.jobs import JOB_TYPES

    try:
        from processors.engines import describe_engines

        described = {d["type"]: d for d in describe_engines(model_dir)}
    except ImportError as exc:  # the engines extra is not installed here
        described = {}
        log.info("engines unavailable: %s", exc)
    out = []
    for job_type in JOB_TYPES:
        out.append(
            described.get(job_type)
            or {
                "type": job_type,
                "engine": None,
                "available": False,
                "missing": [
                    f"no engine for {job_type} is installed (pip install 'aiorch[engines]')"
                    if job_type in ("stt", "tts")
                    else f"the {job_type} engine is not built yet"
                ],
                "languages": [],
                "voices": [],
            }
        )
    return out


def refuse_parameters(job_type: str, parameters: dict[str, Any]) -> str | None:
    """Why the engines cannot run a dubbing or video_translation job's language pair (None
    when they can, or when the engines are not installed here: the processor decides)."""
    if job_type not in ("dubbing", "video_translation"):
        return None
    try:
        from processors.engines import unsupported_pair_reason
    except ImportError:
        return None
    needs_speech = job_type == "dubbing" or bool(parameters.get("dub"))
    return unsupported_pair_reason(
        parameters.get("source_language"), parameters.get("target_language"), needs_speech=needs_speech
    )


def _speaks(language: str, languages: list[str]) -> bool:
    """Whether ``language`` (``es``, ``pt-BR``) is among ``languages`` (``es``, ``pt-br``)."""
    wanted = language.lower().replace("_", "-")
    known = {code.lower().replace("_", "-") for code in languages}
    return wanted in known or wanted.split("-")[0] in {code.split("-")[0] for code in known}


def refuse_language(catalog: list[dict[str, Any]], job_type: str, parameters: dict[str, Any]) -> str | None:
    """Why this machine's engines cannot handle the job's language (None when they can):
    speech-to-text of an unknown language, or speech in a language no voice speaks
    (tts, and voice_cloning / animated_talking_heads with ``text``, narrated ai_stories)."""
    by_type = {entry["type"]: entry for entry in catalog}
    language = parameters.get("language")
    if job_type == "stt":
        stt = by_type.get("stt") or {}
        if stt.get("available") and isinstance(language, str) and not _speaks(language, stt.get("languages") or []):
            return f"speech-to-text does not know the language {language!r} here"
        return None
    speaks = job_type == "tts" or (
        (job_type in ("voice_cloning", "animated_talking_heads") and bool(parameters.get("text")))
        or (job_type == "ai_stories" and bool(parameters.get("narrate")))
    )
    tts = by_type.get("tts") or {}
    if not speaks or not tts:
        return None
    spoken = "en" if job_type == "ai_stories" else (language if isinstance(language, str) and language else "en")
    if _speaks(spoken, tts.get("languages") or []):
        return None
    lacks = "; ".join(tts.get("missing") or []) or f"no installed voice speaks {spoken!r}"
    return f"no voice for {spoken!r} on this machine: {lacks} (GET /api/engines/ lists the languages)"


class EngineCatalog:
    """This machine's engine catalogue, computed on first use (importing the engines is slow)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._entries: list[dict[str, Any]] | None = None

    def entries(self) -> list[dict[str, Any]]:
        """``[{type, engine, available, missing?, languages, voices}]`` (see :func:`engine_catalog`)."""
        if self._entries is None:
            self._entries = engine_catalog(self.model_dir)
        return self._entries

    def missing_engine(self, job_type: str) -> list[str]:
        """What the engine of ``job_type`` lacks here ([] when it can run)."""
        for entry in self.entries():
            if entry["type"] == job_type:
                return [] if entry["available"] else list(entry.get("missing") or ["engine"])
        return []

    def refuse_parameters(self, job_type: str, parameters: dict[str, Any]) -> str | None:
        """Why the engines here cannot run these parameters (language pair, language), or None."""
        return refuse_parameters(job_type, parameters) or refuse_language(self.entries(), job_type, parameters)


def platform_policies(settings: Settings, engine: Engine, catalog: EngineCatalog) -> Policies:
    """The write side's :class:`Policies` from ``settings``: this machine's engines, the
    read models' settings and open jobs, Fernet encryption, retries and outbound rules."""
    cipher = fernet(settings)

    def retry_policy(job_type: str) -> tuple[int, float, float]:
        attempts = settings.max_attempts.get(job_type, settings.max_attempts.get("default", 3))
        return int(attempts), settings.retry_backoff_s, settings.retry_backoff_cap_s

    return Policies(
        missing_engine=catalog.missing_engine,
        refuse_parameters=catalog.refuse_parameters,
        effective_settings=lambda user_id: queries.effective_settings(engine, user_id, DEFAULTS),
        open_job_ids=lambda project_id: queries.open_job_ids(engine, project_id),
        encrypt=lambda text: cipher.encrypt(text.encode()).decode(),
        decrypt=lambda token: cipher.decrypt(token.encode()).decode(),
        retry_policy=retry_policy,
        webhook_allow_private=settings.webhook_allow_private,
        webhook_secret_overlap_s=settings.webhook_secret_overlap_s,
        provider_allowed_networks=parse_networks(settings.provider_allowed_network_list),
    )


@dataclass
class System:
    """Everything a role needs, built once from settings."""

    settings: Settings
    platform: Platform
    engine: Engine
    blobs: LocalBlobStore | S3BlobStore
    database_url: str
    engines: EngineCatalog = field(repr=False)

    def catalog(self) -> list[dict[str, Any]]:
        """The engine catalogue (computed once)."""
        return self.engines.entries()

    def missing_engine(self, job_type: str) -> list[str]:
        """What the engine of ``job_type`` lacks here ([] when it can run)."""
        return self.engines.missing_engine(job_type)

    def refuse_parameters(self, job_type: str, parameters: dict[str, Any]) -> str | None:
        """Why the engines here cannot run these parameters (language pair, language), or None."""
        return self.engines.refuse_parameters(job_type, parameters)

    def effective_settings(self, user_id: str | None) -> dict[str, Any]:
        """The user's settings: user over global over defaults."""
        return queries.effective_settings(self.engine, user_id, DEFAULTS)

    def projector_position(self) -> int:
        """The read models' position."""
        with self.engine.connect() as conn:
            return current_position(conn)

    def projector(self) -> Projector:
        """A projector of the read models following this store."""
        return Projector(
            self.engine,
            self.platform.recorder,
            self.platform.mapper.to_domain_event,
            self.store_waiter(),
            poll_interval_s=max(self.settings.poll_interval_s, 0.05) * 10,
        )

    def store_waiter(self) -> StoreWaiter:
        """A waiter on the store's append notifications."""
        return StoreWaiter(conninfo(self.database_url), f"{self.platform.name}_events")

    def close(self) -> None:
        """Release connection pools."""
        self.engine.dispose()
        self.platform.close()


def bootstrap(settings: Settings, *, create_tables: bool = True) -> System:
    """Build the :class:`System` from ``settings`` (database URL required), after the schema
    step (:func:`infra.schema.ensure_schema`; skipped with ``create_tables=False``, for a
    command that only reads a running system).

    Raises:
        RuntimeError: no database URL configured and no running system found.
    """
    settings = resolve_urls(settings)
    if not settings.database_url and not settings.app_database_url:
        raise RuntimeError(
            f"no database: no running system found ({settings.runtime_file} is absent) and AIORCH_DATABASE_URL is unset;"
            " start it with `aiorch up`, or point AIORCH_DATA_DIR at the folder it uses"
        )
    # least privilege: the owner (AIORCH_DATABASE_URL) sets the schema up, the roles connect
    # as the application role; with AIORCH_APP_DATABASE_URL alone the schema must exist
    url = settings.app_database_url
    if settings.database_url:
        url = app_database_url(settings.database_url, settings.app_database_url)
    assert url
    if create_tables:  # the schema step, before anything connects (infra.schema)
        from infra.schema import ensure_schema

        ensure_schema(url, owner_url=settings.database_url)
    if settings.data_dir.exists():
        secure_data_dir(settings)  # an earlier version left it 0755
    engine = make_engine(url, pool_size=settings.db_pool_size)
    catalog = EngineCatalog(settings.resolved_model_dir)
    platform = Platform(
        store_env(url, pool_size=settings.db_pool_size, create_table=False, group_commit=settings.group_commit),
        policies=platform_policies(settings, engine, catalog),
    )
    system = System(settings, platform, engine, open_blob_store(settings), url, catalog)
    return system
