from __future__ import annotations

# Media helpers shared by the media engines (voice cloning, dubbing, video translation,
# talking heads, story narration), in modules of one job each: locating ffmpeg (ffmpeg),
# checking and probing inputs (probe), child processes with cancellation checkpoints
# (processes), sub-step contexts (context) and audio arrays (audio).
#
# Importing this package is cheap: numpy and PyAV are imported inside the functions that
# use them, so ``describe_engines`` never pulls an inference or media runtime in.
from processors.engines.media.audio import atempo_chain, decode_audio, time_stretch, write_wav
from processors.engines.media.context import cancelled, child_context
from processors.engines.media.ffmpeg import (
    FFMPEG_ENV,
    PLAYLIST_FORMATS,
    PROTOCOL_WHITELIST,
    av_options,
    ffmpeg_exe,
    ffmpeg_status,
    guard_inputs,
)
from processors.engines.media.probe import (
    MAX_DURATION_PARAM,
    MediaInfo,
    check_duration,
    input_path,
    max_input_duration,
    probe_media,
)
from processors.engines.media.processes import last_line, run_ffmpeg, run_in_thread, run_process

__all__ = [
    "FFMPEG_ENV",
    "MAX_DURATION_PARAM",
    "PLAYLIST_FORMATS",
    "PROTOCOL_WHITELIST",
    "MediaInfo",
    "atempo_chain",
    "av_options",
    "cancelled",
    "check_duration",
    "child_context",
    "decode_audio",
    "ffmpeg_exe",
    "ffmpeg_status",
    "guard_inputs",
    "input_path",
    "last_line",
    "max_input_duration",
    "probe_media",
    "run_ffmpeg",
    "run_in_thread",
    "run_process",
    "time_stretch",
    "write_wav",
]
