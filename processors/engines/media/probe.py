from __future__ import annotations

# A job's input files: present, within the owner's duration limit, and what they hold.
import math
from dataclasses import dataclass
from pathlib import Path

from processors.engines.base import EngineContext, InvalidInput
from processors.engines.media.ffmpeg import PLAYLIST_FORMATS, av_options

__all__ = ["MAX_DURATION_PARAM", "MediaInfo", "check_duration", "input_path", "max_input_duration", "probe_media"]

MAX_DURATION_PARAM = "_max_input_duration_s"
"""Job parameter (set by the platform, not the user): longest accepted media input, in s."""


def input_path(ctx: EngineContext, field: str, *, required: bool = True) -> Path | None:
    """Return ``ctx.input_files[field]`` checked to exist and be non-empty.

    Raises:
        InvalidInput: the field is absent (when ``required``), the file does not exist or
            is empty.
    """
    files = ctx.input_files or {}
    if field not in files:
        if required:
            raise InvalidInput(f"this job needs a file in field {field!r}; got fields {sorted(files)}")
        return None
    path = Path(files[field])
    if not path.is_file():
        raise InvalidInput(f"input file {path.name!r} ({field}) does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"input file {path.name!r} ({field}) is empty")
    return path


def max_input_duration(ctx: EngineContext) -> float | None:
    """The optional ``parameters["_max_input_duration_s"]`` limit in seconds, or None.

    Raises:
        InvalidInput: the value is not a positive number.
    """
    value = (ctx.parameters or {}).get(MAX_DURATION_PARAM)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"parameter {MAX_DURATION_PARAM!r} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_duration(ctx: EngineContext, seconds: float | None, label: str) -> None:
    """Raise :class:`InvalidInput` when ``seconds`` exceeds the job's duration limit.

    Args:
        seconds: the media duration (None = unknown: not checked here).
        label: how to name the input in the message, e.g. ``"input_file 'talk.mp4'"``.
    """
    limit = max_input_duration(ctx)
    if limit is not None and seconds is not None and seconds > limit:
        raise InvalidInput(f"{label} is {seconds:.1f} s long; the limit for this job is {limit:g} s")


@dataclass
class MediaInfo:
    """What :func:`probe_media` found in a container.

    Attributes:
        duration: seconds (None when the container does not say).
        has_audio / has_video: whether such a stream exists (cover art does not count).
        width, height: first video stream's size in pixels (0 without video).
        fps: first video stream's average frame rate (0.0 if unknown).
        audio_rate: first audio stream's sample rate in Hz (0 without audio).
    """

    path: Path
    duration: float | None
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    audio_rate: int = 0


def probe_media(path: Path, field: str) -> MediaInfo:
    """Open ``path`` with PyAV (no decoding) and describe its streams.

    Raises:
        InvalidInput: the file is not a readable media container; the message names the
            file, the field and the decoder's reason.
    """
    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore", container_options=av_options()) as container:
            if PLAYLIST_FORMATS.intersection(container.format.name.split(",")):
                raise InvalidInput(f"input file {path.name!r} ({field}) is a playlist or list of files, not audio or video")
            audio = list(container.streams.audio)
            video = [
                s
                for s in container.streams.video
                if not (s.disposition & av.stream.Disposition.attached_pic)  # cover art is no video
            ]
            duration: float | None = None
            if container.duration is not None:
                duration = float(container.duration) / float(av.time_base)
            else:
                for stream in (*audio, *video):
                    if stream.duration is not None and stream.time_base is not None:
                        duration = float(stream.duration * stream.time_base)
                        break
            info = MediaInfo(path=path, duration=duration, has_audio=bool(audio), has_video=bool(video))
            if video:
                info.width = int(video[0].codec_context.width or 0)
                info.height = int(video[0].codec_context.height or 0)
                rate = video[0].average_rate or video[0].guessed_rate
                info.fps = float(rate) if rate else 0.0
            if audio:
                info.audio_rate = int(audio[0].codec_context.sample_rate or 0)
    except (av.error.FFmpegError, OSError, ValueError, IndexError, AttributeError) as exc:
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        raise InvalidInput(f"input file {path.name!r} ({field}) is not readable audio or video: {reason}") from exc
    if not info.has_audio and not info.has_video:
        raise InvalidInput(f"input file {path.name!r} ({field}) has neither an audio nor a video stream")
    return info
