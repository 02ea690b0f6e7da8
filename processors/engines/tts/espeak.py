"""espeak-ng, the synthesiser for languages other than English: run as a program (GPL-3.0,
never imported), one subprocess per sentence, text on stdin."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import time
import wave
from pathlib import Path

from processors.engines.base import EngineContext, EngineError, InvalidInput
from processors.engines.tts.wav import Part

__all__ = ["espeak_languages", "espeak_path", "espeak_sentence"]

_POLL_SECONDS = 0.1


def espeak_path() -> str | None:
    """Path of the ``espeak-ng`` binary, or None when it is not installed."""
    return shutil.which("espeak-ng")


@functools.lru_cache(maxsize=4)
def _espeak_languages(binary: str) -> tuple[str, ...]:
    try:
        listing = subprocess.run([binary, "--voices"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    codes = []
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            codes.append(fields[1])
    return tuple(sorted(set(codes)))


def espeak_languages() -> list[str]:
    """Language codes that the installed espeak-ng offers (``espeak-ng --voices``),
    e.g. ``["af", ..., "es", "es-419", ...]``; empty when espeak-ng is missing."""
    binary = espeak_path()
    return list(_espeak_languages(binary)) if binary else []


def espeak_sentence(binary: str, language: str, sentence: str, out: Path, ctx: EngineContext, timeout: float) -> Part | None:
    """Synthesise one sentence with ``espeak-ng -v <language> -w out`` (text on stdin)."""
    try:
        proc = subprocess.Popen(
            [binary, "-v", language.lower(), "-b", "1", "-w", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise EngineError(f"cannot run espeak-ng: {exc}") from exc
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(sentence.encode("utf-8") + b"\n")
        proc.stdin.close()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise EngineError("espeak-ng did not finish in time")
            ctx.check_stop()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_POLL_SECONDS)
        stderr = proc.stderr.read().decode("utf-8", "replace").strip()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stderr.close()
    if proc.returncode != 0:
        if "voice does not exist" in stderr:
            raise InvalidInput(f"espeak-ng has no voice for language {language!r}")
        raise EngineError(f"espeak-ng failed (status {proc.returncode}): {stderr[:300]}")
    try:
        with wave.open(str(out), "rb") as wav:
            rate, frames = wav.getframerate(), wav.getnframes()
    except (OSError, wave.Error, EOFError) as exc:
        raise EngineError(f"espeak-ng wrote an unreadable WAV: {exc}") from exc
    return Part(out, rate) if frames > 0 else None
