"""Issue 10's eight targets in one table: runs each target's benchmark as its own process,
collects the JSON summary each writes (``--json PATH``), and prints one row per figure.

| step | script | targets |
|---|---|---|
| ``compare`` | :mod:`bench.compare` (aiorch beside the classic FastAPI + Celery stack) | 1, 2 (and 7's comparator) |
| ``lag-submit``, ``lag-progress`` | :mod:`bench.bench_lag` at 500 events/s | 3 |
| ``live`` | :mod:`bench.bench_live` (100 editors × 10 sockets + 5 admins, 500 events/s) | 4 |
| ``rebuild`` | :mod:`bench.bench_rebuild` (100,000 events, and a batched upsert of the same rows) | 5 |
| ``history`` | :mod:`bench.bench_history_walk` (a 1,000-event job) | 6 |
| ``idle`` | :mod:`bench.bench_idle` (``aiorch up --processors 1``; pick-up and completion) | 7, 8 |

Columns: the target's number, the figure's name, the figure and its unit, the goal, the
comparator the issue names (measured in the same run) and the ratio figure ÷ comparator;
where the goal is absolute (no comparator), the ratio is figure ÷ the goal's number (above
1 for a time goal means over it). MET / NOT MET, and the cores other processes (not the
benchmark) took during that step's measurement: high values make the figures low and noisy.

Options: ``--only 1,2,5`` (targets), ``--quick`` (short runs for a smoke check, about 6
minutes in all; the figures are not the targets' sizes), ``--json out.json`` (every row and
every step's summary), ``--out-dir`` (logs and summaries; default a new ``/tmp`` folder).

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/targets.py            # ~15 min
    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/targets.py --quick --only 5,6

Exits 0 whether or not the targets are met; 2 when a step's services could not be set up
(the others still run); 1 when a step failed otherwise (its log is named).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import busy_cores_elsewhere, say  # noqa: E402


@dataclass(frozen=True)
class Step:
    """One benchmark run: ``script`` with ``full`` or ``quick`` arguments, covering ``targets``."""

    name: str
    script: str
    targets: tuple[int, ...]
    full: tuple[str, ...]
    quick: tuple[str, ...]


STEPS = (
    Step(
        "compare",
        "compare.py",
        (1, 2, 7),
        (),
        ("--seconds", "3", "--warmup", "1", "--rounds", "1", "--seed-jobs", "200", "--e2e-seconds", "3"),
    ),
    Step(
        "lag-submit",
        "bench_lag.py",
        (3,),
        ("--command", "submit", "--rate", "500", "--writers", "8"),
        ("--command", "submit", "--rate", "500", "--writers", "8", "--seconds", "5", "--warmup", "1"),
    ),
    Step(
        "lag-progress",
        "bench_lag.py",
        (3,),
        ("--command", "progress", "--rate", "500", "--writers", "8"),
        ("--command", "progress", "--rate", "500", "--writers", "8", "--seconds", "5", "--warmup", "1"),
    ),
    Step("live", "bench_live.py", (4,), (), ("--editors", "20", "--seconds", "5", "--warmup", "2", "--drain", "10")),
    Step("rebuild", "bench_rebuild.py", (5,), ("--no-catchup",), ("--no-catchup", "--events", "20000")),
    Step("history", "bench_history_walk.py", (6,), (), ("--seconds", "3")),
    Step("idle", "bench_idle.py", (7, 8), (), ("--seconds", "15", "--settle", "5", "--pickup", "5", "--complete", "5")),
)


def run_step(step: Step, quick: bool, out_dir: Path) -> tuple[int, dict[str, Any] | None, float, Path]:
    """Run one step; returns ``(exit code, its summary or None, seconds, log file)``."""
    summary_file, log_file = out_dir / f"{step.name}.json", out_dir / f"{step.name}.log"
    summary_file.unlink(missing_ok=True)
    argv = [sys.executable, str(REPO / "bench" / step.script), *(step.quick if quick else step.full), "--json", str(summary_file)]
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    with open(log_file, "wb") as log:
        code = subprocess.call(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    return code, summary, time.monotonic() - t0, log_file


def goal_number(goal: str) -> float | None:
    """The limit of a goal's text: the number after ``≤`` / ``≥`` (``"p99 ≤ 50 ms"`` → 50),
    else its first number; None when there is none or it is 0."""
    match = re.search(r"[≤≥]\s*[^\d\s]*\s*(\d[\d,]*(?:\.\d+)?)", goal) or re.search(r"(\d[\d,]*(?:\.\d+)?)", goal)
    value = float(match.group(1).replace(",", "")) if match else None
    return value or None


def fmt(value: float | None, unit: str = "") -> str:
    """A figure for the table: 3 significant digits or thousands separators."""
    if value is None:
        return "–"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def rows_of(results: dict[str, tuple[int, dict[str, Any] | None, float, Path]], wanted: set[int]) -> list[dict[str, Any]]:
    """Every figure of the targets in ``wanted``, from the steps' summaries, with the classic
    stack's POST → running (compare.py's end-to-end phase) as target 7's comparator."""
    e2e = (results.get("compare", (0, None))[1] or {}).get("e2e")
    rows = []
    for name, (_code, summary, _seconds, _log) in results.items():
        if summary is None:
            continue
        for entry in summary["targets"]:
            if entry["target"] not in wanted:
                continue
            row = {**entry, "step": name, "other_cores": summary.get("other_cores")}
            if e2e and entry["target"] == 7 and entry["name"].startswith("JobSubmitted → JobStarted"):
                key = "p50" if entry["name"].endswith("p50") else "p99"
                row["comparator"] = e2e["running"][key]
                row["comparator_name"] = f"classic POST → running {key} (Celery worker)"
                if row["figure"] is not None and row["comparator"]:
                    row["ratio"] = row["figure"] / row["comparator"]
            rows.append(row)
    rows.sort(key=lambda r: r["target"])
    return rows


def print_table(
    rows: list[dict[str, Any]],
    results: dict[str, tuple[int, dict[str, Any] | None, float, Path]],
    wanted: set[int],
    quick: bool,
    other_before: float,
) -> None:
    """The one table (Markdown), then the steps that produced no figures."""
    print()
    print(
        f"issue 10 targets — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, other processes before the run "
        f"{other_before:.2f} cores{'; QUICK (smoke sizes, not the targets)' if quick else ''}"
    )
    print()
    print("| # | figure | value | goal | comparator (same run) | ratio | | other cores |")
    print("|---|---|---:|---|---|---:|---|---:|")
    for r in rows:
        if r["comparator"] is not None:
            comparator = f"{fmt(r['comparator'], r['unit'])} {r['comparator_name']}"
            ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else "–"
        else:
            comparator = "–"
            limit = goal_number(r["goal"])
            ratio = f"{r['figure'] / limit:.2f}× goal" if r["figure"] is not None and limit else "–"
        other = "–" if r["other_cores"] is None else f"{r['other_cores']:.2f}"
        print(
            f"| {r['target']} | {r['name']} | {fmt(r['figure'], r['unit'])} | {r['goal']} | {comparator} | {ratio} | "
            f"{'MET' if r['met'] else 'NOT MET'} | {other} |"
        )
    covered = {r["target"] for r in rows}
    missing = sorted(wanted - covered)
    for name, (code, summary, seconds, log) in results.items():
        if summary is None:
            print(f"  step {name} gave no figures (exit {code} after {seconds:.0f} s): see {log}")
    if missing:
        print(f"  targets without a figure: {', '.join(map(str, missing))}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated target numbers (default all eight)")
    parser.add_argument("--quick", action="store_true", help="short runs, a smoke check (about 6 minutes)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write every row and summary here")
    parser.add_argument("--out-dir", type=Path, default=None, help="logs and summaries (default a new /tmp folder)")
    args = parser.parse_args()
    wanted = {int(x) for x in args.only.split(",") if x.strip()} or set(range(1, 9))
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="aiorch-targets-", dir="/tmp"))
    out_dir.mkdir(parents=True, exist_ok=True)
    # target 7's comparator comes from compare.py: run it for 7 only when 1 or 2 is wanted too
    steps = [s for s in STEPS if set(s.targets) & wanted and not (s.name == "compare" and not wanted & {1, 2})]
    other_before = busy_cores_elsewhere(2.0)
    say(
        f"targets {sorted(wanted)}: steps {', '.join(s.name for s in steps)}; logs in {out_dir}; "
        f"other processes {other_before:.2f} cores now"
    )
    results: dict[str, tuple[int, dict[str, Any] | None, float, Path]] = {}
    for step in steps:
        say(f"{step.name}: bench/{step.script} {' '.join(step.quick if args.quick else step.full)}")
        results[step.name] = code, summary, seconds, log = run_step(step, args.quick, out_dir)
        figures = len(summary["targets"]) if summary else 0
        other_cores = summary.get("other_cores") if summary else None
        other = f", other processes {other_cores:.2f} cores" if other_cores is not None else ""
        say(f"{step.name}: exit {code} after {seconds:.0f} s, {figures} figures{other} (log {log})")
    rows = rows_of(results, wanted)
    print_table(rows, results, wanted, args.quick, other_before)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "other_before": other_before,
                    "rows": rows,
                    "steps": {
                        n: {"exit": c, "seconds": s, "log": str(lg), "summary": sm} for n, (c, sm, s, lg) in results.items()
                    },
                },
                indent=1,
                default=str,
            )
            + "\n"
        )
    codes = [code for code, *_ in results.values()]
    if 2 in codes:
        return 2
    return 1 if any(code not in (0, 2) for code in codes) else 0


if __name__ == "__main__":
    sys.exit(main())
