"""The poll cadence: few polls far from the end, prompt ones near it."""

from __future__ import annotations

from bot.cadence import Cadence, CadenceConfig

CONFIG = CadenceConfig(min_interval=1.0, max_interval=30.0)


def simulate(duration: float, estimated: float, pending: float = 2.0) -> tuple[int, float]:
    """Poll a linear-progress task; returns (polls, seconds between its end and the poll)."""
    cadence = Cadence(CONFIG, estimated_time=estimated)
    now, polls = 0.0, 0
    while True:
        now += cadence.next_delay(now)
        polls += 1
        if now >= duration:
            return polls, now - duration
        progress = (
            0 if now < pending else min(99, int(100 * (now - pending) / (duration - pending)))
        )
        cadence.observe(now, progress)


def test_far_fewer_polls_than_every_three_seconds() -> None:
    for duration in (20.0, 45.0, 90.0, 120.0):
        for estimate in (duration * 0.5, duration, duration * 1.5):
            polls, late = simulate(duration, estimate)
            baseline = int(duration // 3) + 1
            assert polls * 3 <= baseline + 2, (duration, estimate, polls, baseline)
            assert late <= 1.6, (duration, estimate, late)


def test_overdue_task_is_polled_at_the_shortest_interval() -> None:
    cadence = Cadence(CONFIG, estimated_time=10)
    assert 1.0 <= cadence.next_delay(10.5) <= 1.05
    assert cadence.next_delay(11.0) <= 1.1


def test_without_progress_first_poll_is_before_the_estimate() -> None:
    cadence = Cadence(CONFIG, estimated_time=60)
    assert 1.0 <= cadence.next_delay(0.0) < 60


def test_delay_never_exceeds_max_interval() -> None:
    cadence = Cadence(CONFIG, estimated_time=10_000)
    assert cadence.next_delay(0.0) == 30.0
