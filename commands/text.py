"""One rule for text entering a command, and its lenient twin for what processors report.

The rule (issue 13): a text field holds no C0 control character (U+0000–U+001F) nor DEL
(U+007F), except tab, newline and carriage return where the field allows multi-line text
(descriptions, TTS text, prompts, log lines); no lone surrogate (U+D800–U+DFFF: not
encodable as UTF-8); Unicode in NFC (UAX #15); a bounded length in code points, counted
after normalisation. PostgreSQL's ``text`` refuses U+0000 and its ``jsonb`` U+0000, lone
surrogates and ``NaN``/``Infinity``, so input that breaks the rule would be stored as an
event and then refused by every read model.

- :func:`clean_text` / :func:`clean_json` check input from people: a refusal is an
  :class:`~commands.errors.InvalidCommand` whose ``fields`` name the field.
- :func:`sanitize_text` / :func:`sanitize_json` repair output of processors (a transcript a
  remote provider returns, a log line, an error message): offending characters are replaced
  by U+FFFD and non-finite numbers by ``null``, so a job never fails for them.
- :data:`Line` and :data:`Text` are the same rule as pydantic types, for request schemas.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator

from commands.errors import FieldError, InvalidCommand

#: One part of a field's location: an object key or a list index.
LocPart = str | int
#: A field's location below ``body``: a name, or a path such as ``("parameters", "text")``.
Loc = str | Sequence[LocPart]

REPLACEMENT = "\ufffd"
#: Nesting levels a free-form JSON value may have (job parameters are one level deep).
MAX_JSON_DEPTH = 16
#: The "size" of a free-form JSON value: characters of its strings and keys plus one per value.
MAX_JSON_SIZE = 100_000
#: Characters of an object key inside a free-form JSON value.
MAX_JSON_KEY = 200
#: Integers in free-form JSON stay within a signed 64-bit integer.
MAX_JSON_INT = 2**63 - 1
#: Below this depth :func:`sanitize_json` replaces containers by ``null`` (no recursion limit hit).
MAX_SANITIZE_DEPTH = 64

_SINGLE_LINE_BAD = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_MULTI_LINE_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r]")


def _path(loc: Loc) -> tuple[LocPart, ...]:
    return (loc,) if isinstance(loc, str) else tuple(loc)


def refusal(loc: Loc, msg: str) -> InvalidCommand:
    """An InvalidCommand about the input field at ``loc`` (a name or a path)."""
    path = _path(loc)
    return InvalidCommand(f"{'.'.join(map(str, path))}: {msg}", fields=[FieldError(path, msg)])


def text_problem(text: str, *, multiline: bool = False) -> str | None:
    """Why ``text`` breaks the character rule (``None`` when it keeps it).

    ``multiline`` admits tab, newline and carriage return.
    """
    bad = (_MULTI_LINE_BAD if multiline else _SINGLE_LINE_BAD).search(text)
    if bad is None:
        return None
    code = ord(bad.group())
    what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    where = "" if multiline or code not in (9, 10, 13) else " (a single-line field)"
    return f"must not contain U+{code:04X}, {what}{where}"


def clean_text(
    value: Any,
    loc: Loc,
    *,
    max_length: int,
    min_length: int = 0,
    multiline: bool = False,
    strip: bool = False,
) -> str:
    """``value`` checked by the rule and returned in NFC (stripped of surrounding spaces
    when ``strip``). A required field: ``None`` is refused.

    Raises:
        InvalidCommand: not a string, ``null``, a forbidden character, or a length (in code
            points, after normalisation and stripping) outside ``min_length``–``max_length``;
            its one field is ``loc``.
    """
    if value is None:
        raise refusal(loc, "must not be null")
    if not isinstance(value, str):
        raise refusal(loc, "must be a string")
    problem = text_problem(value, multiline=multiline)
    if problem:
        raise refusal(loc, problem)
    text = unicodedata.normalize("NFC", value)
    if strip:
        text = text.strip()
    if not min_length <= len(text) <= max_length:
        span = f"at most {max_length:,}" if min_length == 0 else f"{min_length}–{max_length:,}"
        raise refusal(loc, f"must be {span} characters")
    return text


def clean_optional(value: Any, loc: Loc, *, max_length: int, multiline: bool = False) -> str | None:
    """:func:`clean_text` for a field that may be ``None`` (absent, or cleared)."""
    return None if value is None else clean_text(value, loc, max_length=max_length, multiline=multiline)


def clean_json(value: Any, loc: Loc, *, max_depth: int = MAX_JSON_DEPTH, max_size: int = MAX_JSON_SIZE) -> Any:
    """A free-form JSON value (job parameters, an agent's configuration, a setting value)
    checked and returned with every string and key in NFC.

    Strings inside may be multi-line; object keys are single-line strings of at most
    :data:`MAX_JSON_KEY` characters. Numbers are finite, integers within 64 bits. The
    value nests at most ``max_depth`` levels and its size (characters of strings and keys
    plus one per value) is at most ``max_size``.

    Raises:
        InvalidCommand: ``errors`` names the first offending place, e.g.
            ``["body", "parameters", "style", "font"]``.
    """
    base: list[LocPart] = [loc] if isinstance(loc, str) else list(loc)
    budget = [max_size]

    def spend(n: int) -> None:
        budget[0] -= n
        if budget[0] < 0:
            raise refusal(base, f"must be at most {max_size:,} characters of JSON")

    def walk(node: Any, path: list[LocPart], depth: int) -> Any:
        spend(1)
        if isinstance(node, str):
            spend(len(node))
            return clean_text(node, path, max_length=max_size, multiline=True)
        if node is None or isinstance(node, bool):
            return node
        if isinstance(node, int):
            if abs(node) > MAX_JSON_INT:
                raise refusal(path, "must be a 64-bit integer")
            return node
        if isinstance(node, float):
            if not math.isfinite(node):
                raise refusal(path, "must be a finite number")
            return node
        if isinstance(node, dict | list):
            if depth >= max_depth:
                raise refusal(path, f"must nest at most {max_depth} levels")
            if isinstance(node, list):
                return [walk(item, [*path, i], depth + 1) for i, item in enumerate(node)]
            out: dict[str, Any] = {}
            for key, item in node.items():
                if not isinstance(key, str):
                    raise refusal(path, "object keys must be strings")
                spend(len(key))
                name = clean_text(key, [*path, key], max_length=MAX_JSON_KEY, min_length=1)
                out[name] = walk(item, [*path, name], depth + 1)
            return out
        raise refusal(path, f"{type(node).__name__} is not a JSON value")

    return walk(value, base, 0)


# -- lenient: what processors report ---------------------------------------------------------


def sanitize_text(value: Any, *, max_length: int | None = None, multiline: bool = True) -> str:
    """``value`` (any object: ``str()`` of it) made storable: forbidden characters replaced
    by U+FFFD (in a single-line text, tab/newline/CR by a space), NFC, cut to ``max_length``
    code points (the cut marked with "…"). Never raises."""
    text = value if isinstance(value, str) else str(value)
    if not multiline:
        text = _LINE_BREAKS.sub(" ", text)
    text = unicodedata.normalize("NFC", _MULTI_LINE_BAD.sub(REPLACEMENT, text))
    if max_length is not None and len(text) > max_length:
        text = text[: max(max_length - 1, 0)] + "…"
    return text


def sanitize_json(value: Any, *, _depth: int = 0) -> Any:
    """A JSON-like value (a job result, a log line) made storable: every string and key
    through :func:`sanitize_text`, ``NaN``/``±Infinity`` → ``None``, containers deeper than
    :data:`MAX_SANITIZE_DEPTH` → ``None``, tuples → lists. Other values are kept. Never raises."""
    if isinstance(value, str):
        return sanitize_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict | list | tuple):
        if _depth >= MAX_SANITIZE_DEPTH:
            return None
        if isinstance(value, dict):
            return {
                (sanitize_text(k, multiline=False) if isinstance(k, str) else k): sanitize_json(v, _depth=_depth + 1)
                for k, v in value.items()
            }
        return [sanitize_json(v, _depth=_depth + 1) for v in value]
    return value


# -- the same rule for pydantic request schemas ---------------------------------------------------


def _pydantic_rule(multiline: bool) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the str schema reports the type
        problem = text_problem(value, multiline=multiline)
        if problem:
            raise ValueError(problem)
        return unicodedata.normalize("NFC", value)

    return BeforeValidator(check)


#: A single-line text field (a name, a key, a language): the rule, then the field's own constraints.
Line = Annotated[str, _pydantic_rule(multiline=False)]
#: A multi-line text field (a description, a TTS text, a prompt).
Text = Annotated[str, _pydantic_rule(multiline=True)]
