from __future__ import annotations

# Locating ffmpeg, and the protocol whitelist every untrusted input is opened with.
import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from processors.engines.base import EngineError

__all__ = ["FFMPEG_ENV", "PLAYLIST_FORMATS", "PROTOCOL_WHITELIST", "av_options", "ffmpeg_exe", "ffmpeg_status", "guard_inputs"]

FFMPEG_ENV = "AIORCH_FFMPEG"
"""Environment variable: path of an ffmpeg binary to use instead of imageio-ffmpeg's."""


PROTOCOL_WHITELIST = "file,pipe"
"""The only protocols ffmpeg and PyAV may open for an input (and for anything an input
refers to: playlist entries, concat lists, ...): untrusted media never makes the processor
fetch a URL."""

PLAYLIST_FORMATS = frozenset(
    {"hls", "applehttp", "dash", "concat", "ffconcat", "tee", "sdp", "rtsp", "rtp", "image2", "ffmetadata"}
)
"""Demuxers whose "media" is a list of other files or URLs: refused as input."""

_FFMPEG_HINT = "pip install 'imageio-ffmpeg==0.8.1' (static ffmpeg), apt-get install ffmpeg, or set AIORCH_FFMPEG"


def _imageio_ffmpeg_binary() -> Path | None:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec("imageio_ffmpeg")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "binaries"
    if not bin_dir.is_dir():
        return None
    for candidate in sorted(bin_dir.glob("ffmpeg*")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ffmpeg_status() -> tuple[str | None, list[str]]:
    """Cheap check (no import, no process): ``(ffmpeg path or None, missing messages)``.

    Order: ``$AIORCH_FFMPEG``, ``$IMAGEIO_FFMPEG_EXE``, the imageio-ffmpeg wheel's binary,
    then ``ffmpeg`` on PATH.
    """
    for env in (FFMPEG_ENV, "IMAGEIO_FFMPEG_EXE"):
        value = os.environ.get(env, "").strip()
        if value:
            if Path(value).is_file() and os.access(value, os.X_OK):
                return value, []
            return None, [f"{env}={value} is not an executable ffmpeg; {_FFMPEG_HINT}"]
    bundled = _imageio_ffmpeg_binary()
    if bundled is not None:
        return str(bundled), []
    system = shutil.which("ffmpeg")
    if system:
        return system, []
    return None, [f"ffmpeg is not installed: {_FFMPEG_HINT}"]


def guard_inputs(args: Sequence[str]) -> list[str]:
    """``args`` with ``-protocol_whitelist file,pipe`` before every ``-i`` (the option is
    per input in ffmpeg, so each input needs its own); an input already preceded by a
    whitelist keeps it."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "-i" and not (index >= 2 and args[index - 2] == "-protocol_whitelist"):
            out += ["-protocol_whitelist", PROTOCOL_WHITELIST]
        out.append(arg)
    return out


def av_options() -> dict[str, str]:
    """Container options for ``av.open`` of an untrusted input (the protocol whitelist)."""
    return {"protocol_whitelist": PROTOCOL_WHITELIST}


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (see :func:`ffmpeg_status` for the search order).

    Raises:
        EngineError: no usable ffmpeg.
    """
    path, missing = ffmpeg_status()
    if path is None:
        raise EngineError("; ".join(missing))
    return path
