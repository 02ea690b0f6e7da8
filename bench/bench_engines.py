"""Real-time factor of every engine on the real inputs in ``../shared/data``, with all
engines built and loaded in ONE process (as a processor serving every type), and the peak
memory of that process and its children.

Per job type (``Engine.run(EngineContext)``, ``--repeat`` runs each, default 2):

- ``stt``: ``speech/librivox-0870.wav`` (7.1 s), language detected; ``stt_long`` (a
  diagnostic row, no target): the five recordings concatenated (23.7 s), which shows how
  much of the short clip's RTF is Whisper's fixed 30 s window;
- ``tts``: an English paragraph (Piper); the media time is the spoken output's length;
- ``voice_cloning``: ``librivox-0870.wav`` converted toward ``cards-005.wav`` (3.5 s, another
  speaker);
- ``dubbing``: ``librivox-0870.wav`` en → es (Whisper → Apertium → espeak-ng, time-fitted);
- ``video_translation``: a 7.1 s MP4 made here from ``images/astronaut.png`` (still) and
  ``librivox-0870.wav`` with imageio-ffmpeg's ffmpeg, en → es subtitles;
- ``animated_talking_heads``: ``astronaut.png`` driven by ``librivox-0870.wav``;
- ``ai_stories``: a 150-word story (SmolLM2 via llama.cpp): words/s and s per 100 words.

RTF = processing seconds ÷ media seconds (input length; output length for tts). The
figure reported is the median over the runs (the first run of a type also pays one-off
costs: first inference, Apertium start-up). Targets: stt ≤ 0.15, tts ≤ 0.1,
dubbing ≤ 1.0, talking heads ≤ 0.5.

Memory: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of this process plus the peak RSS
(``VmHWM`` in ``/proc``) of its long-lived children (the Piper worker), and a sampler that
sums the RSS of the whole process tree every 50 ms (short-lived ffmpeg / espeak-ng /
Apertium processes included). Target: a processor serving all types under 3 GiB.

Prints the load average at start and end, the cores other processes kept busy just
before and after (1 s samples), and the CPU seconds each run used (this process
and its children): CPU ≈ wall means the run had its cores; CPU ≪ wall on a single-threaded
stage means other work took them.

``--profile TYPES`` (comma-separated, or ``all``) runs one more job of each under cProfile
and prints its top functions.

    /work/venv/bin/python bench/bench_engines.py [--repeat 2] [--types all] [--model-dir DIR] [--profile dubbing]

Exits 0 whether or not targets are met; 2 when an engine could not be loaded or the inputs
are missing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import SetupError, busy_cores_elsewhere, print_profile, process_cpu_s, run_main, say  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SPEECH = DATA / "speech"
PORTRAIT = DATA / "images" / "astronaut.png"
TTS_TEXT = (
    "The committee met on a cold Tuesday morning to review the plans for the new library. "
    "After a long discussion, they agreed that the reading room should face the river, "
    "and that the children's section deserved twice the space it had before."
)
TARGETS = {"stt": 0.15, "tts": 0.1, "dubbing": 1.0, "animated_talking_heads": 0.5}
MEMORY_TARGET_GIB = 3.0
ORDER = (
    "stt",
    "stt_en",
    "stt_long",
    "tts",
    "voice_cloning",
    "dubbing",
    "video_translation",
    "animated_talking_heads",
    "ai_stories",
)


# -- process tree memory and CPU ----------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            stack.extend(kids)
    return out


def status_kib(pid: int, field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of ``pid`` in KiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


class TreeSampler(threading.Thread):
    """Samples the summed RSS of this process and its descendants; keeps the peak, and the
    peak RSS (VmHWM) of every descendant seen."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval_s = interval_s
        self.peak_kib = 0
        self.peak_parts: dict[str, int] = {}
        self.children_hwm: dict[int, tuple[str, int]] = {}
        self.own_cmdline = comm(os.getpid())
        self._halt = threading.Event()

    def sample(self) -> None:
        me = os.getpid()
        parts = {"self": status_kib(me, "VmRSS")}
        for kid in children_of(me):
            rss = status_kib(kid, "VmRSS")
            hwm = status_kib(kid, "VmHWM")
            name = comm(kid)
            parts[f"{kid} {name}"] = rss
            if name == self.own_cmdline:  # forked, not yet exec'd: shares our pages and high-water mark
                continue
            if hwm > self.children_hwm.get(kid, ("", 0))[1]:
                self.children_hwm[kid] = (name, hwm)
        total = sum(parts.values())
        if total > self.peak_kib:
            self.peak_kib, self.peak_parts = total, parts

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
        self.sample()


def tree_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live descendants."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(process_cpu_s(p) for p in children_of(os.getpid()))
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live


# -- inputs and jobs ------------------------------------------------------------------------------


def media_seconds(path: Path) -> float:
    """Duration of a media file (PyAV)."""
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base


def make_video(out: Path) -> Path:
    """A 7.1 s H.264 + AAC MP4: the portrait as a still picture over librivox-0870."""
    from processors.engines.media import ffmpeg_exe

    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "25",
            "-i",
            str(PORTRAIT),
            "-i",
            str(SPEECH / "librivox-0870.wav"),
            "-shortest",
            "-vf",
            "scale=320:320",
            "-c:v",
            "libx264",
            "-tune",
            "stillimage",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def make_long_wav(out: Path) -> Path:
    """The real recordings one after another (0870, 0880, cards-005, 0870, 0880: 23.7 s), so
    that Whisper's 30 s window is nearly full: the short clip pays a whole window."""
    import wave

    frames = b""
    params = None
    for name in ("librivox-0870", "librivox-0880", "cards-005", "librivox-0870", "librivox-0880"):
        with wave.open(str(SPEECH / f"{name}.wav"), "rb") as w:
            params = params or w.getparams()
            frames += w.readframes(w.getnframes())
    assert params is not None
    with wave.open(str(out), "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return out


def job_specs(video: Path, long_wav: Path) -> dict[str, dict[str, Any]]:
    """Per type: parameters, input files and the media length (None: taken from the result)."""
    wav = SPEECH / "librivox-0870.wav"
    speech = media_seconds(wav)
    return {
        "stt": {"parameters": {}, "files": {"input_file": wav}, "media_s": speech, "what": "librivox-0870.wav"},
        "stt_en": {
            "parameters": {"language": "en"},
            "files": {"input_file": wav},
            "media_s": speech,
            "what": "(diagnostic) librivox-0870, language given",
            "engine": "stt",
        },
        "stt_long": {
            "parameters": {},
            "files": {"input_file": long_wav},
            "media_s": media_seconds(long_wav),
            "what": "(diagnostic) 5 recordings concatenated",
            "engine": "stt",
        },
        "tts": {
            "parameters": {"text": TTS_TEXT, "language": "en"},
            "files": {},
            "media_s": None,
            "what": f"{len(TTS_TEXT.split())} English words (Piper)",
        },
        "voice_cloning": {
            "parameters": {},
            "files": {"input_file": wav, "reference_file": SPEECH / "cards-005.wav"},
            "media_s": speech,
            "what": "librivox-0870 → cards-005 voice",
        },
        "dubbing": {
            "parameters": {"source_language": "en", "target_language": "es"},
            "files": {"input_file": wav},
            "media_s": speech,
            "what": "librivox-0870 en→es",
        },
        "video_translation": {
            "parameters": {"target_language": "es"},
            "files": {"input_file": video},
            "media_s": media_seconds(video),
            "what": "7.1 s MP4 (still + speech) en→es subtitles",
        },
        "animated_talking_heads": {
            "parameters": {},
            "files": {"image_file": PORTRAIT, "input_file": wav},
            "media_s": speech,
            "what": "astronaut.png + librivox-0870",
        },
        "ai_stories": {
            "parameters": {"prompt": "a lighthouse keeper who befriends a whale", "length": 150, "seed": 7},
            "files": {},
            "media_s": None,
            "what": "150-word story, seed 7",
        },
    }


def run_job(engine: Any, job_type: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one job; returns wall and CPU seconds, the media length (or words) and the meta."""
    from processors.engines import EngineContext

    ctx = EngineContext(job_id=work.name, parameters=dict(spec["parameters"]), input_files=dict(spec["files"]), work_dir=work)
    cpu0 = tree_cpu_s()
    t0 = time.perf_counter()
    result = engine.run(ctx)
    wall = time.perf_counter() - t0
    cpu = tree_cpu_s() - cpu0
    meta = result.meta
    if job_type == "ai_stories":
        amount = float(meta["words"])
    elif spec["media_s"] is not None:
        amount = float(spec["media_s"])
    else:
        amount = float(meta.get("duration_seconds") or media_seconds(result.files[0]))
    return {"wall": wall, "cpu": cpu, "amount": amount, "meta": meta}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per type (default 2; the median is reported)")
    parser.add_argument("--types", default="all", help="comma-separated job types (default all)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("AIORCH_MODEL_DIR") or "/tmp/aiorch-bench-models"),  # noqa: S108
        help="where models are assembled (kept between runs; default /tmp/aiorch-bench-models)",
    )
    parser.add_argument("--profile", default="", metavar="TYPES", help="types to run once more under cProfile")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/aiorch-bench-profiles"))  # noqa: S108
    args = parser.parse_args()
    types = list(ORDER) if args.types.strip() == "all" else [t.strip() for t in args.types.split(",") if t.strip()]
    profile = list(ORDER) if args.profile.strip() == "all" else [t.strip() for t in args.profile.split(",") if t.strip()]
    for path in (SPEECH / "librivox-0870.wav", SPEECH / "cards-005.wav", PORTRAIT):
        if not path.is_file():
            raise SetupError(f"missing input {path} (../shared/data beside the repo)")

    load0 = os.getloadavg()
    other0 = busy_cores_elsewhere(1.0)
    say(
        f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} ({os.cpu_count()} cores); "
        f"other processes use {other0:.2f} cores"
    )
    sampler = TreeSampler()
    sampler.start()
    from processors.engines import ALL_ENGINE_TYPES, build_engines

    args.model_dir.mkdir(parents=True, exist_ok=True)
    engines = build_engines(ALL_ENGINE_TYPES, args.model_dir)  # every type in this one process
    loads: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="aiorch-bench-engines-", dir="/tmp"))
    try:
        for job_type in ALL_ENGINE_TYPES:
            t0 = time.perf_counter()
            try:
                engines[job_type].load()
            except Exception as exc:
                raise SetupError(f"loading the {job_type} engine: {type(exc).__name__}: {exc}") from exc
            loads[job_type] = time.perf_counter() - t0
            say(f"loaded {job_type:24s} in {loads[job_type]:5.2f} s (shared parts load once)")
        rss_loaded = status_kib(os.getpid(), "VmRSS")
        say(f"all engines loaded: this process RSS {rss_loaded / 1024:.0f} MiB")

        video = make_video(tmp / "astronaut-speech.mp4")
        specs = job_specs(video, make_long_wav(tmp / "five-recordings.wav"))
        runs: dict[str, list[dict[str, Any]]] = {t: [] for t in types}
        for job_type in types:
            for i in range(args.repeat):
                r = run_job(engines[specs[job_type].get("engine", job_type)], job_type, specs[job_type], tmp / f"{job_type}-{i}")
                runs[job_type].append(r)
                unit = "words" if job_type == "ai_stories" else "s media"
                say(
                    f"{job_type:24s} run {i + 1}: {r['wall']:6.2f} s wall, {r['cpu']:6.2f} s CPU, "
                    f"{r['amount']:.1f} {unit} → {r['wall'] / r['amount']:.3f} s per {unit.split()[-1]}"
                )
        profiled: dict[str, Path] = {}
        if profile:
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            for job_type in profile:
                prof = cProfile.Profile()
                prof.enable()
                r = run_job(
                    engines[specs[job_type].get("engine", job_type)], job_type, specs[job_type], tmp / f"{job_type}-profiled"
                )
                prof.disable()
                out = args.profile_dir / f"engine-{job_type}.prof"
                prof.dump_stats(str(out))
                profiled[job_type] = out
                say(f"{job_type} under cProfile: {r['wall']:.2f} s wall")
        piper = getattr(getattr(engines.get("tts"), "_worker", None), "proc", None)
        piper_pid = piper.pid if piper is not None else 0
    finally:
        sampler.stop()
        self_maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # RUSAGE_CHILDREN's maxrss is useless here: a forked child inherits the parent's RSS
        # high-water mark until it execs. The sampler reads each child's own VmHWM instead.
        live_children = {pid: hwm for pid, (_n, hwm) in sampler.children_hwm.items() if Path(f"/proc/{pid}").exists()}
        gone = {pid: v for pid, v in sampler.children_hwm.items() if pid not in live_children}
        _short_pid, (short_name, short_kib) = max(gone.items(), key=lambda kv: kv[1][1], default=(0, ("-", 0)))
        live_hwm_kib = sum(live_children.values())
        for engine in engines.values():
            engine.close()
    load1 = os.getloadavg()
    other1 = busy_cores_elsewhere(1.0)

    print()
    print(
        f"engine real-time factors  (all {len(ALL_ENGINE_TYPES)} types loaded in one process; "
        f"median of {args.repeat} run(s); RTF = processing s ÷ media s)"
    )
    print(f"  {'type':24s} {'input':44s} {'media':>7s} {'wall s':>7s} {'CPU s':>6s} {'RTF':>6s} {'1st run':>7s}  target")
    met_all = True
    for job_type in types:
        rs = runs[job_type]
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        amount = rs[0]["amount"]
        spec = specs[job_type]
        if job_type == "ai_stories":
            words = statistics.median(r["amount"] for r in rs)
            print(
                f"  {job_type:24s} {spec['what']:44s} {words:5.0f} w {wall:7.2f} {cpu:6.2f} "
                f"{words / wall:5.1f} words/s, {100 * wall / words:.2f} s per 100 words"
            )
            continue
        rtf = wall / amount
        target = TARGETS.get(job_type)
        verdict = "" if target is None else f"≤ {target:g} {'MET' if rtf <= target else 'NOT MET'}"
        met_all &= target is None or rtf <= target
        print(
            f"  {job_type:24s} {spec['what']:44s} {amount:6.1f}s {wall:7.2f} {cpu:6.2f} {rtf:6.3f} "
            f"{rs[0]['wall'] / amount:7.3f}  {verdict}"
        )
    print("  model loads: " + ", ".join(f"{t} {s:.2f} s" for t, s in loads.items()))
    sampled_peak = sampler.peak_kib
    total_kib = self_maxrss_kib + live_hwm_kib
    print("  memory (peak):")
    print(f"    this process (getrusage maxrss)        {self_maxrss_kib / 1024:8.0f} MiB")
    for pid, hwm in live_children.items():
        tag = " (Piper worker)" if pid == piper_pid else ""
        print(f"    child {pid}{tag:15s}             {hwm / 1024:8.0f} MiB  {sampler.children_hwm[pid][0][:60]}")
    print(f"    largest short-lived child (sampled)    {short_kib / 1024:8.0f} MiB  {short_name[:60]}")
    print(f"    total: process + long-lived children   {total_kib / 1024:8.0f} MiB = {total_kib / 1024**2:.2f} GiB")
    print(f"    sampled peak of the whole tree (50 ms) {sampled_peak / 1024:8.0f} MiB")
    mem_ok = max(total_kib + short_kib, sampled_peak) < MEMORY_TARGET_GIB * 1024**2
    print(
        f"    target < {MEMORY_TARGET_GIB:g} GiB (process + children + largest short-lived child): "
        f"{'MET' if mem_ok else 'NOT MET'}"
    )
    print(
        f"  load average  start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; "
        f"end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} cores); other processes used "
        f"{other0:.2f} cores before and {other1:.2f} after (1 s samples)"
    )
    print(f"  RTF targets (stt ≤ 0.15, tts ≤ 0.1, dubbing ≤ 1.0, talking heads ≤ 0.5): {'all MET' if met_all else 'NOT all met'}")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in profiled.values():
        print_profile(path, 20)
    return 0


if __name__ == "__main__":
    run_main(main)
