"""The client commands: ``login``, ``logout``, ``submit``, ``watch`` and ``jobs list`` act on
a running aiorch through its public API (:mod:`infra.client`), from any machine (the
top-level ones are registered on the root app by :mod:`infra.cli`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from infra.cli.base import jobs_app


def run_client(run: Callable[[], int | None]) -> None:
    """Run ``run()`` (a client action returning an exit code or None); a
    :class:`infra.client.ClientError` is one line on stderr and its exit code."""
    from infra.client import ClientError

    try:
        code = run()
    except ClientError as exc:
        typer.echo(f"aiorch: error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    if code:
        raise typer.Exit(code)


def login(
    url: Annotated[str, typer.Argument(help="the API's base URL, e.g. http://127.0.0.1:8000")],
    username: Annotated[str | None, typer.Option(help="asked when not given")] = None,
    password: Annotated[str | None, typer.Option(help="asked (hidden) when not given; or --password-stdin")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Log in to a running aiorch: the tokens go to the user's config folder (mode 0600) and the
    client commands (submit, watch, jobs list) use them, refreshing them as they rotate."""
    from infra import client

    name = username or typer.prompt("username")
    secret = sys.stdin.readline().rstrip("\n") if password_stdin else password or typer.prompt("password", hide_input=True)

    def run() -> None:
        path = client.login(url, name, secret)
        typer.echo(f"logged in to {url.rstrip('/')} as {name} (tokens in {path})")

    run_client(run)


def logout() -> None:
    """End the client's session on the server and forget its tokens."""
    from infra import client

    def run() -> None:
        session = client.Session()
        session.logout()
        typer.echo(f"logged out of {session.url}")

    run_client(run)


def submit(
    job_type: Annotated[
        str,
        typer.Argument(
            metavar="TYPE", help="stt, tts, voice_cloning, dubbing, ai_stories, video_translation, animated_talking_heads"
        ),
    ],
    project: Annotated[str | None, typer.Option(help="project id (default: your project named cli, created if absent)")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE; a JSON literal value (42, true) is sent as JSON")
    ] = None,
    file: Annotated[list[str] | None, typer.Option("--file", "-f", help="FIELD=PATH, e.g. input_file=talk.wav")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal or high")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job live and download its result files here")] = False,
    download: Annotated[bool, typer.Option(help="with --wait: download the result files")] = True,
) -> None:
    """Submit a job to the server you logged in to and print its id. With --wait, a progress bar
    (stage, percent, ETA) follows it live; exit 0 completed, 1 failed, 130 cancelled (Ctrl-C asks
    whether to cancel the job)."""
    from pathlib import Path

    from infra import client

    def run() -> int | None:
        params = client.parse_params(param or [])
        files = client.parse_files(file or [])
        session = client.Session()
        job_id = client.submit(session, job_type, project, params, files, priority)
        try:
            typer.echo(job_id)
            if wait:
                return client.follow(session, job_id, download, Path.cwd())
        except KeyboardInterrupt:  # before the progress bar took over
            return client.interrupted(session, job_id)
        return None

    run_client(run)


def watch(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID")],
    download: Annotated[bool, typer.Option(help="download the result files here when it completes")] = True,
) -> None:
    """Follow a job live (stage, percent, ETA) until it is finished; exit 0 completed, 1 failed,
    130 cancelled (Ctrl-C asks whether to cancel the job)."""
    from pathlib import Path

    from infra import client

    run_client(lambda: client.follow(client.Session(), job_id, download, Path.cwd()))


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="pending, running, completed, failed or cancelled")] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="a job type")] = None,
    project: Annotated[str | None, typer.Option(help="a project id")] = None,
    page_size: Annotated[int, typer.Option(help="how many (newest first)")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """The jobs you may see on the server you logged in to (`aiorch login`), newest first, as a table."""
    from infra import client

    filters = {"status": status, "type": job_type, "project": project, "page_size": page_size}
    run_client(lambda: client.list_jobs(client.Session(), filters, as_json))
