"""The benchmark runs end to end: a few members, a strong time scale, no 10,000-task resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = 5  # as passed below


def test_bench_delivers_every_image_in_both_modes() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "bench",
            "--members", "5", "--time-scale", "60", "--mode", "both",
            "--no-baseline", "--resume-tasks", "0", "--json-only",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr  # 1: a target failed (not judged here)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    report = json.loads(lines[0])
    assert report["members"] == MEMBERS
    assert report["delivered"] == MEMBERS, report
    assert set(report["runs"]) == {"polling", "callback"}
    for run in report["runs"].values():
        assert run["delivered"] == MEMBERS and run["failed"] == 0
        assert run["polls_per_task"]["max"] >= 1
        assert run["edits_per_task"]["max"] >= 1
    assert report["runs"]["callback"]["polls_per_task"]["max"] <= 2
    assert report["targets"]["delivered N/N"] == "PASS"
