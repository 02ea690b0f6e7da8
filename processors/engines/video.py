from __future__ import annotations

# Video translation: a video's speech -> translated subtitles (SRT, WebVTT and a soft
# mov_text track in the MP4) and, optionally, a dubbed audio track.
#
# Transcription and translation are the dubbing engine's (Whisper -> Apertium, or
# Whisper's translate task into English); the dub too.  Cues longer than two lines of 42
# characters (the common broadcast subtitle limit, e.g. the BBC and Netflix style guides)
# are split at word boundaries with time shared in proportion to their length.
import shutil
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commands.job_parameters import VideoTranslationParameters

from .base import (
    Engine,
    EngineContext,
    EngineResult,
    InvalidInput,
    atomic_output,
    prepare_work_dir,
)
from .dubbing import (
    DUCK_GAIN,
    MIX_RATE,
    DubbingEngine,
    DubSegment,
    Translation,
    fraction_parameter,
    normalize_language,
    unsupported_pair_reason,
)
from .media import MediaInfo, check_duration, input_path, probe_media, write_wav
from .stt import WhisperEngine
from .tts import PiperEngine

__all__ = ["Cue", "VideoOptions", "VideoTranslationEngine", "make_cues", "parse_srt", "to_srt", "to_webvtt"]

LINE_CHARS = 42
CUE_CHARS = 2 * LINE_CHARS
MIN_CUE_SECONDS = 0.3


@dataclass
class Cue:
    """One subtitle: ``start``/``end`` in seconds, ``text`` with at most 2 lines."""

    start: float
    end: float
    text: str


def _chunks(text: str, limit: int) -> list[str]:
    """Split text into pieces of at most ``limit`` characters at word boundaries,
    preferring to cut after punctuation in the second half of a piece."""
    words = text.split()
    pieces: list[str] = []
    current: list[str] = []
    for word in words:
        candidate = " ".join([*current, word])
        if current and len(candidate) > limit:
            cut = len(current)
            for i in range(len(current) - 1, len(current) // 2 - 1, -1):
                if current[i].endswith((",", ";", ":", ".", "!", "?")):
                    cut = i + 1
                    break
            pieces.append(" ".join(current[:cut]))
            current = current[cut:]
        current.append(word)
    if current:
        pieces.append(" ".join(current))
    return pieces


def _wrap(text: str) -> str:
    """Wrap a cue into at most two balanced lines."""
    if len(text) <= LINE_CHARS:
        return text
    lines = textwrap.wrap(text, width=max(LINE_CHARS // 2, (len(text) + 1) // 2 + 4))
    if len(lines) > 2:
        lines = textwrap.wrap(text, width=LINE_CHARS)
    return "\n".join(lines)


def make_cues(segments: list[DubSegment]) -> list[Cue]:
    """Subtitle cues from translated segments: one per ≤ 84-character piece, timed in
    proportion to the piece's length within its segment; starts never go backwards and
    a cue never overlaps the next."""
    cues: list[Cue] = []
    for seg in segments:
        text = " ".join(seg.target_text.split())
        if not text:
            continue
        pieces = _chunks(text, CUE_CHARS)
        total_chars = sum(len(p) for p in pieces) or 1
        start = seg.start
        span = max(seg.end - seg.start, MIN_CUE_SECONDS * len(pieces))
        for piece in pieces:
            end = start + span * len(piece) / total_chars
            cues.append(Cue(start, end, _wrap(piece)))
            start = end
    cues.sort(key=lambda c: c.start)
    for i, cue in enumerate(cues):
        if i and cue.start < cues[i - 1].end:
            cue.start = cues[i - 1].end
        if cue.end < cue.start + MIN_CUE_SECONDS:
            cue.end = cue.start + MIN_CUE_SECONDS
    for i in range(len(cues) - 1):
        if cues[i].end > cues[i + 1].start:
            cues[i].end = max(cues[i].start + 0.05, cues[i + 1].start)
    return cues


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(cues: list[Cue]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank-line separated."""
    blocks = [f"{n}\n{_timestamp(c.start, ',')} --> {_timestamp(c.end, ',')}\n{c.text}\n" for n, c in enumerate(cues, start=1)]
    return "\n".join(blocks)


def to_webvtt(cues: list[Cue]) -> str:
    """WebVTT text (``WEBVTT`` header, ``HH:MM:SS.mmm`` times)."""
    blocks = [f"{_timestamp(c.start, '.')} --> {_timestamp(c.end, '.')}\n{c.text}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def parse_srt(text: str) -> list[Cue]:
    """Parse SubRip text (as written by :func:`to_srt` or ffmpeg).

    Raises:
        ValueError: a block is malformed.
    """

    def seconds(stamp: str) -> float:
        hms, millis = stamp.strip().replace(".", ",").split(",")
        h, m, s = (int(v) for v in hms.split(":"))
        return h * 3600 + m * 60 + s + int(millis) / 1000.0

    cues: list[Cue] = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        if not lines:
            continue
        if "-->" not in lines[0]:
            if len(lines) < 2 or "-->" not in lines[1]:
                raise ValueError(f"malformed SRT block: {block!r}")
            lines = lines[1:]
        start, end = lines[0].split("-->")
        cues.append(Cue(seconds(start), seconds(end.split()[0]), "\n".join(lines[1:])))
    return cues


class VideoTranslationEngine(Engine):
    """Video translation (``video_translation``): translated subtitles, optionally a dub.

    Job parameters:
        target_language: required, ``"en"``, ``"es"`` or ``"fr"``.
        source_language: optional (Whisper detects it).
        subtitles: bool, default true: SRT + WebVTT files and a soft subtitle track.
        dub: bool, default false: add a dubbed audio track (default track; the original
            audio is kept as a second track).
        match_voice, original_volume: as for dubbing (used with ``dub``).

    Input: ``input_file``, a video with an audio stream.

    Output files in ``ctx.work_dir``: ``translated.mp4`` (video copied, or re-encoded to
    H.264 when it cannot be copied into MP4; audio AAC; subtitles ``mov_text`` tagged with
    the target language), then ``subtitles.srt`` and ``subtitles.vtt`` when ``subtitles``.

    Meta: as dubbing's, ``{source_language, target_language, segments: [{start, end,
    source_text, target_text}], translation, subtitles: bool, dubbed: bool,
    duration_seconds}``.

    Progress stages: ``transcribing``, ``translating``, (``synthesizing``, ``mixing``),
    ``muxing``.
    """

    type = "video_translation"
    name = "whisper+apertium+ffmpeg"

    def __init__(
        self,
        dubbing: DubbingEngine | None = None,
        *,
        stt: WhisperEngine | None = None,
        tts: PiperEngine | None = None,
        model_dir: Path | str | None = None,
    ) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            dubbing: the processor's DubbingEngine (shares its Whisper and Piper); a
                private one is built from ``stt``/``tts``/``model_dir`` when None.
        """
        self.dubbing = dubbing if dubbing is not None else DubbingEngine(stt, tts, model_dir=model_dir)
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """True once the dubbing engine (Whisper) is loaded."""
        return self.dubbing.loaded

    def load(self) -> None:
        """Load Whisper through the dubbing engine (idempotent)."""
        self.dubbing.load()

    def close(self) -> None:
        """Close the dubbing engine's models (idempotent)."""
        self.dubbing.close()

    def run(self, ctx: EngineContext) -> EngineResult:
        """Translate the video; see the class docstring.

        Raises:
            InvalidInput: not a video, no audio, unsupported pair, no speech, neither
                subtitles nor dub asked for, too long.
            EngineCancelled: ``ctx.should_stop()`` became True.
            EngineError: Whisper/Apertium/TTS/ffmpeg failure.
        """
        ctx.check_stop()
        options = VideoOptions.of(ctx)
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        source = input_path(ctx, "input_file")
        assert source is not None
        info = probe_media(source, "input_file")
        if not info.has_video:
            raise InvalidInput(f"input_file {source.name!r} has no video stream; use a dubbing or stt job for audio")
        if not info.has_audio:
            raise InvalidInput(f"input_file {source.name!r} has no audio stream to translate")
        check_duration(ctx, info.duration, f"input_file {source.name!r}")
        started = time.monotonic()
        files: list[Path] = []
        tmp = Path(tempfile.mkdtemp(prefix=".video-", dir=work_dir))
        try:
            translation = self._translate(ctx, options, source, info, work_dir, tmp, files)
        except BaseException:
            for path in files:
                path.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta: dict[str, Any] = translation.meta()
        meta.update(
            translation=translation.method,
            subtitles=options.subtitles,
            dubbed=options.dub,
            duration_seconds=round(translation.duration, 3),
        )
        elapsed = time.monotonic() - started
        ctx.log_safe(
            "info",
            f"translated {translation.duration:.1f} s of video {translation.source_language}->{options.target} in "
            f"{elapsed:.1f} s (RTF {elapsed / max(translation.duration, 1e-6):.2f})",
        )
        ctx.progress(100, "muxing")
        return EngineResult(files=files, meta=meta)

    def _translate(
        self,
        ctx: EngineContext,
        options: VideoOptions,
        source: Path,
        info: MediaInfo,
        work_dir: Path,
        tmp: Path,
        files: list[Path],
    ) -> Translation:
        """Translate, write the subtitles and the dub, mux ``translated.mp4``; every
        file written is added to ``files`` (main first) as soon as it exists."""
        dub, target = options.dub, options.target
        translation = self.dubbing.translate_media(
            ctx, source, target, options.source, tmp, 0, 45 if dub else 85, needs_speech=dub
        )
        srt_path: Path | None = None
        if options.subtitles:
            srt_path = _write_subtitles(translation.segments, work_dir, files)
        audio: list[tuple[Path, str]] = []
        if dub:
            mixed, voice = self.dubbing.render_dub(
                ctx, source, translation, tmp, 45, 88, match_voice=options.match_voice, duck=options.original_volume
            )
            wav = tmp / "dubbed.wav"
            write_wav(wav, mixed, MIX_RATE)
            audio.append((wav, target))
            ctx.log_safe("info", f"dubbed audio track spoken by {voice}")
        ctx.progress(90, "muxing")
        mp4 = work_dir / "translated.mp4"
        self.dubbing.mux(
            ctx,
            source,
            info,
            mp4,
            audio=audio,
            keep_original_audio=translation.source_language,
            subtitles=(srt_path, target) if srt_path is not None else None,
            tmp_dir=tmp,
        )
        files.insert(0, mp4)
        return translation


def _write_subtitles(segments: list[DubSegment], work_dir: Path, files: list[Path]) -> Path:
    """Write ``subtitles.srt`` and ``subtitles.vtt`` (appended to ``files``); return the SRT."""
    cues = make_cues(segments)
    srt_path = work_dir / "subtitles.srt"
    vtt_path = work_dir / "subtitles.vtt"
    with atomic_output(srt_path, "w", encoding="utf-8") as handle:
        handle.write(to_srt(cues))
    with atomic_output(vtt_path, "w", encoding="utf-8") as handle:
        handle.write(to_webvtt(cues))
    files += [srt_path, vtt_path]
    return srt_path


@dataclass(frozen=True)
class VideoOptions:
    """What a video_translation job asks for.

    Attributes:
        target, source: base language codes (source None: detect).
        subtitles, dub: write subtitles; add a dubbed audio track.
        match_voice, original_volume: as for dubbing (with ``dub``).
    """

    target: str
    source: str | None = None
    subtitles: bool = True
    dub: bool = False
    match_voice: bool = True
    original_volume: float = DUCK_GAIN

    @classmethod
    def of(cls, ctx: EngineContext) -> VideoOptions:
        """The options of ``ctx``: the typed fields of ``ctx.validated`` (a
        :class:`VideoTranslationParameters`) when given, else its raw parameters, checked.

        Raises:
            InvalidInput: nothing to do, an unsupported pair, a bad value (raw only).
        """
        model = ctx.validated
        if isinstance(model, VideoTranslationParameters):
            params: dict[str, Any] = model.model_dump()
        else:
            params = dict(ctx.parameters or {})
            for name in ("subtitles", "dub"):
                if not isinstance(params.get(name, name == "subtitles"), bool):
                    raise InvalidInput(f"parameter {name!r} must be true or false")
        target = normalize_language(params.get("target_language"), "target_language")
        source = normalize_language(params.get("source_language"), "source_language")
        subtitles, dub = bool(params.get("subtitles", True)), bool(params.get("dub", False))
        if not subtitles and not dub:
            raise InvalidInput("nothing to do: parameters 'subtitles' and 'dub' are both false")
        reason = unsupported_pair_reason(source, target, needs_speech=dub)
        if reason is not None:
            raise InvalidInput(reason)
        assert target is not None
        match_voice = params.get("match_voice", True)
        if not isinstance(match_voice, bool):
            raise InvalidInput("parameter 'match_voice' must be true or false")
        duck = fraction_parameter(params.get("original_volume", DUCK_GAIN), "original_volume")
        return cls(target, source, subtitles, dub, match_voice, duck)
