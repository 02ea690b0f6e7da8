from __future__ import annotations

# Dubbing (``dubbing``): Whisper -> Apertium / Whisper translate -> TTS -> mix, in modules
# of one job each: language pairs (languages), timed segments (segments), Apertium
# (apertium), mixing math (mixing), the speech track (render), MP4 muxing (mux), job
# options (options) and the engine (engine).
from .apertium import apertium_translate
from .engine import DubbingEngine
from .languages import (
    APERTIUM_HINT,
    APERTIUM_ROUTES,
    APERTIUM_TARGETS,
    apertium_modes,
    apertium_path,
    dubbing_target_languages,
    iso639_2,
    normalize_language,
    supported_pair,
    unsupported_pair_reason,
)
from .mixing import DUCK_GAIN, DUCK_RAMP_S, MAX_TEMPO, MIX_RATE
from .mux import mux_args
from .options import DubbingOptions, fraction_parameter
from .segments import MAX_SEGMENT_SECONDS, DubSegment, Translation, split_segments

__all__ = [
    "APERTIUM_HINT",
    "APERTIUM_ROUTES",
    "APERTIUM_TARGETS",
    "DUCK_GAIN",
    "DUCK_RAMP_S",
    "MAX_SEGMENT_SECONDS",
    "MAX_TEMPO",
    "MIX_RATE",
    "DubSegment",
    "DubbingEngine",
    "DubbingOptions",
    "Translation",
    "apertium_modes",
    "apertium_path",
    "apertium_translate",
    "dubbing_target_languages",
    "fraction_parameter",
    "iso639_2",
    "mux_args",
    "normalize_language",
    "split_segments",
    "supported_pair",
    "unsupported_pair_reason",
]
