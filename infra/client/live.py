"""Following a job live: the feed (``/ws/jobs/{id}/`` with a ticket, websockets' sync
client), the Rich progress bar, Ctrl-C's question, and the download of the result files."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infra.client.session import CANCEL_WAIT_S, CANCELLED, EXIT_OF, FAILED, FINISHED, ClientError, Session


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
