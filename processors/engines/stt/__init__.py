from __future__ import annotations

# Speech-to-text with Whisper base through faster-whisper, in modules of one job each:
# languages and job options (languages), input files and segments (audio), the engine
# (engine).
from processors.engines.stt.audio import probe_audio, segment_dict, stt_input_path
from processors.engines.stt.engine import WhisperEngine
from processors.engines.stt.languages import WHISPER_LANGUAGES, normalize_whisper_language, stt_options

__all__ = [
    "WHISPER_LANGUAGES",
    "WhisperEngine",
    "normalize_whisper_language",
    "probe_audio",
    "segment_dict",
    "stt_input_path",
    "stt_options",
]
