"""The command-line client's pure parts: ``--param``/``--file`` parsing, the JWT expiry it
refreshes by, the private credentials file, and result names that never overwrite a file."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from infra.client import USAGE, ClientError, parse_files, parse_params
from infra.client.live import _unclobbered
from infra.client.session import _expiry, _write_private


def test_params_are_json_literals_or_strings() -> None:
    got = parse_params(["text=Hello, world", "length=120", "narrate=true", 'seed="7"', "style=", "a=b=c", "x=null"])
    assert got == {"text": "Hello, world", "length": 120, "narrate": True, "seed": "7", "style": "", "a": "b=c", "x": None}
    for bad in ("novalue", "=value"):
        with pytest.raises(ClientError) as info:
            parse_params([bad])
        assert info.value.code == USAGE


def test_files_must_exist(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    assert parse_files([f"input_file={wav}"]) == {"input_file": wav}
    for bad in ("input_file", f"input_file={tmp_path / 'missing.wav'}", f"input_file={tmp_path}"):
        with pytest.raises(ClientError) as info:
            parse_files([bad])
        assert info.value.code == USAGE


def test_expiry_reads_the_exp_claim_and_is_zero_for_garbage() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1_900_000_000}).encode()).rstrip(b"=").decode()
    assert _expiry(f"h.{payload}.s") == 1_900_000_000
    assert _expiry("not-a-token") == 0 and _expiry("a.!!!.c") == 0


def test_credentials_are_written_0600_atomically(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    _write_private(path, {"access": "a"})
    _write_private(path, {"access": "b"})
    assert json.loads(path.read_text()) == {"access": "b"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["credentials.json"]  # no temporary file left


def test_a_result_never_overwrites_a_file(tmp_path: Path) -> None:
    assert _unclobbered(tmp_path, "speech.wav", "0123456789") == tmp_path / "speech.wav"
    (tmp_path / "speech.wav").write_bytes(b"")
    assert _unclobbered(tmp_path, "speech.wav", "0123456789") == tmp_path / "speech-01234567.wav"
    assert _unclobbered(tmp_path, "../../etc/passwd", "0123456789") == tmp_path / "passwd"
