"""Making stored values storable in the read models.

PostgreSQL ``text`` and ``jsonb`` refuse U+0000 (psycopg refuses the NUL byte in text,
the server the ``\\u0000`` escape in jsonb), and UTF-8 cannot carry a lone surrogate
(U+D800..U+DFFF). Events stored before the command boundary refused such strings must
still project, so each of those characters becomes U+FFFD (the replacement character)
before a value reaches a table. Everything else passes unchanged, and unchanged values are
returned as the same objects (the common case costs one scan per string).
"""

from __future__ import annotations

import copy
import re
from typing import Any, TypeVar

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

T = TypeVar("T")


def clean_text(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD (``text`` itself when
    it has none)."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def sanitize(value: T) -> T:
    """``value`` with :func:`clean_text` applied to every string in it, recursively through
    dicts (keys too), lists and tuples. Other values (numbers, UUIDs, datetimes, None) pass
    as they are. Returns ``value`` itself when nothing needed replacing, else a copy.

    Two keys that differ only by unstorable characters may become one; the later wins.
    """
    cleaned: T = _sanitize(value)
    return cleaned


def _sanitize(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        items = [(_sanitize(k), _sanitize(v)) for k, v in value.items()]
        if all(k2 is k and v2 is v for (k2, v2), (k, v) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        cleaned = [_sanitize(v) for v in value]
        if all(c is v for c, v in zip(cleaned, value, strict=True)):
            return value
        return cleaned if isinstance(value, list) else tuple(cleaned)
    return value


def sanitize_event(event: T) -> T:
    """``event`` (a decoded domain event) with its attributes :func:`sanitize`\\ d: the
    event itself when none changed, else a shallow copy carrying the cleaned values (the
    stored event is never changed)."""
    attrs = getattr(event, "__dict__", None)
    if not attrs:
        return event
    changed = {k: c for k, v in attrs.items() if (c := _sanitize(v)) is not v}
    if not changed:
        return event
    clone = copy.copy(event)
    clone.__dict__.update(changed)  # events are frozen: bypass __setattr__ on the copy only
    return clone


__all__ = ["REPLACEMENT", "clean_text", "sanitize", "sanitize_event"]
