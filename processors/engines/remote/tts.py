"""The tts adapter: POST ``/audio/speech`` for a WAV, streamed to a file, and rewrite its
header so its sizes are right."""

from __future__ import annotations

import io
import logging
import wave
from pathlib import Path
from typing import Any

from commands.job_parameters import LANGUAGE_CODE
from processors.engines.base import EngineContext, EngineError, EngineResult, InvalidInput, atomic_output
from processors.engines.tts.text import read_text

from .answers import Answer, Call
from .client import ProviderClient

__all__ = ["DEFAULT_VOICE", "speak"]

DEFAULT_VOICE = "alloy"
"""TTS voice asked for when the job has no ``voice`` parameter."""

log = logging.getLogger("processors.engines.remote")
#: the longest text sent (the same bound as a tts job's ``text`` parameter, commands/job_parameters.py)
MAX_TEXT_CHARS = 20_000


def speak(client: ProviderClient, model: str, ctx: EngineContext, work_dir: Path) -> EngineResult:
    """Run one tts job on the provider (shapes: ``OpenAICompatibleEngine``'s docstring)."""
    text = read_text(ctx, MAX_TEXT_CHARS)
    voice = ctx.parameters.get("voice") or DEFAULT_VOICE
    if not isinstance(voice, str) or len(voice) > 100:
        raise InvalidInput(f"parameter 'voice' must be a voice name of at most 100 characters, got {voice!r}")
    language = ctx.parameters.get("language") or "en"
    if not isinstance(language, str) or not LANGUAGE_CODE.match(language.strip()):
        raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'es-ES', got {language!r}")
    body = {"model": model, "input": text, "voice": voice.strip(), "response_format": "wav"}
    spool = work_dir / ".speech.download"
    answer = client.post(ctx, Call("/audio/speech", json_body=body, accept="audio/wav", spool=spool), model)
    ctx.progress(90, "writing result")
    target = work_dir / "speech.wav"
    try:
        frames, rate = _save_wav(answer, target, client.label)
    finally:
        spool.unlink(missing_ok=True)
    duration = frames / rate
    ctx.log_safe("info", f"{client.label} spoke {len(text)} characters: {duration:.1f} s of speech at {rate} Hz")
    ctx.progress(100, "writing result")
    meta: dict[str, Any] = {
        "duration_seconds": round(duration, 3),
        "voice": voice.strip(),
        "language": language.strip().replace("_", "-").lower(),
    }
    return EngineResult(files=[target], meta=meta)


def _save_wav(answer: Answer, target: Path, label: str) -> tuple[int, int]:
    """Check that the answer (spooled to a file) is a PCM WAV with audio and copy its
    frames to ``target`` with a consistent header (streamed WAVs often carry
    0xFFFFFFFF sizes), a block at a time.  Returns ``(frames, sample_rate)``.

    Raises:
        EngineError: not a readable PCM WAV, or no audio frames.
    """
    what = f"{label} answered audio that is not a PCM WAV file (content-type {answer.content_type or 'none'})"
    source = answer.spool
    frames = 0
    try:
        with (
            open(source, "rb") if source is not None else io.BytesIO(answer.body) as raw,
            wave.open(raw, "rb") as reader,
        ):
            params = reader.getparams()
            frame_bytes = params.nchannels * params.sampwidth
            if frame_bytes <= 0 or params.framerate <= 0:
                raise EngineError(f"{label} answered a WAV file without audio")
            with atomic_output(target, "wb") as handle, wave.open(handle, "wb") as writer:
                writer.setnchannels(params.nchannels)
                writer.setsampwidth(params.sampwidth)
                writer.setframerate(params.framerate)
                carry = b""
                while True:
                    chunk = reader.readframes(65536)
                    if not chunk:
                        break
                    chunk = carry + chunk
                    whole = len(chunk) - len(chunk) % frame_bytes
                    carry = chunk[whole:]
                    writer.writeframes(chunk[:whole])
                    frames += whole // frame_bytes
                if frames == 0:
                    raise EngineError(f"{label} answered a WAV file without audio")
    except (wave.Error, EOFError) as exc:
        log.warning("%s: unreadable WAV answer: %s", label, exc)
        raise EngineError(what, detail=str(exc)) from None
    return frames, params.framerate
