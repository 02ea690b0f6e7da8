from __future__ import annotations

# Media helpers shared by the media engines (voice cloning, dubbing, video translation,
# talking heads, story narration): locating ffmpeg, probing and decoding input files,
# running child processes with cancellation checkpoints, WAV I/O, time-stretching, and
# child contexts that map a sub-step's progress into a slice of the job's progress.
#
# Importing this module is cheap: numpy and PyAV are imported inside the functions that
# use them, so ``describe_engines`` never pulls an inference or media runtime in.
import contextlib
import importlib.util
import math
import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .base import EngineContext, EngineError, InvalidInput, JobCancelled, atomic_output

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

__all__ = [
    "FFMPEG_ENV",
    "MAX_DURATION_PARAM",
    "MediaInfo",
    "check_duration",
    "child_context",
    "decode_audio",
    "ffmpeg_exe",
    "ffmpeg_status",
    "guard_inputs",
    "input_path",
    "max_input_duration",
    "probe_media",
    "run_in_thread",
    "run_process",
    "time_stretch",
    "write_wav",
]

FFMPEG_ENV = "AIORCH_FFMPEG"
"""Environment variable: path of an ffmpeg binary to use instead of imageio-ffmpeg's."""

MAX_DURATION_PARAM = "_max_input_duration_s"
"""Job parameter (set by the platform, not the user): longest accepted media input, in s."""

PROTOCOL_WHITELIST = "file,pipe"
"""The only protocols ffmpeg and PyAV may open for an input (and for anything an input
refers to: playlist entries, concat lists, ...): untrusted media never makes the processor
fetch a URL."""

PLAYLIST_FORMATS = frozenset(
    {"hls", "applehttp", "dash", "concat", "ffconcat", "tee", "sdp", "rtsp", "rtp", "image2", "ffmetadata"}
)
"""Demuxers whose "media" is a list of other files or URLs: refused as input."""

_POLL_SECONDS = 0.1
_FFMPEG_HINT = "pip install 'imageio-ffmpeg==0.8.1' (static ffmpeg), apt-get install ffmpeg, or set AIORCH_FFMPEG"

T = TypeVar("T")


# -- ffmpeg ------------------------------------------------------------------------------


def _imageio_ffmpeg_binary() -> Path | None:
    """The ffmpeg binary shipped in the imageio-ffmpeg wheel, found without importing it."""
    try:
        spec = importlib.util.find_spec("imageio_ffmpeg")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "binaries"
    if not bin_dir.is_dir():
        return None
    for candidate in sorted(bin_dir.glob("ffmpeg*")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ffmpeg_status() -> tuple[str | None, list[str]]:
    """Cheap check (no import, no process): ``(ffmpeg path or None, missing messages)``.

    Order: ``$AIORCH_FFMPEG``, ``$IMAGEIO_FFMPEG_EXE``, the imageio-ffmpeg wheel's binary,
    then ``ffmpeg`` on PATH.
    """
    for env in (FFMPEG_ENV, "IMAGEIO_FFMPEG_EXE"):
        value = os.environ.get(env, "").strip()
        if value:
            if Path(value).is_file() and os.access(value, os.X_OK):
                return value, []
            return None, [f"{env}={value} is not an executable ffmpeg; {_FFMPEG_HINT}"]
    bundled = _imageio_ffmpeg_binary()
    if bundled is not None:
        return str(bundled), []
    system = shutil.which("ffmpeg")
    if system:
        return system, []
    return None, [f"ffmpeg is not installed: {_FFMPEG_HINT}"]


def guard_inputs(args: Sequence[str]) -> list[str]:
    """``args`` with ``-protocol_whitelist file,pipe`` before every ``-i`` (the option is
    per input in ffmpeg, so each input needs its own); an input already preceded by a
    whitelist keeps it."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg == "-i" and not (index >= 2 and args[index - 2] == "-protocol_whitelist"):
            out += ["-protocol_whitelist", PROTOCOL_WHITELIST]
        out.append(arg)
    return out


def av_options() -> dict[str, str]:
    """Container options for ``av.open`` of an untrusted input (the protocol whitelist)."""
    return {"protocol_whitelist": PROTOCOL_WHITELIST}


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (see :func:`ffmpeg_status` for the search order).

    Raises:
        EngineError: no usable ffmpeg.
    """
    path, missing = ffmpeg_status()
    if path is None:
        raise EngineError("; ".join(missing))
    return path


# -- inputs and limits -------------------------------------------------------------------


def input_path(ctx: EngineContext, field: str, *, required: bool = True) -> Path | None:
    """Return ``ctx.input_files[field]`` checked to exist and be non-empty.

    Raises:
        InvalidInput: the field is absent (when ``required``), the file does not exist or
            is empty.
    """
    files = ctx.input_files or {}
    if field not in files:
        if required:
            raise InvalidInput(f"this job needs a file in field {field!r}; got fields {sorted(files)}")
        return None
    path = Path(files[field])
    if not path.is_file():
        raise InvalidInput(f"input file {path.name!r} ({field}) does not exist or is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"input file {path.name!r} ({field}) is empty")
    return path


def max_input_duration(ctx: EngineContext) -> float | None:
    """The optional ``parameters["_max_input_duration_s"]`` limit in seconds, or None.

    Raises:
        InvalidInput: the value is not a positive number.
    """
    value = (ctx.parameters or {}).get(MAX_DURATION_PARAM)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"parameter {MAX_DURATION_PARAM!r} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_duration(ctx: EngineContext, seconds: float | None, label: str) -> None:
    """Raise :class:`InvalidInput` when ``seconds`` exceeds the job's duration limit.

    Args:
        seconds: the media duration (None = unknown: not checked here).
        label: how to name the input in the message, e.g. ``"input_file 'talk.mp4'"``.
    """
    limit = max_input_duration(ctx)
    if limit is not None and seconds is not None and seconds > limit:
        raise InvalidInput(f"{label} is {seconds:.1f} s long; the limit for this job is {limit:g} s")


@dataclass
class MediaInfo:
    """What :func:`probe_media` found in a container.

    Attributes:
        duration: seconds (None when the container does not say).
        has_audio / has_video: whether such a stream exists (cover art does not count).
        width, height: first video stream's size in pixels (0 without video).
        fps: first video stream's average frame rate (0.0 if unknown).
        audio_rate: first audio stream's sample rate in Hz (0 without audio).
    """

    path: Path
    duration: float | None
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    audio_rate: int = 0


def probe_media(path: Path, field: str) -> MediaInfo:
    """Open ``path`` with PyAV (no decoding) and describe its streams.

    Raises:
        InvalidInput: the file is not a readable media container; the message names the
            file, the field and the decoder's reason.
    """
    import av

    try:
        with av.open(str(path), mode="r", metadata_errors="ignore", container_options=av_options()) as container:
            if PLAYLIST_FORMATS.intersection(container.format.name.split(",")):
                raise InvalidInput(f"input file {path.name!r} ({field}) is a playlist or list of files, not audio or video")
            audio = list(container.streams.audio)
            video = [
                s
                for s in container.streams.video
                if not (s.disposition & av.stream.Disposition.attached_pic)  # cover art is no video
            ]
            duration: float | None = None
            if container.duration is not None:
                duration = float(container.duration) / float(av.time_base)
            else:
                for stream in (*audio, *video):
                    if stream.duration is not None and stream.time_base is not None:
                        duration = float(stream.duration * stream.time_base)
                        break
            info = MediaInfo(path=path, duration=duration, has_audio=bool(audio), has_video=bool(video))
            if video:
                info.width = int(video[0].codec_context.width or 0)
                info.height = int(video[0].codec_context.height or 0)
                rate = video[0].average_rate or video[0].guessed_rate
                info.fps = float(rate) if rate else 0.0
            if audio:
                info.audio_rate = int(audio[0].codec_context.sample_rate or 0)
    except (av.error.FFmpegError, OSError, ValueError, IndexError, AttributeError) as exc:
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        raise InvalidInput(f"input file {path.name!r} ({field}) is not readable audio or video: {reason}") from exc
    if not info.has_audio and not info.has_video:
        raise InvalidInput(f"input file {path.name!r} ({field}) has neither an audio nor a video stream")
    return info


# -- child processes and threads ---------------------------------------------------------


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
        JobCancelled: cancelled while the child ran (the child is killed first).
        EngineError: the program cannot be started or ran past ``timeout``.
    """
    try:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
    except OSError as exc:
        raise EngineError(f"cannot run {what}: {exc}") from exc
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)]
    if capture_stdout:
        threads.append(threading.Thread(target=_drain_all, args=(proc.stdout, out), daemon=True))
    if stdin is not None:
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                proc.wait(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise EngineError(f"{what} did not finish within {timeout:.0f} s")
            ctx.check_stop()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
    stderr = b"".join(err).decode("utf-8", "replace").strip()
    return proc.returncode, b"".join(out), stderr


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
        JobCancelled: cancelled while it ran.
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
    have no checkpoint of their own.  On cancel, :class:`JobCancelled` is raised at once
    and the thread's eventual result is discarded (it finishes in the background).

    Raises:
        JobCancelled: cancelled before ``fn`` returned.
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


# -- contexts ----------------------------------------------------------------------------


def child_context(
    ctx: EngineContext,
    work_dir: Path,
    lo: float,
    hi: float,
    *,
    parameters: dict[str, Any] | None = None,
    input_files: dict[str, Path] | None = None,
    stage: str | None = None,
) -> EngineContext:
    """A context for a sub-engine (STT, TTS, ...) run inside a job.

    The child's progress 0..100 is mapped onto ``lo..hi`` of the parent's; its stage is
    replaced by ``stage`` when given; logs and ``should_stop`` go to the parent.  The
    parent's duration limit is passed on unless ``parameters`` already has one.
    """

    def report(progress: int, child_stage: str) -> None:
        ctx.progress(lo + (hi - lo) * max(0, min(100, progress)) / 100.0, stage or child_stage)

    params = dict(parameters or {})
    limit = (ctx.parameters or {}).get(MAX_DURATION_PARAM)
    if limit is not None:
        params.setdefault(MAX_DURATION_PARAM, limit)
    return EngineContext(
        job_id=ctx.job_id,
        parameters=params,
        input_files=dict(input_files or {}),
        work_dir=work_dir,
        report=report,
        log=ctx.log_safe,
        should_stop=ctx.should_stop,
    )


def cancelled(ctx: EngineContext) -> JobCancelled:
    """A :class:`JobCancelled` for ``ctx`` (for code paths that must raise it)."""
    return JobCancelled(f"job {ctx.job_id} cancelled")


# -- audio arrays ------------------------------------------------------------------------


def decode_audio(path: Path, ctx: EngineContext, sample_rate: int, *, field: str, tmp_dir: Path) -> FloatArray:
    """Decode the first audio stream of ``path`` to mono float32 at ``sample_rate`` Hz.

    Uses ``ffmpeg -vn -ac 1 -ar <rate> -f f32le`` (a child process, so a cancel kills it).

    Returns:
        samples in [-1, 1], shape ``(n,)``.

    Raises:
        InvalidInput: the file has no decodable audio or decodes to nothing; the message
            names the file, the field and ffmpeg's reason.
        JobCancelled: cancelled while decoding.
    """
    import numpy as np

    raw = tmp_dir / f".decoded-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.f32"
    try:
        status, _out, stderr = run_process(
            [
                ffmpeg_exe(),
                "-nostdin",
                "-y",
                "-hide_banner",
                "-loglevel",
                "error",
                "-protocol_whitelist",
                PROTOCOL_WHITELIST,
                "-i",
                str(path),
                "-vn",
                "-ac",
                "1",
                "-ar",
                str(sample_rate),
                "-f",
                "f32le",
                str(raw),
            ],
            ctx,
            what="ffmpeg",
        )
        if status != 0:
            raise InvalidInput(f"input file {path.name!r} ({field}) is not decodable audio: {last_line(stderr)}")
        samples = np.fromfile(raw, dtype="<f4").astype(np.float32)
    finally:
        raw.unlink(missing_ok=True)
    if samples.size == 0:
        raise InvalidInput(f"input file {path.name!r} ({field}) contains no audio samples")
    result: FloatArray = np.nan_to_num(np.clip(samples, -1.0, 1.0))
    return result


def write_wav(target: Path, samples: FloatArray, sample_rate: int) -> float:
    """Write mono float samples as a 16-bit PCM WAV (atomically).

    Returns:
        the duration written, in seconds.
    """
    import numpy as np

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with atomic_output(target, "wb") as handle, wave.open(handle, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return float(pcm.size) / sample_rate


def atempo_chain(factor: float) -> str:
    """An ffmpeg ``atempo`` filter chain for a tempo ``factor`` (>1 = faster/shorter).

    Each ``atempo`` stage stays within 0.5..2.0, where its WSOLA-style overlap-add
    keeps the best quality.
    """
    stages: list[float] = []
    rest = factor
    while rest > 2.0:
        stages.append(2.0)
        rest /= 2.0
    while rest < 0.5:
        stages.append(0.5)
        rest /= 0.5
    stages.append(rest)
    return ",".join(f"atempo={s:.6f}" for s in stages)


def time_stretch(samples: FloatArray, sample_rate: int, factor: float, ctx: EngineContext, tmp_dir: Path) -> FloatArray:
    """Change the tempo of ``samples`` by ``factor`` without changing the pitch.

    Uses ffmpeg's ``atempo`` filter (waveform-similarity overlap-add, WSOLA; Verhelst &
    Roelands 1993).  ``factor`` 1.25 makes the audio 1.25x faster (duration / 1.25).

    Returns:
        the stretched samples (float32, same rate); ``samples`` itself when factor ≈ 1.
    """
    import numpy as np

    if abs(factor - 1.0) < 0.01 or samples.size == 0:
        return samples
    stamp = f"{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    src = tmp_dir / f".stretch-in-{stamp}.f32"
    dst = tmp_dir / f".stretch-out-{stamp}.f32"
    try:
        samples.astype("<f4").tofile(src)
        fmt = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
        run_ffmpeg([*fmt, "-i", str(src), "-filter:a", atempo_chain(factor), *fmt, str(dst)], ctx, what="time-stretch audio")
        out: FloatArray = np.fromfile(dst, dtype="<f4").astype(np.float32)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return out
