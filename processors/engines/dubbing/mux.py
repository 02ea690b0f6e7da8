from __future__ import annotations

# Writing a dubbed or translated video: the input's video stream with new audio tracks
# and an optional soft subtitle track, into MP4.
import shutil
from pathlib import Path

from processors.engines.base import EngineContext, EngineError
from processors.engines.media import MediaInfo, run_ffmpeg

from .languages import iso639_2

__all__ = ["mux", "mux_args"]

_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"]


def mux_args(
    video: Path,
    has_audio: bool,
    *,
    audio: list[tuple[Path, str]],
    keep_original_audio: str | None = None,
    subtitles: tuple[Path, str] | None = None,
) -> list[str]:
    """The ffmpeg arguments (inputs, maps, codecs, metadata; no video codec and no
    output) that mux ``video``'s first video stream with the ``audio`` tracks (AAC, the
    first one default), the original audio when ``keep_original_audio`` names its
    language (and ``has_audio``), and a ``mov_text`` subtitle track.

    Args:
        audio: (WAV path, language code) per new audio track.
        subtitles: (SRT path, language code).
    """
    inputs = ["-i", str(video)]
    maps = ["-map", "0:v:0"]
    meta: list[str] = []
    a_index = 0
    for n, (wav, lang) in enumerate(audio, start=1):
        inputs += ["-i", str(wav)]
        maps += ["-map", f"{n}:a:0"]
        meta += [f"-metadata:s:a:{a_index}", f"language={iso639_2(lang)}"]
        a_index += 1
    if keep_original_audio is not None and has_audio:
        maps += ["-map", "0:a:0"]
        meta += [f"-metadata:s:a:{a_index}", f"language={iso639_2(keep_original_audio)}"]
        a_index += 1
    if subtitles is not None:
        inputs += ["-i", str(subtitles[0])]
        maps += ["-map", f"{len(audio) + 1}:s:0"]
        meta += ["-metadata:s:s:0", f"language={iso639_2(subtitles[1])}"]
    dispositions = ["-disposition:a:0", "default"] + [x for i in range(1, a_index) for x in (f"-disposition:a:{i}", "0")]
    codecs = ["-c:a", "aac", "-b:a", "128k", "-c:s", "mov_text"]
    return [*inputs, *maps, *codecs, *meta, *dispositions, "-movflags", "+faststart"]


def mux(
    ctx: EngineContext,
    video: Path,
    info: MediaInfo,
    target: Path,
    *,
    audio: list[tuple[Path, str]],
    keep_original_audio: str | None = None,
    subtitles: tuple[Path, str] | None = None,
    tmp_dir: Path,
) -> None:
    """Write ``target`` (MP4): the video stream of ``video`` (copied; re-encoded to
    H.264 if it cannot be copied into MP4) with the tracks of :func:`mux_args`.

    Raises:
        EngineError: ffmpeg failed both to copy and to re-encode.
        EngineCancelled: cancelled while ffmpeg ran.
    """
    common = mux_args(video, info.has_audio, audio=audio, keep_original_audio=keep_original_audio, subtitles=subtitles)
    partial = tmp_dir / f"mux-{target.name}"
    try:
        run_ffmpeg([*common, "-c:v", "copy", "-f", "mp4", str(partial)], ctx, what="write the MP4")
    except EngineError as exc:
        ctx.log_safe("warning", f"cannot copy the video stream into MP4 ({exc}); re-encoding it as H.264")
        run_ffmpeg([*common, *_H264, "-f", "mp4", str(partial)], ctx, what="encode the MP4")
    shutil.move(str(partial), str(target))
