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
import contextlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    ModelMissing,
    prepare_work_dir,
)
from .media import (
    check_duration,
    child_context,
    decode_audio,
    ffmpeg_exe,
    guard_inputs,
    input_path,
    last_line,
    probe_media,
)
from .tts import PiperEngine

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]
    ImageArray = npt.NDArray[np.uint8]

__all__ = ["TalkingHeadEngine", "detect_face", "haar_cascade_path", "mouth_openness"]

CASCADE = "haarcascade_frontalface_default.xml"
CASCADE_FALLBACK = "haarcascade_frontalface_alt2.xml"
DEFAULT_FPS = 25
MAX_IMAGE_PIXELS = 50_000_000
"""Largest portrait accepted, in pixels (about 8660x5770; 150 MB decoded): a larger image
fails the job with invalid_input before it is decoded whole."""

# OpenCV reads its decoder cap once, when cv2 is first imported (default 2**30 pixels, so
# a 40 kB PNG could claim gigabytes); this module is imported before cv2 (processors.engines
# imports it, and cv2 only inside functions).  An operator's own value is kept.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

MAX_SIDE = 1280
ENVELOPE_RATE = 16000
MOUTH_LINE = 0.78
MOUTH_HALF_WIDTH = 0.18
MAX_JAW_DROP = 0.07
_OPENCV_HINT = "pip install 'opencv-python-headless==4.14.0.94' (OpenCV 5 wheels ship no Haar cascades)"


def haar_cascade_path(name: str = CASCADE) -> Path | None:
    """Path of a cascade bundled with opencv-python(-headless), found without importing
    cv2 (``cv2/data/<name>``); None when absent."""
    try:
        spec = importlib.util.find_spec("cv2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / name
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def talking_heads_missing() -> list[str]:
    """Cheap check of what this engine needs (numpy, OpenCV with its cascades, ffmpeg)."""
    from .media import ffmpeg_status

    missing: list[str] = []
    if haar_cascade_path() is None:
        missing.append(f"OpenCV with its bundled Haar face cascade ({CASCADE}) is not installed: {_OPENCV_HINT}")
    try:
        has_numpy = importlib.util.find_spec("numpy") is not None
    except (ImportError, ValueError):
        has_numpy = False
    if not has_numpy:
        missing.append("Python package numpy is not installed (pip install 'aiorch[engines]')")
    missing.extend(ffmpeg_status()[1])
    return missing


def detect_face(image: ImageArray, classifiers: list[Any]) -> tuple[int, int, int, int] | None:
    """Largest frontal face in a BGR image as ``(x, y, w, h)`` pixels, or None.

    Each classifier is tried in turn on the equalised grey image (scale step 1.1, at
    least 5 neighbours, faces at least 8 % of the shorter side).
    """
    import cv2

    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    side = min(grey.shape[:2])
    min_size = max(24, int(0.08 * side))
    for classifier in classifiers:
        faces = classifier.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        if len(faces):
            x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
            return int(x), int(y), int(w), int(h)
    return None


def mouth_openness(samples: FloatArray, sample_rate: int, fps: float, frames: int) -> FloatArray:
    """Mouth opening per video frame, 0 (closed) .. 1 (wide open), from the audio envelope.

    RMS over each frame's samples -> attack/release smoothing (fast attack 0.6, slow
    release 0.35 per frame) -> normalised between the 10th and 95th percentile -> a
    0.7 power so quiet syllables still show.

    Returns:
        float32 array, shape ``(frames,)``.
    """
    import numpy as np

    hop = sample_rate / fps
    rms = np.zeros(frames, dtype=np.float64)
    for i in range(frames):
        part = samples[int(i * hop) : int((i + 1) * hop)]
        if part.size:
            rms[i] = float(np.sqrt(np.mean(np.square(part, dtype=np.float64))))
    smooth = np.zeros_like(rms)
    level = 0.0
    for i, value in enumerate(rms):
        level += (0.6 if value > level else 0.35) * (value - level)
        smooth[i] = level
    if not smooth.size or float(smooth.max()) <= 1e-6:
        return np.zeros(frames, dtype=np.float32)
    floor, top = np.percentile(smooth, [10, 95])
    if top - floor <= 1e-6:
        top = floor + 1e-6
    openness: FloatArray = (np.clip((smooth - floor) / (top - floor), 0.0, 1.0) ** 0.7).astype(np.float32)
    return openness


class _Animator:
    """Renders frames of one portrait with the mouth opened by a given amount."""

    def __init__(self, image: ImageArray, face: tuple[int, int, int, int]) -> None:
        import numpy as np

        self.image = image
        height, width = image.shape[:2]
        x, y, w, h = face
        self.mouth_y = y + MOUTH_LINE * h
        self.center_x = x + 0.5 * w
        self.face_w, self.face_h = w, h
        self.max_drop = MAX_JAW_DROP * h
        # Region that moves: from a bit above the mouth line down past the chin.
        self.top = max(0, int(self.mouth_y - 0.12 * h))
        self.bottom = min(height, int(y + 1.25 * h))
        self.left = max(0, int(x + 0.05 * w))
        self.right = min(width, int(x + 0.95 * w))
        rows = np.arange(self.top, self.bottom, dtype=np.float32)
        cols = np.arange(self.left, self.right, dtype=np.float32)
        self.grid_x, self.grid_y = np.meshgrid(cols, rows)
        # Horizontal weight: 1 in the middle of the jaw, smoothly 0 at the face sides.
        u = (cols - self.center_x) / (0.45 * w)
        wx = np.where(np.abs(u) < 1.0, 0.5 * (1.0 + np.cos(np.pi * np.clip(u, -1.0, 1.0))), 0.0)
        # Vertical weight: 0 above the mouth line, 1 from the line to the chin, fading out
        # over the neck.
        start = self.mouth_y - 0.01 * h
        chin = y + 1.0 * h
        rise = np.clip((rows - start) / (0.03 * h), 0.0, 1.0)
        fall = np.clip((y + 1.25 * h - rows) / (0.25 * h), 0.0, 1.0)
        wy = np.where(rows < chin, rise, fall)
        self.weight = (wy[:, None] * wx[None, :]).astype(np.float32)

    def frame(self, openness: float) -> ImageArray:
        """The portrait with the mouth ``openness`` (0..1) open; a new BGR array."""
        import cv2
        import numpy as np

        out = self.image.copy()
        drop = float(openness) * self.max_drop
        if drop < 0.5:
            return out
        map_y = self.grid_y - drop * self.weight
        roi = cv2.remap(
            self.image, self.grid_x, map_y.astype(np.float32), interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        # Open mouth: a dark ellipse filling the gap between the lips, with soft edges.
        mask = np.zeros(roi.shape[:2], dtype=np.float32)
        center = (round(self.center_x - self.left), round(self.mouth_y + drop * 0.5 - self.top))
        axes = (max(1, int(MOUTH_HALF_WIDTH * self.face_w * (0.85 + 0.15 * openness))), max(1, int(drop * 0.55)))
        cv2.ellipse(mask, center, axes, 0.0, 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA)
        blur = max(3, (int(0.015 * self.face_h) // 2) * 2 + 1)
        mask = cv2.GaussianBlur(mask, (blur, blur), 0)[..., None]
        inside = np.array([35, 25, 70], dtype=np.float32)  # BGR: dark red mouth interior
        blended = roi.astype(np.float32) * (1.0 - mask) + inside * mask
        out[self.top : self.bottom, self.left : self.right] = np.clip(blended, 0, 255).astype(np.uint8)
        return out


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
    missing/undecodable/too long; JobCancelled within ~0.1 s of a cancel.
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
                raise ModelMissing(f"OpenCV is not installed ({exc}): {_OPENCV_HINT}") from exc
            classifiers = []
            for name in (CASCADE, CASCADE_FALLBACK):
                path = haar_cascade_path(name)
                if path is None:
                    continue
                classifier = cv2.CascadeClassifier(str(path))
                if not classifier.empty():
                    classifiers.append(classifier)
            if not classifiers:
                raise ModelMissing(f"OpenCV's Haar face cascade {CASCADE} is missing or damaged: {_OPENCV_HINT}")
            self._classifiers = classifiers

    def close(self) -> None:
        """Drop the cascades and close the TTS engine.  Idempotent."""
        with self._lock:
            self._classifiers = []
        self.tts.close()

    def run(self, ctx: EngineContext) -> EngineResult:
        """Render the talking head; see the class docstring."""
        import numpy as np

        ctx.check_stop()
        params = ctx.parameters or {}
        fps = params.get("fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, int) or not 10 <= fps <= 60:
            raise InvalidInput(f"parameter 'fps' must be a whole number from 10 to 60, got {fps!r}")
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        started = time.monotonic()
        image_path = input_path(ctx, "image_file")
        assert image_path is not None
        image = self._read_image(image_path)
        audio_path: Path | None = None
        if not (text and text.strip()):
            audio_path = input_path(ctx, "input_file", required=False)
            if audio_path is None:
                raise InvalidInput("animated_talking_heads needs parameter 'text' or a speech recording in field 'input_file'")
            info = probe_media(audio_path, "input_file")
            if not info.has_audio:
                raise InvalidInput(f"input_file {audio_path.name!r} has no audio stream")
            check_duration(ctx, info.duration, f"input_file {audio_path.name!r}")

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
                assert isinstance(text, str)
                spoken = self.tts.run(
                    child_context(
                        ctx,
                        tmp / "tts",
                        2,
                        20,
                        parameters={"text": text, "language": params.get("language") or "en"},
                        stage="synthesizing",
                    )
                )
                audio_path = spoken.files[0]
            samples = decode_audio(audio_path, ctx, ENVELOPE_RATE, field="input_file", tmp_dir=tmp)
            duration = samples.size / ENVELOPE_RATE
            check_duration(ctx, duration, f"input_file {audio_path.name!r}")
            frames = max(1, int(np.ceil(duration * fps)))
            openness = mouth_openness(samples, ENVELOPE_RATE, fps, frames)
            target = work_dir / "talking_head.mp4"
            self._render(ctx, image, face, openness, fps, audio_path, target, tmp)
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
        """Decode the portrait as BGR, scaled to at most ``MAX_SIDE`` px and cropped to
        even dimensions (H.264 4:2:0 needs them).

        Raises:
            InvalidInput: unreadable, smaller than 64x64, or over MAX_IMAGE_PIXELS.
        """
        import cv2
        import numpy as np

        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise InvalidInput(f"cannot read image_file {path.name!r}: {exc.strerror or exc}") from exc
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        except cv2.error as exc:  # OpenCV refuses an image over OPENCV_IO_MAX_IMAGE_PIXELS
            raise InvalidInput(
                f"image_file {path.name!r} is not a readable image, or larger than {MAX_IMAGE_PIXELS} pixels"
            ) from exc
        if image is None or image.size == 0:
            raise InvalidInput(
                f"image_file {path.name!r} is not a readable image (PNG, JPEG, WebP, BMP or TIFF) "
                f"of at most {MAX_IMAGE_PIXELS} pixels"
            )
        height, width = image.shape[:2]
        if height * width > MAX_IMAGE_PIXELS:  # cv2 was imported before the cap was set
            raise InvalidInput(f"image_file {path.name!r} is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels")
        if min(height, width) < 64:
            raise InvalidInput(f"image_file {path.name!r} is only {width}x{height} pixels; at least 64x64 is needed")
        scale = min(1.0, MAX_SIDE / max(height, width))
        if scale < 1.0:
            image = cv2.resize(image, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA)
            height, width = image.shape[:2]
        result: ImageArray = np.ascontiguousarray(image[: height - height % 2, : width - width % 2])
        return result

    def _render(
        self,
        ctx: EngineContext,
        image: ImageArray,
        face: tuple[int, int, int, int],
        openness: FloatArray,
        fps: int,
        audio: Path,
        target: Path,
        tmp: Path,
    ) -> None:
        """Pipe one frame per ``openness`` value into ffmpeg and mux ``audio``."""
        animator = _Animator(image, face)
        height, width = image.shape[:2]
        partial = tmp / "talking_head.mp4"
        log_path = tmp / "ffmpeg.log"
        args = guard_inputs(
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
                str(partial),
            ]
        )
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, close_fds=True)
            except OSError as exc:
                raise EngineError(f"cannot run ffmpeg: {exc}") from exc
            assert proc.stdin is not None
            try:
                total = len(openness)
                for index, value in enumerate(openness):
                    ctx.check_stop()
                    try:
                        proc.stdin.write(animator.frame(float(value)).tobytes())
                    except (BrokenPipeError, OSError) as exc:
                        proc.wait(timeout=10)
                        raise EngineError(
                            f"ffmpeg stopped while encoding: {last_line(log_path.read_text('utf-8', 'replace'))}"
                        ) from exc
                    if index % 10 == 0:
                        ctx.progress(20 + 78 * (index + 1) / total, "rendering")
                proc.stdin.close()
                while True:
                    try:
                        proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        ctx.check_stop()
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
