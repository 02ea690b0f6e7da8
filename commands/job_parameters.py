"""One validated parameter schema per job type (API.md, *Jobs*), and its file fields."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from commands.errors import FieldError, InvalidCommand, invalid
from commands.text import Line, Text, clean_json

LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$"
"""A language code or locale tag (``en``, ``pt-BR``, ``zh_Hant``): the one definition that job
parameters and the engines (``processors.engines``) check languages against."""

LANGUAGE_CODE = re.compile(LANGUAGE_PATTERN)
""":data:`LANGUAGE_PATTERN`, compiled."""

Language = Field(default=None, min_length=2, max_length=16, pattern=LANGUAGE_PATTERN)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SttParameters(_Params):
    """stt: ``{language?}``; files: ``input_file`` (audio or video)."""

    language: Line | None = Language


class TtsParameters(_Params):
    """tts: ``{text, language?, voice?}``; no files. Text is 1–20,000 characters."""

    text: Text = Field(min_length=1, max_length=20_000)
    language: Line | None = Language
    voice: Line | None = Field(default=None, max_length=100)


class VoiceCloningParameters(_Params):
    """voice_cloning: ``{text?, language?}``; ``reference_file``, and ``input_file`` when no text."""

    text: Text | None = Field(default=None, min_length=1, max_length=20_000)
    language: Line | None = Language


class DubbingParameters(_Params):
    """dubbing: ``{target_language, source_language?}``; ``input_file``."""

    target_language: Line = Field(min_length=2, max_length=16)
    source_language: Line | None = Language


class AiStoriesParameters(_Params):
    """ai_stories: ``{prompt, length (words), style?, seed?, narrate?}``."""

    prompt: Text = Field(min_length=1, max_length=4_000)
    length: int = Field(default=300, ge=20, le=5_000)
    style: Line | None = Field(default=None, max_length=200)
    seed: int | None = None
    narrate: bool = False


class VideoTranslationParameters(_Params):
    """video_translation: ``{target_language, source_language?, subtitles?, dub?}``; ``input_file``."""

    target_language: Line = Field(min_length=2, max_length=16)
    source_language: Line | None = Language
    subtitles: bool = True
    dub: bool = False


class TalkingHeadsParameters(_Params):
    """animated_talking_heads: ``{text?, language?}``; ``image_file``, ``input_file`` when no text."""

    text: Text | None = Field(default=None, min_length=1, max_length=20_000)
    language: Line | None = Language


SCHEMAS: dict[str, type[_Params]] = {
    "stt": SttParameters,
    "tts": TtsParameters,
    "voice_cloning": VoiceCloningParameters,
    "dubbing": DubbingParameters,
    "ai_stories": AiStoriesParameters,
    "video_translation": VideoTranslationParameters,
    "animated_talking_heads": TalkingHeadsParameters,
}

MediaKind = Literal["audio", "video", "image"]

#: field name → media kinds it accepts, per type.
FILE_FIELDS: dict[str, dict[str, tuple[MediaKind, ...]]] = {
    "stt": {"input_file": ("audio", "video")},
    "tts": {},
    "voice_cloning": {"reference_file": ("audio",), "input_file": ("audio",)},
    "dubbing": {"input_file": ("audio", "video")},
    "ai_stories": {},
    "video_translation": {"input_file": ("video",)},
    "animated_talking_heads": {"image_file": ("image",), "input_file": ("audio",)},
}


def required_files(job_type: str, parameters: dict[str, Any]) -> set[str]:
    """The file fields a job of ``job_type`` with ``parameters`` must carry."""
    if job_type in ("stt", "dubbing", "video_translation"):
        return {"input_file"}
    if job_type == "voice_cloning":
        return {"reference_file"} | (set() if parameters.get("text") else {"input_file"})
    if job_type == "animated_talking_heads":
        return {"image_file"} | (set() if parameters.get("text") else {"input_file"})
    return set()


def validate_parameters(job_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` validated against ``job_type``'s schema, unset fields left out, every
    string in NFC (:mod:`commands.text`: no control characters but tab/newline/CR in texts
    and prompts, none at all in single-line fields).

    Raises:
        InvalidCommand: unknown type or invalid parameters (``fields`` names each).
    """
    schema = SCHEMAS.get(job_type) if isinstance(job_type, str) else None
    if schema is None:
        raise invalid(
            "type", f"must be one of {', '.join(SCHEMAS)}", f"unknown job type {job_type!r}; known types: {', '.join(SCHEMAS)}"
        )
    if not isinstance(parameters, dict):
        raise invalid("parameters", "must be an object", "parameters must be a JSON object")
    parameters = clean_json(parameters, ("parameters",))
    try:
        model = schema.model_validate(parameters)
    except ValidationError as exc:
        fields = [FieldError(("parameters", *map(str, e["loc"])), e["msg"]) for e in exc.errors()]
        raise InvalidCommand(f"invalid parameters for a {job_type} job", fields=fields) from None
    return model.model_dump(exclude_unset=True)
