"""The command-line client of a running aiorch (``aiorch login|logout|submit|watch|jobs list``).

It speaks only the public contract (../shared/API.md) over HTTP (httpx) and the live feed
(``/ws/jobs/{id}/`` with a ticket, websockets' sync client), so it works against any
deployment, not only the one on this machine.

Credentials: ``<user config dir>/credentials.json`` (platformdirs: ``$XDG_CONFIG_HOME/aiorch``
or ``~/.config/aiorch`` on Linux), mode 0600 in a 0700 folder,
``{"url", "username", "access", "refresh"}``. Refresh tokens rotate and a rotated one
presented again revokes the whole session, so refreshing happens under a file lock
(``credentials.json.lock``, the ``filelock`` package) and re-reads the file first: of several
``aiorch`` processes sharing one login, one refreshes and the others adopt its tokens.

Exit codes (:data:`COMPLETED`...): 0 the job completed, 1 it failed (or an error), 2 bad usage
(bad ``--param``/``--file``, a 422 at submission, not logged in), 130 cancelled (by Ctrl-C,
which asks whether to cancel the job, or by anyone).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

COMPLETED, FAILED, USAGE, CANCELLED = 0, 1, 2, 130
FINISHED = ("completed", "failed", "cancelled")
EXIT_OF = {"completed": COMPLETED, "failed": FAILED, "cancelled": CANCELLED}
REFRESH_MARGIN_S = 30
"""An access token expiring within this many seconds is refreshed before it is used."""
CANCEL_WAIT_S = 15
"""After Ctrl-C and "y": how long to wait for a running job to stop (it stops at its next
checkpoint, within about 2 s) before exiting anyway."""


class ClientError(Exception):
    """A one-line reason for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code


def config_dir() -> Path:
    """The user's aiorch config folder (created 0700)."""
    from platformdirs import user_config_dir

    path = Path(user_config_dir("aiorch", appauthor=False))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically, mode 0600 from the first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _problem(resp: httpx.Response) -> str:
    """The ``detail`` of a problem+json answer (else its text), one line."""
    try:
        body = resp.json()
        detail = body.get("detail") if isinstance(body, dict) else None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            detail = f"{detail}: " + "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in errors)
        text = str(detail or body)
    except ValueError:
        text = resp.text
    return f"{resp.status_code} {text.strip().splitlines()[0] if text.strip() else resp.reason_phrase}"[:500]


def _expiry(token: str) -> float:
    """The ``exp`` claim of a JWT (not verified: only to know when to refresh), else 0."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


def login(url: str, username: str, password: str) -> Path:
    """``POST /api/token/`` and keep the tokens; returns the credentials file.

    Raises:
        ClientError: the server is unreachable or refuses the credentials.
    """
    url = url.rstrip("/")
    try:
        resp = httpx.post(f"{url}/api/token/", json={"username": username, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    if resp.status_code != 200:
        raise ClientError(f"login refused: {_problem(resp)}")
    tokens = resp.json()
    path = credentials_path()
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        _write_private(path, {"url": url, "username": username, "access": tokens["access"], "refresh": tokens["refresh"]})
    return path


class Session:
    """An authenticated connection to the server the user logged in to.

    Every request carries the access token; one about to expire, or answered 401, is
    refreshed (under the file lock) and the request sent once more.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_path()
        try:
            self.creds: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            raise ClientError("not logged in: run `aiorch login URL` first", USAGE) from None
        except ValueError:
            raise ClientError(f"{self.path} is not valid JSON: run `aiorch login URL` again", USAGE) from None
        self.url: str = self.creds["url"]
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def close(self) -> None:
        self.http.close()

    @property
    def access(self) -> str:
        if _expiry(self.creds["access"]) - time.time() < REFRESH_MARGIN_S:
            self.refresh(self.creds["access"])
        return str(self.creds["access"])

    def refresh(self, used: str) -> None:
        """New tokens for the access token ``used``: adopt the file's if another process already
        rotated them, else ``POST /api/token/refresh/`` and write the answer.

        Raises:
            ClientError: the session is over (logged out, revoked, expired).
        """
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock", timeout=60):
            try:
                current = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                raise ClientError("not logged in: run `aiorch login URL` first", USAGE) from None
            if current.get("access") != used and current.get("url") == self.url:
                self.creds = current
                return
            resp = self.http.post("/api/token/refresh/", json={"refresh": current["refresh"]})
            if resp.status_code != 200:
                raise ClientError(f"the session has ended ({_problem(resp)}): run `aiorch login {self.url}` again")
            tokens = resp.json()
            current.update(access=tokens["access"], refresh=tokens["refresh"])
            _write_private(self.path, current)
            self.creds = current

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``method path`` with the Bearer token (refreshed once on 401).

        Raises:
            ClientError: the server cannot be reached.
        """
        try:
            token = self.access
            resp = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if resp.status_code == 401:
                self.refresh(token)
                resp = self.http.request(method, path, headers={"Authorization": f"Bearer {self.access}"}, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        return resp

    def json(self, method: str, path: str, ok: tuple[int, ...] = (200, 201, 202), **kwargs: Any) -> Any:
        """The JSON answer of ``method path``; a status outside ``ok`` → :class:`ClientError`
        (exit 2 for 400/415/422, else 1)."""
        resp = self.request(method, path, **kwargs)
        if resp.status_code not in ok:
            raise ClientError(f"{method} {path}: {_problem(resp)}", USAGE if resp.status_code in (400, 415, 422) else FAILED)
        return resp.json()

    def logout(self) -> None:
        """``POST /api/token/logout/`` and forget the tokens (also when the server is gone)."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.post("/api/token/logout/", json={"refresh": self.creds["refresh"]})
        self.path.unlink(missing_ok=True)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → ``{k: v}``; a value that is a JSON literal (number, true/false,
    null, object, array, "quoted string") is taken as JSON, else as the string itself.

    Raises:
        ClientError: (exit 2) a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ClientError(f"--param {pair!r}: expected KEY=VALUE", USAGE)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_files(pairs: list[str]) -> dict[str, Path]:
    """``["field=path", ...]`` → ``{field: Path}``.

    Raises:
        ClientError: (exit 2) a pair without ``=`` or a path that is not a file.
    """
    out: dict[str, Path] = {}
    for pair in pairs:
        field, sep, name = pair.partition("=")
        if not sep or not field:
            raise ClientError(f"--file {pair!r}: expected FIELD=PATH", USAGE)
        path = Path(name).expanduser()
        if not path.is_file():
            raise ClientError(f"--file {pair!r}: no such file", USAGE)
        out[field] = path
    return out


def default_project(session: Session) -> str:
    """The id of the caller's project named ``cli``, created when there is none."""
    page = session.json("GET", "/api/projects/", params={"search": "cli", "page_size": 500})
    for project in page["results"]:
        if project["name"] == "cli" and project["owner"]["username"] == session.creds["username"]:
            return str(project["id"])
    return str(
        session.json("POST", "/api/projects/", json={"name": "cli", "description": "jobs submitted by aiorch submit"})["id"]
    )


def submit(
    session: Session, job_type: str, project: str | None, params: dict[str, Any], files: dict[str, Path], priority: str | None
) -> str:
    """``POST /api/jobs/`` (JSON, or multipart when there are files); returns the job id.

    Raises:
        ClientError: refused (exit 2 on 415/422, else 1).
    """
    project = project or default_project(session)
    if files:
        data = {"project": project, "type": job_type, "parameters": json.dumps(params)}
        if priority:
            data["priority"] = priority
        with contextlib.ExitStack() as stack:
            uploads = {field: (path.name, stack.enter_context(path.open("rb"))) for field, path in files.items()}
            body = session.json("POST", "/api/jobs/", data=data, files=uploads)
    else:
        payload: dict[str, Any] = {"project": project, "type": job_type, "parameters": params}
        if priority:
            payload["priority"] = priority
        body = session.json("POST", "/api/jobs/", json=payload)
    return str(body["id"])


def feed(session: Session, job_id: str) -> Iterator[dict[str, Any]]:
    """The job as the read model shows it after each of its events, from its first event on
    (``/ws/jobs/{id}/?ticket=&after=``), until it is finished. A dropped connection (the
    token's expiry closes it with 4401) is reopened after the last position seen, with a
    fresh ticket; no message is lost or repeated.

    Raises:
        ClientError: the job is not visible (4403) or the feed cannot be opened.
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ws_base = "ws" + session.url[len("http") :] if session.url.startswith("http") else session.url
    after = 0
    failures = 0
    while True:
        ticket = session.json("POST", "/api/ws-ticket/")["ticket"]
        try:
            with connect(f"{ws_base}/ws/jobs/{job_id}/?ticket={ticket}&after={after}", open_timeout=30) as ws:
                while True:
                    try:
                        raw = ws.recv(timeout=1.0)
                    except TimeoutError:
                        continue
                    message = json.loads(raw)
                    if message.get("type") == "resync_required":
                        break
                    if message.get("job") is None:
                        continue
                    failures = 0
                    after = max(after, int(message["position"]))
                    yield message["job"]
                    if message["job"]["status"] in FINISHED:
                        return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code == 4403:
                raise ClientError(f"job {job_id} is not visible to {session.creds['username']}") from None
        except OSError as exc:
            failures += 1
            if failures > 5:
                raise ClientError(f"cannot open the live feed of {session.url}: {exc}") from None
            time.sleep(min(5.0, 0.5 * failures))
        # reconnect: the job may have finished while the feed was down
        job = session.json("GET", f"/api/jobs/{job_id}/")
        if job["status"] in FINISHED:
            yield job
            return


def _unclobbered(folder: Path, name: str, job_id: str) -> Path:
    """``folder/name``, or ``folder/<stem>-<job id prefix><suffix>`` when that file exists."""
    target = folder / Path(name).name
    if target.exists():
        target = folder / f"{target.stem}-{job_id[:8]}{target.suffix}"
    return target


def download_results(session: Session, job_id: str, folder: Path) -> list[Path]:
    """Every result file of the job, streamed into ``folder`` (an existing file is not
    overwritten: the copy gets the job id's first 8 characters); returns the paths."""
    result = session.json("GET", f"/api/jobs/{job_id}/result/")
    saved = []
    for f in result["files"]:
        target = _unclobbered(folder, f["name"], job_id)
        with session.http.stream("GET", f["url"], headers={"Authorization": f"Bearer {session.access}"}) as resp:
            if resp.status_code != 200:
                raise ClientError(f"download of {f['name']}: {resp.status_code}")
            with target.open("wb") as out:
                for chunk in resp.iter_bytes(1 << 16):
                    out.write(chunk)
        saved.append(target)
    return saved


def follow(session: Session, job_id: str, download: bool, folder: Path, console: Any | None = None) -> int:
    """Show the job's stage, percent and ETA in a Rich progress bar, fed by the live feed,
    until it is finished; download its result files when it completed. Ctrl-C asks whether
    to cancel the job (and cancels it on yes). Returns the exit code (:data:`EXIT_OF`, or
    130 after Ctrl-C)."""
    try:
        return _follow(session, job_id, download, folder, console)
    except KeyboardInterrupt:
        return interrupted(session, job_id, console)


def _follow(session: Session, job_id: str, download: bool, folder: Path, console: Any | None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    job: dict[str, Any] = {}
    progress = Progress(
        TextColumn("[bold]{task.fields[status]:<9}[/bold] {task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("waiting", total=100, status="pending")
        for job in feed(session, job_id):
            progress.update(
                task,
                completed=float(job.get("progress") or 0),
                description=job.get("stage") or job["status"],
                status=job["status"],
            )
    status = job.get("status", "unknown")
    line = f"job {job_id} {status}"
    if status == "failed" and job.get("error"):
        line += f": {job['error'].get('code')}: {job['error'].get('message')}"
    console.print(line, markup=False, highlight=False)
    if status == "completed" and download and job.get("has_result", True):
        for path in download_results(session, job_id, folder):
            print(path)
    return EXIT_OF.get(status, FAILED)


def interrupted(session: Session, job_id: str, console: Any | None = None) -> int:
    """After Ctrl-C: ask whether to cancel the job; cancel it on yes. Returns 130."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    try:
        console.print(f"\ncancel job {job_id}? [y/N] ", end="", markup=False, highlight=False)
        answer = sys.stdin.readline().strip().lower()
    except (KeyboardInterrupt, EOFError):
        answer = ""
    if answer in ("y", "yes"):
        body = session.json("POST", f"/api/jobs/{job_id}/cancel/", ok=(202, 409))
        status = body["status"] if isinstance(body.get("status"), str) else str(body.get("detail"))
        deadline = time.monotonic() + CANCEL_WAIT_S
        while status == "cancel_requested" and time.monotonic() < deadline:  # a running job stops at its next checkpoint
            time.sleep(0.5)
            job = session.json("GET", f"/api/jobs/{job_id}/")
            status = job["status"] if job["status"] in FINISHED else status
        console.print(f"job {job_id}: {status}", markup=False, highlight=False)
    else:
        console.print(f"job {job_id} goes on; follow it with `aiorch watch {job_id}`", markup=False, highlight=False)
    return CANCELLED


def list_jobs(session: Session, filters: dict[str, Any], as_json: bool) -> None:
    """``GET /api/jobs/`` with ``filters``, printed as a Rich table (or JSON lines)."""
    page = session.json("GET", "/api/jobs/", params={k: v for k, v in filters.items() if v is not None})
    if as_json:
        for job in page["results"]:
            print(json.dumps(job))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{page['count']} jobs" + (" (first page)" if page.get("next") else ""))
    for column in ("id", "type", "status", "progress", "stage", "priority", "created_at", "error"):
        table.add_column(column, no_wrap=column in ("id", "created_at"))
    for job in page["results"]:
        error = job.get("error") or {}
        table.add_row(
            str(job["id"]),
            job["type"],
            job["status"],
            f"{float(job.get('progress') or 0):.0f}%",
            job.get("stage") or "",
            job.get("priority") or "",
            str(job["created_at"])[:19],
            error.get("code") or "",
        )
    (Console() if sys.stdout.isatty() else Console(width=200)).print(table)
