from __future__ import annotations

# Story text: counting words, trimming at the sentence end nearest the wanted length, and
# streaming generated text to the job's log in lines.
import re

from processors.engines.base import EngineContext

__all__ = ["LineLogger", "count_words", "trim_to_length"]

_LOG_LINE_CHARS = 120
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)]*(?=\s|$)")


def count_words(text: str) -> int:
    """Number of white-space separated words."""
    return len(text.split())


def trim_to_length(text: str, target: int, tolerance: float = 0.25) -> str:
    """Cut ``text`` at the sentence end whose word count is closest to ``target`` within
    ``target * (1 ± tolerance)``.

    A text that already ends a sentence within the range is kept whole; without a
    sentence end in the range the text is cut at ``target`` words (or kept, if shorter)
    and ends with a full stop.
    """
    text = text.strip()
    if not text:
        return text
    words = count_words(text)
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    ends_sentence = _SENTENCE_END.search(text[-4:]) is not None
    if lo <= words <= hi and ends_sentence:
        return text
    best: tuple[float, int] | None = None
    for match in _SENTENCE_END.finditer(text):
        n = count_words(text[: match.end()])
        if lo <= n <= hi and (best is None or abs(n - target) < best[0]):
            best = (abs(n - target), match.end())
    if best is not None:
        return text[: best[1]].strip()
    cut = " ".join(text.split()[: min(words, target)]).rstrip(",;:-—")
    return cut if _SENTENCE_END.search(cut[-4:]) else cut + "."


class LineLogger:
    """Collects streamed text and logs it in lines of at most ~120 characters."""

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.buffer = ""

    def feed(self, text: str) -> None:
        self.buffer += text
        while "\n" in self.buffer:
            line, self.buffer = self.buffer.split("\n", 1)
            if line.strip():
                self.ctx.log_safe("info", line.strip())
        if len(self.buffer) > _LOG_LINE_CHARS:
            cut = self.buffer.rfind(" ", 0, _LOG_LINE_CHARS)
            cut = cut if cut > 0 else _LOG_LINE_CHARS
            self.ctx.log_safe("info", self.buffer[:cut].strip())
            self.buffer = self.buffer[cut:]

    def flush(self) -> None:
        if self.buffer.strip():
            self.ctx.log_safe("info", self.buffer.strip())
        self.buffer = ""
