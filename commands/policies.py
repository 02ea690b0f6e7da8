"""What the write side asks of its surroundings, injected once at construction
(``Platform(env, policies=Policies(...))``): the composition root (``infra.bootstrap``)
builds them from settings; the defaults suit unit tests (no engines, no encryption key)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commands.outbound import Network


def _no_engine_missing(_job_type: str) -> list[str]:
    return []


def _no_refusal(_job_type: str, _parameters: dict[str, Any]) -> str | None:
    return None


def _no_settings(_user_id: str | None) -> dict[str, Any]:
    return {}


def _no_open_jobs(_project_id: str) -> list[str]:
    return []


def _no_key(_text: str) -> str:
    raise RuntimeError("no encryption key configured (AIORCH_ENCRYPTION_KEY)")


def _default_retries(_job_type: str) -> tuple[int, float, float]:
    return 3, 2.0, 60.0


@dataclass(frozen=True)
class Policies:
    """The write side's policies.

    - ``missing_engine(type) -> [reason]``: what a job type's engine lacks here ([]: it runs).
    - ``refuse_parameters(type, parameters) -> reason | None``: what the engines cannot do.
    - ``effective_settings(user_id) -> {key: value}``: defaults ← global ← user.
    - ``open_job_ids(project_id) -> [job id]``: the project's pending and running jobs.
    - ``encrypt(text) -> token`` and ``decrypt(token) -> text``: provider API keys and
      webhook secrets at rest (Fernet in production).
    - ``retry_policy(type) -> (max attempts, backoff base s, backoff cap s)``.
    - ``webhook_allow_private``: webhook URLs may aim at private addresses
      (``AIORCH_WEBHOOK_ALLOW_PRIVATE``).
    - ``webhook_secret_overlap_s``: seconds a rotated-out webhook secret keeps signing.
    - ``provider_allowed_networks``: CIDRs where providers may live although not public
      (``AIORCH_PROVIDER_ALLOWED_NETWORKS``).
    """

    missing_engine: Callable[[str], list[str]] = _no_engine_missing
    refuse_parameters: Callable[[str, dict[str, Any]], str | None] = _no_refusal
    effective_settings: Callable[[str | None], dict[str, Any]] = _no_settings
    open_job_ids: Callable[[str], list[str]] = _no_open_jobs
    encrypt: Callable[[str], str] = _no_key
    decrypt: Callable[[str], str] = _no_key
    retry_policy: Callable[[str], tuple[int, float, float]] = _default_retries
    webhook_allow_private: bool = False
    webhook_secret_overlap_s: float = 24 * 3600.0
    provider_allowed_networks: tuple[Network, ...] = ()
