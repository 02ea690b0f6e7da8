"""Issue 13, findings 2 (request bodies) and 3 (uploads spooled whole), on the real system:
bodies are bounded before they are read, and uploads are checked as they stream in.

Bodies are sent on a raw socket from a generator, stopping the moment an answer arrives, so
that the tests see how much of a body the API took before answering (an HTTP client would
send the whole body first). The client's send buffer is kept small, so what was sent is
close to what the server took."""

from __future__ import annotations

import json
import select
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text

from tests.conftest import SHARED_DATA

MiB = 1024 * 1024
BOUNDARY = "aiorch-test-boundary"


class Answer:
    """An HTTP answer read off a raw socket, and how many body bytes were sent before it."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, sent: int) -> None:
        self.status, self.headers, self.body, self.sent = status, headers, body, sent


def exchange(base: str, method: str, path: str, headers: dict[str, str], body: Iterator[bytes], timeout: float = 60) -> Answer:
    """Send the request head, then ``body`` chunk by chunk until the server answers."""
    url = urlsplit(base)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.settimeout(timeout)
    sock.connect((url.hostname or "127.0.0.1", url.port or 80))
    head = f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock.sendall(head.encode() + b"\r\n")
    sock.setblocking(False)
    sent, pending, chunks = 0, b"", iter(body)
    deadline = time.monotonic() + timeout
    more = True
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock] if more or pending else [], [], 1.0)
        if readable:
            break
        if writable:
            if not pending:
                pending = next(chunks, b"")
                more = bool(pending)
                if not pending:
                    continue
            try:
                n = sock.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent, pending = sent + n, pending[n:]
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, f"the connection closed before an answer: {data!r}"
        data += got
    raw_head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(answer_headers.get("content-length", "0"))
    while len(rest) < length:
        got = sock.recv(65536)
        if not got:
            break
        rest += got
    sock.close()
    return Answer(int(status_line.split()[1]), answer_headers, rest[:length], sent)


def zeros(size: int, first: bytes = b"", chunk: int = 64 * 1024) -> Iterator[bytes]:
    """``size`` bytes: ``first``, then zeros, in chunks."""
    if first:
        yield first
    left = size - len(first)
    block = bytes(chunk)
    while left > 0:
        yield block[: min(chunk, left)]
        left -= chunk


def chunked(size: int) -> Iterator[bytes]:
    """``size`` bytes of a JSON-looking body in HTTP/1.1 chunked framing."""
    block = b" " * (64 * 1024)
    yield b"1\r\n{\r\n"
    left = size
    while left > 0:
        piece = block[: min(len(block), left)]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        left -= len(piece)
    yield b"0\r\n\r\n"


def multipart(project: str, job_type: str, file_size: int, first: bytes) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, chunks) of a submission with fields first and one ``input_file``."""
    pre = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("project", project), ("type", job_type))
    )
    pre += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="input_file"; filename="big.wav"\r\n'
    pre += "Content-Type: audio/wav\r\n\r\n"
    post = f"\r\n--{BOUNDARY}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield pre.encode()
        yield from zeros(file_size, first)
        yield post

    return len(pre.encode()) + file_size + len(post), chunks()


def rss_bytes() -> int:
    """This process's resident memory (the API runs in one of its threads)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def events(system: Any) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM aiorch_events")).scalar_one())


def blobs(system: Any) -> list[Path]:
    return sorted(p for p in system.blobs.root.rglob("*") if p.is_file())


def token(client: Any) -> str:
    return str(client.http.headers["Authorization"])


def is_problem(answer: Answer, status: int) -> bool:
    return answer.status == status and answer.headers.get("content-type", "").startswith("application/problem+json")


def test_bodies_over_the_limit_are_refused_before_they_are_read(platform_up: dict[str, Any]) -> None:
    base, editor = platform_up["base"], platform_up["clients"]["editor"]
    # 100 MiB of JSON without a token, Content-Length declared: 413 at once
    before = rss_bytes()
    big = exchange(
        base, "POST", "/api/projects/", {"Content-Type": "application/json", "Content-Length": str(100 * MiB)}, zeros(100 * MiB)
    )
    assert is_problem(big, 413), (big.status, big.body)
    assert json.loads(big.body)["instance"] == big.headers["x-request-id"]
    assert big.sent < MiB
    assert rss_bytes() - before < 16 * MiB
    # chunked, no Content-Length: counted as it streams, 413 once past 1 MiB, without a token ...
    anonymous = exchange(
        base, "POST", "/api/token/", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, chunked(32 * MiB)
    )
    assert is_problem(anonymous, 413), (anonymous.status, anonymous.body)
    assert anonymous.sent < 16 * MiB
    # ... and with one, on a route whose body FastAPI parses
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", "Authorization": token(editor)}
    signed_in = exchange(base, "POST", "/api/projects/", headers, chunked(2 * MiB))
    assert is_problem(signed_in, 413), (signed_in.status, signed_in.body)
    # a body without a valid token: 401 before it is read
    headers = {"Content-Type": "application/json", "Content-Length": str(MiB), "Authorization": "Bearer not-a-token"}
    forged = exchange(base, "PATCH", f"/api/projects/{platform_up['project']}/", headers, zeros(MiB))
    assert is_problem(forged, 401) and forged.sent < MiB // 2
    # bodies under the limit still work, JSON and form-encoded
    assert editor.post("/api/projects/", json={"name": "x" * 100, "description": "d" * 4000}).status_code == 201
    form = {"project": platform_up["project"], "type": "tts", "parameters": json.dumps({"text": "hi"}), "priority": "low"}
    job = editor.post("/api/jobs/", data=form)
    assert job.status_code == 201 and job.json()["priority"] == "low", job.text
    editor.post(f"/api/jobs/{job.json()['id']}/cancel/")


def test_uploads_are_refused_before_their_body_is_read(platform_up: dict[str, Any], system: Any) -> None:
    base, project = platform_up["base"], platform_up["project"]
    viewer = platform_up["clients"]["viewer"]
    wav = (SHARED_DATA / "speech" / "cards-005.wav").read_bytes()  # a file that would be stored
    before = events(system), blobs(system)
    for who, status in ((token(viewer), 403), (None, 401)):
        length, body = multipart(project, "stt", 200 * MiB, wav)
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(length)}
        if who:
            headers["Authorization"] = who
        answer = exchange(base, "POST", "/api/jobs/", headers, body)
        assert is_problem(answer, status), (answer.status, answer.body)
        assert answer.sent < MiB, f"{answer.sent} bytes of the body were taken before the {status}"
    assert (events(system), blobs(system)) == before


def test_the_users_file_limit_holds_as_the_upload_streams(platform_up: dict[str, Any], system: Any) -> None:
    base, project = platform_up["base"], platform_up["project"]
    admin, editor = platform_up["clients"]["admin"], platform_up["clients"]["editor"]
    setting = {"key": "max_file_size_mb", "value": 1, "user": platform_up["users"]["editor"]}
    assert admin.post("/api/settings/", json=setting).status_code == 201
    wav = (SHARED_DATA / "speech" / "cards-005.wav").read_bytes()
    before = events(system), blobs(system)
    over = editor.post(
        "/api/jobs/",
        data={"project": project, "type": "stt"},
        files={"input_file": ("big.wav", wav + bytes(MiB + 1 - len(wav)), "audio/wav")},
    )
    assert over.status_code == 413 and over.headers["content-type"].startswith("application/problem+json"), over.text
    assert (events(system), blobs(system)) == before
    # a far bigger file: 413 long before its end, nothing left behind
    length, body = multipart(project, "stt", 64 * MiB, wav)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(length),
        "Authorization": token(editor),
    }
    streamed = exchange(base, "POST", "/api/jobs/", headers, body)
    assert is_problem(streamed, 413) and streamed.sent < 32 * MiB, (streamed.status, streamed.sent)
    # a file of the wrong type: 415 from its first bytes
    length, body = multipart(project, "stt", 64 * MiB, b"\x89PNG\r\n\x1a\n" + bytes(8192))
    headers["Content-Length"] = str(length)
    wrong = exchange(base, "POST", "/api/jobs/", headers, body)
    assert is_problem(wrong, 415) and wrong.sent < 32 * MiB, (wrong.status, wrong.sent)
    assert (events(system), blobs(system)) == before
    # exactly the limit is accepted, stored privately
    fits = editor.post(
        "/api/jobs/",
        data={"project": project, "type": "stt"},
        files={"input_file": ("fits.wav", wav + bytes(MiB - len(wav)), "audio/wav")},
    )
    assert fits.status_code == 201, fits.text
    assert fits.json()["input_files"]["input_file"]["size"] == MiB
    (stored,) = set(blobs(system)) - set(before[1])
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    editor.post(f"/api/jobs/{fits.json()['id']}/cancel/")  # no need to transcribe it
