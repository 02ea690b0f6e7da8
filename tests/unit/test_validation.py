"""Submission validation happens before anything is stored."""

from __future__ import annotations

import pytest

from api.errors import problem_errors
from commands.errors import InvalidCommand
from commands.job_parameters import required_files, validate_parameters
from commands.service import Platform, Policies


def test_each_type_has_a_schema() -> None:
    assert validate_parameters("stt", {}) == {}
    assert validate_parameters("tts", {"text": "hi", "language": "en"}) == {"text": "hi", "language": "en"}
    assert validate_parameters("ai_stories", {"prompt": "a fox"}) == {"prompt": "a fox"}


@pytest.mark.parametrize(
    ("job_type", "params", "loc"),
    [
        ("tts", {}, ["body", "parameters", "text"]),
        ("tts", {"text": ""}, ["body", "parameters", "text"]),
        ("tts", {"text": "x", "speed": 2}, ["body", "parameters", "speed"]),
        ("stt", {"language": "english!"}, ["body", "parameters", "language"]),
        ("dubbing", {}, ["body", "parameters", "target_language"]),
        ("teleport", {}, ["body", "type"]),
    ],
)
def test_bad_parameters_name_the_field(job_type: str, params: dict[str, object], loc: list[str]) -> None:
    with pytest.raises(InvalidCommand) as info:
        validate_parameters(job_type, params)
    errors = problem_errors(info.value)
    assert errors and errors[0]["loc"] == loc


def test_file_fields() -> None:
    assert required_files("stt", {}) == {"input_file"}
    assert required_files("voice_cloning", {"text": "x"}) == {"reference_file"}
    assert required_files("voice_cloning", {}) == {"reference_file", "input_file"}
    platform = Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    with pytest.raises(InvalidCommand, match="needs the file"):
        platform.validate_job("stt", {}, set())
    with pytest.raises(InvalidCommand, match="takes no file"):
        platform.validate_job("tts", {"text": "x"}, {"input_file"})


def test_a_type_whose_engine_is_missing_is_refused_naming_it() -> None:
    policies = Policies(missing_engine=lambda t: ["pyworld"] if t == "voice_cloning" else [])
    platform = Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, policies=policies)
    with pytest.raises(InvalidCommand, match="pyworld"):
        platform.validate_job("voice_cloning", {"text": "x"}, {"reference_file"})
