"""Budgets over a real ledger: periods, concurrency, and the ledger's invariants."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.budget import Budget, Period, credits_argument, period_bounds
from bot.errors import InvalidRequest, OverBudget
from bot.pricing import PriceTable, format_credits, to_milli
from storage.database import Database
from storage.ledger import Entry
from storage.tasks import NewTask, TaskRecord, TaskStore

GUILD, MEMBER, MOD = 10, 20, 30


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with Database.open(tmp_path / "budget.sqlite3") as database:
        yield database


def new_task(estimate: int, user_id: int = MEMBER) -> NewTask:
    return NewTask(
        guild_id=GUILD,
        channel_id=1,
        user_id=user_id,
        origin="command",
        prompt="p",
        model="gpt-image-1.5",
        size="1:1",
        quality="low",
        reference_urls=(),
        estimate=estimate,
        upload_limit=10_000_000,
    )


async def accept(db: Database, budget: Budget, estimate: int, user_id: int = MEMBER) -> TaskRecord:
    """What the generator does: check and reserve in one transaction."""
    async with db.transaction():
        await budget.ensure_affordable(GUILD, user_id, estimate)
        task = await TaskStore(db).insert(new_task(estimate, user_id), budget.clock())
        await budget.reserve(task)
    return task


def test_prices_and_display_have_no_float_noise() -> None:
    table = PriceTable.default()
    assert table.estimate("gpt-image-1.5", "medium", "1:1") == 1958
    assert table.estimate("gpt-image-1.5", "high", "3:2") == 11256
    assert table.estimate("gpt-image-1.5", "auto", "1:1") == 7657  # auto: the highest price
    assert format_credits(1958) == "1.958"
    assert format_credits(20000) == "20"
    assert format_credits(to_milli("0.1") + to_milli("0.2")) == "0.3"
    other = PriceTable.default(
        '{"gpt-image-1.5-lite": {"low": {"square": "0.2", "tall_or_wide": "0.3"}}}'
    )
    assert other.estimate("gpt-image-1.5-lite", "low", "2:3") == 300


def test_period_bounds_are_utc() -> None:
    moment = datetime(2026, 11, 21, 15, 30, tzinfo=UTC).timestamp()
    start, end = period_bounds(Period.MONTH, moment)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    start, end = period_bounds(Period.WEEK, moment)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 11, 16, tzinfo=UTC)  # a Monday
    start, end = period_bounds(Period.DAY, moment)
    assert end - start == 86400
    _, end = period_bounds(Period.MONTH, datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(end, UTC) == datetime(2027, 1, 1, tzinfo=UTC)


def test_moderator_amounts_are_checked() -> None:
    assert credits_argument(2.5) == 2500
    with pytest.raises(InvalidRequest):
        credits_argument(-1)
    with pytest.raises(InvalidRequest):
        credits_argument(10**9)
    with pytest.raises(InvalidRequest):
        credits_argument(float("nan"))


async def test_over_budget_is_refused_with_figures(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(1))
    with pytest.raises(OverBudget) as refused:
        await accept(db, budget, to_milli("7.657"))
    assert "7.657" in refused.value.user_message
    assert "you have 1 left" in refused.value.user_message
    assert (await db.fetchone("SELECT COUNT(*) FROM tasks"))[0] == 0  # type: ignore[index]
    await budget.set_allowance(GUILD, MEMBER, to_milli(10), actor_id=MOD)
    await accept(db, budget, to_milli("7.657"))
    standing = await budget.standing(GUILD, MEMBER)
    assert standing.pending == 7657
    assert standing.left == 2343


async def test_failed_task_gives_everything_back_once(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(20))
    task = await accept(db, budget, 7657)
    await budget.adjust(task, 7000)
    assert (await budget.standing(GUILD, MEMBER)).pending == 7000
    assert await budget.release(task)
    assert not await budget.release(task)
    assert not await budget.settle(task)  # released tasks are never charged
    standing = await budget.standing(GUILD, MEMBER)
    assert (standing.pending, standing.spent, standing.left) == (0, 0, 20000)


async def test_settle_charges_the_adjusted_amount_once(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(20))
    task = await accept(db, budget, 7657)
    await budget.adjust(task, 2500)
    assert await budget.settle(task)
    assert not await budget.settle(task)
    assert not await budget.release(task)
    standing = await budget.standing(GUILD, MEMBER)
    assert (standing.spent, standing.pending, standing.left) == (2500, 0, 17500)


async def test_twenty_simultaneous_requests_with_room_for_three(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(3 * 1.958))
    results = await asyncio.gather(
        *(accept(db, budget, 1958) for _ in range(20)), return_exceptions=True
    )
    accepted = [r for r in results if isinstance(r, TaskRecord)]
    refused = [r for r in results if isinstance(r, OverBudget)]
    assert len(accepted) == 3
    assert len(refused) == 17


async def test_server_cap_holds_across_members(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(100))
    await budget.set_cap(GUILD, to_milli(5), actor_id=MOD)
    results = await asyncio.gather(
        *(accept(db, budget, 1000, user_id=100 + i) for i in range(12)), return_exceptions=True
    )
    assert sum(isinstance(r, TaskRecord) for r in results) == 5
    refusal = next(r for r in results if isinstance(r, OverBudget))
    assert "the server has 0 left" in refusal.user_message


async def test_period_rollover_restores_the_allowance(db: Database) -> None:
    clock = Clock(datetime(2026, 11, 21, 23, 0, tzinfo=UTC))
    budget = Budget(db, default_allowance=to_milli(2), clock=clock)
    await budget.set_period(GUILD, Period.DAY, actor_id=MOD)
    task = await accept(db, budget, 1958)
    await budget.settle(task)
    assert (await budget.standing(GUILD, MEMBER)).left == 42
    with pytest.raises(OverBudget):
        await accept(db, budget, 1958)
    clock.now = datetime(2026, 11, 22, 0, 0, 1, tzinfo=UTC).timestamp()
    standing = await budget.standing(GUILD, MEMBER)
    assert standing.left == 2000
    assert standing.spent == 0
    assert standing.resets_at == datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    await accept(db, budget, 1958)


async def test_grants_and_default_allowance(db: Database) -> None:
    budget = Budget(db, default_allowance=to_milli(20))
    await budget.set_default(GUILD, to_milli(5), actor_id=MOD)
    await budget.grant(GUILD, MEMBER, to_milli("1.5"), actor_id=MOD)
    standing = await budget.standing(GUILD, MEMBER)
    assert (standing.allowance, standing.grants, standing.left) == (5000, 1500, 6500)
    changes = await budget.changes_for(GUILD, MEMBER)
    assert [(c.kind, c.amount, c.actor_id) for c in changes] == [(Entry.GRANT, 1500, MOD)]


# A random sequence of operations on one member's budget: request (with an estimate), then for
# some tasks adjust (down, as the API's figure never exceeds the estimate), settle or release.
operations = st.lists(
    st.tuples(
        st.sampled_from(["request", "settle", "release", "adjust", "grant"]),
        st.integers(min_value=1, max_value=12_000),
        st.integers(min_value=0, max_value=30),
    ),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
async def test_ledger_invariants(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    async with Database.open(path) as db:
        budget = Budget(db, default_allowance=to_milli(25))
        tasks: list[TaskRecord] = []
        for op, amount, pick in ops:
            if op == "request":
                with contextlib.suppress(OverBudget):
                    tasks.append(await accept(db, budget, amount))
            elif op == "grant":
                await budget.grant(GUILD, MEMBER, amount, actor_id=MOD)
            elif tasks:
                task = tasks[pick % len(tasks)]
                if op == "settle":
                    await budget.settle(task)
                elif op == "release":
                    await budget.release(task)
                else:
                    await budget.adjust(task, task.estimate * (pick % 10) // 10 or 1)
            standing = await budget.standing(GUILD, MEMBER)
            raw = standing.allowance + standing.grants - standing.spent - standing.pending
            assert raw >= 0, "a member never holds more than they have"
        for task in tasks:
            entries = await budget.ledger.task_entries(task.id)
            assert not (Entry.SETTLE in entries and Entry.RELEASE in entries)
        for task in tasks:  # end every task: each ends settled or released exactly once
            await budget.release(task)
            await budget.release(task)
            entries = await budget.ledger.task_entries(task.id)
            assert (Entry.SETTLE in entries) != (Entry.RELEASE in entries)
        standing = await budget.standing(GUILD, MEMBER)
        assert standing.pending == 0
