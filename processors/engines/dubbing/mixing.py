from __future__ import annotations

# Dubbing's mixing math: the new speech is trimmed, fitted into its segment's slot,
# level-matched to the original and added over the original, which is ducked under it.
# Pure numpy on mono float32 arrays at ``MIX_RATE`` (numpy is imported when called).
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = [
    "DUCK_GAIN",
    "DUCK_RAMP_S",
    "MAX_TEMPO",
    "MIX_RATE",
    "cut_with_fade",
    "duck",
    "limit_peak",
    "match_rms",
    "slot_samples",
    "tempo_for_slot",
    "trim_silence",
]

MIX_RATE = 22050
"""Sample rate (Hz) of the mixed, mono output audio."""

MAX_TEMPO = 2.0
"""Fastest speed-up of a translation that runs longer than its slot."""

DUCK_GAIN = 0.15
"""Default level (0..1) of the original audio under the new speech."""

DUCK_RAMP_S = 0.15
"""Length (s) of the linear ramps into and out of a ducked stretch."""

MIN_SLOT_S = 0.3
"""Shortest slot (s) a segment's speech is fitted into."""

FADE_S = 0.05
"""Fade-out (s) where speech that overruns the end is cut."""


def slot_samples(start: int, next_start: int, rate: int = MIX_RATE) -> int:
    """Samples available to a segment placed at ``start`` before ``next_start`` (the next
    segment's start, or the end), at least ``MIN_SLOT_S``."""
    return max(next_start - start, int(MIN_SLOT_S * rate))


def tempo_for_slot(length: int, slot: int) -> float:
    """Tempo factor (>= 1, at most ``MAX_TEMPO``) that fits ``length`` samples into
    ``slot``; 1.0 when it already fits."""
    if length <= slot:
        return 1.0
    return min(MAX_TEMPO, length / slot)


def cut_with_fade(audio: FloatArray, keep: int, rate: int = MIX_RATE) -> FloatArray:
    """The first ``keep`` samples of ``audio`` (a copy), the last ``FADE_S`` faded out."""
    import numpy as np

    fade = min(keep, int(FADE_S * rate))
    out = audio[:keep].copy()
    if fade:
        out[keep - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def limit_peak(mixed: FloatArray, peak_limit: float = 0.98) -> FloatArray:
    """``mixed`` as float32, scaled down so its peak is at most ``peak_limit``."""
    import numpy as np

    peak = float(np.max(np.abs(mixed))) if mixed.size else 0.0
    if peak > peak_limit:
        mixed = mixed * (peak_limit / peak)
    result: FloatArray = mixed.astype(np.float32)
    return result


def trim_silence(audio: FloatArray, threshold: float = 0.01) -> FloatArray:
    """Drop leading/trailing samples quieter than ``threshold`` (keeps 20 ms margins)."""
    import numpy as np

    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    margin = int(0.02 * MIX_RATE)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin]


def match_rms(audio: FloatArray, reference: FloatArray) -> FloatArray:
    """Scale ``audio`` to the RMS of ``reference`` (x0.25..x4), with a 0.95 peak limit."""
    import numpy as np

    rms_a = float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0
    rms_r = float(np.sqrt(np.mean(np.square(reference)))) if reference.size else 0.0
    if rms_a < 1e-6 or rms_r < 1e-6:
        return audio
    scaled = audio * float(np.clip(rms_r / rms_a, 0.25, 4.0))
    peak = float(np.max(np.abs(scaled)))
    if peak > 0.95:
        scaled *= 0.95 / peak
    result: FloatArray = scaled.astype(np.float32)
    return result


def duck(gain: FloatArray, start: int, end: int, level: float, ramp: int) -> None:
    """Lower ``gain`` to ``level`` over ``start..end`` with linear ramps of ``ramp`` samples."""
    import numpy as np

    total = gain.size
    lo, hi = max(0, start - ramp), min(total, end + ramp)
    positions = np.arange(lo, hi, dtype=np.float32)
    into = np.clip((positions - (start - ramp)) / ramp, 0.0, 1.0)
    out_of = np.clip(((end + ramp) - positions) / ramp, 0.0, 1.0)
    weight = np.minimum(into, out_of)
    shaped = 1.0 - (1.0 - level) * weight
    gain[lo:hi] = np.minimum(gain[lo:hi], shaped)
