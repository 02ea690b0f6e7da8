from __future__ import annotations

# Dubbing's speech track: every segment's translation spoken by the TTS engine, pitch
# matched to the original speaker (WORLD vocoder, optional), fitted into its slot and
# mixed over the ducked original.
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.engines.base import EngineContext, InvalidInput
from processors.engines.media import child_context, decode_audio, run_in_thread, time_stretch
from processors.engines.tts import PiperEngine

from .mixing import (
    DUCK_GAIN,
    DUCK_RAMP_S,
    MIX_RATE,
    cut_with_fade,
    duck,
    limit_peak,
    match_rms,
    slot_samples,
    tempo_for_slot,
    trim_silence,
)
from .segments import DubSegment, Translation

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = ["match_pitch", "render_dub", "speaker_stats"]


def speaker_stats(ctx: EngineContext, original: FloatArray, segments: list[DubSegment]) -> Any:
    """WORLD F0 statistics of the original speech, or None without pyworld/voicing."""
    from processors.engines.voice import analyse_world, pyworld_missing, voice_stats

    if pyworld_missing():
        ctx.log_safe("warning", "pyworld is not installed: the synthetic voice keeps its own pitch")
        return None
    import numpy as np

    parts = [original[int(s.start * MIX_RATE) : int(s.end * MIX_RATE)] for s in segments]
    speech = np.concatenate(parts)[: 60 * MIX_RATE] if parts else original[: 60 * MIX_RATE]
    try:
        features = run_in_thread(lambda: analyse_world(speech, MIX_RATE, ctx.should_stop), ctx, name="world-speaker")
        return voice_stats(features, 0.45 * MIX_RATE, "the original speech")
    except InvalidInput:
        ctx.log_safe("warning", "too little voiced speech to match the speaker's pitch")
        return None


def match_pitch(ctx: EngineContext, audio: FloatArray, target_stats: Any) -> FloatArray:
    """Move a synthetic segment's F0 median/range to ``target_stats`` (no envelope change)."""
    import numpy as np

    from processors.engines.voice import analyse_world, convert_voice, synthesise_world, voice_stats

    if audio.size < int(0.3 * MIX_RATE):
        return audio
    features = run_in_thread(lambda: analyse_world(audio, MIX_RATE, ctx.should_stop), ctx, name="world-tts")
    try:
        own = voice_stats(features, 0.45 * MIX_RATE, "synthetic speech")
    except InvalidInput:
        return audio
    conversion = convert_voice(features, own, target_stats, spectral=False)
    out = run_in_thread(lambda: synthesise_world(conversion.f0, features.sp, features.ap, MIX_RATE), ctx, name="world-synth")
    result: FloatArray = out.astype(np.float32)
    return result


@dataclass
class _Track:
    """The speech track being built: speech samples, the original's gain, the cursor."""

    ctx: EngineContext
    tts: PiperEngine
    translation: Translation
    original: FloatArray
    tmp: Path
    lo: float
    hi: float
    duck_level: float
    voice_stats: Any
    speech: FloatArray = field(init=False)
    gain: FloatArray = field(init=False)
    cursor: int = 0
    voice: str = ""

    def __post_init__(self) -> None:
        import numpy as np

        self.speech = np.zeros(self.original.size, dtype=np.float32)
        self.gain = np.ones(self.original.size, dtype=np.float32)

    def spoken(self, index: int, seg: DubSegment) -> FloatArray:
        """The segment's translation spoken, trimmed and pitch-matched."""
        span, count = self.hi - self.lo, len(self.translation.segments)
        part_lo = self.lo + span * index / count
        result = self.tts.run(
            child_context(
                self.ctx,
                self.tmp / f"tts-{index:04d}",
                part_lo,
                part_lo + span * 0.8 / count,
                parameters={"text": seg.target_text, "language": self.translation.target_language},
                stage="synthesizing",
            )
        )
        self.voice = str(result.meta.get("voice", self.voice))
        audio = trim_silence(decode_audio(result.files[0], self.ctx, MIX_RATE, field="tts", tmp_dir=self.tmp))
        if self.voice_stats is not None:
            audio = match_pitch(self.ctx, audio, self.voice_stats)
        return audio

    def place(self, index: int, seg: DubSegment, audio: FloatArray) -> bool:
        """Fit ``audio`` into the segment's slot and add it, ducking the original;
        False when the segment starts past the end (skipped)."""
        segments, total = self.translation.segments, self.original.size
        start = max(int(seg.start * MIX_RATE), self.cursor)
        if start >= total:
            self.ctx.log_safe("warning", f"segment {index} ({seg.start:.1f} s) does not fit before the end; skipped")
            return False
        next_start = int(segments[index + 1].start * MIX_RATE) if index + 1 < len(segments) else total
        factor = tempo_for_slot(audio.size, slot_samples(start, next_start))
        if factor > 1.0:
            audio = time_stretch(audio, MIX_RATE, factor, self.ctx, self.tmp)
        if start + audio.size > total:
            audio = cut_with_fade(audio, total - start)
            self.ctx.log_safe("warning", f"segment {index}: the translation is too long for its slot; its end was cut")
        audio = match_rms(audio, self.original[int(seg.start * MIX_RATE) : int(seg.end * MIX_RATE)])
        end = start + audio.size
        self.speech[start:end] += audio
        # Duck under both the new speech and the original speech it replaces.
        ramp = max(1, int(DUCK_RAMP_S * MIX_RATE))
        duck(self.gain, min(start, int(seg.start * MIX_RATE)), max(end, int(seg.end * MIX_RATE)), self.duck_level, ramp)
        self.cursor = end
        return True


def render_dub(
    ctx: EngineContext,
    tts: PiperEngine,
    source: Path,
    translation: Translation,
    tmp: Path,
    lo: float,
    hi: float,
    *,
    match_voice: bool = True,
    duck_level: float = DUCK_GAIN,
) -> tuple[FloatArray, str]:
    """Speak every segment's translation, fit it into its slot and mix it over the
    ducked original.

    Each segment is placed at its start (or after the previous one, if that ran
    over); when its speech is longer than the time up to the next segment (or the end)
    it is sped up by at most ``MAX_TEMPO`` (ffmpeg atempo), and what still does not fit
    at the very end is cut with a fade.  Speech is scaled to the original segment's RMS.

    Returns:
        (mono float32 samples at ``MIX_RATE``, as long as the input; the voice name).
    """
    original = decode_audio(source, ctx, MIX_RATE, field="input_file", tmp_dir=tmp)
    segments = translation.segments
    stats = speaker_stats(ctx, original, segments) if match_voice else None
    track = _Track(ctx, tts, translation, original, tmp, lo, hi, duck_level, stats)
    for index, seg in enumerate(segments):
        ctx.check_stop()
        if not seg.target_text.strip():
            continue
        if track.place(index, seg, track.spoken(index, seg)):
            ctx.progress(lo + (hi - lo) * (index + 1) / len(segments), "synthesizing")
    ctx.progress(hi, "mixing")
    return limit_peak(original * track.gain + track.speech), track.voice
