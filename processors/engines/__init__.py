from __future__ import annotations

# AI engines run by aiorch processors: speech-to-text ("stt", Whisper base through
# faster-whisper) and text-to-speech ("tts", Piper in a child process, espeak-ng for
# non-English text).  Importing this package is cheap: inference runtimes are imported
# (and models loaded) only by ``Engine.load``.
import importlib.util
from pathlib import Path
from typing import Any

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    JobCancelled,
    ModelMissing,
)
from .models import piper_voice_status, whisper_base_status
from .stt import WHISPER_LANGUAGES, WhisperEngine
from .tts import PiperEngine, espeak_languages, espeak_path

__all__ = [
    "ENGINE_TYPES",
    "Engine",
    "EngineContext",
    "EngineError",
    "EngineResult",
    "InvalidInput",
    "JobCancelled",
    "ModelMissing",
    "PiperEngine",
    "WhisperEngine",
    "build_engines",
    "describe_engines",
]

ENGINE_TYPES: tuple[str, ...] = ("stt", "tts")
"""Job types that :func:`build_engines` can serve."""


def build_engines(types: list[str], model_dir: Path) -> dict[str, Engine]:
    """Create one engine per requested job type, without loading any model.

    Call ``engine.load()`` at processor start-up to pay the model load up front (about
    1-2 s each); otherwise the first ``run`` loads it.  Call ``close()`` on shutdown.

    Args:
        types: job types among ``"stt"`` and ``"tts"`` (duplicates are ignored).
        model_dir: writable folder for assembled model files (the Whisper base model is
            assembled into ``<model_dir>/whisper-base`` on first load, ~145 MB).

    Returns:
        ``{type: engine}``, e.g. ``{"stt": WhisperEngine, "tts": PiperEngine}``.

    Raises:
        ValueError: a type is not one of :data:`ENGINE_TYPES`.
    """
    unknown = sorted(set(types) - set(ENGINE_TYPES))
    if unknown:
        raise ValueError(f"unknown engine type(s) {unknown}; supported: {list(ENGINE_TYPES)}")
    model_dir = Path(model_dir)
    engines: dict[str, Engine] = {}
    for engine_type in dict.fromkeys(types):
        if engine_type == "stt":
            engines["stt"] = WhisperEngine(model_dir)
        elif engine_type == "tts":
            engines["tts"] = PiperEngine(model_dir)
    return engines


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def describe_engines(model_dir: Path) -> list[dict[str, Any]]:
    """Describe the stt and tts engines without loading models or importing runtimes.

    Checks that the Python packages are importable (``importlib.util.find_spec``), that
    model files exist (or can be assembled into ``model_dir``), and that ``espeak-ng`` is
    on PATH (``shutil.which``; ``espeak-ng --voices`` lists its languages).

    Returns:
        one dict per type::

            {"type": "stt" | "tts", "engine": str, "available": bool,
             "missing": [str, ...],          # only when something is missing
             "languages": [str, ...],        # codes usable now
             "voices": [str, ...]}           # tts: "en_US-joe-medium", "espeak-ng:<lang>"

        For tts, ``available`` is True when either Piper (English) or espeak-ng (other
        languages) works; ``missing`` then says what the other one lacks.
    """
    model_dir = Path(model_dir)
    out: list[dict[str, Any]] = []

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
    out.append(stt)

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
    out.append(tts)
    return out
