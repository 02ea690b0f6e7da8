"""What a job's reports hold, fit to store: a processor's repaired, a person's checked
(:mod:`commands.text`). A processor's output (a remote provider's transcript, a log line, an
error message) never makes its job fail; a person (an admin's external worker) is refused (InvalidCommand)."""

from __future__ import annotations

from typing import Any

from commands.context import Context
from commands.errors import invalid
from commands.text import clean_json, clean_text, sanitize_json, sanitize_text

#: Bounds of what a job's reports hold (code points).
MAX_STAGE, MAX_LOG_MESSAGE, MAX_ERROR_MESSAGE, MAX_REASON, MAX_CODE = 100, 10_000, 4_000, 500, 100


def from_processor(ctx: Context) -> bool:
    """Reports of a processor are repaired (:func:`commands.text.sanitize_text`); the same
    reports from a person (an admin's external worker) are checked and refused."""
    return ctx.actor.role == "processor"


def report_stage(stage: object, ctx: Context) -> str:
    """A progress stage (single-line, at most :data:`MAX_STAGE`): repaired or checked."""
    if from_processor(ctx):
        return sanitize_text(stage or "", max_length=MAX_STAGE, multiline=False)
    return clean_text(stage, "stage", max_length=MAX_STAGE)


def report_lines(lines: object, ctx: Context) -> list[dict[str, Any]]:
    """``{at, level, message}`` lines fit to store: repaired when a processor reports them,
    else checked (a refused line is the field ``("logs", i)``: the API takes lines as strings)."""
    if not isinstance(lines, list):
        raise invalid("logs", "must be a list")
    out = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            raise invalid(("logs", i), "must be an object", "a log line must be an object")
        if from_processor(ctx):
            clean = sanitize_json(line)
            clean["message"] = sanitize_text(line.get("message", ""), max_length=MAX_LOG_MESSAGE)
            clean["level"] = sanitize_text(line.get("level", "info"), max_length=20, multiline=False)
        else:
            clean = {
                **clean_json({k: v for k, v in line.items() if k != "message"}, ("logs", i)),
                "at": clean_text(line.get("at"), ("logs", i, "at"), max_length=64),
                "level": clean_text(line.get("level", "info"), ("logs", i, "level"), max_length=20),
                "message": clean_text(line.get("message"), ("logs", i), max_length=MAX_LOG_MESSAGE, multiline=True),
            }
        out.append(clean)
    return out


def report_error(code: object, message: object) -> tuple[str, str]:
    """An error code and message a processor reports, made storable (never refused)."""
    return (
        sanitize_text(code, max_length=MAX_CODE, multiline=False),
        sanitize_text(message, max_length=MAX_ERROR_MESSAGE),
    )


def report_result(result: dict[str, Any]) -> dict[str, Any]:
    """A processor's result ``{files, meta}`` made storable (:func:`commands.text.sanitize_json`),
    blob keys kept verbatim: they name files in the blob store."""
    clean = sanitize_json(result)
    files = result.get("files") if isinstance(result, dict) else None
    if isinstance(files, list):
        for raw, out in zip(files, clean["files"], strict=True):
            if isinstance(raw, dict) and "blob" in raw:
                out["blob"] = raw["blob"]
    return dict(clean)


def report_reason(reason: object) -> str:
    """A processor's reason (a hand-back, a confirmed cancellation), repaired."""
    return sanitize_text(reason, max_length=MAX_REASON)


def checked_reason(reason: object) -> str:
    """A person's reason to cancel or retry, checked (single-line, 1–:data:`MAX_REASON`)."""
    return clean_text(reason, "reason", min_length=1, max_length=MAX_REASON, strip=True)
