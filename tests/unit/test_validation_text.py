"""The text rule of commands (commands/text.py): refused for people, repaired for processors."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from api.errors import problem_errors, problem_kind
from commands.agent import Agent
from commands.context import SYSTEM, Actor, Context
from commands.errors import Forbidden, InvalidCommand
from commands.messages import (
    CompleteJob,
    CreateAgent,
    CreateProject,
    CreateUser,
    DeleteSetting,
    SetSetting,
    StartJob,
    SubmitJob,
    UpdateAgent,
    UpdateProgress,
)
from commands.service import Platform
from commands.text import (
    MAX_JSON_DEPTH,
    MAX_SANITIZE_DEPTH,
    REPLACEMENT,
    Line,
    Text,
    clean_json,
    clean_optional,
    clean_text,
    sanitize_json,
    sanitize_text,
    text_problem,
)

NFD_E = "e\u0301"  # e + combining acute: NFC is "é" (U+00E9)


def refused(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(InvalidCommand) as info:
        call(*args, **kwargs)
    errors = problem_errors(info.value)
    assert problem_kind(info.value)[0] == 422 and errors
    return errors[0]


# -- clean_text --------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"])
def test_controls_are_refused_even_in_multi_line_text(char: str) -> None:
    error = refused(clean_text, f"a{char}b", "description", max_length=100, multiline=True)
    assert error["loc"] == ["body", "description"]
    assert f"U+{ord(char):04X}" in error["msg"]


@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_tab_newline_and_cr_only_in_multi_line_text(char: str) -> None:
    assert clean_text(f"a{char}b", "description", max_length=100, multiline=True) == f"a{char}b"
    error = refused(clean_text, f"a{char}b", "name", max_length=100)
    assert error["loc"] == ["body", "name"] and "single-line" in error["msg"]


def test_nul_names_the_field_and_its_code_point() -> None:
    error = refused(clean_text, "Pro\x00ject", "name", max_length=200)
    assert error == {"loc": ["body", "name"], "msg": "must not contain U+0000, a control character"}


def test_lone_surrogate_is_refused() -> None:
    error = refused(clean_text, "x\ud800y", "name", max_length=10)
    assert "surrogate" in error["msg"]


def test_text_is_returned_in_nfc() -> None:
    assert clean_text(f"caf{NFD_E}", "name", max_length=10) == "café"
    assert unicodedata.is_normalized("NFC", clean_text(f"caf{NFD_E}", "name", max_length=10))


def test_length_is_counted_after_normalisation() -> None:
    assert clean_text(NFD_E * 3, "name", max_length=3) == "ééé"  # six code points in, three stored
    refused(clean_text, "abcd", "name", max_length=3)


def test_min_length_and_strip() -> None:
    assert clean_text("  Podcast  ", "name", min_length=1, max_length=200, strip=True) == "Podcast"
    error = refused(clean_text, "   ", "name", min_length=1, max_length=200, strip=True)
    assert error["msg"] == "must be 1–200 characters"


def test_null_is_refused_where_a_value_is_required() -> None:
    assert refused(clean_text, None, "name", max_length=200) == {"loc": ["body", "name"], "msg": "must not be null"}
    assert clean_optional(None, "email", max_length=254) is None


def test_a_non_string_is_refused() -> None:
    assert refused(clean_text, 42, "name", max_length=200)["msg"] == "must be a string"
    assert refused(clean_text, ["a"], "name", max_length=200)["msg"] == "must be a string"


def test_a_nested_location_and_a_header() -> None:
    assert refused(clean_text, "\x00", ("logs", 2), max_length=9)["loc"] == ["body", "logs", 2]
    assert refused(clean_text, "k\x00", "Idempotency-Key", max_length=9)["loc"] == ["header", "Idempotency-Key"]


def test_ordinary_unicode_passes_untouched() -> None:
    text = "Привет, 世界! 🎙️ naïve — «ok»"
    assert clean_text(text, "description", max_length=100, multiline=True) == text
    assert text_problem(text) is None


def test_c1_controls_and_format_characters_are_not_c0() -> None:
    # the rule is C0 and DEL; U+0085 (NEL) and U+200B (zero width space) are storable
    assert clean_text("a\u0085b\u200bc", "name", max_length=10) == "a\u0085b\u200bc"


# -- clean_json --------------------------------------------------------------------------------


def test_json_strings_nested_anywhere_are_checked() -> None:
    value = {"style": {"font": ["serif", "mono\x00"]}}
    error = refused(clean_json, value, "parameters")
    assert error["loc"] == ["body", "parameters", "style", "font", 1]


def test_json_keys_are_single_line_and_checked() -> None:
    assert refused(clean_json, {"te\x00xt": "hi"}, "parameters")["loc"] == ["body", "parameters", "te\x00xt"]
    assert refused(clean_json, {"a\nb": 1}, "configuration")["loc"][:2] == ["body", "configuration"]
    assert refused(clean_json, {"": 1}, "configuration")["msg"].startswith("must be 1–")


def test_json_strings_may_be_multi_line_and_come_back_in_nfc() -> None:
    assert clean_json({"text": f"line one\nline two caf{NFD_E}", f"k{NFD_E}y": [1, 2.5, True, None]}, "p") == {
        "text": "line one\nline two café",
        "kéy": [1, 2.5, True, None],
    }


def test_json_depth_is_bounded() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    assert "nest" in refused(clean_json, deep, "value")["msg"]
    ok: Any = "leaf"
    for _ in range(MAX_JSON_DEPTH):
        ok = [ok]
    assert clean_json(ok, "value") == ok


def test_json_size_is_bounded() -> None:
    error = refused(clean_json, {"text": "x" * 2_000}, "value", max_size=1_000)
    assert error["loc"] == ["body", "value"] and "1,000" in error["msg"]
    assert refused(clean_json, list(range(2_000)), "value", max_size=1_000)["loc"] == ["body", "value"]


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_json_numbers_are_finite(number: float) -> None:
    assert refused(clean_json, {"seed": number}, "parameters")["loc"] == ["body", "parameters", "seed"]


def test_json_integers_fit_64_bits_and_objects_are_json() -> None:
    assert refused(clean_json, {"seed": 2**64}, "parameters")["msg"] == "must be a 64-bit integer"
    assert clean_json({"seed": -(2**63) + 1}, "parameters") == {"seed": -(2**63) + 1}
    assert "not a JSON value" in refused(clean_json, {"x": object()}, "value")["msg"]


# -- sanitize (processor output) -------------------------------------------------------------


def test_sanitize_replaces_controls_and_keeps_line_breaks() -> None:
    assert sanitize_text("hello\x00 world\x1b[31m\n\tnext") == f"hello{REPLACEMENT} world{REPLACEMENT}[31m\n\tnext"


def test_sanitize_single_line_turns_breaks_into_spaces() -> None:
    assert sanitize_text("stage\none\x00", multiline=False) == f"stage one{REPLACEMENT}"


def test_sanitize_normalises_truncates_and_never_raises() -> None:
    assert sanitize_text(f"caf{NFD_E}") == "café"
    assert sanitize_text("x" * 50, max_length=10) == "x" * 9 + "…"
    assert sanitize_text(ValueError("bad\x00")) == f"bad{REPLACEMENT}"
    assert sanitize_text("\ud83d alone") == f"{REPLACEMENT} alone"


def test_sanitize_json_repairs_a_transcript_deep_inside() -> None:
    result = {
        "files": [{"name": "out\x00.txt", "size": 3}],
        "meta": {"transcript": "hi\x00there", "segments": [{"text": "a\x07", "start": 0.0}], "f0": float("nan")},
    }
    clean = sanitize_json(result)
    assert clean["meta"]["transcript"] == f"hi{REPLACEMENT}there"
    assert clean["meta"]["segments"][0] == {"text": f"a{REPLACEMENT}", "start": 0.0}
    assert clean["meta"]["f0"] is None
    assert clean["files"][0] == {"name": f"out{REPLACEMENT}.txt", "size": 3}
    assert result["meta"]["transcript"] == "hi\x00there"  # the input is not changed in place


def test_sanitize_json_bounds_depth_and_fixes_keys() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_SANITIZE_DEPTH + 5):
        deep = {"k": deep}
    clean = sanitize_json(deep)
    node = clean
    for _ in range(MAX_SANITIZE_DEPTH):
        node = node["k"]
    assert node is None
    assert sanitize_json({"a\x00\nb": (1, "x")}) == {f"a{REPLACEMENT} b": [1, "x"]}


# -- the pydantic types ----------------------------------------------------------------------------


class _Body(BaseModel):
    name: Line = Field(min_length=1, max_length=5)
    description: Text = Field(default="", max_length=20)


def test_pydantic_line_and_text() -> None:
    body = _Body.model_validate({"name": f"caf{NFD_E}", "description": "one\ntwo"})
    assert body.name == "café" and body.description == "one\ntwo"
    for bad in ({"name": "a\x00"}, {"name": "a\nb"}, {"name": "ok", "description": "x\x00"}, {"name": None}):
        with pytest.raises(ValidationError):
            _Body.model_validate(bad)


def test_pydantic_length_applies_after_normalisation() -> None:
    assert _Body.model_validate({"name": NFD_E * 5}).name == "é" * 5


# -- the commands apply it (in memory: eventsourcing's POPO store) -----------------------------

PROC = Context(Actor("proc-text", None, "processor"), "run-text")


@pytest.fixture
def platform() -> Platform:
    return Platform(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def person(platform: Platform, name: str, role: str) -> Context:
    user_id, _ = platform.create_user(CreateUser(name, "password-123", role), Context(SYSTEM, "setup"))
    return Context(Actor(str(user_id), name, role), f"req-{name}")


def test_commands_refuse_and_store_nothing(platform: Platform) -> None:
    alice = person(platform, "alice", "editor")
    before = platform.head()
    assert refused(platform.create_project, CreateProject("a\x00b"), alice)["loc"] == ["body", "name"]
    assert refused(platform.create_project, CreateProject("ok", None), alice)["loc"] == ["body", "description"]  # type: ignore[arg-type]
    cmd = CreateAgent("n", "tts", {"voice": "v\x00"})
    assert refused(platform.create_agent, cmd, alice)["loc"] == ["body", "configuration", "voice"]
    assert platform.head() == before
    admin = person(platform, "root", "admin")
    before = platform.head()
    assert refused(platform.create_user, CreateUser("bob", "password-123", "viewer", "b\x00@x.io"), admin)["loc"] == [
        "body",
        "email",
    ]
    assert refused(platform.create_user, CreateUser("bo\nb", "password-123", "viewer"), admin)["loc"] == ["body", "username"]
    assert platform.head() == before


def test_explicit_null_for_a_required_agent_field(platform: Platform) -> None:
    alice = person(platform, "alice", "editor")
    agent_id, _ = platform.create_agent(CreateAgent("Narrator", "tts", {"language": "en"}), alice)
    before = platform.head()
    for field in ("name", "description", "configuration"):
        error = refused(platform.update_agent, UpdateAgent(agent_id, {field: None}), alice)
        assert error == {"loc": ["body", field], "msg": "must not be null"}
    assert platform.head() == before
    platform.update_agent(UpdateAgent(agent_id, {"name": f"  Caf{NFD_E}  ", "provider_id": None}), alice)
    assert platform._load(Agent, agent_id, "agent").name == "Café"


def test_limit_keys_are_admins_and_unknown_keys_refused(platform: Platform) -> None:
    alice, root = person(platform, "alice", "editor"), person(platform, "root", "admin")
    with pytest.raises(Forbidden):
        platform.set_setting(SetSetting("max_concurrent_jobs", 1000, alice.actor.id), alice)
    setting_id, _ = platform.set_setting(SetSetting("max_concurrent_jobs", 1, alice.actor.id), root)
    with pytest.raises(Forbidden):
        platform.delete_setting(DeleteSetting(setting_id), alice)
    platform.set_setting(SetSetting("default_language", "es", alice.actor.id), alice)
    assert refused(platform.set_setting, SetSetting("theme", "dark", alice.actor.id), alice)["loc"] == ["body", "key"]
    assert refused(platform.set_setting, SetSetting("demo.seeded", True, alice.actor.id), root)["loc"] == ["body", "user"]
    platform.set_setting(SetSetting("demo.seeded", True), root)  # the seed's marker: a global boolean


def test_processor_reports_are_repaired_an_admins_refused(platform: Platform) -> None:
    alice, root = person(platform, "alice", "editor"), person(platform, "root", "admin")
    project_id, _ = platform.create_project(CreateProject("p"), alice)
    job_id, _ = platform.submit_job(SubmitJob(project_id, "tts", {"text": "hi"}), alice)
    platform.start_job(StartJob(job_id, platform.get_job(job_id).version, "proc-text"), PROC)
    assert refused(platform.update_progress, UpdateProgress(job_id, 5, "st\x00"), root)["loc"] == ["body", "stage"]
    platform.update_progress(UpdateProgress(job_id, 5, "st\x00age\n"), PROC)
    assert platform.get_job(job_id).stage == f"st{REPLACEMENT}age "
    blob = {"blob": f"results/x/1/caf{NFD_E}.txt", "name": "t.txt"}
    platform.complete_job(CompleteJob(job_id, {"files": [blob], "meta": {"transcript": "a\x00b"}}), PROC)
    result = platform.get_job(job_id).result
    assert result == {"files": [blob], "meta": {"transcript": f"a{REPLACEMENT}b"}}  # blob keys verbatim (not NFC)
