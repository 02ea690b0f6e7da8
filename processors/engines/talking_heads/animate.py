from __future__ import annotations

# The animation: the speech's envelope per frame sets how far the mouth opens; the jaw
# below the mouth line is warped down and the gap filled with a dark, soft ellipse.
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]
    ImageArray = npt.NDArray[np.uint8]

__all__ = ["ENVELOPE_RATE", "MAX_JAW_DROP", "MOUTH_HALF_WIDTH", "MOUTH_LINE", "Animator", "mouth_openness"]

ENVELOPE_RATE = 16000
MOUTH_LINE = 0.78
MOUTH_HALF_WIDTH = 0.18
MAX_JAW_DROP = 0.07


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


class Animator:
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
