from __future__ import annotations

# Audio arrays: decoding any input to mono float32, WAV output, time-stretching.
import os
import threading
import time
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from processors.engines.base import EngineContext, InvalidInput, atomic_output
from processors.engines.media.ffmpeg import PROTOCOL_WHITELIST, ffmpeg_exe
from processors.engines.media.processes import last_line, run_ffmpeg, run_process

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = ["atempo_chain", "decode_audio", "time_stretch", "write_wav"]


def decode_audio(path: Path, ctx: EngineContext, sample_rate: int, *, field: str, tmp_dir: Path) -> FloatArray:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate`` Hz.

    Uses ``ffmpeg -vn -ac 1 -ar <rate> -f f32le`` (a child process, so a cancel kills it).

    Returns:
        samples in [-1, 1], shape ``(n,)``.

    Raises:
        InvalidInput: the file has no decodable audio or decodes to nothing; the message
            names the file, the field and ffmpeg's reason.
        EngineCancelled: cancelled while decoding.
    """
    import numpy as np

    raw = tmp_dir / f".decoded-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.f32"
    try:
        status, _out, stderr = run_process(
            [
                ffmpeg_exe(),
                "-nostdin",
                "-y",
                "-hide_banner",
                "-loglevel",
                "error",
                "-protocol_whitelist",
                PROTOCOL_WHITELIST,
                "-i",
                str(path),
                "-vn",
                "-ac",
                "1",
                "-ar",
                str(sample_rate),
                "-f",
                "f32le",
                str(raw),
            ],
            ctx,
            what="ffmpeg",
        )
        if status != 0:
            raise InvalidInput(f"input file {path.name!r} ({field}) is not decodable audio: {last_line(stderr)}")
        samples = np.fromfile(raw, dtype="<f4").astype(np.float32)
    finally:
        raw.unlink(missing_ok=True)
    if samples.size == 0:
        raise InvalidInput(f"input file {path.name!r} ({field}) contains no audio samples")
    result: FloatArray = np.nan_to_num(np.clip(samples, -1.0, 1.0))
    return result


def write_wav(target: Path, samples: FloatArray, sample_rate: int) -> float:
    """Write mono float samples as a 16-bit PCM WAV (atomically).

    Returns:
        the duration written, in seconds.
    """
    import numpy as np

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_output(target, "wb") as handle, wave.open(handle, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return float(pcm.size) / sample_rate


def atempo_chain(factor: float) -> str:
    """An ffmpeg ``atempo`` filter chain for a tempo ``factor`` (>1 = faster/shorter).

    Each ``atempo`` stage stays within 0.5..2.0, where its WSOLA-style overlap-add
    keeps the best quality.
    """
    stages: list[float] = []
    rest = factor
    while rest > 2.0:
        stages.append(2.0)
        rest /= 2.0
    while rest < 0.5:
        stages.append(0.5)
        rest /= 0.5
    stages.append(rest)
    return ",".join(f"atempo={s:.6f}" for s in stages)


def time_stretch(samples: FloatArray, sample_rate: int, factor: float, ctx: EngineContext, tmp_dir: Path) -> FloatArray:
    """Change the tempo of ``samples`` by ``factor`` without changing the pitch.

    Uses ffmpeg's ``atempo`` filter (waveform-similarity overlap-add, WSOLA; Verhelst &
    Roelands 1993).  ``factor`` 1.25 makes the audio 1.25x faster (duration / 1.25).

    Returns:
        the stretched samples (float32, same rate); ``samples`` itself when factor ≈ 1.
    """
    import numpy as np

    if abs(factor - 1.0) < 0.01 or samples.size == 0:
        return samples
    stamp = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    src = tmp_dir / f".stretch-in-{stamp}.f32"
    dst = tmp_dir / f".stretch-out-{stamp}.f32"
    try:
        samples.astype("<f4").tofile(src)
        fmt = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
        run_ffmpeg([*fmt, "-i", str(src), "-filter:a", atempo_chain(factor), *fmt, str(dst)], ctx, what="time-stretch audio")
        out: FloatArray = np.fromfile(dst, dtype="<f4").astype(np.float32)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return out
