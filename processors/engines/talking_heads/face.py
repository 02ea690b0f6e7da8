from __future__ import annotations

# The portrait: decoded within size limits, and its face found with OpenCV's bundled Haar
# cascades (Viola & Jones, CVPR 2001; Lienhart & Maydt, ICIP 2002).
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.engines.base import (
    InvalidInput,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]
    ImageArray = npt.NDArray[np.uint8]

__all__ = [
    "CASCADE",
    "CASCADE_FALLBACK",
    "MAX_IMAGE_PIXELS",
    "MAX_SIDE",
    "OPENCV_HINT",
    "detect_face",
    "haar_cascade_path",
    "read_image",
    "talking_heads_missing",
]

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
OPENCV_HINT = "pip install 'opencv-python-headless==4.14.0.94' (OpenCV 5 wheels ship no Haar cascades)"


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
    from processors.engines.media import ffmpeg_status

    missing: list[str] = []
    if haar_cascade_path() is None:
        missing.append(f"OpenCV with its bundled Haar face cascade ({CASCADE}) is not installed: {OPENCV_HINT}")
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


def read_image(path: Path) -> ImageArray:
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
        raise InvalidInput(f"image_file {path.name!r} is not a readable image, or larger than {MAX_IMAGE_PIXELS} pixels") from exc
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
