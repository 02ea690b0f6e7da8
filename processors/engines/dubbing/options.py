from __future__ import annotations

# A dubbing job's options: from the validated parameter model the processor hands over
# (typed fields, nothing to check again), or from a raw parameter dict (sub-engine calls,
# tests), checked here.
from dataclasses import dataclass
from typing import Any

from commands.job_parameters import DubbingParameters
from processors.engines.base import EngineContext, InvalidInput

from .languages import normalize_language, unsupported_pair_reason
from .mixing import DUCK_GAIN

__all__ = ["DubbingOptions", "fraction_parameter"]


def fraction_parameter(value: Any, name: str) -> float:
    """A parameter that must be a number in 0..1.

    Raises:
        InvalidInput: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"parameter {name!r} must be a number between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DubbingOptions:
    """What a dubbing job asks for.

    Attributes:
        target: base code of the target language (``"es"`` for ``"es-ES"``).
        source: base code of the source language, None to detect it.
        match_voice: move the synthetic voice's pitch to the original speaker's.
        original_volume: level 0..1 of the original audio under the new speech.
    """

    target: str
    source: str | None = None
    match_voice: bool = True
    original_volume: float = DUCK_GAIN

    @classmethod
    def from_model(cls, model: DubbingParameters) -> DubbingOptions:
        """Options of a validated ``dubbing`` parameter model (the defaults for what the
        API does not expose: matched voice, original at ``DUCK_GAIN``).

        Raises:
            InvalidInput: the pair cannot be dubbed here.
        """
        target = normalize_language(model.target_language, "target_language")
        if target is None:
            raise InvalidInput("parameter 'target_language' is required (e.g. 'es')")
        source = normalize_language(model.source_language, "source_language")
        reason = unsupported_pair_reason(source, target)
        if reason is not None:
            raise InvalidInput(reason)
        return cls(target=target, source=source)

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> DubbingOptions:
        """Options of a raw parameter dict, checked.

        Raises:
            InvalidInput: a bad language code, an unsupported pair, ``original_volume``
                not in 0..1 or ``match_voice`` not a bool.
        """
        target = normalize_language(params.get("target_language"), "target_language")
        source = normalize_language(params.get("source_language"), "source_language")
        reason = unsupported_pair_reason(source, target)
        if reason is not None:
            raise InvalidInput(reason)
        assert target is not None
        volume = fraction_parameter(params.get("original_volume", DUCK_GAIN), "original_volume")
        match_voice = params.get("match_voice", True)
        if not isinstance(match_voice, bool):
            raise InvalidInput("parameter 'match_voice' must be true or false")
        return cls(target=target, source=source, match_voice=match_voice, original_volume=volume)

    @classmethod
    def of(cls, ctx: EngineContext) -> DubbingOptions:
        """The options of ``ctx``: its validated model when it carries one, else its
        raw parameters (checked)."""
        if isinstance(ctx.validated, DubbingParameters):
            return cls.from_model(ctx.validated)
        return cls.from_parameters(ctx.parameters or {})
