"""The stt adapter: POST ``/audio/transcriptions`` (``/audio/translations`` for
``task="translate"``) and map OpenAI's ``verbose_json`` to the stt result shape."""

from __future__ import annotations

import importlib.util
import json
import math
import wave
from pathlib import Path
from typing import Any

from processors.engines.base import EngineContext, EngineError, EngineResult, InvalidInput, atomic_output
from processors.engines.media import check_duration, probe_media

from .answers import Call
from .client import ProviderClient
from .languages import requested_language, whisper_language_code

__all__ = ["transcribe"]

_AUDIO_FIELDS = ("input_file", "audio", "file")


def transcribe(client: ProviderClient, model: str, ctx: EngineContext, work_dir: Path) -> EngineResult:
    """Run one stt job on the provider (shapes: ``OpenAICompatibleEngine``'s docstring)."""
    source = _audio_input(ctx)
    language = requested_language(ctx.parameters.get("language"))
    task = ctx.parameters.get("task") or "transcribe"
    if task not in ("transcribe", "translate"):
        raise InvalidInput(f"parameter 'task' must be 'transcribe' or 'translate', got {task!r}")
    check_duration(ctx, _local_duration(source), f"input_file {source.name!r}")
    form = {"model": model, "response_format": "verbose_json"}
    if language and task == "transcribe":
        form["language"] = language
    path = "/audio/translations" if task == "translate" else "/audio/transcriptions"
    answer = client.post(ctx, Call(path, form=form, upload=source), model)
    data = client.json_object(answer)
    ctx.progress(90, "writing result")
    meta = _stt_meta(data, "en" if task == "translate" else language)
    check_duration(ctx, meta["duration_seconds"] or None, f"input_file {source.name!r}")
    txt_path = work_dir / "transcript.txt"
    json_path = work_dir / "transcript.json"
    with atomic_output(txt_path, "w", encoding="utf-8") as handle:
        handle.write(meta["transcript"] + "\n")
    with atomic_output(json_path, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, ensure_ascii=False, indent=2)
    ctx.log_safe(
        "info",
        f"{client.label} transcribed {meta['duration_seconds']:.1f} s of audio "
        f"({len(meta['segments'])} segment(s), language {meta['language'] or 'unknown'})",
    )
    ctx.progress(100, "writing result")
    return EngineResult(files=[txt_path, json_path], meta=meta)


def _audio_input(ctx: EngineContext) -> Path:
    """The audio file of an stt job (field ``input_file``, ``audio`` or ``file``, or the
    only file).  Raises InvalidInput when absent, missing or empty."""
    files = ctx.input_files or {}
    name = next((f for f in _AUDIO_FIELDS if f in files), None)
    if name is None:
        if len(files) != 1:
            raise InvalidInput(f"STT needs one audio input in field 'input_file'; got fields {sorted(files)}")
        name = next(iter(files))
    path = Path(files[name])
    if not path.is_file():
        raise InvalidInput(f"input file {path.name!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"input file {path.name!r} is empty")
    return path


def _local_duration(path: Path) -> float | None:
    """Seconds of the input, measured before the upload: stdlib ``wave`` for WAV files,
    PyAV when it is installed for other formats; None when unknown (the job's limit is
    then checked against the duration the provider reports)."""
    try:
        with wave.open(str(path), "rb") as reader:
            rate = reader.getframerate()
            return reader.getnframes() / rate if rate else None
    except (wave.Error, EOFError, OSError):
        pass
    if importlib.util.find_spec("av") is None:
        return None
    try:
        return probe_media(path, "input_file").duration
    except EngineError:  # PyAV cannot read it: let the provider judge the file
        return None


def _number(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _word_dict(word: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": round(_number(word.get("start")), 3),
        "end": round(_number(word.get("end")), 3),
        "word": str(word.get("word", "")).strip(),
    }


def _stt_meta(data: dict[str, Any], requested: str | None) -> dict[str, Any]:
    """Map an OpenAI ``verbose_json`` transcription (``{text, language, duration,
    segments: [{start, end, text, words?}], words?: [{word, start, end}]}``; only
    ``text`` is required) to the stt meta shape."""
    listed_segments = data.get("segments")
    raw_segments = listed_segments if isinstance(listed_segments, list) else []
    listed_words = data.get("words")
    raw_words = [w for w in listed_words if isinstance(w, dict)] if isinstance(listed_words, list) else []
    segments: list[dict[str, Any]] = []
    for raw in raw_segments:
        if not isinstance(raw, dict):
            continue
        segment: dict[str, Any] = {
            "start": round(_number(raw.get("start")), 3),
            "end": round(_number(raw.get("end")), 3),
            "text": str(raw.get("text", "")).strip(),
        }
        if isinstance(raw.get("words"), list):
            segment["words"] = [_word_dict(w) for w in raw["words"] if isinstance(w, dict)]
        segments.append(segment)
    if raw_words and segments and not any("words" in s for s in segments):
        # Top-level word timings: give each word to the segment it starts in.
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            segment["words"] = [
                _word_dict(w)
                for w in raw_words
                if segment["start"] <= _number(w.get("start"))
                and (last or _number(w.get("start")) < segments[index + 1]["start"])
            ]
    text = data.get("text")
    transcript = " ".join(text.split()) if isinstance(text, str) else " ".join(s["text"] for s in segments if s["text"])
    duration = _number(data.get("duration"), segments[-1]["end"] if segments else 0.0)
    if not segments and transcript:
        segments = [{"start": 0.0, "end": round(duration, 3), "text": transcript}]
        if raw_words:
            segments[0]["words"] = [_word_dict(w) for w in raw_words]
    return {
        "transcript": transcript,
        "language": whisper_language_code(data.get("language")) or requested or "",
        "duration_seconds": round(duration, 3),
        "segments": segments,
    }
