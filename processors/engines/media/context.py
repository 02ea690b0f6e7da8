from __future__ import annotations

# Contexts of sub-steps: a sub-engine's progress mapped into a slice of the job's.
from pathlib import Path
from typing import Any

from processors.engines.base import EngineCancelled, EngineContext
from processors.engines.media.probe import MAX_DURATION_PARAM

__all__ = ["cancelled", "child_context"]


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


def cancelled(ctx: EngineContext) -> EngineCancelled:
    """A :class:`EngineCancelled` for ``ctx`` (for code paths that must raise it)."""
    return EngineCancelled(f"job {ctx.job_id} cancelled")
