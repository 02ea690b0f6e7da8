from __future__ import annotations

# Speech-to-text with Whisper base through faster-whisper (CTranslate2, int8, CPU).
#
# The model is loaded once per engine; each job decodes its input with PyAV, then
# transcribes it with word timestamps.  Transcription runs in a helper thread that hands
# segments to the calling thread through a queue, so the calling thread can poll
# ``ctx.should_stop()`` every 0.1 s and raise EngineCancelled promptly even while
# CTranslate2 is busy with a 30-second window (the helper then stops at the next segment
# boundary; the next job waits for it).
import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from processors.engines.base import (
    Engine,
    EngineContext,
    EngineError,
    EngineResult,
    InvalidInput,
    ModelMissing,
    atomic_output,
    prepare_work_dir,
)
from processors.engines.models import ensure_whisper_base
from processors.engines.stt.audio import av_reason, probe_audio, segment_dict, stt_input_path
from processors.engines.stt.languages import stt_options

__all__ = ["WhisperEngine"]

_LOG = logging.getLogger("processors.engines.stt")
_SAMPLE_RATE = 16000
_POLL_SECONDS = 0.1


class WhisperEngine(Engine):
    """Speech-to-text engine: Whisper base (multilingual) via faster-whisper, CPU int8.

    Job parameters:
        language: optional Whisper code or locale (``"en"``, ``"fr-FR"``); absent or
            ``"auto"`` detects the language from the first 30 s.
        task: ``"transcribe"`` (default) or ``"translate"`` (any language -> English).

    Input: ``ctx.input_files["input_file"]``, any audio/video file PyAV can decode; it is
    down-mixed and resampled to 16 kHz mono.

    Output files in ``ctx.work_dir``: ``transcript.txt`` (main; UTF-8 text plus newline)
    and ``transcript.json`` (the meta below).

    Meta::

        {"transcript": str, "language": str, "duration_seconds": float,
         "segments": [{"start": float, "end": float, "text": str,
                       "words": [{"start": float, "end": float, "word": str,
                                  "probability": float}]}]}

    Times are seconds from the start of the input; probability is 0..1.

    Progress: ``report(p, "decoding")`` then ``report(p, "transcribing")`` with p the
    share of the audio already transcribed.
    """

    type = "stt"
    name = "faster-whisper:whisper-base"

    def __init__(
        self,
        model_dir: Path | str,
        *,
        model_path: Path | str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        beam_size: int = 5,
        max_duration_seconds: float = 4 * 3600.0,
    ) -> None:
        """Configure the engine; nothing is loaded until :meth:`load`.

        Args:
            model_dir: folder where ``whisper-base/`` is (or will be assembled).
            model_path: a ready CTranslate2 Whisper model folder to use instead
                (default ``$AIORCH_WHISPER_MODEL_DIR``, then ``model_dir``).
            device, compute_type, cpu_threads: passed to ``WhisperModel``.
            beam_size: decoding beam size (1 = greedy, faster).
            max_duration_seconds: longer inputs are rejected with InvalidInput.
        """
        self.model_dir = Path(model_dir)
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.max_duration_seconds = max_duration_seconds
        self.model_folder: Path | None = None
        self.load_seconds: float | None = None
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._busy = threading.Lock()  # held by the transcription thread

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` succeeded (and :meth:`close` was not called since)."""
        return self._model is not None

    def load(self) -> None:
        """Assemble/locate the model and load it once (about 1 s on 2 cores).

        Raises:
            ModelMissing: model files missing or damaged (message says how to provide them).
            EngineError: faster-whisper is not installed or CTranslate2 failed to load.
        """
        with self._load_lock:
            if self._model is not None:
                return
            started = time.monotonic()
            folder = ensure_whisper_base(self.model_dir, self.model_path)
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise EngineError(
                    f"faster-whisper is not installed ({exc}); install the 'engines' extra (pip install 'faster-whisper==1.2.1')"
                ) from exc
            try:
                self._model = WhisperModel(
                    str(folder),
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    local_files_only=True,
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelMissing(f"could not load the Whisper model from {folder}: {exc}") from exc
            self.model_folder = folder
            self.load_seconds = time.monotonic() - started
            _LOG.info("loaded Whisper model from %s in %.2f s", folder, self.load_seconds)

    def close(self) -> None:
        """Drop the model (waits up to 30 s for a cancelled transcription to stop)."""
        if self._busy.acquire(timeout=30):
            self._busy.release()
        with self._load_lock:
            self._model = None

    # -- one job -------------------------------------------------------------------

    def run(self, ctx: EngineContext) -> EngineResult:
        """Transcribe ``ctx.input_files["input_file"]``; see the class docstring.

        Raises:
            InvalidInput: missing/empty/undecodable input, no audio stream, input longer
                than ``max_duration_seconds``, or bad ``language``/``task``.
            EngineCancelled: ``ctx.should_stop()`` became True.
            ModelMissing / EngineError: the model could not be loaded or failed.
        """
        ctx.check_stop()
        self.load()
        work_dir = prepare_work_dir(ctx.work_dir)
        source = stt_input_path(ctx)
        language, task = stt_options(ctx)
        ctx.progress(0, "decoding")
        probed = probe_audio(source, self.max_duration_seconds)
        from processors.engines.media import check_duration

        check_duration(ctx, probed, "input_file")  # the owner's max_input_duration_s
        self._wait_idle(ctx)

        started = time.monotonic()
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._produce,
            args=(source, language, task, events, stop),
            name=f"whisper-{ctx.job_id}",
            daemon=True,
        )
        try:
            thread.start()  # the thread releases self._busy when it ends
        except BaseException:
            self._busy.release()
            raise
        try:
            segments, detected, duration = _collect(ctx, events, language, probed or 0.0)
        except BaseException:
            stop.set()
            raise
        meta, files = _write(work_dir, segments, detected, duration)
        elapsed = time.monotonic() - started
        rtf = elapsed / duration if duration > 0 else 0.0
        ctx.log_safe("info", f"transcribed {duration:.1f} s of audio in {elapsed:.1f} s (RTF {rtf:.3f})")
        ctx.progress(100, "transcribing")
        return EngineResult(files=files, meta=meta)

    def _wait_idle(self, ctx: EngineContext) -> None:
        """Wait for a previous (cancelled) transcription thread to finish."""
        while not self._busy.acquire(timeout=_POLL_SECONDS):
            ctx.check_stop()
        # Ownership passes to the thread started right after; it releases the lock.

    def _produce(
        self,
        source: Path,
        language: str | None,
        task: str,
        events: queue.Queue[tuple[str, Any]],
        stop: threading.Event,
    ) -> None:
        try:
            import av
            from faster_whisper import decode_audio

            try:
                audio = decode_audio(str(source), sampling_rate=_SAMPLE_RATE)
            except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
                raise InvalidInput(f"input file {source.name!r} is not decodable audio: {av_reason(exc)}") from exc
            if audio.size == 0:
                raise InvalidInput(f"input file {source.name!r} contains no audio samples")
            seconds = audio.size / _SAMPLE_RATE
            if seconds > self.max_duration_seconds:
                raise InvalidInput(f"input audio is {seconds:.1f} s long; the limit is {self.max_duration_seconds:.0f} s")
            if stop.is_set():
                return
            model = self._model
            if model is None:
                raise EngineError("Whisper engine was closed")
            segments, info = model.transcribe(
                audio,
                language=language,
                task=task,
                beam_size=self.beam_size,
                word_timestamps=True,
            )
            events.put(("info", info))
            for segment in segments:
                if stop.is_set():
                    return
                events.put(("segment", segment))
            events.put(("done", None))
        except EngineError as exc:
            events.put(("error", exc))
        except Exception as exc:  # noqa: BLE001 - surfaced to the caller
            _LOG.exception("Whisper transcription failed")
            events.put(("error", EngineError(f"transcription failed: {type(exc).__name__}: {exc}")))
        finally:
            self._busy.release()


def _collect(
    ctx: EngineContext, events: queue.Queue[tuple[str, Any]], language: str | None, duration: float
) -> tuple[list[dict[str, Any]], str | None, float]:
    """Take the transcription thread's events until it is done, checking ``ctx`` every
    ``_POLL_SECONDS`` and reporting progress.

    Returns:
        (segment dicts, the language used or detected, the audio's duration in s).

    Raises:
        EngineCancelled: cancelled meanwhile.
        EngineError / InvalidInput: what the thread raised.
    """
    detected = language
    segments: list[dict[str, Any]] = []
    while True:
        try:
            kind, payload = events.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            ctx.check_stop()
            continue
        if kind == "error":
            raise payload
        if kind == "done":
            return segments, detected, duration
        if kind == "info":
            duration = float(payload.duration)
            detected = payload.language
            ctx.log_safe(
                "info",
                f"audio {duration:.1f} s, language {detected}"
                + ("" if language else f" (detected, p={payload.language_probability:.2f})"),
            )
            ctx.progress(1, "transcribing")
        elif kind == "segment":
            segments.append(segment_dict(payload))
            if duration > 0:
                ctx.progress(min(99.0, 100.0 * float(payload.end) / duration), "transcribing")
        ctx.check_stop()


def _write(
    work_dir: Path, segments: list[dict[str, Any]], detected: str | None, duration: float
) -> tuple[dict[str, Any], list[Path]]:
    """Write ``transcript.txt`` and ``transcript.json``; return (meta, files)."""
    transcript = " ".join(s["text"] for s in segments if s["text"]).strip()
    meta: dict[str, Any] = {
        "transcript": transcript,
        "language": detected or "",
        "duration_seconds": round(duration, 3),
        "segments": segments,
    }
    txt_path = work_dir / "transcript.txt"
    json_path = work_dir / "transcript.json"
    with atomic_output(txt_path, "w", encoding="utf-8") as handle:
        handle.write(transcript + "\n")
    with atomic_output(json_path, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, ensure_ascii=False, indent=2)
    return meta, [txt_path, json_path]
