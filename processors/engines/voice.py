from __future__ import annotations

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
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    JobCancelled,
    prepare_work_dir,
)
from .media import (
    check_duration,
    child_context,
    decode_audio,
    ffmpeg_exe,
    input_path,
    probe_media,
    run_in_thread,
    write_wav,
)
from .tts import PiperEngine

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

__all__ = [
    "VoiceCloningEngine",
    "VoiceStats",
    "WorldFeatures",
    "analyse_world",
    "convert_voice",
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
            :class:`JobCancelled` when it is True.

    Raises:
        JobCancelled: ``should_stop()`` became True.
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
            raise JobCancelled("voice analysis cancelled")
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

    f0 = _f0_track(samples, sample_rate)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else 0.0


# -- conversion ----------------------------------------------------------------------------


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


def synthesise_world(f0: Any, sp: Any, ap: Any, sample_rate: int) -> FloatArray:
    """WORLD synthesis of F0/envelope/aperiodicity frames ``FRAME_PERIOD_MS`` apart."""
    import numpy as np
    import pyworld

    out: FloatArray = pyworld.synthesize(
        np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap), sample_rate, FRAME_PERIOD_MS
    )
    return out


def _match_level(output: Any, source: Any) -> FloatArray:
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


class VoiceCloningEngine(Engine):
    """Voice cloning (``voice_cloning``): speak a text or re-voice a recording in the
    voice of a reference speaker, with the WORLD vocoder (no neural model).

    Job parameters:
        text: optional text; when given it is synthesised first (Piper for English,
            espeak-ng for other languages), then converted.
        language: the text's language (default ``"en"``).

    Input files:
        reference_file: the target speaker, any audio/video with at least 3 s of audio
            (and 0.4 s of voiced speech).
        input_file: the source recording, required when there is no ``text``.

    Output files in ``ctx.work_dir``: ``cloned.wav`` (16-bit mono, 22050 Hz).

    Meta::

        {"f0_median_hz": {"reference": float, "source": float, "output": float},
         "f0_range_hz": {"reference": [p10, p90], "source": [p10, p90], "output": [p10, p90]},
         "spectral_warp": float,        # frequency-axis warp factor applied (1 = none)
         "duration_seconds": float, "source": "text" | "recording"}

    ``f0_median_hz.output`` is measured again on the written output.

    Progress stages: ``synthesizing`` (text mode), ``analyzing``, ``converting``,
    ``writing``.  Cancellation is checked between steps, every ~2 s of audio during
    analysis and every 0.1 s during long native calls.
    """

    type = "voice_cloning"
    name = "pyworld:world-voice-conversion"

    def __init__(self, tts: PiperEngine | None = None, *, model_dir: Path | str | None = None) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            tts: the text-to-speech engine for text jobs (share the processor's "tts"
                engine); a private one is created when None.
            model_dir: passed to a private PiperEngine.
        """
        self.tts = tts if tts is not None else PiperEngine(model_dir)
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` succeeded."""
        return self._loaded

    def load(self) -> None:
        """Import pyworld/numpy and locate ffmpeg (no model files).  The TTS engine is
        started on the first text job.  Idempotent.

        Raises:
            EngineError: pyworld, numpy or ffmpeg is missing.
        """
        with self._lock:
            if self._loaded:
                return
            missing = pyworld_missing()
            if missing:
                raise EngineError("; ".join(missing))
            import numpy  # noqa: F401
            import pyworld  # noqa: F401

            ffmpeg_exe()
            self._loaded = True

    def close(self) -> None:
        """Close the TTS engine (shared engines reload on their next use).  Idempotent."""
        self.tts.close()
        self._loaded = False

    def run(self, ctx: EngineContext) -> EngineResult:
        """Convert the text or ``input_file`` to the reference voice; see the class docstring.

        Raises:
            InvalidInput: missing/unreadable/too short/too long reference, no text and no
                input_file, undecodable input, no voiced speech, bad language/text.
            JobCancelled: ``ctx.should_stop()`` became True.
            EngineError: pyworld/ffmpeg/TTS failure.
        """
        import numpy as np

        ctx.check_stop()
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        started = time.monotonic()
        params = ctx.parameters or {}
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
        use_text = bool(text and text.strip())
        reference_path = input_path(ctx, "reference_file")
        assert reference_path is not None
        ref_info = probe_media(reference_path, "reference_file")
        if not ref_info.has_audio:
            raise InvalidInput(f"reference_file {reference_path.name!r} has no audio stream")
        check_duration(ctx, ref_info.duration, f"reference_file {reference_path.name!r}")
        source_path: Path | None = None
        source_rate = SAMPLE_RATE
        if not use_text:
            source_path = input_path(ctx, "input_file", required=False)
            if source_path is None:
                raise InvalidInput("voice cloning needs parameter 'text' or a source recording in field 'input_file'")
            src_info = probe_media(source_path, "input_file")
            if not src_info.has_audio:
                raise InvalidInput(f"input_file {source_path.name!r} has no audio stream")
            check_duration(ctx, src_info.duration, f"input_file {source_path.name!r}")
            source_rate = src_info.audio_rate or SAMPLE_RATE

        tmp = Path(tempfile.mkdtemp(prefix=".voice-", dir=work_dir))
        try:
            ctx.progress(0, "analyzing")
            reference = decode_audio(reference_path, ctx, SAMPLE_RATE, field="reference_file", tmp_dir=tmp)
            ref_seconds = reference.size / SAMPLE_RATE
            if ref_seconds < MIN_REFERENCE_SECONDS:
                raise InvalidInput(
                    f"reference_file {reference_path.name!r} has {ref_seconds:.1f} s of audio; "
                    f"at least {MIN_REFERENCE_SECONDS:g} s are needed"
                )
            check_duration(ctx, ref_seconds, f"reference_file {reference_path.name!r}")
            if use_text:
                assert isinstance(text, str)
                tts_ctx = child_context(
                    ctx,
                    tmp / "tts",
                    2,
                    30,
                    parameters={"text": text, "language": params.get("language") or "en"},
                    stage="synthesizing",
                )
                spoken = self.tts.run(tts_ctx)
                source_path = spoken.files[0]
                source_rate = SAMPLE_RATE
            assert source_path is not None
            source = decode_audio(source_path, ctx, SAMPLE_RATE, field="input_file", tmp_dir=tmp)
            check_duration(ctx, source.size / SAMPLE_RATE, f"input_file {source_path.name!r}")
            ctx.progress(32, "analyzing")

            ref_features = run_in_thread(lambda: analyse_world(reference, SAMPLE_RATE, ctx.should_stop), ctx, name="world-ref")
            ref_stats = voice_stats(
                ref_features, 0.45 * (ref_info.audio_rate or SAMPLE_RATE), f"reference_file {reference_path.name!r}"
            )
            ctx.progress(45, "analyzing")
            src_features = run_in_thread(lambda: analyse_world(source, SAMPLE_RATE, ctx.should_stop), ctx, name="world-src")
            src_stats = voice_stats(src_features, 0.45 * source_rate, "the source speech")
            ctx.progress(65, "converting")
            ctx.check_stop()
            conversion = convert_voice(src_features, src_stats, ref_stats)
            ctx.log_safe(
                "info",
                f"F0 median {src_stats.f0_median_hz:.0f} Hz -> {ref_stats.f0_median_hz:.0f} Hz "
                f"(range x{conversion.spread_ratio:.2f}), spectral warp {conversion.warp:.3f}",
            )
            output = run_in_thread(
                lambda: synthesise_world(conversion.f0, conversion.sp, src_features.ap, SAMPLE_RATE), ctx, name="world-synth"
            )
            output = _match_level(output, source)
            ctx.progress(90, "writing")
            out_features_f0 = run_in_thread(lambda: _f0_track(output, SAMPLE_RATE), ctx, name="world-measure")
            target = work_dir / "cloned.wav"
            duration = write_wav(target, output.astype(np.float32), SAMPLE_RATE)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        out_voiced = out_features_f0[out_features_f0 > 0]
        out_median = float(np.median(out_voiced)) if out_voiced.size else 0.0
        out_range = [round(float(v), 1) for v in np.percentile(out_voiced, [10, 90])] if out_voiced.size else [0.0, 0.0]
        meta: dict[str, Any] = {
            "f0_median_hz": {
                "reference": round(ref_stats.f0_median_hz, 1),
                "source": round(src_stats.f0_median_hz, 1),
                "output": round(out_median, 1),
            },
            "f0_range_hz": {
                "reference": [round(ref_stats.f0_p10_hz, 1), round(ref_stats.f0_p90_hz, 1)],
                "source": [round(src_stats.f0_p10_hz, 1), round(src_stats.f0_p90_hz, 1)],
                "output": out_range,
            },
            "spectral_warp": round(conversion.warp, 3),
            "duration_seconds": round(duration, 3),
            "source": "text" if use_text else "recording",
        }
        elapsed = time.monotonic() - started
        ctx.log_safe("info", f"converted {duration:.1f} s of speech in {elapsed:.1f} s (RTF {elapsed / max(duration, 1e-6):.2f})")
        ctx.progress(100, "writing")
        return EngineResult(files=[target], meta=meta)


def _f0_track(samples: Any, sample_rate: int) -> FloatArray:
    """F0 per 5 ms frame (DIO + StoneMask), 0 where unvoiced."""
    import numpy as np
    import pyworld

    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, times = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=FRAME_PERIOD_MS)
    result: FloatArray = pyworld.stonemask(x, f0, times, sample_rate)
    return result
