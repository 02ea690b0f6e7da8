from __future__ import annotations

# Dubbing's language pairs: which (source, target) pairs can be translated and spoken
# here (cheap file checks, also used at submission), and the codes that name them.
import re
import shutil
from pathlib import Path
from typing import Any

from commands.job_parameters import LANGUAGE_CODE
from processors.engines.base import InvalidInput
from processors.engines.stt import WHISPER_LANGUAGES
from processors.engines.tts import espeak_path

__all__ = [
    "APERTIUM_ROUTES",
    "APERTIUM_TARGETS",
    "apertium_modes",
    "apertium_path",
    "dubbing_target_languages",
    "iso639_2",
    "normalize_language",
    "supported_pair",
    "unsupported_pair_reason",
]


APERTIUM_ROUTES: dict[tuple[str, str], tuple[str, ...]] = {
    ("en", "es"): ("eng-spa",),
    ("es", "fr"): ("es-fr",),
    ("fr", "es"): ("fr-es",),
    ("en", "fr"): ("eng-spa", "es-fr"),
}
"""Apertium modes (``apertium -u <mode>``) per (source, target) pair into es/fr.
Translation into English always uses Whisper's ``translate`` task instead."""

APERTIUM_TARGETS = ("es", "fr")
APERTIUM_HINT = "apt-get install apertium apertium-eng-spa apertium-fr-es"
_LANG_RE = LANGUAGE_CODE  # one definition: commands.job_parameters


def normalize_language(value: Any, name: str) -> str | None:
    """Map a language parameter (``"es"``, ``"es-ES"``, ``"fr_FR"``) to its lower-case
    base code; None for absent/``""``/``"auto"``.

    Raises:
        InvalidInput: not a string or not shaped like a language code.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter {name!r} must be a language code string, got {type(value).__name__}")
    code = value.strip()
    if code.lower() in ("", "auto", "detect"):
        return None
    if not _LANG_RE.match(code):
        raise InvalidInput(f"parameter {name!r} must be a language code like 'es' or 'fr-FR', got {value!r}")
    return re.split(r"[-_]", code.lower(), maxsplit=1)[0]


def apertium_path() -> str | None:
    """Path of the ``apertium`` program, or None."""
    return shutil.which("apertium")


def _apertium_modes_dir(binary: str) -> Path:
    return Path(binary).resolve().parent.parent / "share" / "apertium" / "modes"


def apertium_modes() -> set[str]:
    """Installed Apertium modes (file check only, e.g. ``{"eng-spa", "es-fr", ...}``)."""
    binary = apertium_path()
    if binary is None:
        return set()
    folder = _apertium_modes_dir(binary)
    if not folder.is_dir():
        return set()
    return {p.name[: -len(".mode")] for p in folder.glob("*.mode")}


def unsupported_pair_reason(source: str | None, target: str | None, *, needs_speech: bool = True) -> str | None:
    """Why dubbing/translating ``source`` -> ``target`` cannot run here, or None if it can.

    Cheap (file checks only), for refusing a job at submission.  ``source`` None means
    "detect": the pair is then checked again once Whisper has detected the language.

    Supported: anything Whisper knows -> ``en`` (Whisper translate; spoken by Piper), and
    ``en``/``es``/``fr`` -> ``es``/``fr`` (Apertium; spoken by espeak-ng).  German and other
    targets are not supported (no Apertium pair installed).

    Args:
        needs_speech: also require the target language's TTS voice (dubbing; False for
            subtitles only).
    """
    try:
        src = normalize_language(source, "source_language")
        tgt = normalize_language(target, "target_language")
    except InvalidInput as exc:
        return exc.message
    if tgt is None:
        return "parameter 'target_language' is required (e.g. 'es')"
    if src is not None and src not in WHISPER_LANGUAGES:
        return f"source language {src!r} is not one Whisper can transcribe"
    if src is not None and src == tgt:
        return f"source and target language are both {tgt!r}: nothing to translate"
    if tgt == "en":
        if needs_speech:
            from processors.engines.models import piper_voice_status

            missing = piper_voice_status().missing
            if missing:
                return f"English speech needs the Piper voice: {'; '.join(missing)}"
        return None
    if tgt not in APERTIUM_TARGETS:
        return (
            f"translation into {tgt!r} is not supported: targets are 'en' (from any language), 'es' and 'fr' (from en, es or fr)"
        )
    if src is not None and (src, tgt) not in APERTIUM_ROUTES:
        return f"translation {src}->{tgt} is not supported: into {tgt!r} only from en, es or fr (Apertium)"
    if apertium_path() is None:
        return f"translation into {tgt!r} needs Apertium, which is not installed ({APERTIUM_HINT})"
    modes = apertium_modes()
    routes = [APERTIUM_ROUTES[(src, tgt)]] if src is not None else [r for (s, t), r in APERTIUM_ROUTES.items() if t == tgt]
    missing_modes = sorted({m for route in routes for m in route} - modes)
    if missing_modes:
        return f"Apertium mode(s) {', '.join(missing_modes)} are not installed ({APERTIUM_HINT})"
    if needs_speech and espeak_path() is None:
        return f"speech in {tgt!r} needs espeak-ng, which is not installed (apt-get install espeak-ng)"
    return None


def supported_pair(source: str | None, target: str | None, *, needs_speech: bool = True) -> bool:
    """True when ``source`` -> ``target`` can be dubbed here (see
    :func:`unsupported_pair_reason` for the rules and the message when it cannot)."""
    return unsupported_pair_reason(source, target, needs_speech=needs_speech) is None


def dubbing_target_languages(needs_speech: bool = True) -> list[str]:
    """Target languages usable now (cheap checks), e.g. ``["en", "es", "fr"]``."""
    return [t for t in ("en", *APERTIUM_TARGETS) if supported_pair(None, t, needs_speech=needs_speech)]


_ISO639_2 = {
    "en": "eng",
    "es": "spa",
    "fr": "fra",
    "de": "deu",
    "it": "ita",
    "pt": "por",
    "nl": "nld",
    "ru": "rus",
    "zh": "zho",
    "ja": "jpn",
}


def iso639_2(code: str) -> str:
    """Three-letter language tag for container metadata (``"und"`` if unknown)."""
    return _ISO639_2.get(code, "und")
