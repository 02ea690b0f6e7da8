from __future__ import annotations

from processors.engines.talking_heads.animate import Animator, mouth_openness
from processors.engines.talking_heads.engine import DEFAULT_FPS, TalkingHeadEngine, heads_options

# Animated talking heads, in modules of one job each: the portrait and its face (face;
# importing it caps OpenCV's image decoder before cv2 is imported), the mouth animation
# (animate), video encoding (render) and the engine (engine).
from processors.engines.talking_heads.face import (
    MAX_IMAGE_PIXELS,
    detect_face,
    haar_cascade_path,
    read_image,
    talking_heads_missing,
)
from processors.engines.talking_heads.render import encoder_args, render_video

__all__ = [
    "DEFAULT_FPS",
    "MAX_IMAGE_PIXELS",
    "Animator",
    "TalkingHeadEngine",
    "detect_face",
    "encoder_args",
    "haar_cascade_path",
    "heads_options",
    "mouth_openness",
    "read_image",
    "render_video",
    "talking_heads_missing",
]
