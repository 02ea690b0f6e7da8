"""Helpers shared by the tests: word error rate, and a recorder of engine callbacks."""

from __future__ import annotations

import re


def normalize(text: str) -> str:
    """Lower-case, "mr." spelled out, punctuation (hyphens included) to spaces, apostrophes
    dropped, white space collapsed: the usual preparation for a word error rate."""
    text = re.sub(r"\bmr\b\.?", "mister", text.lower())
    return " ".join(re.sub(r"[^\w\s']|_", " ", text).replace("'", "").split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` (jiwer): (substitutions +
    deletions + insertions) / reference words, after :func:`normalize`."""
    import jiwer

    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


class Recorder:
    """Collects the report/log calls of one EngineContext."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, str]] = []
        self.logs: list[tuple[str, str]] = []

    def report(self, progress: int, stage: str) -> None:
        self.reports.append((progress, stage))

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they first appeared."""
        return list(dict.fromkeys(stage for _, stage in self.reports))
