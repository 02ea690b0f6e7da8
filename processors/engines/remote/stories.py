"""The ai_stories adapter: POST ``/chat/completions`` and cut the story to the length asked for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from processors.engines.base import EngineContext, EngineError, EngineResult, InvalidInput, atomic_output
from processors.engines.stories import count_words, story_parameters, trim_to_length

from .answers import Call
from .client import ProviderClient

__all__ = ["write_story"]


def write_story(client: ProviderClient, model: str, ctx: EngineContext, work_dir: Path) -> EngineResult:
    """Run one ai_stories job on the provider (shapes: ``OpenAICompatibleEngine``'s docstring)."""
    label = client.label
    prompt, length, style, seed = _story_parameters(ctx.parameters or {})
    kind = f"{style} story" if style else "story"
    system = (
        f"You are a storyteller. Write a {kind} of about {length} words about what the user asks for. "
        "Answer with the story text only: no title, no preamble, no notes."
    )
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "seed": seed,
        "max_tokens": min(16384, 2 * length + 64),
    }
    answer = client.post(ctx, Call("/chat/completions", json_body=body), model)
    data = client.json_object(answer)
    text, finish = _story_text(data, label)
    ctx.progress(90, "writing result")
    story = trim_to_length(text, length)
    if not story:
        raise EngineError(f"{label} answered an empty story (finish_reason {finish!r})")
    words = count_words(story)
    if words < 0.75 * length:
        ctx.log_safe("warning", f"the provider stopped at {words} words, short of the {length} asked for")
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("total_tokens"), int):
        ctx.log_safe("info", f"{label} used {usage.get('total_tokens')} tokens for a story of {words} words")
    answered = data.get("model")
    # the provider's text, bounded before it is stored
    shown = " ".join(answered.split())[:200] if isinstance(answered, str) and answered.strip() else model
    meta: dict[str, Any] = {"text": story, "words": words, "seed": seed, "model": shown, "length": length}
    story_path = work_dir / "story.txt"
    with atomic_output(story_path, "w", encoding="utf-8") as handle:
        handle.write(story + "\n")
    ctx.progress(100, "writing result")
    return EngineResult(files=[story_path], meta=meta)


def _story_text(data: dict[str, Any], label: str) -> tuple[str, Any]:
    """``(text, finish_reason)`` of the first choice of a chat completion."""
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if choice is None:
        raise EngineError(f"{label} answered a chat completion without choices")
    raw_finish = choice.get("finish_reason")
    finish = raw_finish if isinstance(raw_finish, str) and re.fullmatch(r"[a-z_]{1,40}", raw_finish) else None
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if finish == "content_filter" and not content:
        raise InvalidInput(f"{label} refused to write this story (content filter)")
    if not isinstance(content, str):
        raise EngineError(f"{label} answered a chat completion without text (finish_reason {finish!r})")
    return content.strip(), finish


def _story_parameters(params: dict[str, Any]) -> tuple[str, int, str, int]:
    """``(prompt, length, style, seed)`` checked as the local story engine does.

    Raises:
        InvalidInput: missing/too long prompt, bad length/style/seed, or ``narrate``.
    """
    prompt, length, style, seed, narrate = story_parameters(params)
    if narrate:
        raise InvalidInput("narrated stories need the local engines; a remote provider writes the text only")
    return prompt, length, style, seed
