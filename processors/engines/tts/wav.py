"""Sentence audio: one synthesised WAV per sentence, joined into one file with silence between."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

from processors.engines.base import EngineError, atomic_output

__all__ = ["Part", "join_parts"]


@dataclass
class Part:
    """One sentence's audio: a 16-bit mono WAV at ``sample_rate`` Hz."""

    path: Path
    sample_rate: int


def join_parts(parts: list[Part], target: Path, sentence_silence: float) -> tuple[int, int]:
    """Concatenate the sentence WAVs into ``target`` with silence between them.

    Returns:
        (number of frames written, sample rate in Hz).
    """
    rate = parts[0].sample_rate
    silence = b"\x00\x00" * round(sentence_silence * rate)
    total = 0
    with atomic_output(target, "wb") as handle, wave.open(handle, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for index, part in enumerate(parts):
            try:
                with wave.open(str(part.path), "rb") as wav:
                    if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, rate):
                        raise EngineError(f"sentence audio has format {wav.getparams()}, expected mono 16-bit {rate} Hz")
                    frames = wav.readframes(wav.getnframes())
            except (OSError, wave.Error, EOFError) as exc:
                raise EngineError(f"cannot read synthesised sentence audio: {exc}") from exc
            if index and silence:
                out.writeframes(silence)
                total += len(silence) // 2
            out.writeframes(frames)
            total += len(frames) // 2
    return total, rate
