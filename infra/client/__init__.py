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

from infra.client.jobs import default_project, list_jobs, parse_files, parse_params, submit
from infra.client.live import download_results, feed, follow, interrupted
from infra.client.session import (
    CANCEL_WAIT_S,
    CANCELLED,
    COMPLETED,
    EXIT_OF,
    FAILED,
    FINISHED,
    REFRESH_MARGIN_S,
    USAGE,
    ClientError,
    Session,
    config_dir,
    credentials_path,
    login,
)

__all__ = [
    "CANCELLED",
    "CANCEL_WAIT_S",
    "COMPLETED",
    "EXIT_OF",
    "FAILED",
    "FINISHED",
    "REFRESH_MARGIN_S",
    "USAGE",
    "ClientError",
    "Session",
    "config_dir",
    "credentials_path",
    "default_project",
    "download_results",
    "feed",
    "follow",
    "interrupted",
    "list_jobs",
    "login",
    "parse_files",
    "parse_params",
    "submit",
]
