from __future__ import annotations

# The languages Whisper knows, and an stt job's options (language, task).
import re
from typing import Any

from commands.job_parameters import SttParameters
from processors.engines.base import EngineContext, InvalidInput

__all__ = ["WHISPER_LANGUAGES", "normalize_whisper_language", "stt_options"]

WHISPER_LANGUAGES: tuple[str, ...] = (
    "af",
    "am",
    "ar",
    "as",
    "az",
    "ba",
    "be",
    "bg",
    "bn",
    "bo",
    "br",
    "bs",
    "ca",
    "cs",
    "cy",
    "da",
    "de",
    "el",
    "en",
    "es",
    "et",
    "eu",
    "fa",
    "fi",
    "fo",
    "fr",
    "gl",
    "gu",
    "ha",
    "haw",
    "he",
    "hi",
    "hr",
    "ht",
    "hu",
    "hy",
    "id",
    "is",
    "it",
    "ja",
    "jw",
    "ka",
    "kk",
    "km",
    "kn",
    "ko",
    "la",
    "lb",
    "ln",
    "lo",
    "lt",
    "lv",
    "mg",
    "mi",
    "mk",
    "ml",
    "mn",
    "mr",
    "ms",
    "mt",
    "my",
    "ne",
    "nl",
    "nn",
    "no",
    "oc",
    "pa",
    "pl",
    "ps",
    "pt",
    "ro",
    "ru",
    "sa",
    "sd",
    "si",
    "sk",
    "sl",
    "sn",
    "so",
    "sq",
    "sr",
    "su",
    "sv",
    "sw",
    "ta",
    "te",
    "tg",
    "th",
    "tk",
    "tl",
    "tr",
    "tt",
    "uk",
    "ur",
    "uz",
    "vi",
    "yi",
    "yo",
    "zh",
    "yue",
)
"""Language codes Whisper (multilingual) accepts, as in faster-whisper 1.2.1."""

_SAMPLE_RATE = 16000
_POLL_SECONDS = 0.1


def normalize_whisper_language(value: Any) -> str | None:
    """Map a ``language`` parameter to a Whisper code, or None for auto-detection.

    Accepts ``None``, ``""`` and ``"auto"`` (detect), Whisper codes (``"en"``), and
    locale tags (``"en-US"``, ``"pt_BR"`` -> base code).

    Raises:
        InvalidInput: not a string, or a language Whisper does not know.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter 'language' must be a string, got {type(value).__name__}")
    code = value.strip().lower()
    if code in ("", "auto", "detect"):
        return None
    if code in WHISPER_LANGUAGES:
        return code
    base = re.split(r"[-_]", code, maxsplit=1)[0]
    if base in WHISPER_LANGUAGES:
        return base
    raise InvalidInput(f"language {value!r} is not supported by Whisper; use one of {', '.join(WHISPER_LANGUAGES)} or 'auto'")


def stt_options(ctx: EngineContext) -> tuple[str | None, str]:
    """``(Whisper language code or None to detect, task)`` of an stt job: from
    ``ctx.validated`` (an :class:`SttParameters`, task ``"transcribe"``) when given, else
    from the raw parameters, where a sub-step may ask for ``task="translate"``.

    Raises:
        InvalidInput: a language Whisper does not know; a bad ``task``.
    """
    if isinstance(ctx.validated, SttParameters):
        return normalize_whisper_language(ctx.validated.language), "transcribe"
    params = ctx.parameters or {}
    language = normalize_whisper_language(params.get("language"))
    task = params.get("task") or "transcribe"
    if task not in ("transcribe", "translate"):
        raise InvalidInput(f"parameter 'task' must be 'transcribe' or 'translate', got {task!r}")
    return language, task
