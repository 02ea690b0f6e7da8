from __future__ import annotations

# AI stories with SmolLM2 via llama.cpp, in modules of one job each: the model file
# (model), story text (text), job options (options) and the engine (engine).
from processors.engines.stories.engine import StoryEngine
from processors.engines.stories.model import MODEL_FILE, STORY_MODEL_ENV, locate_story_model, story_model_status
from processors.engines.stories.options import story_options, story_parameters
from processors.engines.stories.text import LineLogger, count_words, trim_to_length

__all__ = [
    "MODEL_FILE",
    "STORY_MODEL_ENV",
    "LineLogger",
    "StoryEngine",
    "count_words",
    "locate_story_model",
    "story_model_status",
    "story_options",
    "story_parameters",
    "trim_to_length",
]
