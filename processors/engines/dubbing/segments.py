from __future__ import annotations

# Dubbing's timed segments: Whisper's segments cut into pieces that fit one dubbed line,
# and the translation that carries them.
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_SEGMENT_SECONDS", "DubSegment", "Translation", "assign_source_texts", "split_segments", "tidy"]

_SENTENCE_END = re.compile(r"[.!?;…]['\"”’)\]]*$")
MAX_SEGMENT_SECONDS = 12.0
"""Longest dubbing segment (s) before it is cut at its longest pause."""

Word = dict[str, Any]


@dataclass
class DubSegment:
    """One timed piece of speech.

    Attributes:
        start, end: seconds from the start of the input.
        source_text: what was said (Whisper transcript).
        target_text: its translation.
    """

    start: float
    end: float
    source_text: str
    target_text: str = ""


@dataclass
class Translation:
    """Result of :meth:`DubbingEngine.translate_media`.

    Attributes:
        source_language, target_language: base codes (``"en"``, ``"es"``).
        segments: timed segments in order, with both texts.
        duration: input audio duration in seconds.
        method: ``"apertium:eng-spa"``, ``"apertium:eng-spa+es-fr"`` or ``"whisper:translate"``.
    """

    source_language: str
    target_language: str
    segments: list[DubSegment]
    duration: float
    method: str

    def meta(self) -> dict[str, Any]:
        """The shared dubbing/video_translation meta."""
        return {
            "source_language": self.source_language,
            "target_language": self.target_language,
            "segments": [
                {
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "source_text": s.source_text,
                    "target_text": s.target_text,
                }
                for s in self.segments
            ],
        }


def _sentence_pieces(words: list[Word]) -> list[list[Word]]:
    """Cut ``words`` after words that end a sentence, when both sides last >= 1 s."""
    pieces: list[list[Word]] = [[]]
    for i, word in enumerate(words):
        pieces[-1].append(word)
        rest = words[i + 1 :]
        if (
            rest
            and _SENTENCE_END.search(str(word["word"]))
            and float(word["end"]) - float(pieces[-1][0]["start"]) >= 1.0
            and float(rest[-1]["end"]) - float(rest[0]["start"]) >= 1.0
        ):
            pieces.append([])
    return pieces


def _cut_long(pieces: list[list[Word]], max_seconds: float) -> list[list[Word]]:
    """Cut pieces longer than ``max_seconds`` at their longest pause (in their middle
    half), again and again until every piece fits (or has at most two words)."""
    final: list[list[Word]] = []
    pieces = list(pieces)
    while pieces:
        piece = pieces.pop(0)
        if len(piece) > 2 and float(piece[-1]["end"]) - float(piece[0]["start"]) > max_seconds:
            gaps = [float(piece[i + 1]["start"]) - float(piece[i]["end"]) for i in range(len(piece) - 1)]
            lo, hi = len(piece) // 4, max(len(piece) // 4 + 1, 3 * len(piece) // 4)
            cut = max(range(lo, hi), key=lambda i: (gaps[i], -abs(i - len(piece) // 2))) + 1
            pieces[:0] = [piece[:cut], piece[cut:]]
            continue
        final.append(piece)
    return final


def split_segments(segments: list[dict[str, Any]], max_seconds: float = MAX_SEGMENT_SECONDS) -> list[DubSegment]:
    """Turn Whisper segments into dubbing segments of at most ~``max_seconds``.

    A segment with word timestamps is cut after words that end a sentence (``. ! ? ;``)
    when both sides last at least 1 s, then pieces still longer than ``max_seconds`` are
    cut at their longest pause between words.  Segments without words are kept whole.
    """
    out: list[DubSegment] = []
    for seg in segments:
        text = " ".join(str(seg.get("text", "")).split())
        if not text:
            continue
        words = [w for w in seg.get("words") or [] if str(w.get("word", "")).strip()]
        if not words:
            out.append(DubSegment(float(seg["start"]), float(seg["end"]), text))
            continue
        for piece in _cut_long(_sentence_pieces(words), max_seconds):
            out.append(
                DubSegment(
                    start=float(piece[0]["start"]),
                    end=float(piece[-1]["end"]),
                    source_text=" ".join(str(w["word"]).strip() for w in piece),
                )
            )
    return out


def assign_source_texts(targets: list[DubSegment], sources: list[DubSegment]) -> None:
    """Set each target segment's ``source_text`` from the transcribed segments: every
    source segment goes to the target segment it overlaps most in time (the nearest one
    when it overlaps none), so no source text is lost or repeated.  Used with Whisper's
    translate task, whose segments carry English text only."""
    texts: list[list[str]] = [[] for _ in targets]
    for src in sources:

        def score(index: int, src: DubSegment = src) -> tuple[float, float]:
            tgt = targets[index]
            overlap = min(src.end, tgt.end) - max(src.start, tgt.start)
            distance = abs((src.start + src.end) / 2 - (tgt.start + tgt.end) / 2)
            return (overlap, -distance)

        texts[max(range(len(targets)), key=score)].append(src.source_text)
    for tgt, parts in zip(targets, texts, strict=True):
        tgt.source_text = " ".join(parts)


def tidy(text: str) -> str:
    """Collapse white space and upper-case the first letter (Apertium keeps odd casing)."""
    text = " ".join(text.split())
    return text[:1].upper() + text[1:] if text else text
