from __future__ import annotations

# Encoding a talking head: one frame per openness value piped raw into ffmpeg (libx264),
# muxed with the speech (AAC).
import contextlib
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from processors.engines.base import (
    EngineContext,
    EngineError,
)
from processors.engines.media import (
    ffmpeg_exe,
    guard_inputs,
    last_line,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]
    ImageArray = npt.NDArray[np.uint8]
from processors.engines.talking_heads.animate import Animator

__all__ = ["encoder_args", "render_video"]


def encoder_args(width: int, height: int, fps: int, audio: Path, target: Path) -> list[str]:
    """ffmpeg's command line: raw BGR frames of ``width`` x ``height`` on stdin at ``fps``
    plus ``audio`` -> ``target`` (H.264 yuv420p, AAC 128k, as long as the shorter)."""
    return guard_inputs(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{width}x{height}",
            "-r",
            str(fps),
            "-i",
            "pipe:0",
            "-i",
            str(audio),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-shortest",
            "-movflags",
            "+faststart",
            str(target),
        ]
    )


def _feed_frames(
    ctx: EngineContext, proc: subprocess.Popen[bytes], animator: Animator, openness: FloatArray, log_path: Path
) -> None:
    """Write every frame to ffmpeg's stdin (a checkpoint before each), close it and wait
    for ffmpeg, checking ``ctx`` every 0.1 s.

    Raises:
        EngineError: ffmpeg stopped reading.
        EngineCancelled: cancelled meanwhile.
    """
    assert proc.stdin is not None
    total = len(openness)
    for index, value in enumerate(openness):
        ctx.check_stop()
        try:
            proc.stdin.write(animator.frame(float(value)).tobytes())
        except (BrokenPipeError, OSError) as exc:
            proc.wait(timeout=10)
            raise EngineError(f"ffmpeg stopped while encoding: {last_line(log_path.read_text('utf-8', 'replace'))}") from exc
        if index % 10 == 0:
            ctx.progress(20 + 78 * (index + 1) / total, "rendering")
    proc.stdin.close()
    while True:
        try:
            proc.wait(timeout=0.1)
            return
        except subprocess.TimeoutExpired:
            ctx.check_stop()


def render_video(
    ctx: EngineContext,
    image: ImageArray,
    face: tuple[int, int, int, int],
    openness: FloatArray,
    fps: int,
    audio: Path,
    target: Path,
    tmp: Path,
) -> None:
    """Pipe one frame per ``openness`` value into ffmpeg and mux ``audio`` into ``target``.

    Raises:
        EngineError: ffmpeg cannot start or fails.
        EngineCancelled: cancelled meanwhile (ffmpeg is killed).
    """
    animator = Animator(image, face)
    height, width = image.shape[:2]
    partial = tmp / "talking_head.mp4"
    log_path = tmp / "ffmpeg.log"
    args = encoder_args(width, height, fps, audio, partial)
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, close_fds=True)
        except OSError as exc:
            raise EngineError(f"cannot run ffmpeg: {exc}") from exc
        assert proc.stdin is not None
        try:
            _feed_frames(ctx, proc, animator, openness, log_path)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
    if proc.returncode != 0:
        raise EngineError(f"ffmpeg failed to encode the video: {last_line(log_path.read_text('utf-8', 'replace'))}")
    shutil.move(str(partial), str(target))
