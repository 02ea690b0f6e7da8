"""Known setting keys, their defaults and validation (API.md, *Settings*)."""

from __future__ import annotations

import re
from typing import Any

from commands.errors import invalid
from commands.text import clean_json, clean_text

#: Defaults under global and per-user values. ``max_file_size_mb`` is per file
#: (1 MB = 1,048,576 bytes); ``max_concurrent_jobs`` running jobs per user.
DEFAULTS: dict[str, Any] = {
    "max_file_size_mb": 200,
    "max_concurrent_jobs": 4,
    "default_language": None,
    "max_input_duration_s": 3600,
}

#: Quotas: a user's own value of these keys is set (and removed) by admins only.
LIMIT_KEYS = frozenset({"max_file_size_mb", "max_concurrent_jobs", "max_input_duration_s"})
#: Keys the system keeps for itself (global booleans): ``demo.seeded`` marks a seeded demo.
SYSTEM_KEYS = frozenset({"demo.seeded"})
#: Every key a setting may have; any other is refused (InvalidCommand).
KNOWN_KEYS = frozenset(DEFAULTS) | SYSTEM_KEYS

_LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")


def _number(key: str, value: Any, low: float, high: float, *, integer: bool) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise invalid("value", f"{key} must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")
    return value


def check_key(key: Any) -> str:
    """``key`` checked (:mod:`commands.text`'s rule) and known. Raises InvalidCommand."""
    name = clean_text(key, "key", min_length=1, max_length=100)
    if name not in KNOWN_KEYS:
        raise invalid("key", f"unknown setting {name!r}; known keys: {', '.join(sorted(DEFAULTS))}")
    return name


def validate_setting(key: str, value: Any, user_id: str | None = None) -> Any:
    """``value`` checked for ``key`` (of ``user_id``; None: global). Raises InvalidCommand
    naming the problem: an unknown key, a value of the wrong kind or out of range."""
    key = check_key(key)
    value = clean_json(value, "value", max_size=10_000)
    if key == "max_file_size_mb":
        return _number(key, value, 1, 102_400, integer=True)
    if key == "max_concurrent_jobs":
        return _number(key, value, 1, 1000, integer=True)
    if key == "max_input_duration_s":
        return _number(key, value, 1, 86_400, integer=False)
    if key == "default_language":
        if value is not None and (not isinstance(value, str) or not _LANGUAGE.fullmatch(value)):
            raise invalid("value", "default_language must be a language code such as en or es")
        return value
    if user_id is not None:
        raise invalid("user", f"{key} is a global setting")
    if not isinstance(value, bool):
        raise invalid("value", f"{key} must be true or false")
    return value


def effective(global_values: dict[str, Any], user_values: dict[str, Any]) -> dict[str, Any]:
    """User values over global values over :data:`DEFAULTS`."""
    return {**DEFAULTS, **global_values, **user_values}
