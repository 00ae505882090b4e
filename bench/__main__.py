"""`python -m bench`: many members at once against the fakes; one JSON line and a table.

    python -m bench                      # 200 members, polling + callback + baseline, 10k resume
    python -m bench --members 1000       # time scale 2 (about 3.5 minutes)
    python -m bench --mode polling --no-baseline --resume-tasks 0 --json-only

Times are divided by --time-scale (tasks of 20-120 s take 20/S-120/S s); latencies are printed
in real-time-equivalent seconds (measured seconds x S). Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from typing import Any

from bench.run import Options, run


def parse(argv: list[str] | None = None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200, help="members running /imagine")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=None,
        help="divide every duration and interval by this (default: 6, lowered for more than "
        "333 members so neither process saturates; 200 members take about a minute)",
    )
    parser.add_argument("--mode", choices=("polling", "callback", "both"), default="both")
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the baseline (poll every 3 s, edit on every poll)",
    )
    parser.add_argument(
        "--resume-tasks", type=int, default=10_000, help="in-flight tasks to resume (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.time_scale is None:
        args.time_scale = max(1.0, min(6.0, 2000 / max(1, args.members)))
    if args.members < 1 or args.time_scale <= 0 or args.resume_tasks < 0:
        parser.error("--members must be >= 1, --time-scale > 0, --resume-tasks >= 0")
    return Options(
        members=args.members,
        time_scale=args.time_scale,
        mode=args.mode,
        baseline=args.baseline,
        resume_tasks=args.resume_tasks,
        seed=args.seed,
    ), args.json_only


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def judge(result: dict[str, Any]) -> None:
    """Add the ratios bot / baseline and PASS/FAIL for each target."""
    runs = result["runs"]
    members = result["members"]
    targets: dict[str, str] = {}

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    targets["delivered N/N"] = verdict(all(r["delivered"] == members for r in runs.values()))
    polling, baseline, callback = runs.get("polling"), runs.get("baseline"), runs.get("callback")
    if polling and baseline:
        result["ratios"] = {
            "polls_per_task": ratio(
                polling["polls_per_task"]["mean"], baseline["polls_per_task"]["mean"]
            ),
            "edits_per_task": ratio(
                polling["edits_per_task"]["mean"], baseline["edits_per_task"]["mean"]
            ),
            "added_latency_p50": ratio(
                polling["added_latency_s"]["p50"], baseline["added_latency_s"]["p50"]
            ),
            "cpu_per_task": ratio(polling["cpu_ms_per_task"], baseline["cpu_ms_per_task"]),
        }
        latency = polling["added_latency_s"]
        targets["polls <= 1/3 baseline, p50 <= 1.0 s, p95 <= 2.5 s"] = verdict(
            result["ratios"]["polls_per_task"] <= 1 / 3
            and latency["p50"] <= 1.0
            and latency["p95"] <= 2.5
        )
        targets["edits <= baseline/2, <= 1 per 3 s per message, none showing nothing new"] = (
            verdict(
                result["ratios"]["edits_per_task"] <= 1 / 2
                and polling["max_edits_per_message_in_3s"] <= 1
                and polling["edits_showing_nothing_new"] == 0
            )
        )
    ours = [r for name, r in runs.items() if name != "baseline"]
    if ours:
        targets["CPU <= 20 ms/task"] = verdict(all(r["cpu_ms_per_task"] <= 20 for r in ours))
        label = f"peak RSS <= 200 MB (with {members} in flight)"
        targets[label] = verdict(all(r["peak_rss_mb"] <= 200 for r in ours))
    if "resume" in result:
        resume = result["resume"]
        targets[f"resume of {resume['tasks']} <= 5 s"] = verdict(
            resume["resumed"] == resume["tasks"] and (resume["resume_seconds"] or math.inf) <= 5
        )
    if callback:
        targets["callback: p50 <= 0.2 s, <= 2 polls/task"] = verdict(
            callback["added_latency_s"]["p50"] <= 0.2 and callback["polls_per_task"]["max"] <= 2
        )
    result["targets"] = targets
    result["all_pass"] = all(value == "PASS" for value in targets.values())


def table(result: dict[str, Any]) -> str:
    runs = result["runs"]
    names = list(runs)
    rows: list[tuple[str, ...]] = [("", *names)]

    def row(label: str, value: Any) -> None:
        rows.append((label, *(value(runs[name]) for name in names)))

    row("delivered", lambda r: f"{r['delivered']}/{result['members']}")
    row("polls/task med, max", lambda r: _pair(r["polls_per_task"]))
    row("edits/task med, max", lambda r: _pair(r["edits_per_task"]))
    row("max edits/msg in 3 s", lambda r: str(r["max_edits_per_message_in_3s"]))
    row("edits showing nothing new", lambda r: str(r["edits_showing_nothing_new"]))
    row("added latency p50 (s)", lambda r: f"{r['added_latency_s']['p50']:.2f}")
    row("added latency p95 (s)", lambda r: f"{r['added_latency_s']['p95']:.2f}")
    row("added latency max (s)", lambda r: f"{r['added_latency_s']['max']:.2f}")
    row("CPU ms/task", lambda r: f"{r['cpu_ms_per_task']:.1f}")
    row("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}")
    row("wall s", lambda r: f"{r['wall_seconds']:.1f}")
    row("CPU share bot / fakes", lambda r: f"{r['bot_cpu_share']:.2f} / {r['fakes_cpu_share']:.2f}")
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)) for cells in rows]
    lines.append(
        f"(N={result['members']}, time scale {result['time_scale']:g}: latencies are "
        f"real-time-equivalent = measured x {result['time_scale']:g})"
    )
    if "ratios" in result:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items())
        lines.append(f"bot / baseline: {ratios}")
    if "resume" in result:
        resume = result["resume"]
        lines.append(
            f"resume of {resume['resumed']}/{resume['tasks']} in-flight tasks: "
            f"{resume['resume_seconds']:.2f} s (RSS {resume['rss_mb_with_all_in_flight']:.0f} MB)"
        )
    lines.extend(f"{verdict}  {target}" for target, verdict in result["targets"].items())
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """NaN (nothing measured) as null, so the line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _pair(stats: dict[str, float]) -> str:
    return f"{stats['median']:g}, {stats['max']:g}"


def main(argv: list[str] | None = None) -> int:
    options, json_only = parse(argv)
    result = asyncio.run(run(options))
    judge(result)
    print(json.dumps(_finite(result), separators=(",", ":")))
    if not json_only:
        print(table(result), file=sys.stdout)
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
