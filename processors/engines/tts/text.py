"""The text a tts job speaks: read from the parameters (or a UTF-8 file) and split into sentences."""

from __future__ import annotations

import re
from pathlib import Path

from processors.engines.base import EngineContext, InvalidInput

__all__ = ["MAX_SENTENCE_CHARS", "read_text", "split_sentences"]

MAX_SENTENCE_CHARS = 300
"""Longest sentence sent to a synthesiser in one piece."""

_TEXT_FIELDS = ("input_file", "text_file", "text")
_SENTENCE_END = re.compile(r"(?<=[.!?;…。！？])[\"'”’)\]]*\s+|\n\s*\n")


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split text into sentences of at most ``max_chars`` characters.

    Splits after ``.``, ``!``, ``?``, ``;`` or ``…`` followed by white space, and at blank
    lines; a longer sentence is cut after commas/colons, then at white space, then hard.
    White space inside a sentence is collapsed.

    Returns:
        the non-empty sentences, in order.
    """
    out: list[str] = []
    for raw in _SENTENCE_END.split(text):
        sentence = " ".join(raw.split())
        if not sentence:
            continue
        out.extend(_cut(sentence, max_chars))
    return out


def _cut(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = max(window.rfind(", "), window.rfind(": "), window.rfind(" - "))
        if cut < max_chars // 3:
            cut = window.rfind(" ")
        if cut < max_chars // 3:
            cut = max_chars
        else:
            cut += 1
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [p for p in pieces if p]


def read_text(ctx: EngineContext, max_chars: int) -> str:
    """The text to speak: parameter ``text``, else the UTF-8 text file in ``input_file``.

    Raises:
        InvalidInput: absent, not a string, empty, undecodable, or over ``max_chars``.
    """
    text = ctx.parameters.get("text")
    if text is None:
        files = ctx.input_files or {}
        path = next((Path(files[f]) for f in _TEXT_FIELDS if f in files), None)
        if path is None:
            raise InvalidInput("text-to-speech needs parameter 'text' (or a UTF-8 text file in 'input_file')")
        try:
            if path.stat().st_size > 4 * max_chars + 4:
                raise InvalidInput(f"text is longer than {max_chars} characters")
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input file {path.name!r} is not UTF-8 text: {exc.reason}") from exc
        except OSError as exc:
            raise InvalidInput(f"cannot read input file {path.name!r}: {exc.strerror or exc}") from exc
    if not isinstance(text, str):
        raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput("parameter 'text' is empty")
    if len(text) > max_chars:
        raise InvalidInput(f"text has {len(text)} characters; the limit is {max_chars}")
    return text
