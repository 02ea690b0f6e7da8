"""The OpenAPI shapes of jobs per type: a job submission (JSON and multipart) and a job as
read are each a ``oneOf`` of seven variants with a ``discriminator`` on ``type``, whose
``parameters`` is that type's model of :mod:`commands.job_parameters` (the one definition the
commands validate with; nothing is restated here).

Names in ``components.schemas``: ``<Type>Parameters`` (the models' own names, e.g.
``SttParameters``, ``TalkingHeadsParameters``), ``<Type>JobIn`` (JSON submission),
``<Type>JobOut`` (a job as read), where ``<Type>``
is the type in CamelCase (``stt`` → ``Stt``, ``animated_talking_heads`` →
``AnimatedTalkingHeads``); the unions are ``JobIn`` and ``JobOut``. A multipart submission
(``JobForm``) is one object: its ``parameters`` is a JSON string (``contentSchema``: one of the
seven parameter models) and its file fields say which types take them."""

from __future__ import annotations

import copy
from typing import Any

from api.schemas.enums import JobType, Priority
from api.schemas.jobs import JobIn
from commands.job_parameters import FILE_FIELDS, SCHEMAS, required_files

REF = "#/components/schemas/{model}"
#: File fields each type always needs (``input_file`` of voice_cloning and talking heads is
#: needed only without ``text``).
ALWAYS_REQUIRED_FILES = {t: sorted(required_files(t, {"text": "given"})) for t in FILE_FIELDS}
#: What a type's multipart form takes as files, described.
_KINDS = {"audio": "an audio file", "video": "a video file", "image": "an image"}


def camel(job_type: str) -> str:
    """``animated_talking_heads`` → ``AnimatedTalkingHeads``."""
    return "".join(part.capitalize() for part in job_type.split("_"))


def parameters_name(job_type: str) -> str:
    """The component name of ``job_type``'s parameters (its model's class name)."""
    return SCHEMAS[job_type].__name__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _union(kind: str, description: str) -> dict[str, Any]:
    """``oneOf`` the seven ``<Type><kind>`` components, discriminated by ``type``."""
    names = {t.value: f"{camel(t.value)}{kind}" for t in JobType}
    return {
        "title": kind,
        "description": description,
        "oneOf": [_ref(n) for n in names.values()],
        "discriminator": {"propertyName": "type", "mapping": {t: REF.format(model=n) for t, n in names.items()}},
    }


def _type_const(job_type: str) -> dict[str, Any]:
    return {"type": "string", "const": job_type, "title": "Type", "description": "the job type"}


def _params_required(job_type: str) -> bool:
    return bool(SCHEMAS[job_type].model_json_schema().get("required"))


def parameter_components() -> dict[str, dict[str, Any]]:
    """``<Type>Parameters`` of every type, as JSON schemas."""
    out = {}
    for job_type in JobType:
        schema = SCHEMAS[job_type.value].model_json_schema(ref_template=REF)
        schema.pop("$defs", None)
        out[parameters_name(job_type.value)] = schema
    return out


def _json_base() -> dict[str, Any]:
    """:class:`JobIn`'s schema, ``priority`` named as an enum."""
    base = JobIn.model_json_schema(ref_template=REF)
    base.pop("$defs", None)
    base["properties"]["priority"]["enum"] = [p.value for p in Priority]
    return base


def json_variant(job_type: str, base: dict[str, Any]) -> dict[str, Any]:
    """``<Type>JobIn``: a JSON submission of a ``job_type`` job."""
    schema = copy.deepcopy(base)
    schema["title"] = f"{camel(job_type)}JobIn"
    schema["description"] = f"A {job_type} job submission (JSON); files need multipart (`JobForm`)."
    props = schema["properties"]
    props["type"] = _type_const(job_type)
    props["parameters"] = {**_ref(parameters_name(job_type)), "description": f"the parameters of a {job_type} job"}
    required = ["project", "type"] + (["parameters"] if _params_required(job_type) else [])
    schema["required"] = required
    return schema


def job_form() -> dict[str, Any]:
    """``JobForm``: a multipart submission. One object (a union would not generate a
    multipart client): ``type`` names the type, ``parameters`` is a JSON string of that
    type's parameters, and the file fields say which types take them."""
    takes: dict[str, list[str]] = {}
    kinds: dict[str, set[str]] = {}
    for job_type, fields in FILE_FIELDS.items():
        for field, accepted in fields.items():
            takes.setdefault(field, []).append(job_type)
            kinds.setdefault(field, set()).update(accepted)
    props: dict[str, Any] = {
        "project": {"type": "string", "description": "the project's id"},
        "type": _ref("JobType"),
        "parameters": {
            "type": "string",
            "description": "a JSON object: the parameters of the `type` (`<Type>Parameters`, as in `JobIn`)",
            "contentMediaType": "application/json",
            "contentSchema": {"oneOf": [_ref(parameters_name(t.value)) for t in JobType]},
        },
        "agent": {"type": "string", "description": "an agent's id: its configuration fills omitted parameters"},
        "priority": {"type": "string", "enum": [p.value for p in Priority]},
        "webhook": {"type": "string", "description": "a URL that receives the job's events"},
        "webhook_events": {"type": "string", "description": "a JSON list, or comma-separated"},
    }
    for field in sorted(takes):
        what = " or ".join(_KINDS[k] for k in sorted(kinds[field]))
        needed = [t for t in takes[field] if field in ALWAYS_REQUIRED_FILES[t]]
        optional = [t for t in takes[field] if t not in needed]
        detail = f"{what}; needed by {', '.join(needed) or 'none'}"
        if optional:
            detail += f", and by {', '.join(optional)} when `parameters` has no `text`"
        props[field] = {"type": "string", "format": "binary", "description": detail}
    return {
        "title": "JobForm",
        "description": "A job submission (multipart/form-data): the fields of `JobIn`, `parameters` as a "
        "JSON string, and the file fields of its `type`.",
        "type": "object",
        "properties": props,
        "required": ["project", "type"],
    }


def read_variant(job_type: str, job_out: dict[str, Any]) -> dict[str, Any]:
    """``<Type>JobOut``: a ``job_type`` job as read; ``job_out`` is :class:`JobOut`'s schema."""
    schema = copy.deepcopy({k: v for k, v in job_out.items() if k not in ("oneOf", "discriminator")})
    schema["title"] = f"{camel(job_type)}JobOut"
    schema["description"] = f"A {job_type} job as the read model shows it."
    schema["properties"]["type"] = _type_const(job_type)
    schema["properties"]["parameters"] = {
        **_ref(parameters_name(job_type)),
        "description": "the parameters it runs with (the agent's configuration and the default language filled in)",
    }
    return schema


def job_components(job_out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every per-type component, ``JobForm``, and the unions ``JobIn`` and ``JobOut``
    (``job_out``, :class:`JobOut`'s generated schema, keeps its properties and gains the
    ``oneOf`` and ``discriminator``)."""
    base = _json_base()
    out = parameter_components()
    for job_type in JobType:
        name = camel(job_type.value)
        out[f"{name}JobIn"] = json_variant(job_type.value, base)
        out[f"{name}JobOut"] = read_variant(job_type.value, job_out)
    out["JobIn"] = _union("JobIn", "A job submission (JSON): `parameters` has the shape of its `type`.")
    out["JobForm"] = job_form()
    out["JobOut"] = {**job_out, **_union("JobOut", str(job_out.get("description", "")))}
    return out


#: The request body of ``POST /api/jobs/``: JSON or multipart, each discriminated by ``type``.
JOB_CREATE_BODY: dict[str, Any] = {
    "content": {
        "application/json": {"schema": _ref("JobIn")},
        "multipart/form-data": {"schema": _ref("JobForm")},
    },
    "required": True,
}
