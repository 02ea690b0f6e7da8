from __future__ import annotations

# Voice conversion on WORLD features: F0 level/range matched to the reference speaker,
# the spectral envelope warped toward the reference's formants, levels matched.
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processors.engines.voice.world import (
    EQ_MAX_DB,
    EQ_STRENGTH,
    F0_CEIL_HZ,
    F0_FLOOR_HZ,
    F0_SPREAD_RANGE,
    WARP_RANGE,
    VoiceStats,
    WorldFeatures,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "Conversion",
    "convert_voice",
    "estimate_warp",
    "match_level",
]


def _detrended(log_sp: FloatArray, band: Any) -> FloatArray:
    """Log spectrum within ``band`` (bool mask) minus its least-squares line (tilt)."""
    import numpy as np

    idx = np.flatnonzero(band).astype(np.float64)
    values = log_sp[band]
    slope, intercept = np.polyfit(idx, values, 1)
    result: FloatArray = values - (slope * idx + intercept)
    return result


def estimate_warp(source: VoiceStats, reference: VoiceStats, sample_rate: int) -> float:
    """Frequency-warp factor ``alpha`` that best maps the source's average envelope onto
    the reference's over 150-4000 Hz (formant region), after removing spectral tilt.

    ``alpha > 1`` moves formants up (e.g. a longer vocal tract to a shorter one).  Grid
    search in steps of 0.005 minimising the squared distance between the detrended log
    spectra (VTLN, Lee & Rose 1996).  Long-term spectra of short recordings made with
    different microphones are a noisy guide, so the search is limited to ±8 % around an
    F0-informed prior ``(f0_ref / f0_src) ** 0.25`` (adult formant frequencies differ by
    roughly the fourth root of the F0 ratio between speakers, e.g. ~1.18 female/male for
    an F0 ratio of ~1.9; Peterson & Barney 1952, Hillenbrand et al. 1995).

    Returns:
        alpha within ``WARP_RANGE``.
    """
    import numpy as np

    prior = float(np.clip(np.exp(0.25 * (reference.log_f0_median - source.log_f0_median)), *WARP_RANGE))
    low = max(WARP_RANGE[0], prior / 1.08)
    high = min(WARP_RANGE[1], prior * 1.08)

    bins = source.mean_log_sp.shape[0]
    freqs = np.linspace(0.0, sample_rate / 2.0, bins)
    top = min(4000.0, source.band_limit_hz, reference.band_limit_hz)
    band = (freqs >= 150.0) & (freqs <= top)
    target = _detrended(reference.mean_log_sp, band)
    best_alpha, best_cost = prior, float("inf")
    for alpha in np.arange(low, high + 1e-9, 0.005):
        warped = np.interp(freqs / alpha, freqs, source.mean_log_sp)
        cost = float(np.mean((_detrended(warped, band) - target) ** 2))
        # Mild preference for the prior: only move away from it when that clearly helps.
        cost *= 1.0 + 0.5 * abs(np.log(alpha / prior))
        if cost < best_cost:
            best_alpha, best_cost = float(alpha), cost
    return best_alpha


@dataclass
class Conversion:
    """What :func:`convert_voice` did: the new F0 track, the warp and EQ it applied."""

    f0: FloatArray
    sp: FloatArray
    warp: float
    spread_ratio: float


def convert_voice(
    features: WorldFeatures,
    source: VoiceStats,
    reference: VoiceStats,
    *,
    warp: float | None = None,
    spectral: bool = True,
) -> Conversion:
    """Map the source's WORLD features toward the reference speaker.

    F0: ``log f0' = m_ref + (log f0 - m_src) * clip(s_ref / s_src, 0.5, 2)`` for voiced
    frames (m = median, s = 10-90 percentile spread of log F0), so the output's median F0
    equals the reference's and its range scales to the reference's.

    Envelope (when ``spectral``): every frame is resampled on the frequency axis,
    ``sp'(f) = sp(f / alpha)`` with ``alpha`` from :func:`estimate_warp` (or ``warp``),
    then multiplied by half of the smoothed ratio of the reference's to the warped
    source's long-term log spectrum (limited to ±6 dB, below both recordings' band
    limits), which moves the timbre without smearing formants.

    Returns:
        the converted F0 (Hz, 0 = unvoiced) and envelope, the warp factor used and the
        F0 spread ratio.
    """
    import numpy as np

    ratio = float(np.clip(reference.log_f0_spread / source.log_f0_spread, *F0_SPREAD_RANGE))
    f0 = features.f0.copy()
    voiced = f0 > 0
    log_f0 = reference.log_f0_median + (np.log(f0[voiced]) - source.log_f0_median) * ratio
    f0[voiced] = np.clip(np.exp(log_f0), F0_FLOOR_HZ * 0.8, F0_CEIL_HZ)
    if not spectral:
        return Conversion(f0=f0, sp=features.sp, warp=1.0, spread_ratio=ratio)

    alpha = warp if warp is not None else estimate_warp(source, reference, features.sample_rate)
    bins = features.sp.shape[1]
    freqs = np.linspace(0.0, features.sample_rate / 2.0, bins)
    sp = features.sp
    if abs(alpha - 1.0) > 1e-3:
        positions = np.clip(freqs / alpha, 0.0, freqs[-1]) / freqs[-1] * (bins - 1)
        low = np.floor(positions).astype(np.int64)
        high = np.minimum(low + 1, bins - 1)
        frac = positions - low
        sp = sp[:, low] * (1.0 - frac) + sp[:, high] * frac
    # Long-term equalisation toward the reference, smoothed over ~400 Hz.
    warped_mean = np.interp(freqs / alpha, freqs, source.mean_log_sp)
    diff = reference.mean_log_sp - warped_mean
    width = max(3, round(400.0 / (freqs[1] - freqs[0])))
    kernel = np.ones(width) / width
    smooth = np.convolve(np.pad(diff, width, mode="edge"), kernel, mode="same")[width:-width]
    limit = min(source.band_limit_hz, reference.band_limit_hz)
    gain_db = np.clip(smooth * (10.0 / np.log(10.0)) * EQ_STRENGTH, -EQ_MAX_DB, EQ_MAX_DB)
    gain_db[freqs > limit] = 0.0
    sp = sp * (10.0 ** (gain_db / 10.0))[None, :]
    return Conversion(f0=f0, sp=np.ascontiguousarray(sp), warp=float(alpha), spread_ratio=ratio)


def match_level(output: Any, source: Any) -> FloatArray:
    """Scale ``output`` to the source's RMS level, limited to a 0.95 peak."""
    import numpy as np

    rms_src = float(np.sqrt(np.mean(np.square(source)))) if source.size else 0.0
    rms_out = float(np.sqrt(np.mean(np.square(output)))) if output.size else 0.0
    scaled = output * (rms_src / rms_out) if rms_out > 1e-9 else output
    peak = float(np.max(np.abs(scaled))) if scaled.size else 0.0
    if peak > 0.95:
        scaled = scaled * (0.95 / peak)
    result: FloatArray = scaled.astype(np.float64)
    return result


# -- engine --------------------------------------------------------------------------------
