"""``aiorch doctor``: what this machine lacks to run each job type — Debian packages,
Python packages, models — read from the same checks the processors make
(:func:`processors.engines.describe_engines`), without the database or a running system.
Nothing here imports an inference runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the Debian packages each job type uses, in the order to install them; every one is
#: optional for the type as a whole (English speech, stt and stories need none) but each
#: adds languages, see :data:`DEBIAN_PACKAGES`
TYPE_PACKAGES: dict[str, tuple[str, ...]] = {
    "stt": (),
    "tts": ("espeak-ng",),
    "voice_cloning": ("espeak-ng",),
    "dubbing": ("apertium", "apertium-eng-spa", "apertium-fr-es", "espeak-ng"),
    "video_translation": ("apertium", "apertium-eng-spa", "apertium-fr-es"),
    "animated_talking_heads": ("espeak-ng",),
    "ai_stories": (),
}

#: what each Debian package gives
DEBIAN_PACKAGES: dict[str, str] = {
    "espeak-ng": "speech in languages other than English",
    "apertium": "the translation engine (targets es and fr)",
    "apertium-eng-spa": "translation en → es (and en → fr through es)",
    "apertium-fr-es": "translation fr ↔ es (and en → fr through es)",
}


def _probes() -> dict[str, Callable[[], bool]]:
    """Per Debian package, whether what the engines use of it is there: the program on
    PATH, or the Apertium mode files."""
    from processors.engines.dubbing import apertium_modes, apertium_path
    from processors.engines.tts import espeak_path

    return {
        "espeak-ng": lambda: espeak_path() is not None,
        "apertium": lambda: apertium_path() is not None,
        "apertium-eng-spa": lambda: "eng-spa" in apertium_modes(),
        "apertium-fr-es": lambda: bool({"fr-es", "es-fr"} & apertium_modes()),
    }


def diagnose(model_dir: Path) -> dict[str, Any]:
    """What this machine lacks, per job type.

    Args:
        model_dir: the processors' model folder (``AIORCH_MODEL_DIR``).

    Returns:
        ``{"types": [{"type", "engine", "available": bool, "languages": [str],
        "missing": [str], "debian": [{"package", "installed": bool, "gives"}]}, ...],
        "debian_missing": [str], "apt_get": str | None, "complete": bool}`` — one entry
        per job type in the catalogue's order; ``missing`` is what the engine check
        reports (Python packages, models, programs), ``debian_missing`` the packages of
        :data:`TYPE_PACKAGES` absent here, ``apt_get`` the command that installs them, and
        ``complete`` whether every type runs in every language it can have here.
    """
    from processors.engines import describe_engines

    probes = _probes()
    installed = {package: probe() for package, probe in probes.items()}
    types = []
    for entry in describe_engines(model_dir):
        packages = TYPE_PACKAGES.get(entry["type"], ())
        types.append(
            {
                "type": entry["type"],
                "engine": entry["engine"],
                "available": bool(entry["available"]),
                "languages": list(entry.get("languages") or []),
                "missing": list(entry.get("missing") or []),
                "debian": [{"package": p, "installed": installed[p], "gives": DEBIAN_PACKAGES[p]} for p in packages],
            }
        )
    wanted = dict.fromkeys(p for packages in TYPE_PACKAGES.values() for p in packages)
    absent = [p for p in wanted if not installed[p]]
    return {
        "types": types,
        "debian_missing": absent,
        "apt_get": f"apt-get install {' '.join(absent)}" if absent else None,
        "complete": not absent and all(t["available"] and not t["missing"] for t in types),
    }


def render(report: dict[str, Any]) -> list[str]:
    """The report of :func:`diagnose` as text lines for a terminal."""
    lines = []
    for t in report["types"]:
        whole = t["available"] and not t["missing"] and all(d["installed"] for d in t["debian"])
        state = "ok" if whole else ("partly" if t["available"] else "cannot run")
        languages = ", ".join(t["languages"][:8]) + (f" (+{len(t['languages']) - 8})" if len(t["languages"]) > 8 else "")
        lines.append(f"{t['type']:<24}{state:<12}{t['engine']}; languages: {languages or '-'}")
        for reason in t["missing"]:
            lines.append(f"{'':<24}lacks: {reason}")
        for deb in t["debian"]:
            if not deb["installed"]:
                lines.append(f"{'':<24}Debian {deb['package']} is not installed: {deb['gives']}")
    if report["apt_get"]:
        lines.append(f"to install the Debian packages: {report['apt_get']}")
    lines.append("nothing is missing" if report["complete"] else "some job types or languages cannot run here (see above)")
    return lines
