from __future__ import annotations

# Engine contract shared by every AI engine that a processor runs.
#
# A processor builds its engines once (see :func:`processors.engines.build_engines`),
# calls :meth:`Engine.load` once at start-up (or lets the first :meth:`Engine.run` do it),
# then calls :meth:`Engine.run` once per job with an :class:`EngineContext`, and
# :meth:`Engine.close` on shutdown.  Engines never touch the event store or the bus:
# they read local input files, write result files into ``ctx.work_dir`` and return an
# :class:`EngineResult`.  Failures are reported by raising :class:`EngineError` or one of
# its subclasses, whose ``code`` is a stable machine-readable string.
import abc
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "Engine",
    "EngineCancelled",
    "EngineContext",
    "EngineError",
    "EngineResult",
    "InvalidInput",
    "ModelMissing",
    "atomic_output",
    "prepare_work_dir",
]


class EngineError(Exception):
    """An engine failed to process a job.

    Attributes:
        code: stable machine-readable error code (class attribute), ``"engine_error"``
            for this base class.
        message: human-readable explanation, also ``str(exc)``; it becomes the job's
            error, which the owner and every viewer read, so it never quotes a remote
            party (a provider's answer).
        detail: what the remote party said, for the processor's log only (None when
            there is nothing more to say); never stored in an event.
    """

    code: ClassVar[str] = "engine_error"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(EngineError):
    """The job's input is unusable: the file won't decode, is empty or too long, or a
    parameter is missing or has a bad value.  Retrying the same job will not help."""

    code: ClassVar[str] = "invalid_input"


class EngineCancelled(EngineError):
    """The job was cancelled: ``ctx.should_stop()`` returned True at a checkpoint."""

    code: ClassVar[str] = "cancelled"

    def __init__(self, message: str = "job cancelled") -> None:
        super().__init__(message)


class ModelMissing(EngineError):
    """A model file that the engine needs is absent or damaged.  The message names the
    model, where it was looked for, and which pip package or folder provides it."""

    code: ClassVar[str] = "model_missing"


def _noop_report(progress: int, stage: str) -> None:
    return None


def _noop_log(level: str, message: str) -> None:
    return None


def _never_stop() -> bool:
    return False


@dataclass
class EngineContext:
    """Everything an engine needs to run one job.

    Attributes:
        job_id: the job's id (for log messages only).
        parameters: the job's parameters, e.g. ``{"language": "en"}`` for STT or
            ``{"text": "...", "language": "en"}`` for TTS.
        input_files: input field name (``"input_file"``, ...) -> local path of the file.
        work_dir: folder where the engine writes its result files.  It should exist and
            be empty; the engine creates it if it is missing.
        report: ``report(progress, stage)`` with progress an int 0-100 and a stage name
            such as ``"transcribing"``.  Cheap; engines call it as often as they like.
        log: ``log(level, message)`` with level ``"info"``, ``"warning"`` or ``"error"``.
        should_stop: cancellation checkpoint; when it returns True the engine raises
            :class:`EngineCancelled` promptly (aim: within about one second).
        validated: the job's parameters as validated at submission, the pydantic model of
            its type (:data:`commands.job_parameters.SCHEMAS`), or None.  An engine given
            one reads its typed fields and checks nothing again; without one (a sub-step
            of another engine, a direct call) it checks ``parameters`` itself.
    """

    job_id: str
    parameters: dict[str, Any]
    input_files: dict[str, Path]
    work_dir: Path
    report: Callable[[int, str], None] = field(default=_noop_report)
    log: Callable[[str, str], None] = field(default=_noop_log)
    should_stop: Callable[[], bool] = field(default=_never_stop)
    validated: BaseModel | None = None

    def check_stop(self) -> None:
        """Raise :class:`EngineCancelled` if ``should_stop()`` returns True."""
        if self.should_stop():
            raise EngineCancelled(f"job {self.job_id} cancelled")

    def progress(self, progress: float, stage: str) -> None:
        """Call ``report`` with progress clamped to an int in 0..100; a failing
        reporter is ignored (reporting must never fail a job)."""
        value = int(max(0, min(100, round(progress))))
        with contextlib.suppress(Exception):  # reporting is best effort
            self.report(value, stage)

    def log_safe(self, level: str, message: str) -> None:
        """Call ``log`` and ignore any error it raises."""
        with contextlib.suppress(Exception):  # logging is best effort
            self.log(level, message)


@dataclass
class EngineResult:
    """What an engine produced for one job.

    Attributes:
        files: result files, all inside ``ctx.work_dir``, main file first.
        meta: JSON-serialisable result metadata (shape documented by each engine).
    """

    files: list[Path]
    meta: dict[str, Any]


class Engine(abc.ABC):
    """One loaded AI engine, reused across jobs by a processor.

    Class attributes:
        type: the job type it serves (``"stt"``, ``"tts"``).
        name: the engine's name, e.g. ``"faster-whisper:whisper-base"``.

    Engines are not required to be thread-safe: a processor runs one job at a time per
    engine instance.  They are context managers (``with engine: ...`` loads and closes).
    """

    type: ClassVar[str] = ""
    name: ClassVar[str] = ""

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model once.  Idempotent: later calls return at once.

        Raises:
            ModelMissing: a model file is absent or damaged.
            EngineError: the runtime could not be started.
        """

    @abc.abstractmethod
    def run(self, ctx: EngineContext) -> EngineResult:
        """Process one job (loads the model first if needed).

        Raises:
            InvalidInput: unusable input or parameters.
            EngineCancelled: ``ctx.should_stop()`` returned True.
            EngineError: any other engine failure.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the model and any child process.  Idempotent; ``load`` may be
        called again afterwards."""

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def prepare_work_dir(work_dir: Path | str) -> Path:
    """Return ``work_dir`` as an absolute path, creating it (and its parents) if needed.

    Raises:
        EngineError: the path exists but is not a folder, or cannot be created or written.
    """
    path = Path(work_dir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise EngineError(f"work_dir {path} exists and is not a folder") from exc
    except OSError as exc:
        raise EngineError(f"cannot create work_dir {path}: {exc}") from exc
    if not path.is_dir():
        raise EngineError(f"work_dir {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise EngineError(f"work_dir {path} is not writable")
    return path


@contextmanager
def atomic_output(target: Path, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """Open a temporary file beside ``target`` and rename it onto ``target`` when the
    block succeeds, so a reader never sees a half-written result.  On error the
    temporary file is removed and the exception propagates.

    Yields:
        the open file object (binary for ``"wb"``, text for ``"w"``).
    """
    target = Path(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
