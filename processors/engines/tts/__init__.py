"""Text-to-speech: Piper (English, voice en_US-joe-medium) in a long-lived child process,
and espeak-ng (other languages) as one subprocess per sentence.

Modules: ``engine`` (:class:`PiperEngine`), ``piper`` (the worker protocol; the worker
itself is ``piper_worker.py``, run by path), ``espeak``, ``text`` (reading and splitting
the text) and ``wav`` (joining sentence audio).
"""

from __future__ import annotations

from processors.engines.tts.engine import PiperEngine
from processors.engines.tts.espeak import espeak_languages, espeak_path
from processors.engines.tts.text import split_sentences

__all__ = ["PiperEngine", "espeak_languages", "espeak_path", "split_sentences"]
