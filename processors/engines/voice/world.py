from __future__ import annotations

# WORLD vocoder analysis and synthesis (pyworld), and the speaker statistics taken from it.
#
# Voice cloning without a neural model: WORLD vocoder analysis/resynthesis (pyworld) that
# moves the source's pitch (F0 level and range) to the reference speaker's and warps the
# source's spectral envelope toward the reference's (a vocal-tract-length style
# frequency-axis warp plus a partial long-term-spectrum equalisation).
#
# Sources of the algorithms:
#   * WORLD vocoder: M. Morise, F. Yokomori, K. Ozawa, "WORLD: a vocoder-based high-quality
#     speech synthesis system for real-time applications", IEICE Trans. Inf. & Syst. E99-D(7),
#     2016 (DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity).
#   * F0 conversion by matching the mean and spread of log-F0 (the "Gaussian normalised
#     transformation" of log F0): K. Liu, J. Zhang, Y. Yan, "High quality voice conversion
#     through phoneme-based linear mapping functions with STRAIGHT for Mandarin", FSKD 2007,
#     and the usual baseline of the Voice Conversion Challenges.
#   * Warp-factor search on a linear frequency axis: L. Lee, R. Rose, "Speaker normalization
#     using efficient frequency warping procedures", ICASSP 1996 (VTLN grid search).
#
# Importing this module is cheap: numpy and pyworld are imported when a job runs.
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processors.engines.base import (
    EngineCancelled,
    InvalidInput,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "EQ_MAX_DB",
    "EQ_STRENGTH",
    "F0_CEIL_HZ",
    "F0_FLOOR_HZ",
    "F0_SPREAD_RANGE",
    "FRAME_PERIOD_MS",
    "MIN_REFERENCE_SECONDS",
    "MIN_VOICED_SECONDS",
    "SAMPLE_RATE",
    "WARP_RANGE",
    "VoiceStats",
    "WorldFeatures",
    "analyse_world",
    "f0_track",
    "measure_f0_median",
    "pyworld_missing",
    "synthesise_world",
    "voice_stats",
]

SAMPLE_RATE = 22050
"""Working and output sample rate, Hz."""

FRAME_PERIOD_MS = 5.0
F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 700.0
MIN_REFERENCE_SECONDS = 3.0
MIN_VOICED_SECONDS = 0.4
WARP_RANGE = (0.85, 1.2)
"""Clamp of the frequency-warp factor: beyond it speech gets hard to understand."""

F0_SPREAD_RANGE = (0.5, 2.0)
EQ_MAX_DB = 6.0
EQ_STRENGTH = 0.5
_ANALYSIS_CHUNK_FRAMES = 400  # 2 s of frames between cancellation checks


def pyworld_missing() -> list[str]:
    """Cheap check (find_spec only) of the Python packages this engine needs."""
    missing = []
    for module, package in (("pyworld", "pyworld==0.3.5"), ("numpy", "numpy")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(f"Python package {package} is not installed (pip install 'aiorch[engines]')")
    return missing


# -- analysis ------------------------------------------------------------------------------


@dataclass
class WorldFeatures:
    """WORLD parameters of one signal.

    Attributes:
        f0: F0 per frame in Hz, 0 for unvoiced frames; shape ``(frames,)``.
        sp: smoothed power spectral envelope; shape ``(frames, fft_size // 2 + 1)``.
        ap: aperiodicity 0..1, same shape as ``sp``.
        sample_rate: Hz.  Frames are ``FRAME_PERIOD_MS`` apart.
    """

    f0: FloatArray
    sp: FloatArray
    ap: FloatArray
    sample_rate: int


@dataclass
class VoiceStats:
    """Speaker statistics used for conversion.

    Attributes:
        f0_median_hz: median F0 of voiced frames.
        f0_p10_hz, f0_p90_hz: 10th/90th percentile of voiced F0 (the "range").
        log_f0_median, log_f0_spread: the same in natural-log Hz; spread is the log
            distance between the 90th and 10th percentiles.
        mean_log_sp: mean natural-log envelope of voiced frames, shape ``(bins,)``.
        voiced_seconds: how much voiced speech the statistics come from.
        band_limit_hz: highest frequency with real content (0.45 x the file's own rate).
    """

    f0_median_hz: float
    f0_p10_hz: float
    f0_p90_hz: float
    log_f0_median: float
    log_f0_spread: float
    mean_log_sp: FloatArray
    voiced_seconds: float
    band_limit_hz: float


def analyse_world(samples: Any, sample_rate: int, should_stop: Callable[[], bool] | None = None) -> WorldFeatures:
    """WORLD analysis: DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity.

    Args:
        samples: mono samples, shape ``(n,)``, any float dtype, in [-1, 1].
        should_stop: polled every ~2 s of audio; analysis returns early with
            :class:`EngineCancelled` when it is True.

    Raises:
        EngineCancelled: ``should_stop()`` became True.
    """
    import numpy as np
    import pyworld

    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, times, sample_rate)
    fft_size = pyworld.get_cheaptrick_fft_size(sample_rate, F0_FLOOR_HZ)
    sps: list[Any] = []
    aps: list[Any] = []
    for start in range(0, len(f0), _ANALYSIS_CHUNK_FRAMES):
        if should_stop is not None and should_stop():
            raise EngineCancelled("voice analysis cancelled")
        part = slice(start, start + _ANALYSIS_CHUNK_FRAMES)
        f0_part = np.ascontiguousarray(f0[part])
        t_part = np.ascontiguousarray(times[part])
        sps.append(pyworld.cheaptrick(x, f0_part, t_part, sample_rate, f0_floor=F0_FLOOR_HZ, fft_size=fft_size))
        aps.append(pyworld.d4c(x, f0_part, t_part, sample_rate, fft_size=fft_size))
    return WorldFeatures(f0=f0, sp=np.vstack(sps), ap=np.vstack(aps), sample_rate=sample_rate)


def voice_stats(features: WorldFeatures, band_limit_hz: float, what: str) -> VoiceStats:
    """Speaker statistics of analysed speech.

    Raises:
        InvalidInput: less than ``MIN_VOICED_SECONDS`` of voiced speech (``what`` names
            the recording in the message).
    """
    import numpy as np

    voiced = features.f0 > 0
    voiced_seconds = float(voiced.sum()) * FRAME_PERIOD_MS / 1000.0
    if voiced_seconds < MIN_VOICED_SECONDS:
        raise InvalidInput(f"{what} has too little voiced speech ({voiced_seconds:.2f} s) to measure the speaker's voice")
    log_f0 = np.log(features.f0[voiced])
    p10, median, p90 = np.percentile(log_f0, [10, 50, 90])
    mean_log_sp = np.log(np.maximum(features.sp[voiced], 1e-16)).mean(axis=0)
    return VoiceStats(
        f0_median_hz=float(np.exp(median)),
        f0_p10_hz=float(np.exp(p10)),
        f0_p90_hz=float(np.exp(p90)),
        log_f0_median=float(median),
        log_f0_spread=float(max(p90 - p10, 1e-3)),
        mean_log_sp=mean_log_sp,
        voiced_seconds=voiced_seconds,
        band_limit_hz=band_limit_hz,
    )


def measure_f0_median(samples: Any, sample_rate: int) -> float:
    """Median F0 in Hz of voiced frames (DIO + StoneMask), 0.0 if nothing is voiced."""
    import numpy as np

    f0 = f0_track(samples, sample_rate)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0


def synthesise_world(f0: Any, sp: Any, ap: Any, sample_rate: int) -> FloatArray:
    """WORLD synthesis of F0/envelope/aperiodicity frames ``FRAME_PERIOD_MS`` apart."""
    import numpy as np
    import pyworld

    out: FloatArray = pyworld.synthesize(
        np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), sample_rate, FRAME_PERIOD_MS
    )
    return out


def f0_track(samples: Any, sample_rate: int) -> FloatArray:
    """F0 per 5 ms frame (DIO + StoneMask), 0 where unvoiced."""
    import numpy as np
    import pyworld

    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    result: FloatArray = pyworld.stonemask(x, f0, times, sample_rate)
    return result
