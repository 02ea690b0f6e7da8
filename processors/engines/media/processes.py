from __future__ import annotations

# Child processes and native calls run with cancellation checkpoints.
import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from processors.engines.base import EngineContext, EngineError
from processors.engines.media.ffmpeg import ffmpeg_exe, guard_inputs

__all__ = ["last_line", "run_ffmpeg", "run_in_thread", "run_process"]

_POLL_SECONDS = 0.1

T = TypeVar("T")


def _drain(stream: Any, sink: list[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: stream.read(4096), b""):
            sink.append(chunk)
            if len(sink) > 64:  # keep the tail only
                del sink[:-32]


def run_process(
    args: Sequence[str],
    ctx: EngineContext,
    *,
    what: str,
    stdin: bytes | None = None,
    timeout: float = 3600.0,
    capture_stdout: bool = False,
) -> tuple[int, bytes, str]:
    """Run a child process, polling ``ctx.should_stop()`` every 0.1 s.

    Args:
        args: the command line (no shell).
        what: name for messages, e.g. ``"ffmpeg"``.
        stdin: bytes written to the child's standard input (then closed).
        timeout: seconds after which the child is killed and EngineError raised.
        capture_stdout: return the child's stdout (else it goes to /dev/null).

    Returns:
        ``(exit status, stdout bytes, stderr text tail)``; a non-zero status is returned,
        not raised, so callers can decide between InvalidInput and EngineError.

    Raises:
        EngineCancelled: cancelled while the child ran (the child is killed first).
        EngineError: the program cannot be started or ran past ``timeout``.
    """
    proc = _start(args, what, piped_stdin=stdin is not None, capture_stdout=capture_stdout)
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)]
    if capture_stdout:
        threads.append(threading.Thread(target=_drain_all, args=(proc.stdout, out), daemon=True))
    if stdin is not None:
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True))
    for thread in threads:
        thread.start()
    try:
        _wait(proc, ctx, what, timeout)
    finally:
        for thread in threads:
            thread.join(timeout=5)
        _close_pipes(proc)
    stderr = b"".join(err).decode("utf-8", "replace").strip()
    return proc.returncode, b"".join(out), stderr


def _start(args: Sequence[str], what: str, *, piped_stdin: bool, capture_stdout: bool) -> subprocess.Popen[bytes]:
    """Start the child (no shell), stderr always piped.

    Raises:
        EngineError: the program cannot be started.
    """
    try:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.PIPE if piped_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
    except OSError as exc:
        raise EngineError(f"cannot run {what}: {exc}") from exc


def _wait(proc: subprocess.Popen[bytes], ctx: EngineContext, what: str, timeout: float) -> None:
    """Wait for the child, checking ``ctx`` every ``_POLL_SECONDS``; on any error
    (cancel, timeout) the child is killed and reaped before the error propagates.

    Raises:
        EngineCancelled: cancelled while the child ran.
        EngineError: it ran past ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                proc.wait(timeout=_POLL_SECONDS)
                return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise EngineError(f"{what} did not finish within {timeout:.0f} s")
            ctx.check_stop()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(OSError, ValueError):
            if stream is not None:
                stream.close()


def _drain_all(stream: Any, sink: list[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        for chunk in iter(lambda: stream.read(65536), b""):
            sink.append(chunk)


def _feed(stream: Any, data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.write(data)
        stream.close()


def last_line(stderr: str, limit: int = 300) -> str:
    """The last non-empty line of a program's stderr, shortened for a message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return (lines[-1] if lines else "no error output")[:limit]


def run_ffmpeg(args: Sequence[str], ctx: EngineContext, *, what: str, timeout: float = 3600.0) -> None:
    """Run ``ffmpeg -nostdin -y -hide_banner -loglevel error <args>`` with checkpoints,
    every input restricted to the ``file`` and ``pipe`` protocols (:func:`guard_inputs`).

    Raises:
        EngineError: ffmpeg failed (message has the step ``what`` and ffmpeg's last line).
        EngineCancelled: cancelled while it ran.
    """
    status, _out, stderr = run_process(
        [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", *guard_inputs(args)],
        ctx,
        what="ffmpeg",
        timeout=timeout,
    )
    if status != 0:
        raise EngineError(f"ffmpeg failed to {what}: {last_line(stderr)}")


def run_in_thread(fn: Callable[[], T], ctx: EngineContext, *, name: str = "engine-step") -> T:
    """Run ``fn()`` in a daemon thread while this thread polls ``ctx.should_stop()``.

    For long native calls (WORLD analysis, model inference) that release the GIL but
    have no checkpoint of their own.  On cancel, :class:`EngineCancelled` is raised at once
    and the thread's eventual result is discarded (it finishes in the background).

    Raises:
        EngineCancelled: cancelled before ``fn`` returned.
        BaseException: whatever ``fn`` raised.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    ctx.check_stop()
    threading.Thread(target=target, name=name, daemon=True).start()
    while not done.wait(_POLL_SECONDS):
        ctx.check_stop()
    if "error" in box:
        raise box["error"]
    result: T = box["value"]
    return result
