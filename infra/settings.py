"""Deployment settings, read from the environment (prefix ``AIORCH_``).

Settings are built by :func:`load_settings`, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """The data folder used when ``AIORCH_DATA_DIR`` is unset.

    As root, ``/var/lib/aiorch`` (the embedded PostgreSQL opens read access on every parent
    folder of its data folder, so it must stay out of ``/root``); otherwise the user's data
    folder, e.g. ``~/.local/share/aiorch``.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/aiorch")
    return Path(platformdirs.user_data_dir("aiorch"))


class Settings(BaseSettings):
    """Every knob of a deployment. Durations are seconds, sizes bytes."""

    model_config = SettingsConfigDict(env_prefix="AIORCH_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    #: the database owner's URL: the schema step runs as it (see :mod:`infra.schema`)
    database_url: str | None = None
    #: the application role the roles connect as (unset: ``<database>_app``, derived)
    app_database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    secret_key: str | None = None
    encryption_key: str | None = None
    model_dir: Path | None = None
    blob_dir: Path | None = None
    #: ``s3://bucket/prefix``: blobs in S3-compatible object storage (``AWS_*`` configure the
    #: client); unset: the local folder ``blob_dir``
    blob_url: str | None = None
    lease_s: float = 60.0
    heartbeat_s: float = 10.0
    read_wait_s: float = 5.0
    cors_origins: str = ""
    bootstrap_admin: str | None = None
    environment: str = "development"
    #: hostile-input limits (issue 13): request bodies other than multipart uploads, open
    #: live connections per user, concurrent password checks per API process
    max_body_bytes: int = 1024 * 1024
    max_live_per_user: int = 20
    max_password_checks: int = 4
    #: proxies whose ``X-Forwarded-For`` / ``X-Forwarded-*`` are believed (addresses or CIDRs)
    trusted_proxies: str = ""
    #: the base of absolute URLs in answers (``https://…`` also turns on HSTS)
    public_url: str | None = None
    #: CIDRs where providers may live although private (a LAN model server)
    provider_allowed_networks: str = ""
    #: webhooks (API.md, *Webhooks*): private and loopback URLs allowed (development,
    #: tests); the retry schedule (seconds before each attempt, a JSON list); how long an
    #: endpoint's deliveries may all fail before it is disabled; how long a rotated-out
    #: secret keeps signing; one attempt's timeout; concurrent requests of the dispatcher
    webhook_allow_private: bool = False
    webhook_schedule_s: list[float] = Field(default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0])
    webhook_disable_after_s: float = 5 * 24 * 3600.0
    webhook_secret_overlap_s: float = 24 * 3600.0
    webhook_timeout_s: float = 15.0
    webhook_concurrency: int = 16

    # Tuning knobs (internal, but configurable so that tests run in seconds).
    access_token_ttl_s: int = 15 * 60
    refresh_token_ttl_s: int = 7 * 24 * 3600
    topic_prefix: str = "aiorch"
    consumer_group: str = "aiorch-processors"
    #: the followers' safety net is ten of these (relay, projector, dispatcher): they wake on
    #: the store's NOTIFY and poll every 2 s only in case one was missed (a reconnect)
    poll_interval_s: float = 0.2
    progress_interval_s: float = 1.0
    log_batch_s: float = 1.0
    cancel_check_s: float = 0.5
    requeue_after_s: float = 30.0
    reconcile_interval_s: float = 10.0
    max_upload_bytes: int = 512 * 1024 * 1024
    db_pool_size: int = 10
    #: append concurrent commands' events in shared transactions (infra/groupcommit.py)
    group_commit: bool = True
    #: per job type, with a "default": attempts before a job fails for good, and the most
    #: seconds one attempt may run (then it is stopped and fails as ``timed_out``)
    max_attempts: dict[str, int] = Field(default_factory=lambda: {"default": 3})
    max_run_s: dict[str, float] = Field(default_factory=lambda: {"default": 3600.0})
    #: exponential backoff between attempts: base × 2^(attempt−1), capped, with equal jitter
    retry_backoff_s: float = 2.0
    retry_backoff_cap_s: float = 60.0

    @property
    def resolved_model_dir(self) -> Path:
        """Where engine models are kept: ``AIORCH_MODEL_DIR`` or ``<data_dir>/models``."""
        return self.model_dir or self.data_dir / "models"

    @property
    def resolved_blob_dir(self) -> Path:
        """Where uploaded and result files are kept: ``AIORCH_BLOB_DIR`` or ``<data_dir>/blobs``."""
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def runtime_file(self) -> Path:
        """``<data_dir>/runtime.json``, written by ``aiorch up``."""
        return self.data_dir / "runtime.json"

    @property
    def cors_origin_list(self) -> list[str]:
        """``AIORCH_CORS_ORIGINS`` split on commas, blanks dropped."""
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_list(self) -> list[str]:
        """``AIORCH_TRUSTED_PROXIES`` split on commas, blanks dropped."""
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    @property
    def provider_allowed_network_list(self) -> list[str]:
        """``AIORCH_PROVIDER_ALLOWED_NETWORKS`` split on commas, blanks dropped."""
        return [n.strip() for n in self.provider_allowed_networks.split(",") if n.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; ``overrides`` win over the environment."""
    return Settings(**overrides)  # type: ignore[arg-type]
