"""What one benchmark run measured, read from what the fakes recorded.

Times recorded by the fakes are event-loop seconds of the benchmark's process (both fakes share
the loop). Latency and edit spacing are converted to real-time-equivalent seconds by multiplying
the measured seconds by the time scale (the workload ran that many times faster).
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord_server import FakeDiscord, FakeInteraction, RecordedCall
from tests.fakes.evolink_server import FakeEvoLink

PROMPT_INDEX = re.compile(r"bench (\d{5})")
EDIT_SPACING = 3.0  # real seconds: at most one edit per message in any window this long
SPACING_TOLERANCE = 0.01  # measured seconds of transport jitter allowed in the spacing check


def prompt_for(index: int) -> str:
    return f"bench {index:05d}: a lighthouse on a cliff at dusk, watercolour"


def index_of(text: str) -> int | None:
    found = PROMPT_INDEX.search(text)
    return int(found.group(1)) if found else None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": math.nan, "mean": math.nan, "max": math.nan}
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


@dataclass
class DeliveryWatch:
    """Follows the fake Discord's calls as they come, to know when every image was posted."""

    discord: FakeDiscord
    members: int
    by_token: dict[str, int] = field(default_factory=dict)
    delivered: dict[int, float] = field(default_factory=dict)  # index -> time of the upload
    failed: set[int] = field(default_factory=set)
    _seen: int = 0

    def add(self, index: int, interaction: FakeInteraction) -> None:
        self.by_token[interaction.token] = index

    def index_of_call(self, call: RecordedCall) -> int | None:
        parts = call.path.split("/")
        if len(parts) > 3 and parts[1] == "webhooks" and parts[3] in self.by_token:
            return self.by_token[parts[3]]
        content = call.json.get("content") if isinstance(call.json, dict) else None
        return index_of(content) if isinstance(content, str) else None

    def update(self) -> None:
        calls = self.discord.calls
        while self._seen < len(calls):
            call = calls[self._seen]
            self._seen += 1
            if call.method not in ("PATCH", "POST") or not 200 <= call.status < 300:
                continue
            index = self.index_of_call(call)
            if index is None:
                continue
            if call.files and index not in self.delivered:
                self.delivered[index] = call.time
            content = call.json.get("content") if isinstance(call.json, dict) else None
            if isinstance(content, str) and "❌" in content:
                self.failed.add(index)

    @property
    def finished(self) -> bool:
        return len(self.delivered) + len(self.failed - set(self.delivered)) >= self.members


def measure(
    *,
    watch: DeliveryWatch,
    evolink: FakeEvoLink,
    members: int,
    time_scale: float,
    bot_report: dict[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    """The metrics of one run (latency and edit spacing in real-time-equivalent seconds)."""
    watch.update()
    polls: dict[int, int] = defaultdict(int)
    completes_at: dict[int, float] = {}
    for task in evolink.tasks.values():
        index = index_of(str(task.request.get("prompt", "")))
        if index is not None:
            polls[index] += task.polls
            completes_at[index] = task.completes_at
    edits: dict[int, list[RecordedCall]] = defaultdict(list)
    for call in watch.discord.calls:
        if call.method == "PATCH" and 200 <= call.status < 300:
            index = watch.index_of_call(call)
            if index is not None:
                edits[index].append(call)
    window = EDIT_SPACING / time_scale
    crowded_messages = 0
    max_in_window = 0
    nothing_new = 0
    for calls in edits.values():
        times = sorted(call.time for call in calls)
        start = 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window - SPACING_TOLERANCE:
                start += 1
            max_in_window = max(max_in_window, end - start + 1)
        if any(b - a < window - SPACING_TOLERANCE for a, b in itertools.pairwise(times)):
            crowded_messages += 1
        shown: tuple[Any, Any] | None = None
        for call in sorted(calls, key=lambda c: c.time):
            body = call.json if isinstance(call.json, dict) else {}
            state = (body.get("content"), body.get("components"))
            if not call.files and state == shown:
                nothing_new += 1
            shown = state
    latencies = [
        (watch.delivered[i] - completes_at[i]) for i in watch.delivered if i in completes_at
    ]
    real = [value * time_scale for value in latencies]
    delivered = len(watch.delivered)
    return {
        "delivered": delivered,
        "failed": len(watch.failed - set(watch.delivered)),
        "polls_per_task": summary([polls[i] for i in range(members)]),
        "edits_per_task": summary([len(edits[i]) for i in range(members)]),
        "max_edits_per_message_in_3s": max_in_window,
        "messages_edited_twice_within_3s": crowded_messages,
        "edits_showing_nothing_new": nothing_new,
        "added_latency_s": {
            "p50": percentile(real, 50),
            "p95": percentile(real, 95),
            "max": max(real, default=math.nan),
        },
        "added_latency_measured_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies, default=math.nan),
        },
        "cpu_ms_per_task": 1000 * bot_report["cpu_seconds"] / max(1, members),
        "cpu_seconds": bot_report["cpu_seconds"],
        "peak_rss_mb": bot_report["peak_rss_mb"],
        "wall_seconds": wall_seconds,
    }
