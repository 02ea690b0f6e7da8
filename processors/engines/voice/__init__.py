from __future__ import annotations

# Voice cloning without a neural model, in modules of one job each: WORLD analysis and
# synthesis with speaker statistics (world), voice conversion (conversion) and the engine
# (engine).  Importing this package is cheap: numpy and pyworld are imported when a job runs.
from processors.engines.voice.conversion import Conversion, convert_voice, estimate_warp, match_level
from processors.engines.voice.engine import VoiceCloningEngine
from processors.engines.voice.world import (
    SAMPLE_RATE,
    VoiceStats,
    WorldFeatures,
    analyse_world,
    f0_track,
    measure_f0_median,
    pyworld_missing,
    synthesise_world,
    voice_stats,
)

__all__ = [
    "SAMPLE_RATE",
    "Conversion",
    "VoiceCloningEngine",
    "VoiceStats",
    "WorldFeatures",
    "analyse_world",
    "convert_voice",
    "estimate_warp",
    "f0_track",
    "match_level",
    "measure_f0_median",
    "pyworld_missing",
    "synthesise_world",
    "voice_stats",
]
