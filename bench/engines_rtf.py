"""Real-time factor of each engine on the recordings in ``../shared/data``: one figure per
engine, printed as a table.

It runs each engine the way a processor does, with the validated parameter model in its
context, on the inputs of :mod:`bench.bench_engines` (``librivox-0870.wav``, 7.1 s, for
stt, voice cloning, dubbing and talking heads; an MP4 made from ``astronaut.png`` and that
recording for video translation; an English paragraph for tts; a 150-word story).

RTF = processing seconds ÷ media seconds (the input's length; the spoken output's for tts);
for ai_stories the figure is seconds per word.  The first run of an engine also pays its
warm-up (first inference, Apertium start-up), so each type runs ``--repeat`` times (default
2) and the best run is reported.

These figures used to be printed by a test that had to run last
(``test_zz_report_real_time_factors``); they live here because timing is a benchmark's
business, not a test's.  The bounds that test (and ``test_real_time_factors``) held are
kept as a sanity check: stt ≤ 2.0, tts ≤ 0.5, every media engine ≤ 5.0 (pathological
slow-downs only); the exit status is 1 when one is exceeded.

    /work/main/.venv/bin/python bench/engines_rtf.py [--repeat 2] [--types stt,dubbing] [--model-dir DIR]

Exits 2 when the shared data is missing or an engine cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_engines import PORTRAIT, SPEECH, job_specs, make_long_wav, make_video  # noqa: E402

TYPES = ("stt", "tts", "voice_cloning", "dubbing", "video_translation", "animated_talking_heads", "ai_stories")
BOUNDS = {"stt": 2.0, "tts": 0.5, "ai_stories": None}
"""The largest acceptable figure per type (None: no bound); others: ``MEDIA_BOUND``."""
MEDIA_BOUND = 5.0


def measure(engine: Any, job_type: str, spec: dict[str, Any], work: Path) -> tuple[float, float]:
    """Run one job as a processor would; returns (processing seconds, media seconds or words)."""
    import time

    from processors.engines import EngineContext
    from processors.engines.parameters import validated_parameters

    params = dict(spec["parameters"])
    ctx = EngineContext(
        job_id=work.name,
        parameters=params,
        input_files=dict(spec["files"]),
        work_dir=work,
        validated=validated_parameters(job_type, params),
    )
    started = time.perf_counter()
    result = engine.run(ctx)
    seconds = time.perf_counter() - started
    if job_type == "ai_stories":
        return seconds, float(result.meta["words"])
    media = spec["media_s"] if spec["media_s"] is not None else result.meta.get("duration_seconds")
    return seconds, float(media or 0.0)


def main() -> int:
    """Build, load and time the engines; print the table.  Exit status: see the module."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per type; the best is reported (default 2)")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated job types (default: all)")
    parser.add_argument("--model-dir", type=Path, default=None, help="model folder (default: a temporary one)")
    args = parser.parse_args()
    types = [t for t in args.types.split(",") if t]
    if not (SPEECH / "librivox-0870.wav").is_file() or not PORTRAIT.is_file():
        print(f"shared data not found in {SPEECH.parent}", file=sys.stderr)
        return 2
    from processors.engines import EngineError, build_engines

    with tempfile.TemporaryDirectory(prefix="engines-rtf-") as scratch:
        root = Path(scratch)
        model_dir = args.model_dir or root / "models"
        specs = job_specs(make_video(root / "lecture.mp4"), make_long_wav(root / "long.wav"))
        engines = build_engines(types, model_dir)
        try:
            for engine in engines.values():
                engine.load()
        except EngineError as exc:
            print(f"an engine could not be loaded: {exc}", file=sys.stderr)
            return 2
        rows: list[tuple[str, float, float, float]] = []
        try:
            for job_type in types:
                spec = specs[job_type]
                runs = [measure(engines[job_type], job_type, spec, root / f"{job_type}-{n}") for n in range(args.repeat)]
                seconds, media = min(runs)
                rows.append((job_type, seconds, media, seconds / media if media else float("inf")))
        finally:
            for engine in engines.values():
                engine.close()
    return report(rows)


def report(rows: list[tuple[str, float, float, float]]) -> int:
    """Print one line per engine; 1 when a figure is over its bound, else 0."""
    over = False
    print(f"{'engine':<24} {'seconds':>8} {'media':>10} {'figure':>8}")
    for job_type, seconds, media, figure in rows:
        unit = "words" if job_type == "ai_stories" else "s"
        bound = BOUNDS.get(job_type, MEDIA_BOUND)
        flag = "" if bound is None or figure <= bound else f"  over {bound:g}"
        over = over or bool(flag)
        label = "s/word" if job_type == "ai_stories" else "RTF"
        print(f"{job_type:<24} {seconds:>8.2f} {media:>8.1f} {unit:<1} {figure:>7.3f} {label}{flag}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
