from __future__ import annotations

# Animated talking heads: a portrait photo + speech -> an MP4 in which the lower face moves
# with the speech.
#
# The face is found with OpenCV's bundled Haar cascade (Viola & Jones, "Rapid object
# detection using a boosted cascade of simple features", CVPR 2001; Lienhart & Maydt's
# extended feature set, ICIP 2002).  The mouth and jaw are placed by the usual facial
# proportions of a frontal face box (mouth line at ~78 % of the box height, mouth width
# ~36 % of the box width).  Per video frame, the speech's RMS envelope (attack/release
# smoothed, normalised between its 10th and 95th percentile) sets how far the mouth opens:
# the jaw region below the mouth line is shifted down with a smooth vertical warp
# (cv2.remap), and the gap is filled with a soft-edged dark ellipse (the open mouth).
# Frames are piped raw into ffmpeg (libx264 + AAC).
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.engines.base import (
    Engine,
    EngineContext,
    EngineResult,
    InvalidInput,
    ModelMissing,
    prepare_work_dir,
)
from processors.engines.media import (
    check_duration,
    child_context,
    decode_audio,
    ffmpeg_exe,
    input_path,
    probe_media,
)
from processors.engines.tts import PiperEngine

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]
    ImageArray = npt.NDArray[np.uint8]
from commands.job_parameters import TalkingHeadsParameters
from processors.engines.talking_heads.animate import ENVELOPE_RATE, mouth_openness
from processors.engines.talking_heads.face import (
    CASCADE,
    CASCADE_FALLBACK,
    OPENCV_HINT,
    detect_face,
    haar_cascade_path,
    read_image,
)
from processors.engines.talking_heads.render import render_video

__all__ = ["TalkingHeadEngine", "heads_options"]

DEFAULT_FPS = 25


class TalkingHeadEngine(Engine):
    """Animated talking heads (``animated_talking_heads``): a portrait that speaks.

    Job parameters:
        text: optional text to speak (Piper for English, espeak-ng otherwise); else
            ``input_file`` is the speech.
        language: the text's language (default ``"en"``).
        fps: optional frames per second, 10..60 (default 25).

    Input files:
        image_file: a portrait (PNG/JPEG/...) with one frontal face; larger than 1280 px
            it is scaled down.
        input_file: speech audio (or a video with audio), when there is no ``text``.

    Output files in ``ctx.work_dir``: ``talking_head.mp4`` (H.264 yuv420p + AAC), as
    long as the audio.

    Meta::

        {"fps": int, "duration_seconds": float, "frames": int,
         "face_box": [x, y, w, h]}   # pixels in the output video

    Progress stages: ``synthesizing`` (text only), ``locating face``, ``rendering``.
    Errors: InvalidInput when the image does not decode, no face is found, the audio is
    missing/undecodable/too long; EngineCancelled within ~0.1 s of a cancel.
    """

    type = "animated_talking_heads"
    name = "opencv-haar+jaw-warp"

    def __init__(self, tts: PiperEngine | None = None, *, model_dir: Path | str | None = None) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            tts: the processor's shared PiperEngine for text jobs (a private one if None).
        """
        self.tts = tts if tts is not None else PiperEngine(model_dir)
        self._classifiers: list[Any] = []
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once the face cascades are loaded."""
        return bool(self._classifiers)

    def load(self) -> None:
        """Load the Haar face cascades once and locate ffmpeg.  Idempotent.

        Raises:
            ModelMissing: OpenCV or its cascade files are missing or do not load.
            EngineError: ffmpeg is missing.
        """
        with self._lock:
            if self._classifiers:
                return
            ffmpeg_exe()
            try:
                import cv2
            except ImportError as exc:
                raise ModelMissing(f"OpenCV is not installed ({exc}): {OPENCV_HINT}") from exc
            classifiers = []
            for name in (CASCADE, CASCADE_FALLBACK):
                path = haar_cascade_path(name)
                if path is None:
                    continue
                classifier = cv2.CascadeClassifier(str(path))
                if not classifier.empty():
                    classifiers.append(classifier)
            if not classifiers:
                raise ModelMissing(f"OpenCV's Haar face cascade {CASCADE} is missing or damaged: {OPENCV_HINT}")
            self._classifiers = classifiers

    def close(self) -> None:
        """Drop the cascades and close the TTS engine.  Idempotent."""
        with self._lock:
            self._classifiers = []
        self.tts.close()

    def run(self, ctx: EngineContext) -> EngineResult:
        """Render the talking head; see the class docstring."""
        ctx.check_stop()
        text, language, fps = heads_options(ctx)
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        started = time.monotonic()
        image_path = input_path(ctx, "image_file")
        assert image_path is not None
        image = read_image(image_path)
        audio_path = None if text is not None else _speech_input(ctx)
        ctx.progress(1, "locating face")
        face = detect_face(image, self._classifiers)
        if face is None:
            raise InvalidInput(f"no face was found in image_file {image_path.name!r}; use a frontal portrait")
        ctx.log_safe(
            "info", f"face at x={face[0]} y={face[1]} w={face[2]} h={face[3]} in a {image.shape[1]}x{image.shape[0]} image"
        )
        tmp = Path(tempfile.mkdtemp(prefix=".talking-", dir=work_dir))
        try:
            if audio_path is None:
                assert text is not None
                tts_ctx = child_context(
                    ctx, tmp / "tts", 2, 20, parameters={"text": text, "language": language}, stage="synthesizing"
                )
                audio_path = self.tts.run(tts_ctx).files[0]
            target = work_dir / "talking_head.mp4"
            duration, frames = _animate(ctx, image, face, fps, audio_path, target, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        elapsed = time.monotonic() - started
        ctx.log_safe(
            "info", f"rendered {frames} frames ({duration:.1f} s) in {elapsed:.1f} s (RTF {elapsed / max(duration, 1e-6):.2f})"
        )
        ctx.progress(100, "rendering")
        meta: dict[str, Any] = {
            "fps": fps,
            "duration_seconds": round(duration, 3),
            "frames": frames,
            "face_box": list(face),
        }
        return EngineResult(files=[target], meta=meta)

    @staticmethod
    def _read_image(path: Path) -> ImageArray:
        """See :func:`processors.engines.talking_heads.face.read_image`."""
        return read_image(path)


def heads_options(ctx: EngineContext) -> tuple[str | None, str, int]:
    """``(text to speak or None for a recording, its language, frames per second)`` of
    an animated_talking_heads job: from ``ctx.validated`` (a
    :class:`TalkingHeadsParameters`, at ``DEFAULT_FPS``) when given, else from the raw
    parameters.  A blank text counts as none; the language defaults to ``"en"``.

    Raises:
        InvalidInput: ``fps`` not a whole number in 10..60, ``text`` not a string.
    """
    if isinstance(ctx.validated, TalkingHeadsParameters):
        text, language, fps = ctx.validated.text, ctx.validated.language, DEFAULT_FPS
    else:
        params = ctx.parameters or {}
        fps = params.get("fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, int) or not 10 <= fps <= 60:
            raise InvalidInput(f"parameter 'fps' must be a whole number from 10 to 60, got {fps!r}")
        text, language = params.get("text"), params.get("language")
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
    return (text if text and text.strip() else None), (language or "en"), fps


def _speech_input(ctx: EngineContext) -> Path:
    """The speech recording of a job without text: present, with audio, within the limit.

    Raises:
        InvalidInput: missing, unreadable, silent or too long.
    """
    audio_path = input_path(ctx, "input_file", required=False)
    if audio_path is None:
        raise InvalidInput("animated_talking_heads needs parameter 'text' or a speech recording in field 'input_file'")
    info = probe_media(audio_path, "input_file")
    if not info.has_audio:
        raise InvalidInput(f"input_file {audio_path.name!r} has no audio stream")
    check_duration(ctx, info.duration, f"input_file {audio_path.name!r}")
    return audio_path


def _animate(
    ctx: EngineContext, image: ImageArray, face: tuple[int, int, int, int], fps: int, audio: Path, target: Path, tmp: Path
) -> tuple[float, int]:
    """Decode the speech, derive the mouth's openness per frame and render ``target``.

    Returns:
        (duration in s, frames).
    """
    import numpy as np

    samples = decode_audio(audio, ctx, ENVELOPE_RATE, field="input_file", tmp_dir=tmp)
    duration = samples.size / ENVELOPE_RATE
    check_duration(ctx, duration, f"input_file {audio.name!r}")
    frames = max(1, int(np.ceil(duration * fps)))
    openness = mouth_openness(samples, ENVELOPE_RATE, fps, frames)
    render_video(ctx, image, face, openness, fps, audio, target, tmp)
    return duration, frames
