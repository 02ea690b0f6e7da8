"""Known setting keys, their defaults and validation (API.md, *Settings*)."""

from __future__ import annotations

import json
import re
from typing import Any

from commands.base import invalid

#: Defaults under global and per-user values. ``max_file_size_mb`` is per file
#: (1 MB = 1,048,576 bytes); ``max_concurrent_jobs`` running jobs per user.
DEFAULTS: dict[str, Any] = {
    "max_file_size_mb": 200,
    "max_concurrent_jobs": 4,
    "default_language": None,
    "max_input_duration_s": 3600,
}

_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _number(key: str, value: Any, low: float, high: float, *, integer: bool) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        raise invalid("value", f"{key} must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")
    return value


def validate_setting(key: str, value: Any) -> Any:
    """``value`` checked for ``key``. Raises InvalidCommand naming the problem."""
    if not _KEY.match(key):
        raise invalid("key", "1–100 lower-case letters, digits and ._- starting with a letter")
    if key == "max_file_size_mb":
        return _number(key, value, 1, 102_400, integer=True)
    if key == "max_concurrent_jobs":
        return _number(key, value, 1, 1000, integer=True)
    if key == "max_input_duration_s":
        return _number(key, value, 1, 86_400, integer=False)
    if key == "default_language":
        if value is not None and (not isinstance(value, str) or not _LANGUAGE.match(value)):
            raise invalid("value", "default_language must be a language code such as en or es")
        return value
    if len(json.dumps(value)) > 10_000:
        raise invalid("value", "at most 10,000 characters of JSON")
    return value


def effective(global_values: dict[str, Any], user_values: dict[str, Any]) -> dict[str, Any]:
    """User values over global values over :data:`DEFAULTS`."""
    return {**DEFAULTS, **global_values, **user_values}
