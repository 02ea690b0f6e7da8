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
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commands.job_parameters import LANGUAGE_CODE

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    atomic_output,
    prepare_work_dir,
)
from .media import (
    MediaInfo,
    check_duration,
    child_context,
    decode_audio,
    ffmpeg_exe,
    input_path,
    last_line,
    probe_media,
    run_ffmpeg,
    run_process,
    time_stretch,
    write_wav,
)
from .stt import WHISPER_LANGUAGES, WhisperEngine
from .tts import PiperEngine, espeak_path

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = [
    "APERTIUM_ROUTES",
    "DubSegment",
    "DubbingEngine",
    "Translation",
    "apertium_path",
    "dubbing_target_languages",
    "fraction_parameter",
    "normalize_language",
    "supported_pair",
    "unsupported_pair_reason",
]

MIX_RATE = 22050
"""Sample rate (Hz) of the mixed, mono output audio."""

APERTIUM_ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("en", "es"): ("eng-spa",),
    ("es", "fr"): ("es-fr",),
    ("fr", "es"): ("fr-es",),
    ("en", "fr"): ("eng-spa", "es-fr"),
}
"""Apertium modes (``apertium -u <mode>``) per (source, target) pair into es/fr.
Translation into English always uses Whisper's ``translate`` task instead."""

APERTIUM_TARGETS = ("es", "fr")
_APERTIUM_HINT = "apt-get install apertium apertium-eng-spa apertium-fr-es"
_LANG_RE = LANGUAGE_CODE  # one definition: commands.job_parameters
_SENTENCE_END = re.compile(r"[.!?;…]['\"”’)\]]*$")
MAX_SEGMENT_SECONDS = 12.0
MAX_TEMPO = 2.0
DUCK_GAIN = 0.15
DUCK_RAMP_S = 0.15


# -- languages and pairs -------------------------------------------------------------------


def normalize_language(value: Any, name: str) -> str | None:
    """Map a language parameter (``"es"``, ``"es-ES"``, ``"fr_FR"``) to its lower-case
    base code; None for absent/``""``/``"auto"``.

    Raises:
        InvalidInput: not a string or not shaped like a language code.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter {name!r} must be a language code string, got {type(value).__name__}")
    code = value.strip()
    if code.lower() in ("", "auto", "detect"):
        return None
    if not _LANG_RE.match(code):
        raise InvalidInput(f"parameter {name!r} must be a language code like 'es' or 'fr-FR', got {value!r}")
    return re.split(r"[-_]", code.lower(), maxsplit=1)[0]


def apertium_path() -> str | None:
    """Path of the ``apertium`` program, or None."""
    return shutil.which("apertium")


def _apertium_modes_dir(binary: str) -> Path:
    return Path(binary).resolve().parent.parent / "share" / "apertium" / "modes"


def apertium_modes() -> set[str]:
    """Installed Apertium modes (file check only, e.g. ``{"eng-spa", "es-fr", ...}``)."""
    binary = apertium_path()
    if binary is None:
        return set()
    folder = _apertium_modes_dir(binary)
    if not folder.is_dir():
        return set()
    return {p.name[: -len(".mode")] for p in folder.glob("*.mode")}


def unsupported_pair_reason(source: str | None, target: str | None, *, needs_speech: bool = True) -> str | None:
    """Why dubbing/translating ``source`` -> ``target`` cannot run here, or None if it can.

    Cheap (file checks only), for refusing a job at submission.  ``source`` None means
    "detect": the pair is then checked again once Whisper has detected the language.

    Supported: anything Whisper knows -> ``en`` (Whisper translate; spoken by Piper), and
    ``en``/``es``/``fr`` -> ``es``/``fr`` (Apertium; spoken by espeak-ng).  German and other
    targets are not supported (no Apertium pair installed).

    Args:
        needs_speech: also require the target language's TTS voice (dubbing; False for
            subtitles only).
    """
    try:
        src = normalize_language(source, "source_language")
        tgt = normalize_language(target, "target_language")
    except InvalidInput as exc:
        return exc.message
    if tgt is None:
        return "parameter 'target_language' is required (e.g. 'es')"
    if src is not None and src not in WHISPER_LANGUAGES:
        return f"source language {src!r} is not one Whisper can transcribe"
    if src is not None and src == tgt:
        return f"source and target language are both {tgt!r}: nothing to translate"
    if tgt == "en":
        if needs_speech:
            from .models import piper_voice_status

            missing = piper_voice_status().missing
            if missing:
                return f"English speech needs the Piper voice: {'; '.join(missing)}"
        return None
    if tgt not in APERTIUM_TARGETS:
        return (
            f"translation into {tgt!r} is not supported: targets are 'en' (from any language), 'es' and 'fr' (from en, es or fr)"
        )
    if src is not None and (src, tgt) not in APERTIUM_ROUTES:
        return f"translation {src}->{tgt} is not supported: into {tgt!r} only from en, es or fr (Apertium)"
    if apertium_path() is None:
        return f"translation into {tgt!r} needs Apertium, which is not installed ({_APERTIUM_HINT})"
    modes = apertium_modes()
    routes = [APERTIUM_ROUTES[(src, tgt)]] if src is not None else [r for (s, t), r in APERTIUM_ROUTES.items() if t == tgt]
    missing_modes = sorted({m for route in routes for m in route} - modes)
    if missing_modes:
        return f"Apertium mode(s) {', '.join(missing_modes)} are not installed ({_APERTIUM_HINT})"
    if needs_speech and espeak_path() is None:
        return f"speech in {tgt!r} needs espeak-ng, which is not installed (apt-get install espeak-ng)"
    return None


def supported_pair(source: str | None, target: str | None, *, needs_speech: bool = True) -> bool:
    """True when ``source`` -> ``target`` can be dubbed here (see
    :func:`unsupported_pair_reason` for the rules and the message when it cannot)."""
    return unsupported_pair_reason(source, target, needs_speech=needs_speech) is None


def dubbing_target_languages(needs_speech: bool = True) -> list[str]:
    """Target languages usable now (cheap checks), e.g. ``["en", "es", "fr"]``."""
    return [t for t in ("en", *APERTIUM_TARGETS) if supported_pair(None, t, needs_speech=needs_speech)]


# -- segments ------------------------------------------------------------------------------


@dataclass
class DubSegment:
    """One timed piece of speech.

    Attributes:
        start, end: seconds from the start of the input.
        source_text: what was said (Whisper transcript).
        target_text: its translation.
    """

    start: float
    end: float
    source_text: str
    target_text: str = ""


@dataclass
class Translation:
    """Result of :meth:`DubbingEngine.translate_media`.

    Attributes:
        source_language, target_language: base codes (``"en"``, ``"es"``).
        segments: timed segments in order, with both texts.
        duration: input audio duration in seconds.
        method: ``"apertium:eng-spa"``, ``"apertium:eng-spa+es-fr"`` or ``"whisper:translate"``.
    """

    source_language: str
    target_language: str
    segments: list[DubSegment]
    duration: float
    method: str

    def meta(self) -> dict[str, Any]:
        """The shared dubbing/video_translation meta."""
        return {
            "source_language": self.source_language,
            "target_language": self.target_language,
            "segments": [
                {
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "source_text": s.source_text,
                    "target_text": s.target_text,
                }
                for s in self.segments
            ],
        }


def split_segments(segments: list[dict[str, Any]], max_seconds: float = MAX_SEGMENT_SECONDS) -> list[DubSegment]:
    """Turn Whisper segments into dubbing segments of at most ~``max_seconds``.

    A segment with word timestamps is cut after words that end a sentence (``. ! ? ;``)
    when both sides last at least 1 s, then pieces still longer than ``max_seconds`` are
    cut at their longest pause between words.  Segments without words are kept whole.
    """
    out: list[DubSegment] = []
    for seg in segments:
        text = " ".join(str(seg.get("text", "")).split())
        if not text:
            continue
        words = [w for w in seg.get("words") or [] if str(w.get("word", "")).strip()]
        if not words:
            out.append(DubSegment(float(seg["start"]), float(seg["end"]), text))
            continue
        pieces: list[list[dict[str, Any]]] = [[]]
        for i, word in enumerate(words):
            pieces[-1].append(word)
            rest = words[i + 1 :]
            if (
                rest
                and _SENTENCE_END.search(str(word["word"]))
                and float(word["end"]) - float(pieces[-1][0]["start"]) >= 1.0
                and float(rest[-1]["end"]) - float(rest[0]["start"]) >= 1.0
            ):
                pieces.append([])
        final: list[list[dict[str, Any]]] = []
        while pieces:
            piece = pieces.pop(0)
            if len(piece) > 2 and float(piece[-1]["end"]) - float(piece[0]["start"]) > max_seconds:
                gaps = [float(piece[i + 1]["start"]) - float(piece[i]["end"]) for i in range(len(piece) - 1)]
                lo, hi = len(piece) // 4, max(len(piece) // 4 + 1, 3 * len(piece) // 4)
                cut = max(range(lo, hi), key=lambda i: (gaps[i], -abs(i - len(piece) // 2))) + 1
                pieces[:0] = [piece[:cut], piece[cut:]]
                continue
            final.append(piece)
        for piece in final:
            out.append(
                DubSegment(
                    start=float(piece[0]["start"]),
                    end=float(piece[-1]["end"]),
                    source_text=" ".join(str(w["word"]).strip() for w in piece),
                )
            )
    return out


# -- engine --------------------------------------------------------------------------------


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
    an input longer than ``parameters["_max_input_duration_s"]``.
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
        params = ctx.parameters or {}
        target = normalize_language(params.get("target_language"), "target_language")
        source_lang = normalize_language(params.get("source_language"), "source_language")
        reason = unsupported_pair_reason(source_lang, target)
        if reason is not None:
            raise InvalidInput(reason)
        assert target is not None
        original_volume = fraction_parameter(params.get("original_volume", DUCK_GAIN), "original_volume")
        match_voice = params.get("match_voice", True)
        if not isinstance(match_voice, bool):
            raise InvalidInput("parameter 'match_voice' must be true or false")
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
            translation = self.translate_media(ctx, source, target, source_lang, tmp, 0, 40)
            mixed, voice = self.render_dub(ctx, source, translation, tmp, 40, 92, match_voice=match_voice, duck=original_volume)
            ctx.progress(93, "mixing")
            wav = work_dir / "dubbed.wav"
            write_wav(wav, mixed, MIX_RATE)
            files = [wav]
            if info.has_video:
                ctx.progress(95, "muxing")
                mp4 = work_dir / "dubbed.mp4"
                self.mux(ctx, source, info, mp4, audio=[(wav, translation.target_language)], tmp_dir=tmp)
                files.insert(0, mp4)
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
        stt_params: dict[str, Any] = {"language": source_language} if source_language else {}
        transcribed = self.stt.run(
            child_context(
                ctx,
                tmp / "stt",
                lo,
                lo + span * 0.6,
                parameters=stt_params,
                input_files={"input_file": source},
                stage="transcribing",
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
        ctx.check_stop()
        if target == "en":
            translated = self.stt.run(
                child_context(
                    ctx,
                    tmp / "stt-translate",
                    lo + span * 0.6,
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
            _assign_source_texts(english, segments)
            segments = english
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

    def apertium_translate(self, ctx: EngineContext, texts: list[str], route: tuple[str, ...]) -> list[str]:
        """Translate texts through the Apertium modes in ``route`` (one child process per
        mode, all texts at once, one per line).

        Returns:
            one translation per text (``-u``: unknown words pass through unmarked).

        Raises:
            EngineError: Apertium failed or is missing.
        """
        binary = apertium_path()
        if binary is None:
            raise EngineError(f"Apertium is not installed ({_APERTIUM_HINT})")
        lines = [" ".join(t.split()) for t in texts]
        for mode in route:
            status, out, stderr = run_process(
                [binary, "-u", mode],
                ctx,
                what="apertium",
                stdin=("\n".join(lines) + "\n").encode("utf-8"),
                timeout=600,
                capture_stdout=True,
            )
            if status != 0:
                raise EngineError(f"apertium {mode} failed: {last_line(stderr)}")
            result = out.decode("utf-8", "replace").rstrip("\n").split("\n")
            if len(result) != len(lines):  # should not happen; translate one by one
                result = []
                for line in lines:
                    status, out, stderr = run_process(
                        [binary, "-u", mode],
                        ctx,
                        what="apertium",
                        stdin=(line + "\n").encode("utf-8"),
                        timeout=120,
                        capture_stdout=True,
                    )
                    if status != 0:
                        raise EngineError(f"apertium {mode} failed: {last_line(stderr)}")
                    result.append(" ".join(out.decode("utf-8", "replace").split()))
            lines = [_tidy(r) for r in result]
        return lines

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
        """Speak every segment's translation, fit it into its slot and mix it over the
        ducked original.

        Each segment is placed at its start (or after the previous one, if that ran
        over); when its speech is longer than the time up to the next segment (or the end)
        it is sped up by at most ``MAX_TEMPO`` (ffmpeg atempo), and what still does not fit
        at the very end is cut with a fade.  Speech is scaled to the original segment's RMS.

        Returns:
            (mono float32 samples at ``MIX_RATE``, as long as the input; the voice name).
        """
        import numpy as np

        original = decode_audio(source, ctx, MIX_RATE, field="input_file", tmp_dir=tmp)
        total = original.size
        segments = translation.segments
        voice_stats = None
        if match_voice:
            voice_stats = self._speaker_stats(ctx, original, segments)
        speech = np.zeros(total, dtype=np.float32)
        gain = np.ones(total, dtype=np.float32)
        ramp = max(1, int(DUCK_RAMP_S * MIX_RATE))
        cursor = 0
        voice = ""
        span = hi - lo
        for index, seg in enumerate(segments):
            ctx.check_stop()
            if not seg.target_text.strip():
                continue
            part_lo = lo + span * index / len(segments)
            spoken = self.tts.run(
                child_context(
                    ctx,
                    tmp / f"tts-{index:04d}",
                    part_lo,
                    part_lo + span * 0.8 / len(segments),
                    parameters={"text": seg.target_text, "language": translation.target_language},
                    stage="synthesizing",
                )
            )
            voice = str(spoken.meta.get("voice", voice))
            audio = decode_audio(spoken.files[0], ctx, MIX_RATE, field="tts", tmp_dir=tmp)
            audio = _trim_silence(audio)
            if voice_stats is not None:
                audio = self._match_pitch(ctx, audio, voice_stats)
            start = max(int(seg.start * MIX_RATE), cursor)
            if start >= total:
                ctx.log_safe("warning", f"segment {index} ({seg.start:.1f} s) does not fit before the end; skipped")
                continue
            next_start = int(segments[index + 1].start * MIX_RATE) if index + 1 < len(segments) else total
            slot = max(next_start - start, int(0.3 * MIX_RATE))
            if audio.size > slot:
                factor = min(MAX_TEMPO, audio.size / slot)
                audio = time_stretch(audio, MIX_RATE, factor, ctx, tmp)
            if start + audio.size > total:
                keep = total - start
                fade = min(keep, int(0.05 * MIX_RATE))
                audio = audio[:keep].copy()
                if fade:
                    audio[keep - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
                ctx.log_safe("warning", f"segment {index}: the translation is too long for its slot; its end was cut")
            orig_part = original[int(seg.start * MIX_RATE) : int(seg.end * MIX_RATE)]
            audio = _match_rms(audio, orig_part)
            end = start + audio.size
            speech[start:end] += audio
            # Duck under both the new speech and the original speech it replaces.
            _duck(gain, min(start, int(seg.start * MIX_RATE)), max(end, int(seg.end * MIX_RATE)), duck, ramp)
            cursor = end
            ctx.progress(lo + span * (index + 1) / len(segments), "synthesizing")
        ctx.progress(hi, "mixing")
        mixed = original * gain + speech
        peak = float(np.max(np.abs(mixed))) if mixed.size else 0.0
        if peak > 0.98:
            mixed *= 0.98 / peak
        result: FloatArray = mixed.astype(np.float32)
        return result, voice

    def _speaker_stats(self, ctx: EngineContext, original: FloatArray, segments: list[DubSegment]) -> Any:
        """WORLD F0 statistics of the original speech, or None without pyworld/voicing."""
        from .media import run_in_thread
        from .voice import analyse_world, pyworld_missing, voice_stats

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

    def _match_pitch(self, ctx: EngineContext, audio: FloatArray, target_stats: Any) -> FloatArray:
        """Move a synthetic segment's F0 median/range to ``target_stats`` (no envelope change)."""
        import numpy as np

        from .media import run_in_thread
        from .voice import analyse_world, convert_voice, synthesise_world, voice_stats

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
        """Write ``target`` (MP4): the video stream of ``video`` (copied; re-encoded to
        H.264 if it cannot be copied into MP4), the given audio tracks (AAC, first one
        default), optionally the original audio (language ``keep_original_audio``) and
        a soft ``mov_text`` subtitle track.

        Args:
            audio: (WAV path, language code) per new audio track.
            subtitles: (SRT path, language code).
        """
        inputs = ["-i", str(video)]
        maps = ["-map", "0:v:0"]
        meta: list[str] = []
        a_index = 0
        for n, (wav, lang) in enumerate(audio, start=1):
            inputs += ["-i", str(wav)]
            maps += ["-map", f"{n}:a:0"]
            meta += [f"-metadata:s:a:{a_index}", f"language={_iso639_2(lang)}"]
            a_index += 1
        if keep_original_audio is not None and info.has_audio:
            maps += ["-map", "0:a:0"]
            meta += [f"-metadata:s:a:{a_index}", f"language={_iso639_2(keep_original_audio)}"]
            a_index += 1
        if subtitles is not None:
            inputs += ["-i", str(subtitles[0])]
            maps += ["-map", f"{len(audio) + 1}:s:0"]
            meta += ["-metadata:s:s:0", f"language={_iso639_2(subtitles[1])}"]
        dispositions = ["-disposition:a:0", "default"] + [x for i in range(1, a_index) for x in (f"-disposition:a:{i}", "0")]
        common = [
            *inputs,
            *maps,
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-c:s",
            "mov_text",
            *meta,
            *dispositions,
            "-movflags",
            "+faststart",
        ]
        partial = tmp_dir / f"mux-{target.name}"
        try:
            run_ffmpeg([*common, "-c:v", "copy", "-f", "mp4", str(partial)], ctx, what="write the MP4")
        except EngineError as exc:
            ctx.log_safe("warning", f"cannot copy the video stream into MP4 ({exc}); re-encoding it as H.264")
            run_ffmpeg(
                [
                    *common,
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "23",
                    "-pix_fmt",
                    "yuv420p",
                    "-f",
                    "mp4",
                    str(partial),
                ],
                ctx,
                what="encode the MP4",
            )
        shutil.move(str(partial), str(target))


def _assign_source_texts(targets: list[DubSegment], sources: list[DubSegment]) -> None:
    """Set each target segment's ``source_text`` from the transcribed segments: every
    source segment goes to the target segment it overlaps most in time (the nearest one
    when it overlaps none), so no source text is lost or repeated.  Used with Whisper's
    translate task, whose segments carry English text only."""
    texts: list[list[str]] = [[] for _ in targets]
    for src in sources:

        def score(index: int, src: DubSegment = src) -> tuple[float, float]:
            tgt = targets[index]
            overlap = min(src.end, tgt.end) - max(src.start, tgt.start)
            distance = abs((src.start + src.end) / 2 - (tgt.start + tgt.end) / 2)
            return (overlap, -distance)

        texts[max(range(len(targets)), key=score)].append(src.source_text)
    for tgt, parts in zip(targets, texts, strict=True):
        tgt.source_text = " ".join(parts)


def _tidy(text: str) -> str:
    """Collapse white space and upper-case the first letter (Apertium keeps odd casing)."""
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] if text else text


def fraction_parameter(value: Any, name: str) -> float:
    """A parameter that must be a number in 0..1.

    Raises:
        InvalidInput: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"parameter {name!r} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _trim_silence(audio: FloatArray, threshold: float = 0.01) -> FloatArray:
    """Drop leading/trailing samples quieter than ``threshold`` (keeps 20 ms margins)."""
    import numpy as np

    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    margin = int(0.02 * MIX_RATE)
    return audio[max(0, loud[0] - margin) : loud[-1] + margin]


def _match_rms(audio: FloatArray, reference: FloatArray) -> FloatArray:
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


def _duck(gain: FloatArray, start: int, end: int, level: float, ramp: int) -> None:
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


_ISO639_2 = {
    "en": "eng",
    "es": "spa",
    "fr": "fra",
    "de": "deu",
    "it": "ita",
    "pt": "por",
    "nl": "nld",
    "ru": "rus",
    "zh": "zho",
    "ja": "jpn",
}


def _iso639_2(code: str) -> str:
    """Three-letter language tag for container metadata (``"und"`` if unknown)."""
    return _ISO639_2.get(code, "und")
