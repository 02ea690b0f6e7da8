from __future__ import annotations

# The validated parameter model an engine receives in its context (``EngineContext.validated``):
# the job's stored parameters, which commands.job_parameters validated at submission, as the
# pydantic model of the job's type, so engines read typed fields instead of checking dicts.
import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from commands.job_parameters import SCHEMAS

__all__ = ["validated_parameters"]

_LOG = logging.getLogger(__name__)


def validated_parameters(job_type: str, parameters: dict[str, Any]) -> BaseModel | None:
    """The model of ``job_type`` (:data:`commands.job_parameters.SCHEMAS`) holding
    ``parameters``; keys starting with ``_`` (set by the platform, e.g. the duration
    limit) stay out of it.

    Returns:
        the model, or None for a type without a schema or parameters that no longer fit it
        (a job stored before its schema changed): the engine then checks the raw dict.
    """
    schema = SCHEMAS.get(job_type)
    if schema is None:
        return None
    try:
        return schema.model_validate({k: v for k, v in parameters.items() if not k.startswith("_")})
    except ValidationError as exc:
        _LOG.warning(
            "stored %s parameters do not fit their schema (%d error(s)); the engine checks them", job_type, exc.error_count()
        )
        return None
