from __future__ import annotations

# Voice cloning (``voice_cloning``): a text or recording re-voiced in a reference speaker's
# voice with the WORLD vocoder (no neural model).
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commands.job_parameters import VoiceCloningParameters
from processors.engines.base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    prepare_work_dir,
)
from processors.engines.media import (
    check_duration,
    child_context,
    decode_audio,
    ffmpeg_exe,
    input_path,
    probe_media,
    run_in_thread,
    write_wav,
)
from processors.engines.tts import PiperEngine
from processors.engines.voice.conversion import convert_voice, match_level
from processors.engines.voice.world import (
    MIN_REFERENCE_SECONDS,
    SAMPLE_RATE,
    VoiceStats,
    analyse_world,
    f0_track,
    pyworld_missing,
    synthesise_world,
    voice_stats,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    Samples = npt.NDArray[np.float32]

__all__ = ["VoiceCloningEngine"]


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
            EngineCancelled: ``ctx.should_stop()`` became True.
            EngineError: pyworld/ffmpeg/TTS failure.
        """
        ctx.check_stop()
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        started = time.monotonic()
        text, language = voice_options(ctx)
        inputs = _check_inputs(ctx, use_text=text is not None)
        tmp = Path(tempfile.mkdtemp(prefix=".voice-", dir=work_dir))
        try:
            ctx.progress(0, "analyzing")
            reference, source, source_rate = self._decode(ctx, inputs, text, language, tmp)
            outcome = _convert(ctx, inputs, reference, source, source_rate, work_dir / "cloned.wav")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = outcome.meta(use_text=text is not None)
        duration = outcome.duration
        elapsed = time.monotonic() - started
        ctx.log_safe("info", f"converted {duration:.1f} s of speech in {elapsed:.1f} s (RTF {elapsed / max(duration, 1e-6):.2f})")
        ctx.progress(100, "writing")
        return EngineResult(files=[outcome.target], meta=meta)

    def _decode(
        self, ctx: EngineContext, inputs: _Inputs, text: str | None, language: str, tmp: Path
    ) -> tuple[Samples, Samples, float]:
        """The reference and the source (the text spoken first, when given) as samples at
        ``SAMPLE_RATE``, and the source's own rate (for its band limit).

        Raises:
            InvalidInput: the reference is too short; an input is over the duration limit.
        """
        reference_path = inputs.reference_path
        reference = decode_audio(reference_path, ctx, SAMPLE_RATE, field="reference_file", tmp_dir=tmp)
        ref_seconds = reference.size / SAMPLE_RATE
        if ref_seconds < MIN_REFERENCE_SECONDS:
            raise InvalidInput(
                f"reference_file {reference_path.name!r} has {ref_seconds:.1f} s of audio; "
                f"at least {MIN_REFERENCE_SECONDS:g} s are needed"
            )
        check_duration(ctx, ref_seconds, f"reference_file {reference_path.name!r}")
        source_path, source_rate = inputs.source_path, inputs.source_rate
        if text is not None:
            tts_ctx = child_context(
                ctx, tmp / "tts", 2, 30, parameters={"text": text, "language": language}, stage="synthesizing"
            )
            source_path, source_rate = self.tts.run(tts_ctx).files[0], SAMPLE_RATE
        assert source_path is not None
        source = decode_audio(source_path, ctx, SAMPLE_RATE, field="input_file", tmp_dir=tmp)
        check_duration(ctx, source.size / SAMPLE_RATE, f"input_file {source_path.name!r}")
        ctx.progress(32, "analyzing")
        return reference, source, source_rate


def voice_options(ctx: EngineContext) -> tuple[str | None, str]:
    """``(text to speak or None for a recording, its language)`` of a voice_cloning job:
    from ``ctx.validated`` (a :class:`VoiceCloningParameters`) when given, else from the
    raw parameters.  A blank text counts as none; the language defaults to ``"en"``.

    Raises:
        InvalidInput: ``text`` is not a string.
    """
    if isinstance(ctx.validated, VoiceCloningParameters):
        text, language = ctx.validated.text, ctx.validated.language
    else:
        params = ctx.parameters or {}
        text, language = params.get("text"), params.get("language")
        if text is not None and not isinstance(text, str):
            raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
    return (text if text and text.strip() else None), (language or "en")


@dataclass
class _Inputs:
    """A job's checked input files."""

    reference_path: Path
    reference_rate: int
    source_path: Path | None
    source_rate: float


def _check_inputs(ctx: EngineContext, *, use_text: bool) -> _Inputs:
    """The reference (and, without text, the source recording): present, with audio,
    within the duration limit.

    Raises:
        InvalidInput: a file is missing, unreadable, silent or too long.
    """
    reference_path = input_path(ctx, "reference_file")
    assert reference_path is not None
    ref_info = probe_media(reference_path, "reference_file")
    if not ref_info.has_audio:
        raise InvalidInput(f"reference_file {reference_path.name!r} has no audio stream")
    check_duration(ctx, ref_info.duration, f"reference_file {reference_path.name!r}")
    if use_text:
        return _Inputs(reference_path, ref_info.audio_rate, None, SAMPLE_RATE)
    source_path = input_path(ctx, "input_file", required=False)
    if source_path is None:
        raise InvalidInput("voice cloning needs parameter 'text' or a source recording in field 'input_file'")
    src_info = probe_media(source_path, "input_file")
    if not src_info.has_audio:
        raise InvalidInput(f"input_file {source_path.name!r} has no audio stream")
    check_duration(ctx, src_info.duration, f"input_file {source_path.name!r}")
    return _Inputs(reference_path, ref_info.audio_rate, source_path, src_info.audio_rate or SAMPLE_RATE)


@dataclass
class _Outcome:
    """What a conversion produced: the written file and the figures for the meta."""

    target: Path
    duration: float
    reference: VoiceStats
    source: VoiceStats
    warp: float
    output_f0: FloatArray

    def meta(self, *, use_text: bool) -> dict[str, Any]:
        """The job's meta (see :class:`VoiceCloningEngine`)."""
        import numpy as np

        voiced = self.output_f0[self.output_f0 > 0]
        median = float(np.median(voiced)) if voiced.size else 0.0
        out_range = [round(float(v), 1) for v in np.percentile(voiced, [10, 90])] if voiced.size else [0.0, 0.0]
        ref, src = self.reference, self.source
        return {
            "f0_median_hz": {
                "reference": round(ref.f0_median_hz, 1),
                "source": round(src.f0_median_hz, 1),
                "output": round(median, 1),
            },
            "f0_range_hz": {
                "reference": [round(ref.f0_p10_hz, 1), round(ref.f0_p90_hz, 1)],
                "source": [round(src.f0_p10_hz, 1), round(src.f0_p90_hz, 1)],
                "output": out_range,
            },
            "spectral_warp": round(self.warp, 3),
            "duration_seconds": round(self.duration, 3),
            "source": "text" if use_text else "recording",
        }


def _convert(
    ctx: EngineContext, inputs: _Inputs, reference: Samples, source: Samples, source_rate: float, target: Path
) -> _Outcome:
    """Analyse both voices, convert the source, write ``target`` and measure its F0.

    Raises:
        InvalidInput: too little voiced speech in either recording.
        EngineCancelled: cancelled at a checkpoint or during a native call.
    """
    import numpy as np

    ref_features = run_in_thread(lambda: analyse_world(reference, SAMPLE_RATE, ctx.should_stop), ctx, name="world-ref")
    ref_stats = voice_stats(
        ref_features, 0.45 * (inputs.reference_rate or SAMPLE_RATE), f"reference_file {inputs.reference_path.name!r}"
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
    output = match_level(output, source)
    ctx.progress(90, "writing")
    output_f0 = run_in_thread(lambda: f0_track(output, SAMPLE_RATE), ctx, name="world-measure")
    duration = write_wav(target, output.astype(np.float32), SAMPLE_RATE)
    return _Outcome(target, duration, ref_stats, src_stats, conversion.warp, output_f0)
