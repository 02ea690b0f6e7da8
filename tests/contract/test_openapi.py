"""The OpenAPI document of the running API documents errors as they are sent (issue 12):
``Problem``/``ValidationProblem`` under ``application/problem+json`` on every error status,
no FastAPI ``HTTPValidationError``, stable operation ids."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM = "application/problem+json"


def spec_of(platform_up: dict[str, Any]) -> dict[str, Any]:
    return dict(httpx.get(f"{platform_up['base']}/openapi.json", timeout=30).json())


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]


def test_errors_are_documented_as_problems(platform_up: dict[str, Any]) -> None:
    spec = spec_of(platform_up)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "instance"}
    assert "errors" in schemas["ValidationProblem"]["required"]
    for method, path, op in operations(spec):
        # (a download's 416 has no body; /health/ready's 503 is its own JSON)
        errors = {
            code: answer
            for code, answer in op["responses"].items()
            if int(code) >= 400 and code != "416" and (path, code) != ("/health/ready", "503")
        }
        assert "422" in errors, (method, path)
        for code, answer in errors.items():
            assert list(answer["content"]) == [PROBLEM], (method, path, code)
            ref = answer["content"][PROBLEM]["schema"]["$ref"]
            assert ref.endswith("/ValidationProblem" if code == "422" else "/Problem"), (method, path, code)
    by_op = {(m, p): set(op["responses"]) for m, p, op in operations(spec)}
    assert {"401", "404", "409", "503"} <= by_op[("GET", "/api/jobs/{job_id}/")]
    assert {"401", "403", "413", "415"} <= by_op[("POST", "/api/jobs/")]
    assert {"401", "429"} <= by_op[("POST", "/api/token/")]
    assert "403" in by_op[("GET", "/api/audit/")]


def test_a_sent_problem_matches_its_documented_schema(platform_up: dict[str, Any]) -> None:
    viewer = platform_up["clients"]["viewer"]
    answer = viewer.get("/api/jobs/00000000-0000-0000-0000-000000000000/")
    assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM
    assert {"type", "title", "status", "detail", "instance"} <= set(answer.json())
    invalid = viewer.get("/api/jobs/not-a-uuid/")
    assert invalid.status_code == 422 and invalid.headers["content-type"] == PROBLEM
    assert isinstance(invalid.json()["detail"], str) and invalid.json()["errors"][0]["loc"]


def test_operation_ids_are_stable_and_readable(platform_up: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec_of(platform_up))]
    assert len(ids) == len(set(ids))
    for wanted in ("jobs_create", "jobs_list", "jobs_retrieve", "jobs_partial_update", "jobs_destroy", "jobs_cancel"):
        assert wanted in ids
    assert all(i.replace("_", "").isalnum() and i.islower() for i in ids), ids


def test_every_success_is_typed(platform_up: dict[str, Any]) -> None:
    """Every 2xx names a schema (pages as ``<Item>Page``), downloads are binary, the feed
    is also text/event-stream; ids are uuids, times date-times, and enums name the values."""
    spec = spec_of(platform_up)
    schemas = spec["components"]["schemas"]
    for method, path, op in operations(spec):
        for code, answer in op["responses"].items():
            if not code.startswith("2") or code == "204":
                continue
            content = answer.get("content")
            assert content, (method, path, code)
            for media, body in content.items():
                schema = body["schema"]
                if media == "application/json":
                    typed = "$ref" in schema or "anyOf" in schema or schema.get("type") == "array"
                    typed = typed or isinstance(schema.get("additionalProperties"), dict)
                    assert typed, (method, path, code, schema)
                else:
                    assert schema["type"] == "string", (method, path, code, media)
    page = schemas["JobPage"]
    assert set(page["required"]) == {"count", "next", "previous", "results"}
    assert page["properties"]["results"]["items"]["$ref"].endswith("/JobOut")
    jobs = spec["paths"]["/api/jobs/"]
    assert jobs["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobPage")
    assert jobs["post"]["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/Accepted")
    download = spec["paths"]["/api/jobs/{job_id}/result/files/{index}/"]["get"]["responses"]
    assert download["200"]["content"]["audio/*"]["schema"] == {"type": "string", "format": "binary"}
    assert "206" in download
    assert "text/event-stream" in spec["paths"]["/api/jobs/{job_id}/events/"]["get"]["responses"]["200"]["content"]
    job = schemas["JobOut"]["properties"]
    assert job["id"]["format"] == "uuid" and job["created_at"]["format"] == "date-time"
    assert schemas["JobType"]["enum"] == [
        "stt",
        "tts",
        "voice_cloning",
        "dubbing",
        "ai_stories",
        "video_translation",
        "animated_talking_heads",
    ]
    assert schemas["JobStatus"]["enum"] == ["pending", "running", "completed", "failed", "cancelled"]
    assert schemas["Priority"]["enum"] == ["low", "normal", "high"]
    assert schemas["Role"]["enum"] == ["admin", "editor", "viewer"]
    assert schemas["AgentOut"]["properties"]["type"]["$ref"].endswith("/JobType")


def test_every_job_type_is_documented_with_its_parameters(platform_up: dict[str, Any]) -> None:
    """The job create (JSON) and read schemas are a ``oneOf`` discriminated by ``type`` over
    the seven types, each variant's ``parameters`` that type's model of
    :mod:`commands.job_parameters`; multipart takes ``JobForm`` with the file fields."""
    from commands.job_parameters import FILE_FIELDS, SCHEMAS

    spec = spec_of(platform_up)
    schemas = spec["components"]["schemas"]
    types = ["stt", "tts", "voice_cloning", "dubbing", "ai_stories", "video_translation", "animated_talking_heads"]
    body = spec["paths"]["/api/jobs/"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"].endswith("/JobIn")
    assert body["multipart/form-data"]["schema"]["$ref"].endswith("/JobForm")
    for union in ("JobIn", "JobOut"):
        mapping = schemas[union]["discriminator"]["mapping"]
        assert schemas[union]["discriminator"]["propertyName"] == "type"
        assert sorted(mapping) == sorted(types), union
        assert sorted(r["$ref"] for r in schemas[union]["oneOf"]) == sorted(mapping.values())
        for job_type, ref in mapping.items():
            variant = schemas[ref.rsplit("/", 1)[1]]
            assert variant["properties"]["type"]["const"] == job_type
            params_ref = variant["properties"]["parameters"]["$ref"]
            params = schemas[params_ref.rsplit("/", 1)[1]]
            model = SCHEMAS[job_type]
            assert params_ref.endswith(f"/{model.__name__}")
            assert set(params["properties"]) == set(model.model_fields), job_type
            assert params["additionalProperties"] is False
            assert set(params.get("required", [])) == {n for n, f in model.model_fields.items() if f.is_required()}
    assert "parameters" in schemas["TtsJobIn"]["required"] and "parameters" not in schemas["SttJobIn"]["required"]
    out = schemas["TtsJobOut"]["properties"]
    assert out["id"]["format"] == "uuid" and out["input_files"]["additionalProperties"]["$ref"].endswith("/FileOut")
    form = schemas["JobForm"]["properties"]
    assert form["type"]["$ref"].endswith("/JobType") and form["parameters"]["contentMediaType"] == "application/json"
    assert {f for fields in FILE_FIELDS.values() for f in fields} <= {n for n, p in form.items() if p.get("format") == "binary"}
