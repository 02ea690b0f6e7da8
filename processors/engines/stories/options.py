from __future__ import annotations

# An ai_stories job's options: from the validated parameter model (typed fields, within
# what this engine writes) or from a raw parameter dict, checked here.
import secrets
from typing import Any

from commands.job_parameters import AiStoriesParameters
from processors.engines.base import EngineContext, InvalidInput

__all__ = [
    "DEFAULT_LENGTH",
    "MAX_LENGTH",
    "MAX_PROMPT_CHARS",
    "MAX_STYLE_CHARS",
    "MIN_LENGTH",
    "story_options",
    "story_parameters",
]

DEFAULT_LENGTH = 300
MIN_LENGTH, MAX_LENGTH = 20, 2000
MAX_PROMPT_CHARS = 2000
MAX_STYLE_CHARS = 100

StoryOptions = tuple[str, int, str, int, bool]
"""``(prompt, length in words, style, seed, narrate)``."""


def _within_limits(prompt: str, length: int, style: str) -> None:
    """What this engine writes: a prompt of at most ``MAX_PROMPT_CHARS``, a length in
    ``MIN_LENGTH..MAX_LENGTH`` words, a style of at most ``MAX_STYLE_CHARS``.

    Raises:
        InvalidInput: one is out of bounds.
    """
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"parameter 'prompt' has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(
            f"parameter 'length' must be a whole number of words from {MIN_LENGTH} to {MAX_LENGTH}, got {length!r}"
        )
    if len(style) > MAX_STYLE_CHARS:
        raise InvalidInput(f"parameter 'style' must be a string of at most {MAX_STYLE_CHARS} characters")


def story_options(ctx: EngineContext) -> StoryOptions:
    """The options of an ai_stories job: the typed fields of ``ctx.validated`` (an
    :class:`AiStoriesParameters`) when given, else :func:`story_parameters` of the raw
    parameters.  A missing seed is drawn at random.

    Raises:
        InvalidInput: the job asks for more than this engine writes, or (raw
            parameters) a bad prompt, length, style, seed or narrate.
    """
    model = ctx.validated
    if not isinstance(model, AiStoriesParameters):
        return story_parameters(ctx.parameters or {})
    prompt = " ".join(model.prompt.split())
    if not prompt:
        raise InvalidInput("ai_stories needs a non-empty string parameter 'prompt'")
    style = " ".join((model.style or "").split())
    _within_limits(prompt, model.length, style)
    seed = model.seed if model.seed is not None else secrets.randbelow(2**31)
    if not 0 <= seed < 2**31:
        raise InvalidInput(f"parameter 'seed' must be an integer from 0 to {2**31 - 1}, got {seed!r}")
    return prompt, model.length, style, seed, model.narrate


def story_parameters(params: dict[str, Any]) -> tuple[str, int, str, int, bool]:
    """``(prompt, length in words, style, seed, narrate)`` of an ai_stories job, checked;
    a missing seed is drawn at random. Used by the local and the remote story engines.

    Raises:
        InvalidInput: missing or too long prompt, bad length, style, seed or narrate.
    """
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput("ai_stories needs a non-empty string parameter 'prompt'")
    prompt = " ".join(prompt.split())
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"parameter 'prompt' has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    length = params.get("length", DEFAULT_LENGTH)
    if length is None:
        length = DEFAULT_LENGTH
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(
            f"parameter 'length' must be a whole number of words from {MIN_LENGTH} to {MAX_LENGTH}, got {length!r}"
        )
    style = params.get("style") or ""
    if not isinstance(style, str) or len(style) > MAX_STYLE_CHARS:
        raise InvalidInput(f"parameter 'style' must be a string of at most {MAX_STYLE_CHARS} characters")
    style = " ".join(style.split())
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise InvalidInput(f"parameter 'seed' must be an integer from 0 to {2**31 - 1}, got {seed!r}")
    narrate = params.get("narrate", False)
    if not isinstance(narrate, bool):
        raise InvalidInput("parameter 'narrate' must be true or false")
    return prompt, length, style, seed, narrate
