"""When to poll a task next: seldom while it is far from done, often near its expected end."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CadenceConfig:
    min_interval: float = 1.0  # the shortest wait between two polls of one task
    max_interval: float = 30.0  # the longest
    default_estimate: float = 60.0  # when the API gives no estimated_time
    overshoot: float = 0.1  # aim a little after the predicted end, so the poll finds it done
    fixed_interval: float | None = None  # the naive strategy (for comparison): poll every N s
    callback_safety_interval: float = 30.0  # with EvoLink's callback: the slow safety poll


@dataclass(slots=True)
class Cadence:
    """The progress seen so far of one task, and the wait before its next poll.

    Times are seconds since the task was created at the API.
    """

    config: CadenceConfig
    estimated_time: float | None = None
    callback: bool = False  # EvoLink will call back when the task ends
    readings: list[tuple[float, int]] = field(default_factory=list)

    def observe(self, elapsed: float, progress: int) -> None:
        if 0 < progress < 100 and (not self.readings or progress > self.readings[-1][1]):
            self.readings.append((elapsed, progress))
            del self.readings[:-2]

    def predicted_end(self) -> tuple[float, bool]:
        """When the task should end, and whether that comes from its measured progress rate."""
        if len(self.readings) == 2:
            (t0, p0), (t1, p1) = self.readings
            # A reading of p% means p to p+1% done (integer progress): count from the middle.
            return t1 + (100 - p1 - 0.5) * (t1 - t0) / (p1 - p0), True
        if len(self.readings) == 1:
            t1, p1 = self.readings[0]
            return t1 * 100 / p1, False
        return self.estimated_time or self.config.default_estimate, False

    def next_delay(self, elapsed: float) -> float:
        cfg = self.config
        if cfg.fixed_interval is not None:
            return cfg.fixed_interval
        end, measured = self.predicted_end()
        if self.callback:
            # The callback says when it ends; poll only as a safety net, once it is overdue.
            safety = cfg.callback_safety_interval
            return max(safety, min(end + safety - elapsed, 10 * safety))
        remaining = end - elapsed
        if remaining <= cfg.min_interval:
            # Due or overdue: poll at the shortest interval, easing off once long overdue.
            overdue = max(0.0, -remaining)
            return min(cfg.min_interval * (1 + overdue / 30), cfg.max_interval)
        # With a measured rate, go straight to the end; else take a reading on the way there.
        delay = remaining + cfg.overshoot if measured else remaining * 0.6
        return max(cfg.min_interval, min(delay, cfg.max_interval))
