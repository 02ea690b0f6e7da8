"""Languages as providers name them: Whisper's language names mapped to codes, and the stt
``language`` parameter read as a base code."""

from __future__ import annotations

import re
from typing import Any

from commands.job_parameters import LANGUAGE_CODE
from processors.engines.base import InvalidInput

__all__ = ["LANGUAGE_CODES", "requested_language", "whisper_language_code"]

# Whisper's language names (as OpenAI's verbose_json reports them) -> codes.
_WHISPER_NAMES = """
en english|zh chinese|de german|es spanish|ru russian|ko korean|fr french|ja japanese|pt portuguese|tr turkish|pl polish
ca catalan|nl dutch|ar arabic|sv swedish|it italian|id indonesian|hi hindi|fi finnish|vi vietnamese|he hebrew
uk ukrainian|el greek|ms malay|cs czech|ro romanian|da danish|hu hungarian|ta tamil|no norwegian|th thai|ur urdu
hr croatian|bg bulgarian|lt lithuanian|la latin|mi maori|ml malayalam|cy welsh|sk slovak|te telugu|fa persian
lv latvian|bn bengali|sr serbian|az azerbaijani|sl slovenian|kn kannada|et estonian|mk macedonian|br breton|eu basque
is icelandic|hy armenian|ne nepali|mn mongolian|bs bosnian|kk kazakh|sq albanian|sw swahili|gl galician|mr marathi
pa punjabi|si sinhala|km khmer|sn shona|yo yoruba|so somali|af afrikaans|oc occitan|ka georgian|be belarusian
tg tajik|sd sindhi|gu gujarati|am amharic|yi yiddish|lo lao|uz uzbek|fo faroese|ht haitian creole|ps pashto
tk turkmen|nn nynorsk|mt maltese|sa sanskrit|lb luxembourgish|my myanmar|bo tibetan|tl tagalog|mg malagasy
as assamese|tt tatar|haw hawaiian|ln lingala|ha hausa|ba bashkir|jw javanese|su sundanese|yue cantonese
my burmese|ca valencian|nl flemish|ht haitian|lb letzeburgesch|ps pushto|pa panjabi|ro moldavian|ro moldovan
si sinhalese|es castilian|zh mandarin
"""
LANGUAGE_CODES: dict[str, str] = {
    name: code for code, name in (pair.split(" ", 1) for pair in re.split(r"[|\n]", _WHISPER_NAMES.strip()))
}
"""Whisper's language names (lower case) -> Whisper codes."""


def whisper_language_code(value: Any) -> str | None:
    """Map a language as providers report it to a Whisper code.

    ``"english"`` / ``"English"`` -> ``"en"``; codes and locale tags (``"en"``,
    ``"en-US"``) -> their base code; ``None``, ``""`` or an unknown name -> None.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if text in LANGUAGE_CODES:
        return LANGUAGE_CODES[text]
    if LANGUAGE_CODE.match(text):
        return re.split(r"[-_]", text, maxsplit=1)[0]
    return None


def requested_language(value: Any) -> str | None:
    """The stt ``language`` parameter as a base code, or None for auto-detection.

    Raises:
        InvalidInput: not a string, or not shaped like a language code.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter 'language' must be a string, got {type(value).__name__}")
    text = value.strip().lower()
    if text in ("", "auto", "detect"):
        return None
    if not LANGUAGE_CODE.match(text):
        raise InvalidInput(f"parameter 'language' must be a language code like 'en' or 'fr-FR', or 'auto'; got {value!r}")
    return re.split(r"[-_]", text, maxsplit=1)[0]
