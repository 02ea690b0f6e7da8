from __future__ import annotations

# Text translation through Apertium (GPL: run as a child process, one per mode).
from processors.engines.base import EngineContext, EngineError
from processors.engines.media import last_line, run_process

from .languages import APERTIUM_HINT, apertium_path
from .segments import tidy

__all__ = ["apertium_translate"]


def _run_mode(binary: str, mode: str, ctx: EngineContext, text: str, timeout: float) -> str:
    """``text`` (lines) through ``apertium -u <mode>``; the raw output.

    Raises:
        EngineError: Apertium failed.
    """
    status, out, stderr = run_process(
        [binary, "-u", mode],
        ctx,
        what="apertium",
        stdin=(text + "\n").encode("utf-8"),
        timeout=timeout,
        capture_stdout=True,
    )
    if status != 0:
        raise EngineError(f"apertium {mode} failed: {last_line(stderr)}")
    return out.decode("utf-8", "replace")


def apertium_translate(ctx: EngineContext, texts: list[str], route: tuple[str, ...]) -> list[str]:
    """Translate texts through the Apertium modes in ``route`` (one child process per
    mode, all texts at once, one per line).

    Returns:
        one translation per text (``-u``: unknown words pass through unmarked).

    Raises:
        EngineError: Apertium failed or is missing.
    """
    binary = apertium_path()
    if binary is None:
        raise EngineError(f"Apertium is not installed ({APERTIUM_HINT})")
    lines = [" ".join(t.split()) for t in texts]
    for mode in route:
        result = _run_mode(binary, mode, ctx, "\n".join(lines), 600).rstrip("\n").split("\n")
        if len(result) != len(lines):  # should not happen; translate one by one
            result = [" ".join(_run_mode(binary, mode, ctx, line, 120).split()) for line in lines]
        lines = [tidy(r) for r in result]
    return lines
