from __future__ import annotations

# An stt job's input: found among the context's files, probed with PyAV, and Whisper's
# segments turned into plain dicts.
from pathlib import Path
from typing import Any

from processors.engines.base import EngineContext, InvalidInput

__all__ = ["INPUT_FIELDS", "av_reason", "probe_audio", "segment_dict", "stt_input_path"]

INPUT_FIELDS = ("input_file", "audio", "file")


def stt_input_path(ctx: EngineContext) -> Path:
    files = ctx.input_files or {}
    for name in INPUT_FIELDS:
        if name in files:
            path = Path(files[name])
            break
    else:
        if len(files) == 1:
            path = Path(next(iter(files.values())))
        else:
            raise InvalidInput(f"STT needs one audio input in field 'input_file'; got fields {sorted(files)}")
    if not path.is_file():
        raise InvalidInput(f"input file {path.name!r} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"input file {path.name!r} is empty")
    return path


def probe_audio(source: Path, max_duration_seconds: float) -> float | None:
    """Open the container, check it has audio and is not too long; return seconds
    (None when the container does not say).

    Raises:
        InvalidInput: a playlist, no audio stream, undecodable, or too long.
    """
    import av

    from processors.engines.media import PLAYLIST_FORMATS, av_options

    try:
        with av.open(str(source), mode="r", metadata_errors="ignore", container_options=av_options()) as container:
            if PLAYLIST_FORMATS.intersection(container.format.name.split(",")):  # decoded next without a whitelist: refuse here
                raise InvalidInput(f"input file {source.name!r} is a playlist or list of files, not audio")
            if not container.streams.audio:
                raise InvalidInput(f"input file {source.name!r} has no audio stream")
            seconds: float | None = None
            if container.duration is not None:
                seconds = float(container.duration) / float(av.time_base)
            else:
                stream = container.streams.audio[0]
                if stream.duration is not None and stream.time_base is not None:
                    seconds = float(stream.duration * stream.time_base)
    except InvalidInput:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise InvalidInput(f"input file {source.name!r} is not decodable audio: {av_reason(exc)}") from exc
    if seconds is not None and seconds > max_duration_seconds:
        raise InvalidInput(f"input audio is {seconds:.1f} s long; the limit is {max_duration_seconds:.0f} s")
    return seconds


def av_reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror)
    return f"{type(exc).__name__}: {exc}"


def segment_dict(segment: Any) -> dict[str, Any]:
    words = [
        {
            "start": round(float(w.start), 3),
            "end": round(float(w.end), 3),
            "word": w.word.strip(),
            "probability": round(float(w.probability), 4),
        }
        for w in (segment.words or [])
    ]
    return {
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": segment.text.strip(),
        "words": words,
    }
