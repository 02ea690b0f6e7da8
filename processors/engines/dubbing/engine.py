from __future__ import annotations

# Dubbing: speech in one language -> the same timing in another language.
#
# Pipeline: Whisper (the shared WhisperEngine) transcribes the input into timed
# segments -> long segments are split at sentence ends/pauses using word timestamps ->
# each segment is translated (Apertium as a child process for en/es/fr -> es/fr, en<->fr
# pivoting through es; Whisper's own "translate" task for anything -> en) -> each
# translation is spoken (the shared PiperEngine: Piper for English, espeak-ng otherwise),
# optionally pitch-matched to the original speaker with the WORLD vocoder, time-fitted
# into its original slot (ffmpeg atempo) and level-matched -> mixed over the original,
# which is ducked under the new speech -> WAV, or for video input the video with the new
# audio track (video stream copied).
#
# Apertium, espeak-ng and Piper are GPL programs: they run as child processes only.
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processors.engines.base import Engine, EngineContext, EngineResult, InvalidInput, atomic_output, prepare_work_dir
from processors.engines.media import MediaInfo, check_duration, child_context, ffmpeg_exe, input_path, probe_media, write_wav
from processors.engines.stt import WhisperEngine
from processors.engines.tts import PiperEngine

from . import mux as muxing
from .apertium import apertium_translate
from .languages import APERTIUM_ROUTES, unsupported_pair_reason
from .mixing import DUCK_GAIN, MIX_RATE
from .options import DubbingOptions
from .render import render_dub
from .segments import DubSegment, Translation, assign_source_texts, split_segments

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = ["DubbingEngine"]


class DubbingEngine(Engine):
    """Dubbing (``dubbing``): re-voice audio or video in another language.

    Job parameters:
        target_language: required, ``"en"``, ``"es"`` or ``"fr"`` (locale tags accepted).
        source_language: optional; detected by Whisper when absent.
        match_voice: optional bool (default True): move the synthetic voice's pitch to
            the original speaker's median and range (WORLD vocoder; needs pyworld).
        original_volume: optional 0..1 (default 0.15): level of the original audio under
            the new speech (1.0 elsewhere).

    Input: ``input_file``, audio or video with an audio stream.

    Output files in ``ctx.work_dir``:
        audio input: ``dubbed.wav`` (16-bit mono, 22050 Hz), ``dubbing.json`` (the meta);
        video input: ``dubbed.mp4`` (video stream copied, new AAC audio), then
        ``dubbed.wav`` and ``dubbing.json``.
    The output lasts as long as the input.

    Meta::

        {"source_language": str, "target_language": str,
         "segments": [{"start": s, "end": s, "source_text": str, "target_text": str}],
         "translation": "apertium:eng-spa" | "whisper:translate" | ...,
         "voice": "espeak-ng:es" | "en_US-joe-medium", "duration_seconds": float}

    Progress stages: ``transcribing``, ``translating``, ``synthesizing``, ``mixing``,
    ``muxing``.

    Raises (from :meth:`run`): InvalidInput for an unreadable input, no audio, an
    unsupported pair (message from :func:`unsupported_pair_reason`), no speech found, or
    an input longer than ``parameters["_max_input_duration_s"]``.  The options come from
    ``ctx.validated`` (a :class:`commands.job_parameters.DubbingParameters`) when the
    processor gives it, else from ``ctx.parameters`` (see :class:`DubbingOptions`).
    """

    type = "dubbing"
    name = "whisper+apertium+piper/espeak-ng"

    def __init__(
        self,
        stt: WhisperEngine | None = None,
        tts: PiperEngine | None = None,
        *,
        model_dir: Path | str | None = None,
    ) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            stt, tts: the processor's shared Whisper and Piper engines (private ones are
                created when None, with ``model_dir``).
        """
        folder = Path(model_dir) if model_dir is not None else Path("models")
        self.stt = stt if stt is not None else WhisperEngine(folder)
        self.tts = tts if tts is not None else PiperEngine(folder)
        self._loaded = False
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` succeeded."""
        return self._loaded

    def load(self) -> None:
        """Load Whisper (shared; a no-op if already loaded) and locate ffmpeg.  Piper is
        started by the first English job.  Idempotent.

        Raises:
            ModelMissing / EngineError: Whisper or ffmpeg is unavailable.
        """
        with self._lock:
            if self._loaded:
                return
            ffmpeg_exe()
            self.stt.load()
            self._loaded = True

    def close(self) -> None:
        """Close the Whisper and Piper engines (shared ones reload on next use)."""
        self.stt.close()
        self.tts.close()
        self._loaded = False

    # -- job -------------------------------------------------------------------------------

    def run(self, ctx: EngineContext) -> EngineResult:
        """Dub ``input_file`` into ``target_language``; see the class docstring."""
        ctx.check_stop()
        options = DubbingOptions.of(ctx)
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        source = input_path(ctx, "input_file")
        assert source is not None
        info = probe_media(source, "input_file")
        if not info.has_audio:
            raise InvalidInput(f"input_file {source.name!r} has no audio stream to dub")
        check_duration(ctx, info.duration, f"input_file {source.name!r}")
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=".dubbing-", dir=work_dir))
        try:
            translation, files, voice = self._dub(ctx, options, source, info, work_dir, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = translation.meta()
        meta.update(translation=translation.method, voice=voice, duration_seconds=round(translation.duration, 3))
        meta_path = work_dir / "dubbing.json"
        with atomic_output(meta_path, "w", encoding="utf-8") as handle:
            json.dump(meta, handle, ensure_ascii=False, indent=2)
        files.append(meta_path)
        elapsed = time.monotonic() - started
        ctx.log_safe(
            "info",
            f"dubbed {translation.duration:.1f} s {translation.source_language}->{translation.target_language} "
            f"({len(translation.segments)} segments) in {elapsed:.1f} s (RTF {elapsed / max(translation.duration, 1e-6):.2f})",
        )
        ctx.progress(100, "muxing" if info.has_video else "mixing")
        return EngineResult(files=files, meta=meta)

    def _dub(
        self, ctx: EngineContext, options: DubbingOptions, source: Path, info: MediaInfo, work_dir: Path, tmp: Path
    ) -> tuple[Translation, list[Path], str]:
        """Translate, render and write ``dubbed.wav`` (and ``dubbed.mp4`` for video).

        Returns:
            (the translation, the files written with the main one first, the voice).
        """
        translation = self.translate_media(ctx, source, options.target, options.source, tmp, 0, 40)
        mixed, voice = self.render_dub(
            ctx, source, translation, tmp, 40, 92, match_voice=options.match_voice, duck=options.original_volume
        )
        ctx.progress(93, "mixing")
        wav = work_dir / "dubbed.wav"
        write_wav(wav, mixed, MIX_RATE)
        files = [wav]
        if info.has_video:
            ctx.progress(95, "muxing")
            mp4 = work_dir / "dubbed.mp4"
            self.mux(ctx, source, info, mp4, audio=[(wav, translation.target_language)], tmp_dir=tmp)
            files.insert(0, mp4)
        return translation, files, voice

    # -- steps shared with video_translation -------------------------------------------------

    def translate_media(
        self,
        ctx: EngineContext,
        source: Path,
        target: str,
        source_language: str | None,
        tmp: Path,
        lo: float,
        hi: float,
        *,
        needs_speech: bool = True,
    ) -> Translation:
        """Transcribe ``source`` with Whisper and translate every segment into ``target``.

        Progress goes from ``lo`` to ``hi``.

        Raises:
            InvalidInput: the detected language cannot be translated into ``target``, or
                no speech was found.
        """
        span = hi - lo
        self.load()
        segments, detected, duration = self._transcribe(
            ctx, source, target, source_language, tmp, lo, lo + span * 0.6, needs_speech
        )
        ctx.check_stop()
        if target == "en":
            segments = self._whisper_translate(ctx, source, detected, segments, tmp, lo + span * 0.6, hi)
            method = "whisper:translate"
        else:
            ctx.progress(lo + span * 0.6, "translating")
            route = APERTIUM_ROUTES[(detected, target)]
            texts = self.apertium_translate(ctx, [s.source_text for s in segments], route)
            for seg, text in zip(segments, texts, strict=True):
                seg.target_text = text
            method = "apertium:" + "+".join(route)
        ctx.progress(hi, "translating")
        return Translation(detected, target, segments, duration, method)

    def _transcribe(
        self,
        ctx: EngineContext,
        source: Path,
        target: str,
        source_language: str | None,
        tmp: Path,
        lo: float,
        hi: float,
        needs_speech: bool,
    ) -> tuple[list[DubSegment], str, float]:
        """Whisper's segments of ``source`` (split for dubbing), its language and duration.

        Raises:
            InvalidInput: the detected language cannot go into ``target``; no speech.
        """
        stt_params: dict[str, Any] = {"language": source_language} if source_language else {}
        transcribed = self.stt.run(
            child_context(
                ctx, tmp / "stt", lo, hi, parameters=stt_params, input_files={"input_file": source}, stage="transcribing"
            )
        )
        detected = str(transcribed.meta.get("language") or source_language or "")
        duration = float(transcribed.meta.get("duration_seconds") or 0.0)
        if source_language is None:
            reason = unsupported_pair_reason(detected, target, needs_speech=needs_speech)
            if reason is not None:
                raise InvalidInput(f"detected language {detected!r}: {reason}")
        segments = split_segments(list(transcribed.meta.get("segments") or []))
        if not segments:
            raise InvalidInput(f"no speech was found in input_file {source.name!r}")
        ctx.log_safe("info", f"transcribed {len(segments)} segment(s) of {detected} speech")
        return segments, detected, duration

    def _whisper_translate(
        self, ctx: EngineContext, source: Path, detected: str, segments: list[DubSegment], tmp: Path, lo: float, hi: float
    ) -> list[DubSegment]:
        """English segments from Whisper's translate task, each with the source texts it
        overlaps most.

        Raises:
            InvalidInput: Whisper found nothing to translate.
        """
        translated = self.stt.run(
            child_context(
                ctx,
                tmp / "stt-translate",
                lo,
                hi,
                parameters={"language": detected, "task": "translate"},
                input_files={"input_file": source},
                stage="translating",
            )
        )
        english = [s for s in split_segments(list(translated.meta.get("segments") or [])) if s.source_text]
        if not english:
            raise InvalidInput(f"Whisper found nothing to translate in input_file {source.name!r}")
        for seg in english:
            seg.target_text = seg.source_text
        assign_source_texts(english, segments)
        return english

    def apertium_translate(self, ctx: EngineContext, texts: list[str], route: tuple[str, ...]) -> list[str]:
        """See :func:`processors.engines.dubbing.apertium.apertium_translate`."""
        return apertium_translate(ctx, texts, route)

    def render_dub(
        self,
        ctx: EngineContext,
        source: Path,
        translation: Translation,
        tmp: Path,
        lo: float,
        hi: float,
        *,
        match_voice: bool = True,
        duck: float = DUCK_GAIN,
    ) -> tuple[FloatArray, str]:
        """Speak, fit and mix every segment's translation with this engine's TTS; see
        :func:`processors.engines.dubbing.render.render_dub`."""
        return render_dub(ctx, self.tts, source, translation, tmp, lo, hi, match_voice=match_voice, duck_level=duck)

    def mux(
        self,
        ctx: EngineContext,
        video: Path,
        info: MediaInfo,
        target: Path,
        *,
        audio: list[tuple[Path, str]],
        keep_original_audio: str | None = None,
        subtitles: tuple[Path, str] | None = None,
        tmp_dir: Path,
    ) -> None:
        """Write an MP4 of ``video``'s picture with new tracks; see
        :func:`processors.engines.dubbing.mux.mux`."""
        muxing.mux(
            ctx, video, info, target, audio=audio, keep_original_audio=keep_original_audio, subtitles=subtitles, tmp_dir=tmp_dir
        )
